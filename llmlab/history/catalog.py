"""The experiment catalog: find, list, reload, tag, annotate and delete recorded sweeps.

Every function reads the configured home's store, so it works from any process or kernel sharing
that home; the SQL lives in :mod:`llmlab.store.experiments`, and this module decides what a
reference names (id, unique id prefix, sweep name, SweepResult), what a row means (a ``running``
sweep whose process is gone is ``interrupted``) and how a listing becomes a frame.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from llmlab.errors import ValidationError
from llmlab.results import SweepResult
from llmlab.store import Store, experiments, get_store, ratings

__all__ = ["delete", "load", "note_sweep", "record", "resolve_sweep", "sweeps", "tag_sweep", "untag_sweep"]


def _store() -> Store:
    return get_store()


def _home_hint(store: Store) -> str:
    return str(store.path.parent)


def _resolve(store: Store, ref: Any, *, by_name: bool = True, field: str = "sweep_id") -> str:
    """A sweep id from an id, a unique id prefix, a SweepResult, or (``by_name``) a sweep name (newest wins)."""
    if isinstance(ref, SweepResult):
        ref = ref.sweep_id
    if not isinstance(ref, str) or not ref.strip():
        raise ValidationError(field, ref, "expected a sweep id (see ll.sweeps()) or a SweepResult")
    ref = ref.strip()
    if experiments.has_experiment(store, ref):
        return ref
    hits = experiments.find_by_prefix(store, ref, limit=6)
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise ValidationError(field, ref, f"ambiguous: matches {', '.join(hits[:5])}{' …' if len(hits) > 5 else ''}")
    if by_name:
        named = experiments.newest_named(store, ref)
        if named is not None:
            return named
    raise ValidationError(
        field, ref, f"no such sweep in {_home_hint(store)} (ll.sweeps() / `llmlab sweeps` lists them)"
    )


def resolve_sweep(ref: Any) -> str:
    """The sweep id an id, unique id prefix, name (newest run) or SweepResult names in this home.

    A full sweep id (``sw-YYYYmmdd-HHMMSS-xxxxxx``) this home never ran is returned as given: its
    spans may be in DataKit.

    Raises:
        ValidationError: nothing matches (``no sweep named …``) or a prefix is ambiguous.
    """
    store = _store()
    try:
        return _resolve(store, ref)
    except ValidationError as exc:
        if isinstance(ref, str) and re.fullmatch(r"sw-\d{8}-\d{6}-[0-9a-f]{6}", ref.strip()):
            return ref.strip()
        if isinstance(ref, str) and ref.strip() and "no such sweep" in exc.problem:
            raise ValidationError(
                "sweep", ref, f"no sweep named {ref.strip()!r} (nor an id or id prefix) in {_home_hint(store)}"
            ) from None
        raise


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, ValueError, TypeError):
        return True  # exists but not ours, or unknowable: assume alive
    return True


def _effective_status(status: str, info: Mapping[str, Any]) -> str:
    """``running`` sweeps whose process (on this host) is gone are reported as ``interrupted``."""
    mine = status == "running" and info.get("host") == socket.gethostname() and info.get("pid") is not None
    if mine and not _pid_alive(info["pid"]):
        return "interrupted"
    return status


_AGE_UNITS = {
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hrs": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 604800,
    "week": 604800,
    "weeks": 604800,
}
_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*(" + "|".join(sorted(_AGE_UNITS, key=len, reverse=True)) + ")")


def _parse_since(since: Any) -> str | None:
    """``since`` as an ISO UTC string: a datetime, ISO text, epoch seconds, a timedelta or "7d"/"12h"."""
    if since is None:
        return None
    now = pd.Timestamp.now(tz="UTC")
    try:
        if isinstance(since, (_dt.timedelta, pd.Timedelta)):
            ts = now - pd.Timedelta(since)
        elif isinstance(since, (int, float)) and not isinstance(since, bool):
            ts = pd.Timestamp(float(since), unit="s", tz="UTC")
        elif isinstance(since, str) and (age := _AGE.fullmatch(since.strip().lower())):
            # our own unit table: pandas deprecates lower-case "d" (and "7d" is what people type)
            ts = now - pd.Timedelta(float(age.group(1)) * _AGE_UNITS[age.group(2)], unit="s")
        else:
            ts = pd.Timestamp(since)
            ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    except (ValueError, TypeError):
        raise ValidationError(
            "since", since, "expected a datetime, an ISO time, epoch seconds, or an age like '7d' / '12h'"
        ) from None
    return ts.isoformat()


_LIST_COLUMNS = [
    "sweep_id",
    "name",
    "status",
    "started_at",
    "finished_at",
    "wall_s",
    "calls",
    "ok",
    "errors",
    "cached",
    "skipped",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "models",
    "prompts",
    "templates",
    "systems",
    "tags",
    "note",
    "source",
    "git_commit",
    "git_dirty",
    "llmlab_version",
]


JUDGE_TAG = experiments.JUDGE_TAG


def sweeps(
    name: str | None = None,
    tag: str | Sequence[str] | None = None,
    since: Any = None,
    *,
    limit: int | None = None,
    include_judges: bool = False,
) -> pd.DataFrame:
    """Every recorded experiment of the home, newest first (``ll.sweeps``).

    Args:
        name: only sweeps of this name (``*``/``?`` wildcards allowed, e.g. ``"summarize*"``).
        tag: only sweeps carrying this tag (a list: all of them).
        since: only sweeps started at or after this time: a datetime, ISO text, epoch seconds, a
            timedelta, or an age like ``"7d"``, ``"12h"``.
        limit: at most this many rows.
        include_judges: also list the judge runs of ``ll.evals.llm_judge``/``pairwise_judge`` (tagged
            ``judge``); they are left out by default, and always listed when ``tag`` names ``judge``.
            ``ll.load`` of a judge run's id works either way.

    Returns:
        One row per sweep: ``sweep_id, name, status, started_at, finished_at, wall_s, calls, ok,
        errors, cached, skipped, input_tokens, output_tokens, cost_usd, models, prompts, templates, systems
        (the variant names: ``["terse", "steps"]``, ``[]`` before #13 or without one), tags, note,
        source, git_commit, git_dirty, llmlab_version``. ``status`` is ``finished``, ``budget``,
        ``cancelled``, ``running``, or ``interrupted`` (its process on this host is gone).
    """
    if name is not None and not isinstance(name, str):
        raise ValidationError("name", name, "expected a sweep name (wildcards * and ? allowed)")
    tags = [experiments.check_tag(t, "tag") for t in ([tag] if isinstance(tag, str) else list(tag or []))]
    since_iso = _parse_since(since)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise ValidationError("limit", limit, "expected a positive integer")
    rows = [
        {
            "sweep_id": r["sweep_id"],
            "name": r["name"],
            "status": _effective_status(r["status"], {"host": r["host"], "pid": r["pid"]}),
            "started_at": r["created_at"],
            "finished_at": r["finished_at"],
            "wall_s": r["wall_s"],
            "calls": r["n_calls"],
            "ok": r["n_ok"],
            "errors": r["n_errors"],
            "cached": r["n_cached"],
            "skipped": r["n_skipped"],
            "input_tokens": r["input_tokens"],
            "output_tokens": r["output_tokens"],
            "cost_usd": r["cost_usd"],
            "models": r["models"],
            "prompts": r["prompt_count"],
            "templates": [v.get("name") for v in r["variants"] if v.get("kind") in ("template", "messages")],
            "systems": [v.get("name") for v in r["variants"] if v.get("kind") == "system"],
            "tags": r["tags"],
            "note": r["note"],
            "source": r["source"],
            "git_commit": r["git_commit"],
            "git_dirty": None if r["git_dirty"] is None else bool(r["git_dirty"]),
            "llmlab_version": r["llmlab_version"],
        }
        for r in experiments.list_rows(
            _store(),
            name=name,
            tags=tags,
            since_iso=since_iso,
            limit=limit,
            exclude_tags=() if include_judges or JUDGE_TAG in tags else (JUDGE_TAG,),
        )
    ]
    df = pd.DataFrame(rows, columns=_LIST_COLUMNS)
    df["started_at"] = pd.to_datetime(df["started_at"], utc=True, format="ISO8601")
    df["finished_at"] = pd.to_datetime(df["finished_at"], utc=True, format="ISO8601")
    for col in ("calls", "ok", "errors", "cached", "skipped", "input_tokens", "output_tokens", "prompts"):
        df[col] = pd.array(pd.to_numeric(df[col], errors="coerce"), dtype="Int64")
    for col in ("wall_s", "cost_usd"):
        df[col] = pd.array(pd.to_numeric(df[col], errors="coerce"), dtype="Float64")
    df["git_dirty"] = df["git_dirty"].astype("boolean")
    for col in ("sweep_id", "name", "status", "note", "source", "git_commit", "llmlab_version"):
        df[col] = df[col].astype("string")  # missing is <NA>, never a float NaN
    return df


def record(sweep_id: Any) -> dict[str, Any]:
    """Everything stored about one experiment (metadata, spec, info, tags, note) as a dict.

    Args:
        sweep_id: an id, a unique id prefix, a sweep name (newest) or a SweepResult.
    """
    store = _store()
    sid = _resolve(store, sweep_id)
    r = experiments.experiment_row(store, sid)
    if r is None:  # deleted between the two reads
        raise ValidationError("sweep_id", sweep_id, f"no such sweep in {_home_hint(store)}")
    return {
        "sweep_id": r["sweep_id"],
        "name": r["name"],
        "started_at": r["created_at"],
        "finished_at": r["finished_at"],
        "status": _effective_status(r["status"], r["info"]),
        "spec": r["spec"],
        "info": r["info"],
        "note": r["note"],
        "source": r["source"],
        "git_commit": r["git_commit"],
        "git_dirty": None if r["git_dirty"] is None else bool(r["git_dirty"]),
        "llmlab_version": r["llmlab_version"],
        "wall_s": r["wall_s"],
        "calls": r["n_calls"],
        "ok": r["n_ok"],
        "errors": r["n_errors"],
        "cached": r["n_cached"],
        "skipped": r["n_skipped"],
        "input_tokens": r["input_tokens"],
        "output_tokens": r["output_tokens"],
        "cost_usd": r["cost_usd"],
        "tags": r["tags"],
    }


_SKIPPED_COLUMNS = ["call_id", "prompt_id", "model", "temperature", "top_p", "repeat", "reason"]


def load(sweep_id: Any) -> SweepResult:
    """Rebuild a past sweep's result from the store, sending nothing (``ll.load``).

    The returned :class:`SweepResult` is the one ``run()`` returned: the same ``.df`` (one row per
    call, canonical columns and dtypes), ``.skipped``, ``.stopped`` and ``.spec``, so summaries,
    charts and ``.show()`` work on it. Prompt/completion text is NA when the sweep ran with
    ``trace_content=False`` (it was never stored).

    Args:
        sweep_id: an id, a unique id prefix, or a sweep name (its newest run).

    Returns:
        The SweepResult.

    Raises:
        ValidationError: no such sweep in the configured home (names it and the home).
    """
    store = _store()
    sid = _resolve(store, sweep_id)
    rec = store.sweep_record(sid)
    if rec is None:  # deleted between the two reads
        raise ValidationError("sweep_id", sweep_id, f"no such sweep in {_home_hint(store)}")
    rows = store.call_rows(sid)
    info = rec["info"] or {}
    skipped = pd.DataFrame(list(info.get("skipped_calls") or []), columns=_SKIPPED_COLUMNS)
    rated = ratings.ratings_of(store, [sid])
    return SweepResult.from_store_rows(sid, rows, rated, skipped, info.get("stopped"), rec["spec"])


# --- tags and notes -----------------------------------------------------------------------------


def tag_sweep(sweep_id: Any, *tags: str) -> list[str]:
    """Add tags to a sweep (idempotent); returns all its tags, sorted."""
    clean = [experiments.check_tag(t) for t in tags]
    if not clean:
        raise ValidationError("tags", tags, "give at least one tag")
    store = _store()
    return experiments.add_tags(store, _resolve(store, sweep_id, by_name=False), clean)


def untag_sweep(sweep_id: Any, *tags: str) -> list[str]:
    """Remove tags from a sweep; returns the tags left."""
    clean = [experiments.check_tag(t) for t in tags]
    store = _store()
    return experiments.remove_tags(store, _resolve(store, sweep_id, by_name=False), clean)


def note_sweep(sweep_id: Any, text: str | None, append: bool = False) -> str | None:
    """Set (or with ``append`` extend) a sweep's free-text note; ``None``/``""`` clears it."""
    if text is not None and not isinstance(text, str):
        raise ValidationError("note", text, "expected text")
    store = _store()
    return experiments.set_note(store, _resolve(store, sweep_id, by_name=False), text, append=append)


# --- delete -------------------------------------------------------------------------------------


def delete(*sweep_ids: Any, keep_cache: bool = False, force: bool = False) -> dict[str, int]:
    """Delete experiments with their calls, tags and spans (``ll.delete``).

    Cache entries (keyed by request, see :mod:`llmlab.history`) are removed only when no other
    sweep has a call for the same request; ``keep_cache=True`` keeps them all, so re-running the
    deleted sweep costs nothing. Spans another sweep's cached rows point at stay too. All sweeps
    are deleted in one transaction.

    Args:
        *sweep_ids: ids or unique id prefixes (names are not accepted here: too easy to get wrong).
        keep_cache: keep every cache entry.
        force: also delete a sweep that is still running in a live process.

    Returns:
        Rows removed per table: ``{"sweeps", "calls", "spans", "cache", "tags"}``.
    """
    if not sweep_ids:
        raise ValidationError("sweep_ids", sweep_ids, "name at least one sweep to delete")
    store = _store()
    sids = list(dict.fromkeys(_resolve(store, s, by_name=False) for s in sweep_ids))
    for sid in sids:
        rec = store.sweep_record(sid)
        if rec and not force and _effective_status(rec["status"], rec["info"] or {}) == "running":
            raise ValidationError(
                "sweep_id",
                sid,
                "still running (pid {} on {}); wait for it or pass force=True".format(
                    rec["info"].get("pid"), rec["info"].get("host")
                ),
            )
    return experiments.delete_experiments(store, sids, keep_cache=keep_cache)
