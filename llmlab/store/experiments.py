"""Every SQL statement about experiments (the ``sweeps`` table, its tags and note, and the calls, spans and
cache entries a sweep owns) in one place, so nothing above the store writes SQL for experiments.

Functions take a :class:`~llmlab.store.database.Store` and plain values and give back plain rows, dicts
or lists; what a row *means* (a dead process's ``running`` sweep is ``interrupted``, which reference names
which sweep, how a list becomes a frame) is decided by the callers in ``llmlab.run.provenance`` and
``llmlab.history``. Writes go through ``Store.write``, so each call is one transaction on the store's
single writer thread.
"""

from __future__ import annotations

import datetime as _dt
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from llmlab.errors import ValidationError
from llmlab.store import callrows, migrations
from llmlab.store.database import Store
from llmlab.store.spanbytes import unpack

__all__ = [
    "JUDGE_TAG",
    "add_tags",
    "call_seqs",
    "check_tag",
    "delete_experiments",
    "experiment_row",
    "export_rows",
    "find_by_prefix",
    "has_experiment",
    "import_rows",
    "list_rows",
    "newest_named",
    "record_finish",
    "record_start",
    "remove_tags",
    "set_note",
    "tags_of",
]

#: Columns kept in the outbox's bookkeeping rather than the span itself: never exported, never imported.
_OUTBOX_COLUMNS = (
    "otlp",
    "export_state",
    "lease_until",
    "lease_owner",
    "otlp_state",
    "otlp_lease_until",
    "otlp_lease_owner",
)


def _loads(text: str | None) -> dict[str, Any]:
    """A stored JSON object, or ``{}`` for NULL, broken JSON or a non-object (old homes hold all three)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _columns(store: Store, table: str) -> list[str]:
    return [r[1] for r in store.read(f"PRAGMA table_info({table})")]


#: The tag of the runs ``ll.evals.llm_judge``/``pairwise_judge`` make: ``ll.sweeps`` leaves them out by default.
JUDGE_TAG = "judge"


def _import_scale(rating: Mapping[str, Any], ratings: Sequence[Mapping[str, Any]]) -> str:
    """An imported rating's scale: as exported, else inferred as migration m010 does for older exports."""
    if rating.get("scale") in ("thumbs", "stars"):
        return str(rating["scale"])
    value = int(rating["rating"])
    stars = value >= 2 or (value == 1 and any(int(r["rating"]) >= 2 for r in ratings))
    return "stars" if stars else "thumbs"


def _not_found(store: Store, sweep_id: str) -> ValidationError:
    return ValidationError("sweep_id", sweep_id, f"no such sweep in {store.path.parent}")


# --- recording (the runner, through llmlab.run.provenance) ------------------------------------


def record_start(
    store: Store,
    sweep_id: str,
    name: str | None,
    spec: dict[str, Any],
    info: dict[str, Any],
    *,
    source: str | None,
    git_commit: str | None,
    git_dirty: bool | None,
    llmlab_version: str | None,
    n_calls: int | None,
) -> None:
    """Record a starting sweep (``Store.start_sweep``) and fill its searchable metadata columns.

    ``wall_s`` is cleared because a resumed sweep starts a new run of the same row.
    """
    store.start_sweep(sweep_id, name, spec, info)
    values = (
        source,
        git_commit,
        None if git_dirty is None else int(bool(git_dirty)),
        llmlab_version,
        n_calls,
        sweep_id,
    )
    store.write(
        lambda db: db.execute(
            "UPDATE sweeps SET source=?, git_commit=?, git_dirty=?, llmlab_version=?, n_calls=?, wall_s=NULL WHERE sweep_id=?",
            values,
        )
    )


def record_finish(
    store: Store,
    sweep_id: str,
    status: str,
    info: dict[str, Any],
    *,
    wall_s: float,
    n_ok: int,
    n_errors: int,
    n_cached: int,
    n_skipped: int,
    input_tokens: int | None,
    output_tokens: int | None,
    cost_usd: float | None,
) -> None:
    """Record a finished sweep: its status, ``info`` merged into ``info_json`` (``Store.finish_sweep``),
    and the count, token, cost and wall-time columns ``sweeps()`` lists without parsing JSON."""
    store.finish_sweep(sweep_id, status, info)
    values = (wall_s, n_ok, n_errors, n_cached, n_skipped, input_tokens, output_tokens, cost_usd, sweep_id)
    store.write(
        lambda db: db.execute(
            "UPDATE sweeps SET wall_s=?, n_ok=?, n_errors=?, n_cached=?, n_skipped=?, input_tokens=?, output_tokens=?, "
            "cost_usd=? WHERE sweep_id=?",
            values,
        )
    )


# --- finding experiments ----------------------------------------------------------------------


def has_experiment(store: Store, sweep_id: str) -> bool:
    """Whether a sweep with exactly this id is recorded."""
    return bool(store.read("SELECT 1 FROM sweeps WHERE sweep_id=?", (sweep_id,)))


def find_by_prefix(store: Store, prefix: str, limit: int = 6) -> list[str]:
    """Ids starting with ``prefix`` (taken literally: ``%`` and ``_`` are not wildcards), newest first."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return [
        r[0]
        for r in store.read(
            "SELECT sweep_id FROM sweeps WHERE sweep_id LIKE ? ESCAPE '\\' ORDER BY created_at DESC LIMIT ?",
            (escaped + "%", int(limit)),
        )
    ]


def newest_named(store: Store, name: str) -> str | None:
    """Id of the newest sweep with this name, or None."""
    rows = store.read("SELECT sweep_id FROM sweeps WHERE name=? ORDER BY created_at DESC, rowid DESC LIMIT 1", (name,))
    return str(rows[0][0]) if rows else None


def list_rows(
    store: Store,
    *,
    name: str | None = None,
    tags: Sequence[str] = (),
    since_iso: str | None = None,
    limit: int | None = None,
    exclude_tags: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """One dict per recorded sweep, newest first, filtered like ``ll.sweeps``.

    Args:
        store: the store to read.
        name: only this name (a GLOB pattern when it holds ``*``, ``?`` or ``[``).
        tags: only sweeps carrying all of these tags.
        exclude_tags: leave out sweeps carrying any of these tags.
        since_iso: only sweeps created at or after this ISO time.
        limit: at most this many.

    Returns:
        Dicts with the stored columns (``status`` as stored), ``models`` and ``prompt_count`` from the spec,
        ``host`` and ``pid`` from the info, and ``tags`` (sorted).
    """
    where: list[str] = []
    params: list[Any] = []
    if name is not None:
        where.append("s.name GLOB ?" if any(ch in name for ch in "*?[") else "s.name = ?")
        params.append(name)
    for t in tags:
        where.append("EXISTS (SELECT 1 FROM sweep_tags t WHERE t.sweep_id = s.sweep_id AND t.tag = ?)")
        params.append(t)
    for t in exclude_tags:
        where.append("NOT EXISTS (SELECT 1 FROM sweep_tags t WHERE t.sweep_id = s.sweep_id AND t.tag = ?)")
        params.append(t)
    if since_iso is not None:
        where.append("julianday(s.created_at) >= julianday(?)")
        params.append(since_iso)
    sql = (
        "SELECT s.sweep_id, s.name, s.status, s.created_at, s.finished_at, s.wall_s, s.n_calls, s.n_ok, s.n_errors, "
        "s.n_cached, s.n_skipped, s.input_tokens, s.output_tokens, s.cost_usd, "
        # only the few fields listed are pulled out (in C): spec_json may carry a whole prompt set
        "CASE WHEN json_valid(s.spec_json) THEN json_object('models', json_extract(s.spec_json, '$.models'), "
        "'prompt_count', json_extract(s.spec_json, '$.prompt_count'), "
        "'variants', json_extract(s.spec_json, '$.variants')) END, "
        "CASE WHEN json_valid(s.info_json) THEN json_object('host', json_extract(s.info_json, '$.host'), "
        "'pid', json_extract(s.info_json, '$.pid')) END, "
        "(SELECT group_concat(t.tag, char(31)) FROM sweep_tags t WHERE t.sweep_id = s.sweep_id), s.note, s.source, "
        "s.git_commit, s.git_dirty, s.llmlab_version FROM sweeps s"
    )
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY s.created_at DESC, s.rowid DESC"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    rows = []
    for r in store.read(sql, params):
        spec, info = _loads(r[14]), _loads(r[15])
        rows.append(
            {
                "sweep_id": r[0],
                "name": r[1],
                "status": r[2],
                "created_at": r[3],
                "finished_at": r[4],
                "wall_s": r[5],
                "n_calls": r[6],
                "n_ok": r[7],
                "n_errors": r[8],
                "n_cached": r[9],
                "n_skipped": r[10],
                "input_tokens": r[11],
                "output_tokens": r[12],
                "cost_usd": r[13],
                "models": list(spec.get("models") or []),
                "prompt_count": spec.get("prompt_count"),
                "variants": [v for v in spec.get("variants") or [] if isinstance(v, dict)],
                "host": info.get("host"),
                "pid": info.get("pid"),
                "tags": sorted(r[16].split("\x1f")) if r[16] else [],
                "note": r[17],
                "source": r[18],
                "git_commit": r[19],
                "git_dirty": r[20],
                "llmlab_version": r[21],
            }
        )
    return rows


def experiment_row(store: Store, sweep_id: str) -> dict[str, Any] | None:
    """Every stored column of one sweep (``spec_json``/``info_json`` parsed into ``spec``/``info``) and its
    sorted ``tags``; None if there is no such sweep."""
    rows = store.read(
        "SELECT sweep_id, name, created_at, finished_at, status, spec_json, info_json, note, source, "
        "git_commit, git_dirty, llmlab_version, wall_s, n_calls, n_ok, n_errors, n_cached, n_skipped, "
        "input_tokens, output_tokens, cost_usd FROM sweeps WHERE sweep_id=?",
        (sweep_id,),
    )
    if not rows:
        return None
    r = rows[0]
    keys = [
        "sweep_id",
        "name",
        "created_at",
        "finished_at",
        "status",
        "spec",
        "info",
        "note",
        "source",
        "git_commit",
        "git_dirty",
        "llmlab_version",
        "wall_s",
        "n_calls",
        "n_ok",
        "n_errors",
        "n_cached",
        "n_skipped",
        "input_tokens",
        "output_tokens",
        "cost_usd",
    ]
    out = dict(zip(keys, r))
    out["spec"], out["info"] = _loads(r[5]), _loads(r[6])
    out["tags"] = tags_of(store, sweep_id)
    return out


def call_seqs(store: Store, sweep_id: str) -> dict[str, int]:
    """``call_id`` → its position in the sweep's plan, for every stored call of the sweep."""
    return {cid: int(seq) for cid, seq in store.read("SELECT call_id, seq FROM calls WHERE sweep_id=?", (sweep_id,))}


# --- tags and notes ---------------------------------------------------------------------------


def check_tag(tag: Any, field: str = "tags") -> str:
    """``tag`` stripped, or ValidationError: a tag is a non-empty string of at most 100 printable characters
    (it is matched exactly in SQL and shown in one table cell)."""
    if not isinstance(tag, str) or not tag.strip():
        raise ValidationError(field, tag, "a tag is a non-empty string")
    tag = tag.strip()
    if len(tag) > 100 or any(ord(ch) < 32 for ch in tag):
        raise ValidationError(field, tag, "a tag is at most 100 printable characters")
    return tag


def tags_of(store: Store, sweep_id: str) -> list[str]:
    """The sweep's tags, sorted."""
    return sorted(r[0] for r in store.read("SELECT tag FROM sweep_tags WHERE sweep_id=?", (sweep_id,)))


def add_tags(store: Store, sweep_id: str, tags: Iterable[Any]) -> list[str]:
    """Add tags to the sweep with exactly this id (idempotent); returns all its tags, sorted.

    Raises:
        ValidationError: a bad tag, no tag at all, or no such sweep.
    """
    tags = tuple(tags)
    clean = [check_tag(t) for t in tags]
    if not clean:
        raise ValidationError("tags", tags, "give at least one tag")
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")

    def fn(db: sqlite3.Connection) -> None:
        # checked in the same transaction, so a tag never outlives a sweep deleted at the same moment
        if db.execute("SELECT 1 FROM sweeps WHERE sweep_id=?", (sweep_id,)).fetchone() is None:
            raise _not_found(store, sweep_id)
        db.executemany(
            "INSERT OR IGNORE INTO sweep_tags (sweep_id, tag, created_at) VALUES (?,?,?)",
            [(sweep_id, t, now) for t in clean],
        )

    store.write(fn)
    return tags_of(store, sweep_id)


def remove_tags(store: Store, sweep_id: str, tags: Iterable[Any]) -> list[str]:
    """Remove tags from the sweep; returns the tags left, sorted."""
    clean = [check_tag(t) for t in tags]
    store.write(
        lambda db: db.executemany("DELETE FROM sweep_tags WHERE sweep_id=? AND tag=?", [(sweep_id, t) for t in clean])
    )
    return tags_of(store, sweep_id)


def set_note(store: Store, sweep_id: str, text: str | None, append: bool = False) -> str | None:
    """Set (or with ``append`` extend, on a new line) the sweep's note; ``None``/``""`` clears it.

    Returns:
        The note now stored (None when empty).

    Raises:
        ValidationError: text that is not a string, or no such sweep.
    """
    if text is not None and not isinstance(text, str):
        raise ValidationError("note", text, "expected text")

    def fn(db: sqlite3.Connection) -> str | None:
        old = db.execute("SELECT note FROM sweeps WHERE sweep_id=?", (sweep_id,)).fetchone()
        if old is None:
            raise _not_found(store, sweep_id)
        new = (f"{old[0]}\n{text}" if append and old[0] and text else (text if text or not append else old[0])) or None
        db.execute("UPDATE sweeps SET note=? WHERE sweep_id=?", (new, sweep_id))
        return new

    return store.write(fn)


# --- delete -----------------------------------------------------------------------------------

_SPAN_USED_ELSEWHERE = (
    "EXISTS (SELECT 1 FROM calls o WHERE o.call_id = spans.call_id AND o.sweep_id != ? AND json_valid(o.row_json) "
    "AND json_extract(o.row_json, '$.span_id') = spans.span_id)"
)
_DELETE_COUNTS = ("sweeps", "calls", "spans", "cache", "tags")


def _delete_in(db: sqlite3.Connection, sid: str, keep_cache: bool) -> dict[str, int]:
    """Delete one sweep inside the caller's transaction (cache/spans shared with other sweeps stay)."""
    counts = dict.fromkeys(_DELETE_COUNTS, 0)
    if not keep_cache:
        counts["cache"] = db.execute(
            "DELETE FROM cache WHERE call_id IN (SELECT call_id FROM calls WHERE sweep_id = ?) AND NOT EXISTS "
            "(SELECT 1 FROM calls o WHERE o.call_id = cache.call_id AND o.sweep_id != ?)",
            (sid, sid),
        ).rowcount
    counts["spans"] = db.execute(
        f"DELETE FROM spans WHERE sweep_id = ? AND (call_id IS NULL OR NOT {_SPAN_USED_ELSEWHERE})", (sid, sid)
    ).rowcount
    # spans this sweep's cached rows kept alive after their own sweep was deleted: now orphans
    counts["spans"] += db.execute(
        "DELETE FROM spans WHERE span_id IN (SELECT json_extract(row_json, '$.span_id') FROM calls WHERE sweep_id = ? "
        "AND json_valid(row_json)) AND sweep_id != ? AND sweep_id NOT IN (SELECT sweep_id FROM sweeps) "
        f"AND NOT {_SPAN_USED_ELSEWHERE}",
        (sid, sid, sid),
    ).rowcount
    callrows.release_sweep_rows(db, sid)  # cache entries that are this sweep's rows and stay keep their response
    counts["calls"] = db.execute("DELETE FROM calls WHERE sweep_id = ?", (sid,)).rowcount
    counts["tags"] = db.execute("DELETE FROM sweep_tags WHERE sweep_id = ?", (sid,)).rowcount
    db.execute("DELETE FROM ratings WHERE sweep_id = ?", (sid,))  # the prompt versions stay; their use goes
    db.execute("DELETE FROM prompt_version_sweeps WHERE sweep_id = ?", (sid,))
    counts["sweeps"] = db.execute("DELETE FROM sweeps WHERE sweep_id = ?", (sid,)).rowcount
    return counts


def delete_experiments(store: Store, sweep_ids: Sequence[str], keep_cache: bool = False) -> dict[str, int]:
    """Delete sweeps (exact ids) with their calls, tags and spans, all in one transaction.

    A cache entry goes only when no other sweep has a call for the same request (``keep_cache`` keeps them
    all); spans another sweep's cached rows point at stay.

    Returns:
        Rows removed per table: ``{"sweeps", "calls", "spans", "cache", "tags"}``.
    """

    def fn(db: sqlite3.Connection) -> dict[str, int]:
        total = dict.fromkeys(_DELETE_COUNTS, 0)
        for sid in sweep_ids:
            for k, v in _delete_in(db, sid, keep_cache).items():
                total[k] += v
        return total

    return store.write(fn)


# --- export / import --------------------------------------------------------------------------


def export_rows(store: Store, sweep_id: str, include_cache: bool = True) -> dict[str, Any]:
    """Everything stored for one sweep, copied verbatim so an import gives back exactly the same rows.

    Returns:
        ``{"sweep": every column of its row, "tags": [{tag, created_at}], "calls": [{call_id, seq, status,
        created_at, row_json}], "spans": [every span column but the outbox state, plus ``otlp`` bytes or None],
        "cache": [{call_id, model, created_at, response_json}]}`` — the spans include every span of the
        sweep's traces; the cache is empty unless ``include_cache``.
    """
    cols = _columns(store, "sweeps")
    rec = dict(zip(cols, store.read(f"SELECT {', '.join(cols)} FROM sweeps WHERE sweep_id=?", (sweep_id,))[0]))
    tags = [
        {"tag": t, "created_at": c}
        for t, c in store.read("SELECT tag, created_at FROM sweep_tags WHERE sweep_id=? ORDER BY tag", (sweep_id,))
    ]
    calls = []
    for c, seq, st, ca, rj, fmt in store.read(
        "SELECT call_id, seq, status, created_at, row_json, fmt FROM calls WHERE sweep_id=? ORDER BY seq", (sweep_id,)
    ):
        if fmt is not None:  # an export holds the whole row, as every llmlab reads it
            rj = callrows.dumps(callrows.unpack_row(rj, fmt, sweep_id, c, st))
        calls.append({"call_id": c, "seq": seq, "status": st, "created_at": ca, "row_json": rj})
    # every stored column (later migrations materialise span values out of row_json), minus outbox state
    span_cols = [c for c in _columns(store, "spans") if c not in _OUTBOX_COLUMNS]
    quoted = ", ".join(f'"{c}"' for c in span_cols)
    spans = []
    for r in store.read(
        f"SELECT {quoted}, otlp FROM spans WHERE sweep_id = ? OR trace_id IN "
        "(SELECT trace_id FROM spans WHERE sweep_id = ?) ORDER BY start_ns",
        (sweep_id, sweep_id),
    ):
        span = dict(zip(span_cols, r[:-1]))
        span["otlp"] = None if r[-1] is None else unpack(r[-1])  # an export holds the plain protobuf
        spans.append(span)
    cache = []
    if include_cache:  # each entry with its response (one that is a call row gets it from the row)
        ids = [c["call_id"] for c in calls]
        cache = [
            {"call_id": c, "model": m, "created_at": ca, "response_json": rj}
            for c, m, ca, rj in callrows.cache_rows(store.connection(), ids)
        ]
    ratings = [
        {"call_id": c, "rating": r, "note": n, "rated_at": t, "scale": k}
        for c, r, n, t, k in store.read(
            "SELECT call_id, rating, note, rated_at, scale FROM ratings WHERE sweep_id=? ORDER BY call_id", (sweep_id,)
        )
    ]
    versions = [
        dict(zip(("kind", "name", "hash", "version", "text", "first_used", "used_at"), r))
        for r in store.read(
            "SELECT v.kind, v.name, v.hash, v.version, v.text, v.first_used, s.used_at FROM prompt_version_sweeps s "
            "JOIN prompt_versions v ON v.kind = s.kind AND v.name = s.name AND v.hash = s.hash WHERE s.sweep_id=?",
            (sweep_id,),
        )
    ]
    return {
        "sweep": rec,
        "tags": tags,
        "calls": calls,
        "spans": spans,
        "cache": cache,
        "ratings": ratings,
        "prompt_versions": versions,
    }


def import_rows(
    store: Store,
    sweep: Mapping[str, Any],
    *,
    tags: Sequence[Mapping[str, Any]] = (),
    calls: Sequence[Mapping[str, Any]] = (),
    spans: Sequence[Mapping[str, Any]] = (),
    cache: Sequence[Mapping[str, Any]] = (),
    replace: bool = False,
    ratings: Sequence[Mapping[str, Any]] = (),
    prompt_versions: Sequence[Mapping[str, Any]] = (),
) -> bool:
    """Write one sweep's rows (the shapes :func:`export_rows` gives, spans carrying ``otlp`` bytes) in one
    transaction. Imported spans are not queued for export; cache entries already present are kept.

    Args:
        store: the store to write.
        sweep: the sweep row; keys that are not columns of this store's ``sweeps`` table are dropped.
        tags, calls, spans, cache: the sweep's other rows.
        ratings: its ratings ({call_id, rating, note, rated_at}).
        prompt_versions: the prompt versions it ran ({kind, name, hash, text, first_used, used_at}); a text
            new to this home gets the next version number of its name here.
        replace: when the sweep is already here, delete it (keeping cache entries) and write it again.

    Returns:
        False (and nothing written) when the sweep is already here and not ``replace``; True otherwise.
        A malformed row raises KeyError/TypeError, a row the schema refuses ``sqlite3.Error``.
    """
    sid = sweep["sweep_id"]
    keep = [c for c in _columns(store, "sweeps") if c in sweep]
    local = [c for c in _columns(store, "spans") if c not in _OUTBOX_COLUMNS]
    value_columns = [name for name, _ in getattr(migrations, "SPAN_VALUE_COLUMNS", [])]

    def fn(db: sqlite3.Connection) -> bool:
        if db.execute("SELECT 1 FROM sweeps WHERE sweep_id=?", (sid,)).fetchone():
            if not replace:
                return False
            _delete_in(db, sid, keep_cache=True)
        db.execute(
            f"INSERT INTO sweeps ({', '.join(keep)}) VALUES ({', '.join('?' * len(keep))})", [sweep[c] for c in keep]
        )
        db.executemany(
            "INSERT OR IGNORE INTO sweep_tags (sweep_id, tag, created_at) VALUES (?,?,?)",
            [(sid, t["tag"], t["created_at"]) for t in tags],
        )
        db.executemany(
            "INSERT INTO calls (sweep_id, call_id, seq, status, created_at, row_json) VALUES (?,?,?,?,?,?)",
            [(sid, c["call_id"], c["seq"], c["status"], c["created_at"], c["row_json"]) for c in calls],
        )
        if spans:
            names = [c for c in local if c in spans[0]]
            db.executemany(
                f"INSERT OR IGNORE INTO spans ({', '.join(chr(34) + c + chr(34) for c in names)}, otlp, export_state) "
                f"VALUES ({', '.join('?' * len(names))}, ?, NULL)",  # imported spans are not re-exported from here
                [[sp.get(c) for c in names] + [sp.get("otlp") or b""] for sp in spans],
            )
            # rows from an older schema carry these values only inside row_json
            missing = [c for c in value_columns if c in local and c not in names]
            if missing:
                sets = ", ".join(f"\"{c}\" = json_extract(row_json, '$.{c}')" for c in missing)
                db.execute(f"UPDATE spans SET {sets} WHERE sweep_id = ? AND json_valid(row_json)", (sid,))
        db.executemany(
            "INSERT OR IGNORE INTO cache (call_id, model, created_at, response_json) VALUES (?,?,?,?)",
            [(c["call_id"], c["model"], c["created_at"], c["response_json"]) for c in cache],
        )
        db.executemany(
            "INSERT OR REPLACE INTO ratings (sweep_id, call_id, rating, note, rated_at, scale) VALUES (?,?,?,?,?,?)",
            [
                (sid, r["call_id"], int(r["rating"]), r.get("note"), r["rated_at"], _import_scale(r, ratings))
                for r in ratings
            ],
        )
        for v in prompt_versions:
            key = (v["kind"], v["name"], v["hash"])
            if not db.execute("SELECT 1 FROM prompt_versions WHERE kind=? AND name=? AND hash=?", key).fetchone():
                (top,) = db.execute(
                    "SELECT coalesce(max(version), 0) FROM prompt_versions WHERE kind=? AND name=?", key[:2]
                ).fetchone()
                db.execute(
                    "INSERT INTO prompt_versions (kind, name, hash, version, text, first_used) VALUES (?,?,?,?,?,?)",
                    (*key, top + 1, v.get("text"), v["first_used"]),
                )
            db.execute(
                "INSERT OR IGNORE INTO prompt_version_sweeps (kind, name, hash, sweep_id, used_at) VALUES (?,?,?,?,?)",
                (*key, sid, v.get("used_at") or v["first_used"]),
            )
        return True

    return store.write(fn)
