"""Experiment history: every sweep run is a tracked experiment that can be listed, reloaded,
tagged, compared, diffed, deleted, exported and imported — from the local store, with no server.

Why here and not in the runner: the runner only hands over what it knows (spec, rows, timings)
through :func:`start_experiment`/:func:`finish_experiment`; everything a data scientist does with
past runs afterwards reads the store (``home/llmlab.db``), so it works from any process or kernel
sharing that home, and on homes written by older llmlab versions (their sweeps get their totals
back-filled by migration ``m002_experiments``).

What is recorded per experiment: id, name, start/end time, wall time, the full spec (prompt-set
fingerprint and a copy of small prompt sets, template, system message, grid, parameters), where
it ran from (notebook path or script, kernel id), git commit/branch/dirty flag of the working
directory, llmlab/openai/OpenLLMetry versions and the provider endpoints, call counts (ok, errors,
cached, skipped), tokens, cost, user tags and a note.

Deleting and the response cache: the cache is keyed by ``call_id`` (the request), not by sweep.
``delete()`` removes a sweep's calls, tags and spans, and the cache entries of its calls that no
other sweep in the home has a call for; entries another sweep shares stay, as do spans another
sweep's cached rows point at. ``keep_cache=True`` keeps every cache entry (a re-run is then free).
Copies of spans already exported to DataKit (or the embedded collector) are not touched.
"""

from __future__ import annotations

import base64
import collections
import datetime as _dt
import difflib
import functools
import gzip
import html
import json
import os
import platform
import re
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmlab import schema
from llmlab.errors import StoreError, ValidationError, redact
from llmlab.results import SweepResult
from llmlab.store import Store, get_store

__all__ = [
    "SweepComparison",
    "SweepDiff",
    "compare_sweeps",
    "delete",
    "diff",
    "experiment_context",
    "export_sweep",
    "finish_experiment",
    "import_sweep",
    "load",
    "note_sweep",
    "record",
    "start_experiment",
    "sweeps",
    "tag_sweep",
    "untag_sweep",
]

EXPORT_FORMAT = "llmlab.experiment"
EXPORT_VERSION = 1

#: The setting columns that, with the prompt, identify one cell of a sweep's grid.
CELL_SETTINGS = ["model", "temperature", "top_p", "max_tokens", "params", "repeat"]
DEFAULT_METRICS = ["latency_ms", "ttft_ms", "output_tokens", "cost_usd", "error"]
_GRID_FIELDS = ["models", "temperature", "top_p", "max_tokens", "seed", "repeats"]
_PACKAGES = ["llmlab", "openai", "traceloop-sdk", "opentelemetry-sdk", "httpx", "pandas"]

# --- recording (called by the runner) -----------------------------------------------------------


def _git_info(cwd: Path) -> dict[str, Any] | None:
    """Commit, branch, top level and dirty flag of the git work tree around ``cwd`` (None without git).

    ``GIT_OPTIONAL_LOCKS=0`` keeps ``git status`` from refreshing the index, so recording never
    takes the repository's index.lock away from someone committing at the same moment. Untracked
    files do not make the tree dirty (a fresh ``.llmlab`` home or scratch notebook would, always).
    """
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0"}
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD", "--abbrev-ref", "HEAD", "--show-toplevel"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if head.returncode != 0:
            return None
        commit, branch, top = (head.stdout.splitlines() + ["", "", ""])[:3]
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):  # no git installed, or it hung
        return None
    return {"commit": commit or None, "branch": branch or None, "root": top or None, "dirty": dirty}


def _run_source() -> dict[str, Any]:
    """Where this sweep runs from: a notebook (JupyterLab/VS Code session), a script, or a shell."""
    shell = None
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        pass
    kernel = None
    notebook = None
    if shell is not None:
        ns = getattr(shell, "user_ns", {}) or {}
        notebook = ns.get("__vsc_ipynb_file__") or ns.get("__session__")
        if type(shell).__name__ == "ZMQInteractiveShell":
            try:
                import ipykernel

                kernel = Path(ipykernel.get_connection_file()).stem.removeprefix("kernel-")
            except Exception:  # not a real kernel (tests, embedded shells)
                kernel = None
    # jupyter_server puts the notebook's path (relative to its root) in the kernel's environment
    notebook = notebook or os.environ.get("JPY_SESSION_NAME")
    if notebook:
        path = Path(str(notebook))
        if not path.is_absolute() and (Path.cwd() / path.name).exists():
            path = Path.cwd() / path.name  # the kernel's cwd is the notebook's folder
        return {"kind": "notebook", "path": str(path), "kernel_id": kernel}
    if kernel is not None or shell is not None:
        return {"kind": "kernel" if kernel else "ipython", "path": None, "kernel_id": kernel}
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0 and argv0 not in ("-c", "-m") and Path(argv0).exists():
        return {"kind": "script", "path": str(Path(argv0).resolve()), "argv": [redact(a) for a in sys.argv[1:20]]}
    return {"kind": "python -c" if argv0 == "-c" else "interactive", "path": None}


@functools.lru_cache(maxsize=1)  # package metadata lookups cost ~0.1 s; versions do not change under a process
def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _providers(sweep: Any) -> dict[str, Any]:
    """Endpoint of every provider the sweep uses (never a key; URLs are redacted anyway)."""
    from llmlab.plan.providers import get_provider

    out: dict[str, Any] = {}
    for name in sorted({c.provider for c in getattr(sweep, "calls", [])}):
        try:
            prov = get_provider(name)
        except Exception:
            continue
        url = prov.base_url or (os.environ.get(prov.base_url_env) if prov.base_url_env else None)
        if prov.is_local:
            url = "embedded"
        out[name] = {"base_url": None if url is None else redact(str(url))}
    return out


def experiment_context(sweep: Any = None) -> dict[str, Any]:
    """What is known about a run before it starts: source, git, versions, providers, host, pid.

    Never raises: a missing git or an odd shell just leaves fields empty.

    Args:
        sweep: the Sweep about to run (for its providers); optional.

    Returns:
        A JSON-able dict merged into the sweep's ``info_json``.
    """
    ctx: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "cwd": str(Path.cwd())}
    for key, fn in (
        ("source", _run_source),
        ("git", lambda: _git_info(Path.cwd())),
        ("versions", lambda: dict(_versions())),
        ("providers", lambda: _providers(sweep)),
    ):
        try:
            ctx[key] = fn()
        except Exception as exc:  # recording must never stop a sweep
            ctx[key] = {"error": redact(f"{type(exc).__name__}: {exc}")}
    return ctx


def start_experiment(store: Store, sweep_id: str, name: str | None, spec: dict[str, Any], info: dict[str, Any]) -> None:
    """Record a starting sweep (``store.start_sweep``) plus the searchable metadata columns."""
    store.start_sweep(sweep_id, name, spec, info)
    source = info.get("source") if isinstance(info.get("source"), dict) else {}
    git = info.get("git") if isinstance(info.get("git"), dict) else {}
    versions = info.get("versions") if isinstance(info.get("versions"), dict) else {}
    dirty = git.get("dirty")
    values = (
        source.get("path") or source.get("kind"),
        git.get("commit"),
        None if dirty is None else int(bool(dirty)),
        versions.get("llmlab"),
        info.get("calls"),
        sweep_id,
    )
    store.write(
        lambda db: db.execute(
            "UPDATE sweeps SET source=?, git_commit=?, git_dirty=?, llmlab_version=?, n_calls=?, wall_s=NULL WHERE sweep_id=?",
            values,
        )
    )


def _skipped_record(call: Any, reason: str) -> dict[str, Any]:
    return {
        "call_id": call.call_id,
        "prompt_id": call.prompt_id,
        "model": call.qualified_model,
        "temperature": call.temperature,
        "top_p": call.top_p,
        "repeat": call.repeat,
        "reason": reason,
    }


def _sum(values: Iterable[Any]) -> float | None:
    known = [float(v) for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
    return sum(known) if known else None


def finish_experiment(
    store: Store,
    sweep_id: str,
    status: str,
    counts: dict[str, Any],
    rows: Sequence[Mapping[str, Any]],
    skipped: Sequence[tuple[Any, str]],
    wall_s: float,
) -> None:
    """Record a finished sweep: status, counts, skipped calls, token/cost totals and wall time."""
    totals = {
        "wall_s": round(wall_s, 6),
        "cached": sum(1 for r in rows if r.get("cached")),
        "input_tokens": _sum(r.get("input_tokens") for r in rows),
        "output_tokens": _sum(r.get("output_tokens") for r in rows),
        "cost_usd": _sum(r.get("cost_usd") for r in rows),
        "skipped_calls": [_skipped_record(c, reason) for c, reason in skipped],
        # what the providers answered as (dated model versions), and the commonest failures
        "response_models": sorted({str(r["response_model"]) for r in rows if r.get("response_model")}),
        "error_kinds": collections.Counter(
            str(r.get("error") or "")[:200] for r in rows if r.get("status") == "error"
        ).most_common(5),
    }
    store.finish_sweep(sweep_id, status, {**counts, **totals})
    n_err = sum(1 for r in rows if r.get("status") == "error")
    values = (
        totals["wall_s"],
        len(rows) - n_err,
        n_err,
        totals["cached"],
        len(skipped),
        None if totals["input_tokens"] is None else int(totals["input_tokens"]),
        None if totals["output_tokens"] is None else int(totals["output_tokens"]),
        totals["cost_usd"],
        sweep_id,
    )
    store.write(
        lambda db: db.execute(
            "UPDATE sweeps SET wall_s=?, n_ok=?, n_errors=?, n_cached=?, n_skipped=?, input_tokens=?, output_tokens=?, "
            "cost_usd=? WHERE sweep_id=?",
            values,
        )
    )


# --- finding sweeps -----------------------------------------------------------------------------


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
    if store.read("SELECT 1 FROM sweeps WHERE sweep_id=?", (ref,)):
        return ref
    escaped = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    hits = [
        r[0]
        for r in store.read(
            "SELECT sweep_id FROM sweeps WHERE sweep_id LIKE ? ESCAPE '\\' ORDER BY created_at DESC LIMIT 6",
            (escaped + "%",),
        )
    ]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise ValidationError(field, ref, f"ambiguous: matches {', '.join(hits[:5])}{' …' if len(hits) > 5 else ''}")
    if by_name:
        named = store.read(
            "SELECT sweep_id FROM sweeps WHERE name=? ORDER BY created_at DESC, rowid DESC LIMIT 1", (ref,)
        )
        if named:
            return str(named[0][0])
    raise ValidationError(
        field, ref, f"no such sweep in {_home_hint(store)} (ll.sweeps() / `llmlab sweeps` lists them)"
    )


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
    "tags",
    "note",
    "source",
    "git_commit",
    "git_dirty",
    "llmlab_version",
]


def sweeps(
    name: str | None = None, tag: str | Sequence[str] | None = None, since: Any = None, *, limit: int | None = None
) -> pd.DataFrame:
    """Every recorded experiment of the home, newest first (``ll.sweeps``).

    Args:
        name: only sweeps of this name (``*``/``?`` wildcards allowed, e.g. ``"summarize*"``).
        tag: only sweeps carrying this tag (a list: all of them).
        since: only sweeps started at or after this time: a datetime, ISO text, epoch seconds, a
            timedelta, or an age like ``"7d"``, ``"12h"``.
        limit: at most this many rows.

    Returns:
        One row per sweep: ``sweep_id, name, status, started_at, finished_at, wall_s, calls, ok,
        errors, cached, skipped, input_tokens, output_tokens, cost_usd, models, prompts, tags, note,
        source, git_commit, git_dirty, llmlab_version``. ``status`` is ``finished``, ``budget``,
        ``cancelled``, ``running``, or ``interrupted`` (its process on this host is gone).
    """
    where, params = [], []
    if name is not None:
        if not isinstance(name, str):
            raise ValidationError("name", name, "expected a sweep name (wildcards * and ? allowed)")
        where.append("s.name GLOB ?" if any(ch in name for ch in "*?[") else "s.name = ?")
        params.append(name)
    tags = [tag] if isinstance(tag, str) else list(tag or [])
    for t in tags:
        where.append("EXISTS (SELECT 1 FROM sweep_tags t WHERE t.sweep_id = s.sweep_id AND t.tag = ?)")
        params.append(_check_tag(t, "tag"))
    since_iso = _parse_since(since)
    if since_iso is not None:
        where.append("julianday(s.created_at) >= julianday(?)")
        params.append(since_iso)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise ValidationError("limit", limit, "expected a positive integer")
    sql = (
        "SELECT s.sweep_id, s.name, s.status, s.created_at, s.finished_at, s.wall_s, s.n_calls, s.n_ok, s.n_errors, "
        "s.n_cached, s.n_skipped, s.input_tokens, s.output_tokens, s.cost_usd, "
        # only the few fields listed are pulled out (in C): spec_json may carry a whole prompt set
        "CASE WHEN json_valid(s.spec_json) THEN json_object('models', json_extract(s.spec_json, '$.models'), "
        "'prompt_count', json_extract(s.spec_json, '$.prompt_count')) END, "
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
    for r in _store().read(sql, params):
        spec, info = _loads(r[14]), _loads(r[15])
        rows.append(
            {
                "sweep_id": r[0],
                "name": r[1],
                "status": _effective_status(r[2], info),
                "started_at": r[3],
                "finished_at": r[4],
                "wall_s": r[5],
                "calls": r[6],
                "ok": r[7],
                "errors": r[8],
                "cached": r[9],
                "skipped": r[10],
                "input_tokens": r[11],
                "output_tokens": r[12],
                "cost_usd": r[13],
                "models": list(spec.get("models") or []),
                "prompts": spec.get("prompt_count"),
                "tags": sorted(r[16].split("\x1f")) if r[16] else [],
                "note": r[17],
                "source": r[18],
                "git_commit": r[19],
                "git_dirty": None if r[20] is None else bool(r[20]),
                "llmlab_version": r[21],
            }
        )
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


def _loads(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def record(sweep_id: Any) -> dict[str, Any]:
    """Everything stored about one experiment (metadata, spec, info, tags, note) as a dict.

    Args:
        sweep_id: an id, a unique id prefix, a sweep name (newest) or a SweepResult.
    """
    store = _store()
    sid = _resolve(store, sweep_id)
    r = store.read(
        "SELECT sweep_id, name, created_at, finished_at, status, spec_json, info_json, note, source, "
        "git_commit, git_dirty, llmlab_version, wall_s, n_calls, n_ok, n_errors, n_cached, n_skipped, "
        "input_tokens, output_tokens, cost_usd FROM sweeps WHERE sweep_id=?",
        (sid,),
    )[0]
    info = _loads(r[6])
    tags = sorted(t[0] for t in store.read("SELECT tag FROM sweep_tags WHERE sweep_id=?", (sid,)))
    return {
        "sweep_id": r[0],
        "name": r[1],
        "started_at": r[2],
        "finished_at": r[3],
        "status": _effective_status(r[4], info),
        "spec": _loads(r[5]),
        "info": info,
        "note": r[7],
        "source": r[8],
        "git_commit": r[9],
        "git_dirty": None if r[10] is None else bool(r[10]),
        "llmlab_version": r[11],
        "wall_s": r[12],
        "calls": r[13],
        "ok": r[14],
        "errors": r[15],
        "cached": r[16],
        "skipped": r[17],
        "input_tokens": r[18],
        "output_tokens": r[19],
        "cost_usd": r[20],
        "tags": tags,
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
    return SweepResult(sid, schema.frame(rows), skipped, info.get("stopped"), rec["spec"])


# --- tags and notes -----------------------------------------------------------------------------


def _check_tag(tag: Any, field: str = "tags") -> str:
    if not isinstance(tag, str) or not tag.strip():
        raise ValidationError(field, tag, "a tag is a non-empty string")
    tag = tag.strip()
    if len(tag) > 100 or any(ord(ch) < 32 for ch in tag):
        raise ValidationError(field, tag, "a tag is at most 100 printable characters")
    return tag


def tag_sweep(sweep_id: Any, *tags: str) -> list[str]:
    """Add tags to a sweep (idempotent); returns all its tags, sorted."""
    clean = [_check_tag(t) for t in tags]
    if not clean:
        raise ValidationError("tags", tags, "give at least one tag")
    store = _store()
    sid = _resolve(store, sweep_id, by_name=False)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")
    store.write(
        lambda db: db.executemany(
            "INSERT OR IGNORE INTO sweep_tags (sweep_id, tag, created_at) VALUES (?,?,?)",
            [(sid, t, now) for t in clean],
        )
    )
    return sorted(r[0] for r in store.read("SELECT tag FROM sweep_tags WHERE sweep_id=?", (sid,)))


def untag_sweep(sweep_id: Any, *tags: str) -> list[str]:
    """Remove tags from a sweep; returns the tags left."""
    clean = [_check_tag(t) for t in tags]
    store = _store()
    sid = _resolve(store, sweep_id, by_name=False)
    store.write(
        lambda db: db.executemany("DELETE FROM sweep_tags WHERE sweep_id=? AND tag=?", [(sid, t) for t in clean])
    )
    return sorted(r[0] for r in store.read("SELECT tag FROM sweep_tags WHERE sweep_id=?", (sid,)))


def note_sweep(sweep_id: Any, text: str | None, append: bool = False) -> str | None:
    """Set (or with ``append`` extend) a sweep's free-text note; ``None``/``""`` clears it."""
    if text is not None and not isinstance(text, str):
        raise ValidationError("note", text, "expected text")
    store = _store()
    sid = _resolve(store, sweep_id, by_name=False)

    def fn(db: sqlite3.Connection) -> str | None:
        old = db.execute("SELECT note FROM sweeps WHERE sweep_id=?", (sid,)).fetchone()
        if old is None:
            raise ValidationError("sweep_id", sweep_id, f"no such sweep in {_home_hint(store)}")
        new = (f"{old[0]}\n{text}" if append and old[0] and text else (text if text or not append else old[0])) or None
        db.execute("UPDATE sweeps SET note=? WHERE sweep_id=?", (new, sid))
        return new

    return store.write(fn)


# --- delete -------------------------------------------------------------------------------------

_SPAN_USED_ELSEWHERE = (
    "EXISTS (SELECT 1 FROM calls o WHERE o.call_id = spans.call_id AND o.sweep_id != ? AND json_valid(o.row_json) "
    "AND json_extract(o.row_json, '$.span_id') = spans.span_id)"
)


def _delete_in(db: sqlite3.Connection, sid: str, keep_cache: bool) -> dict[str, int]:
    """Delete one sweep inside the caller's transaction (cache/spans shared with other sweeps stay)."""
    counts = {"sweeps": 0, "calls": 0, "spans": 0, "cache": 0, "tags": 0}
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
    counts["calls"] = db.execute("DELETE FROM calls WHERE sweep_id = ?", (sid,)).rowcount
    counts["tags"] = db.execute("DELETE FROM sweep_tags WHERE sweep_id = ?", (sid,)).rowcount
    counts["sweeps"] = db.execute("DELETE FROM sweeps WHERE sweep_id = ?", (sid,)).rowcount
    return counts


def delete(*sweep_ids: Any, keep_cache: bool = False, force: bool = False) -> dict[str, int]:
    """Delete experiments with their calls, tags and spans (``ll.delete``).

    Cache entries (keyed by request, see the module docstring) are removed only when no other
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

    def fn(db: sqlite3.Connection) -> dict[str, int]:
        total = {"sweeps": 0, "calls": 0, "spans": 0, "cache": 0, "tags": 0}
        for sid in sids:
            for k, v in _delete_in(db, sid, keep_cache).items():
                total[k] += v
        return total

    return store.write(fn)


# --- comparing two experiments ------------------------------------------------------------------


class _Side:
    """One side of a comparison: its id, frame, spec and (if stored) call_id → plan position."""

    def __init__(self, ref: Any, label: str) -> None:
        store = _store()
        if isinstance(ref, SweepResult):
            # keep the caller's frame: it may carry evaluator columns (scores) added after the run
            self.sweep_id, self.df, self.spec = ref.sweep_id, ref.df, dict(ref.spec or {})
        else:
            res = load(_resolve(store, ref, field=label))
            self.sweep_id, self.df, self.spec = res.sweep_id, res.df, dict(res.spec or {})
        self.seq = {
            cid: int(seq)
            for cid, seq in store.read("SELECT call_id, seq FROM calls WHERE sweep_id=?", (self.sweep_id,))
        }
        self.label = label

    def prompt_index(self) -> pd.Series | None:
        """The prompt row each call came from, from its position in the plan (None if unknown)."""
        per = _calls_per_prompt(self.spec)
        if not per or not self.seq or "call_id" not in self.df:
            return None
        seqs = self.df["call_id"].map(self.seq)
        if seqs.isna().any():
            return None
        return (seqs.astype(int) // per).astype(str)


def _calls_per_prompt(spec: Mapping[str, Any]) -> int | None:
    """Calls per prompt row in the plan (grid size × repeats), from the stored spec."""
    if not spec:
        return None
    n = 1
    for field in ("models", "temperature", "top_p", "max_tokens", "seed"):
        value = spec.get(field)
        n *= len(value) if isinstance(value, list) and value else 1
    for value in (spec.get("params") or {}).values():
        n *= len(value) if isinstance(value, list) and value else 1
    try:
        n *= int(spec.get("repeats") or 1)
    except (TypeError, ValueError):
        return None
    return n


def _norm(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    return str(value)


def _cell_keys(df: pd.DataFrame, prompt_key: pd.Series) -> pd.Series:
    parts = [prompt_key.astype(str).reset_index(drop=True)]
    for col in CELL_SETTINGS:
        values = df[col] if col in df.columns else pd.Series([None] * len(df))
        parts.append(values.reset_index(drop=True).map(_norm).astype(str))
    key = parts[0]
    for p in parts[1:]:
        key = key + "\x1f" + p
    return key


def _pair(a: _Side, b: _Side, match: str) -> tuple[pd.DataFrame, str, int, int]:
    """Common cells of two sweeps: (frame with ``ia``/``ib`` row positions + key columns, how, only_a, only_b)."""
    if match not in ("auto", "prompt_id", "prompt_index"):
        raise ValidationError("match", match, "expected 'auto', 'prompt_id' or 'prompt_index'")
    how = match
    if match == "auto":
        shared = set(a.df["prompt_id"].dropna().astype(str)) & set(b.df["prompt_id"].dropna().astype(str))
        same_prompts = a.spec.get("prompt_fingerprint") is not None and a.spec.get("prompt_fingerprint") == b.spec.get(
            "prompt_fingerprint"
        )
        how = "prompt_id"
        if not shared and same_prompts and a.prompt_index() is not None and b.prompt_index() is not None:
            how = "prompt_index"  # same prompt rows, but template/system changed every prompt_id
    if how == "prompt_index":
        pa, pb = a.prompt_index(), b.prompt_index()
        if pa is None or pb is None:
            raise ValidationError(
                "match", match, "prompt positions are unknown for one sweep (not in this home's store)"
            )
    else:
        pa, pb = a.df["prompt_id"].astype("string").fillna(""), b.df["prompt_id"].astype("string").fillna("")
    ka, kb = _cell_keys(a.df, pa), _cell_keys(b.df, pb)
    first_b: dict[str, int] = {}
    for i, k in enumerate(kb):
        first_b.setdefault(k, i)
    seen: set[str] = set()
    pairs = []
    for i, k in enumerate(ka):
        if k in seen:
            continue  # duplicate prompts in one set: the first occurrence stands for the cell
        seen.add(k)
        j = first_b.get(k)
        if j is not None:
            pairs.append((i, j))
    out = pd.DataFrame(pairs, columns=["ia", "ib"], dtype="int64")
    for col in ["prompt_id"] + CELL_SETTINGS:
        if col in a.df.columns:
            out[col] = (
                a.df[col].iloc[out["ia"].to_numpy()].reset_index(drop=True) if len(out) else pd.Series(dtype=object)
            )
    if how == "prompt_index" and len(out):
        out.insert(1, "prompt_id_b", b.df["prompt_id"].iloc[out["ib"].to_numpy()].reset_index(drop=True))
    return out, how, len(seen) - len(out), len(set(kb)) - len(out)


def _json_str(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _spec_changes(sa: Mapping[str, Any], sb: Mapping[str, Any]) -> pd.DataFrame:
    fields = ["name", "template", "system", *_GRID_FIELDS, "params", "prompt_count", "prompt_fingerprint"]
    rows = [
        {"field": f, "a": sa.get(f), "b": sb.get(f)} for f in fields if _json_str(sa.get(f)) != _json_str(sb.get(f))
    ]
    return pd.DataFrame(rows, columns=["field", "a", "b"])


def _values(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _grid_diff(sa: Mapping[str, Any], sb: Mapping[str, Any]) -> pd.DataFrame:
    """Per grid parameter: the values only in a (removed), only in b (added), and in both."""
    rows = []
    params_a, params_b = sa.get("params") or {}, sb.get("params") or {}
    names = [(f, sa.get(f), sb.get(f)) for f in _GRID_FIELDS]
    names += [(f"params.{k}", params_a.get(k), params_b.get(k)) for k in sorted(set(params_a) | set(params_b))]
    for name, va, vb in names:
        if va is None and vb is None and name.startswith("params."):
            continue
        la = [] if va is None and name.startswith("params.") else _values(va)
        lb = [] if vb is None and name.startswith("params.") else _values(vb)
        ka, kb = [_json_str(v) for v in la], [_json_str(v) for v in lb]
        removed = [v for v, k in zip(la, ka) if k not in kb]
        added = [v for v, k in zip(lb, kb) if k not in ka]
        kept = [v for v, k in zip(la, ka) if k in kb]
        rows.append(
            {"parameter": name, "removed": removed, "added": added, "kept": kept, "changed": bool(removed or added)}
        )
    return pd.DataFrame(rows, columns=["parameter", "removed", "added", "kept", "changed"])


def _text_diff(a: str | None, b: str | None, label_a: str, label_b: str) -> str:
    if (a or "") == (b or ""):
        return ""
    lines = difflib.unified_diff(
        (a or "").splitlines(keepends=True),
        (b or "").splitlines(keepends=True),
        fromfile=label_a,
        tofile=label_b,
        lineterm="",
    )
    return "\n".join(line.rstrip("\n") for line in lines)


class SweepComparison:
    """The result of :func:`compare_sweeps` (prints as a report; renders as HTML in a notebook).

    Attributes:
        a, b: the two sweep ids (``b`` is compared against ``a``).
        match: how cells were matched: ``"prompt_id"``, or ``"prompt_index"`` when the prompt rows
            are the same but a template/system change gave every prompt a new id.
        cells: one row per common cell: prompt_id, the settings, and ``<metric>_a``/``<metric>_b``.
        metrics: one row per metric: ``metric, n, a, b, diff`` (b − a), ``diff_low, diff_high``
            (paired bootstrap interval; none from a single cell), ``p_value`` (two-sided bootstrap),
            ``rel_diff``, ``better`` (``"a"``, ``"b"`` or ``"neither"``; always ``"neither"`` with
            fewer than ``llmlab.stats.MIN_N`` common cells), ``verdict``.
        spec_changes: spec fields that differ (``field, a, b``).
        template_diff, system_diff: unified diffs (empty when unchanged).
        grid_diff: per grid parameter, values ``removed``/``added``/``kept``.
        only_a, only_b: cells found in one sweep only.
        verdict: one plain-language paragraph.
    """

    def __init__(self, **fields: Any) -> None:
        self.a: str = fields["a"]
        self.b: str = fields["b"]
        self.match: str = fields["match"]
        self.cells: pd.DataFrame = fields["cells"]
        self.metrics: pd.DataFrame = fields["metrics"]
        self.spec_changes: pd.DataFrame = fields["spec_changes"]
        self.template_diff: str = fields["template_diff"]
        self.system_diff: str = fields["system_diff"]
        self.template_words: str = fields["template_words"]
        self.grid_diff: pd.DataFrame = fields["grid_diff"]
        self.only_a: int = fields["only_a"]
        self.only_b: int = fields["only_b"]
        self.ci: float = fields["ci"]
        self.verdict: str = fields["verdict"]
        self._templates: tuple[str | None, str | None] = fields.get("templates", (None, None))

    def to_text(self) -> str:
        """The report as plain text."""
        lines = [
            f"compare {self.a} (a) → {self.b} (b): {len(self.cells)} common cells "
            f"(matched by {self.match}; {self.only_a} only in a, {self.only_b} only in b)",
            "",
        ]
        lines.append(self.verdict)
        if len(self.metrics):
            lines += [
                "",
                self.metrics[["metric", "n", "a", "b", "diff", "diff_low", "diff_high", "better"]].to_string(
                    index=False
                ),
            ]
        if len(self.spec_changes):
            lines += ["", "spec changes: " + ", ".join(self.spec_changes["field"])]
        if self.template_words:
            lines += ["template: " + self.template_words]
        if self.system_diff:
            lines += ["system message:", self.system_diff]
        changed = self.grid_diff[self.grid_diff["changed"]] if len(self.grid_diff) else self.grid_diff
        for row in changed.itertuples():
            lines.append(f"grid {row.parameter}: removed {row.removed}, added {row.added}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        parts = [
            f"<div><b>{html.escape(self.a)}</b> (a) → <b>{html.escape(self.b)}</b> (b): {len(self.cells)} common cells "
            f"(matched by {html.escape(self.match)}; {self.only_a} only in a, {self.only_b} only in b)</div>",
            f"<p>{html.escape(self.verdict)}</p>",
        ]
        if len(self.metrics):
            parts.append(
                self.metrics.drop(columns=["verdict"]).to_html(
                    index=False, na_rep="NA", float_format=lambda v: f"{v:.4g}"
                )
            )
        if self.template_words:
            from llmlab.analysis.diffing import html_pair

            ta, tb = html_pair(*self._templates)
            parts.append(f"<div>template a: <code>{ta}</code><br>template b: <code>{tb}</code></div>")
        changed = self.grid_diff[self.grid_diff["changed"]] if len(self.grid_diff) else self.grid_diff
        if len(changed):
            parts.append(changed.drop(columns=["changed"]).to_html(index=False))
        return "\n".join(parts)


def _paired_metric(
    va: np.ndarray, vb: np.ndarray, metric: str, stat: str, n_boot: int, ci: float, rng: np.random.Generator
) -> dict[str, Any]:
    """Estimate of ``metric`` on both sides over the cells where both have a value, and the paired
    bootstrap interval of the difference (cells resampled together, so prompt difficulty cancels)."""
    from llmlab.analysis.stats import (
        MIN_N,
        boot_p_value,
        format_metric,
        higher_is_better,
        percentile_interval,
        stat_fn,
    )

    _, fn = stat_fn(stat)
    both = ~np.isnan(va) & ~np.isnan(vb)
    x, y = va[both], vb[both]
    n = int(x.size)
    hib = higher_is_better(metric)
    row: dict[str, Any] = {
        "metric": metric,
        "n": n,
        "a": np.nan,
        "b": np.nan,
        "diff": np.nan,
        "diff_low": np.nan,
        "diff_high": np.nan,
        "p_value": np.nan,
        "rel_diff": np.nan,
        "better": "neither",
    }
    if not n:
        row["verdict"] = f"{metric}: no cell has a value in both sweeps" + (
            " (timings leave out errors and cache hits)" if metric.endswith("_ms") else ""
        )
        return row
    ea, eb = float(fn(x[None, :])[0]), float(fn(y[None, :])[0])
    idx = rng.integers(0, n, size=(int(n_boot), n))
    boots = fn(y[idx]) - fn(x[idx])
    if n < 2:  # one cell resamples to itself: no interval rather than a zero-width one
        boots = np.full(int(n_boot), np.nan)
    lo, hi = percentile_interval(np.asarray(boots, dtype=float), (1 - ci) / 2)
    row.update(
        a=ea,
        b=eb,
        diff=eb - ea,
        diff_low=lo,
        diff_high=hi,
        p_value=boot_p_value(np.asarray(boots, dtype=float)),
        rel_diff=(eb - ea) / abs(ea) if ea else np.nan,
    )
    level = f"{ci:.0%}"
    if n < MIN_N:
        row["verdict"] = (
            f"{metric}: too few common cells to tell (n={n}, fewer than {MIN_N}; "
            f"b {format_metric(metric, eb)} vs a {format_metric(metric, ea)})."
        )
    elif lo > 0 or hi < 0:
        b_better = (lo > 0) == hib
        row["better"] = "b" if b_better else "a"
        word = "higher" if lo > 0 else "lower"
        row["verdict"] = (
            f"{metric}: b is {word} ({format_metric(metric, eb)} vs {format_metric(metric, ea)}, diff {format_metric(metric, eb - ea)}, "
            f"{level} CI {format_metric(metric, lo)} to {format_metric(metric, hi)}, n={n}) — "
            f"{'better' if b_better else 'worse'}."
        )
    else:
        row["verdict"] = (
            f"{metric}: no clear difference ({format_metric(metric, eb)} vs {format_metric(metric, ea)}; {level} CI of the "
            f"difference {format_metric(metric, lo)} to {format_metric(metric, hi)} includes 0, n={n})."
        )
    return row


def compare_sweeps(
    a: Any,
    b: Any,
    metric: str | Sequence[str] | None = None,
    *,
    match: str = "auto",
    stat: str = "mean",
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int | None = 0,
) -> SweepComparison:
    """Compare experiment ``b`` against ``a`` over their common cells, and what changed in the spec.

    A cell is one prompt at one setting: the same prompt (``prompt_id``) and the same model,
    temperature, top_p, max_tokens, swept params and repeat index. When the two sweeps share no
    prompt_id but ran the same prompt rows (same prompt-set fingerprint: the template or system
    message changed, so every prompt got a new id), cells are matched by prompt row instead
    (``match="prompt_index"``). Each metric is compared over the cells where both sweeps have a
    value, with a paired bootstrap interval of the difference (``llmlab.stats`` conventions:
    timings leave out errors and cache hits; ``"error"`` compares error rates).

    Args:
        a: the baseline: a sweep id, id prefix, name (newest run) or SweepResult (its ``.df`` is
            used as is, so evaluator score columns can be compared).
        b: the sweep compared against it.
        metric: a column or list of columns; default latency_ms, ttft_ms, output_tokens, cost_usd, error.
        match: ``"auto"``, ``"prompt_id"`` or ``"prompt_index"``.
        stat: ``"mean"``, ``"median"`` or ``"pNN"``.
        n_boot: bootstrap resamples.
        ci: confidence level.
        seed: random seed (same inputs and seed → same numbers).

    Returns:
        A :class:`SweepComparison`.
    """
    from llmlab.analysis.stats import metric_values

    if not 0 < ci < 1:
        raise ValidationError("ci", ci, "expected a confidence level between 0 and 1, e.g. 0.95")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValidationError("n_boot", n_boot, "expected a positive number of resamples")
    metrics = list(DEFAULT_METRICS) if metric is None else ([metric] if isinstance(metric, str) else list(metric))
    if not metrics:
        raise ValidationError("metric", metric, "name at least one metric")
    sa, sb = _Side(a, "a"), _Side(b, "b")
    for m in metrics:
        for side in (sa, sb):
            if m not in ("error", "error_rate", "errors") and m not in side.df.columns:
                raise ValidationError("metric", m, f"no such column in sweep {side.label} ({side.sweep_id})")
    cells, how, only_a, only_b = _pair(sa, sb, match)
    rng = np.random.default_rng(seed)
    ia, ib = cells["ia"].to_numpy(), cells["ib"].to_numpy()
    rows = []
    for m in metrics:
        va = metric_values(sa.df, m).to_numpy(dtype=float)[ia] if len(sa.df) else np.array([])
        vb = metric_values(sb.df, m).to_numpy(dtype=float)[ib] if len(sb.df) else np.array([])
        cells[f"{m}_a"], cells[f"{m}_b"] = va, vb
        rows.append(_paired_metric(va, vb, m, stat, n_boot, ci, rng))
    metrics_df = pd.DataFrame(
        rows,
        columns=["metric", "n", "a", "b", "diff", "diff_low", "diff_high", "p_value", "rel_diff", "better", "verdict"],
    )
    for col in ("a", "b", "diff", "diff_low", "diff_high", "p_value", "rel_diff"):
        metrics_df[col] = pd.array(metrics_df[col].astype(float), dtype="Float64")
    spec_a, spec_b = sa.spec, sb.spec
    from llmlab.analysis.diffing import mark_plain

    t_a, t_b = spec_a.get("template"), spec_b.get("template")
    template_words = mark_plain(t_a, t_b) if (t_a or "") != (t_b or "") else ""
    changes = _spec_changes(spec_a, spec_b)
    if not len(cells):
        why = (
            "the prompt sets differ"
            if spec_a.get("prompt_fingerprint") != spec_b.get("prompt_fingerprint")
            else "no setting is shared"
        )
        verdict = f"No common cells: {why}; nothing to compare pairwise."
    else:
        decided = [r["verdict"] for r in rows]
        verdict = " ".join(decided)
        if len(changes):
            verdict = f"Changed: {', '.join(changes['field'])}. " + verdict
    return SweepComparison(
        a=sa.sweep_id,
        b=sb.sweep_id,
        match=how,
        cells=cells.drop(columns=["ia", "ib"]),
        metrics=metrics_df,
        spec_changes=changes,
        template_diff=_text_diff(t_a, t_b, f"{sa.sweep_id} template", f"{sb.sweep_id} template"),
        system_diff=_text_diff(
            spec_a.get("system"), spec_b.get("system"), f"{sa.sweep_id} system", f"{sb.sweep_id} system"
        ),
        template_words=template_words,
        grid_diff=_grid_diff(spec_a, spec_b),
        only_a=only_a,
        only_b=only_b,
        ci=ci,
        verdict=verdict,
        templates=(t_a, t_b),
    )


# --- side-by-side output diff -------------------------------------------------------------------


class SweepDiff:
    """Outputs of two sweeps side by side with word-level differences (from :func:`diff`).

    ``cells`` holds one row per common cell: prompt_id, settings, ``prompt`` (a's), ``completion_a``,
    ``completion_b``, ``same``, ``similarity`` (0..1, word level) and ``marked`` (plain text with
    ``[-removed-]{+added+}`` markers). Printing gives plain text; a notebook renders a table with
    removed words struck through in red (left) and added words in green (right).
    """

    def __init__(self, a: str, b: str, match: str, cells: pd.DataFrame, limit: int | None) -> None:
        self.a, self.b, self.match, self.cells, self.limit = a, b, match, cells, limit

    def _shown(self) -> pd.DataFrame:
        return self.cells if self.limit is None else self.cells.head(self.limit)

    def _setting(self, row: Any) -> str:
        parts = [f"{c}={_norm(row[c])}" for c in CELL_SETTINGS if c in row.index and _norm(row[c]) not in ("",)]
        return ", ".join(parts)

    @staticmethod
    def _prompt(row: Any, quote: bool = False) -> str:
        """The start of the cell's prompt (a's text), so a reader knows what was asked."""
        from llmlab.analysis.charts import SNIPPET
        from llmlab.text import snip

        text = snip(row.get("prompt"), SNIPPET)
        return (f' "{text}"' if quote else text) if text else ""

    def to_text(self) -> str:
        """Plain text: per cell, both outputs and the marked word diff."""
        shown = self._shown()
        head = f"diff {self.a} (a) → {self.b} (b): {len(self.cells)} cells, {int((~self.cells['same']).sum()) if len(self.cells) else 0} differ"
        lines = [head]
        for _, row in shown.iterrows():
            lines.append("")
            lines.append(
                f"── {row['prompt_id']}{self._prompt(row, quote=True)}  {self._setting(row)}  (similarity {row['similarity']:.2f})"
            )
            lines.append(f"a: {_shown_text(row['completion_a'])}")
            lines.append(f"b: {_shown_text(row['completion_b'])}")
            if not row["same"]:
                lines.append(f"Δ: {row['marked']}")
        if len(shown) < len(self.cells):
            lines.append(f"\n… {len(self.cells) - len(shown)} more cells (see .cells)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        from llmlab.analysis.diffing import html_pair

        shown = self._shown()
        out = [
            f"<div>diff <b>{html.escape(self.a)}</b> (a) → <b>{html.escape(self.b)}</b> (b): {len(self.cells)} cells, "
            f"{int((~self.cells['same']).sum()) if len(self.cells) else 0} differ</div>",
            '<table class="llmlab-diff"><thead><tr><th>prompt / setting</th><th>a</th><th>b</th><th>sim.</th></tr></thead><tbody>',
        ]
        for _, row in shown.iterrows():
            ha, hb = html_pair(row["completion_a"], row["completion_b"])
            out.append(
                f"<tr><td style='text-align:left;vertical-align:top'><code>{html.escape(str(row['prompt_id']))}</code><br>"
                f"{html.escape(self._prompt(row))}<br>"
                f"<small>{html.escape(self._setting(row))}</small></td>"
                f"<td style='text-align:left;vertical-align:top;white-space:pre-wrap'>{ha}</td>"
                f"<td style='text-align:left;vertical-align:top;white-space:pre-wrap'>{hb}</td>"
                f"<td style='vertical-align:top'>{row['similarity']:.2f}</td></tr>"
            )
        out.append("</tbody></table>")
        if len(shown) < len(self.cells):
            out.append(f"<div>… {len(self.cells) - len(shown)} more cells (see <code>.cells</code>)</div>")
        return "\n".join(out)


def _shown_text(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return "(not stored)"
    return str(value)


def diff(
    a: Any,
    b: Any,
    prompt_id: str | Sequence[str] | None = None,
    *,
    match: str = "auto",
    only_changed: bool = False,
    limit: int | None = 20,
    **where: Any,
) -> SweepDiff:
    """Outputs of two sweeps side by side, word-level differences highlighted (``ll.diff``).

    Cells are matched like :func:`compare_sweeps` (same prompt and setting). In a notebook the
    result renders as a table (removed words red and struck through, added words green); printed,
    it is plain text with ``[-removed-]{+added+}`` markers.

    Args:
        a: the baseline sweep (id, id prefix, name, or SweepResult).
        b: the other sweep.
        prompt_id: only this prompt (or these); with prompt-row matching either side's id works.
        match: ``"auto"``, ``"prompt_id"`` or ``"prompt_index"``.
        only_changed: leave out cells whose outputs are identical.
        limit: cells shown when rendering (``.cells`` always has all); None shows all.
        **where: setting filters, e.g. ``model="local/tiny", temperature=0.7``.

    Returns:
        A :class:`SweepDiff`.
    """
    from llmlab.analysis.diffing import mark_plain, similarity

    unknown = [k for k in where if k not in CELL_SETTINGS]
    if unknown:
        raise ValidationError(
            unknown[0], where[unknown[0]], f"not a setting; filter on one of {', '.join(CELL_SETTINGS)}"
        )
    sa, sb = _Side(a, "a"), _Side(b, "b")
    cells, how, _, _ = _pair(sa, sb, match)
    ia, ib = cells["ia"].to_numpy(), cells["ib"].to_numpy()
    prompts = sa.df["prompt"] if "prompt" in sa.df else pd.Series([None] * len(sa.df), index=sa.df.index)
    cells["prompt"] = prompts.iloc[ia].to_numpy(dtype=object) if len(cells) else []
    cells["completion_a"] = sa.df["completion"].iloc[ia].to_numpy(dtype=object) if len(cells) else []
    cells["completion_b"] = sb.df["completion"].iloc[ib].to_numpy(dtype=object) if len(cells) else []
    mask = pd.Series(True, index=cells.index)
    if prompt_id is not None:
        wanted = {prompt_id} if isinstance(prompt_id, str) else set(prompt_id)
        hit = cells["prompt_id"].astype(str).isin(wanted)
        if "prompt_id_b" in cells:
            hit |= cells["prompt_id_b"].astype(str).isin(wanted)
        if not hit.any():
            raise ValidationError(
                "prompt_id",
                prompt_id,
                f"not among the {cells['prompt_id'].nunique() if len(cells) else 0} prompts common to both sweeps",
            )
        mask &= hit
    for key, value in where.items():
        mask &= cells[key].map(_norm) == _norm(value)
    cells = cells[mask].drop(columns=["ia", "ib"]).reset_index(drop=True)
    texts = list(zip(cells["completion_a"], cells["completion_b"]))
    cells["same"] = [_text_or_none(x) == _text_or_none(y) for x, y in texts]
    cells["similarity"] = [similarity(_text_or_none(x), _text_or_none(y)) for x, y in texts]
    cells["marked"] = [mark_plain(_text_or_none(x), _text_or_none(y)) for x, y in texts]
    if only_changed:
        cells = cells[~cells["same"]].reset_index(drop=True)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise ValidationError("limit", limit, "expected a positive integer or None")
    return SweepDiff(sa.sweep_id, sb.sweep_id, how, cells, limit)


def _text_or_none(value: Any) -> str | None:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value)


# --- export / import ----------------------------------------------------------------------------


def _span_value_columns() -> list[str]:
    from llmlab.store import migrations

    return [name for name, _ in getattr(migrations, "SPAN_VALUE_COLUMNS", [])]


def _columns(db_read: Any, table: str) -> list[str]:
    return [r[1] for r in db_read(f"PRAGMA table_info({table})")]


def export_sweep(sweep_id: Any, out: str | Path, *, include_cache: bool = True) -> Path:
    """Write one experiment to a self-contained file another home can import.

    The file is JSON (gzip-compressed when the name ends in ``.gz``) holding the sweep record (spec,
    info, metadata), tags, every call row, the sweep's spans (canonical row, attributes and the
    OTLP protobuf bytes in base64) and, with ``include_cache``, the cache entries of its calls (so
    a re-run on the other machine costs nothing). Stored JSON is copied verbatim, so an import
    gives back exactly the same frame.

    Args:
        sweep_id: an id, id prefix, name (newest) or SweepResult.
        out: ``*.json`` or ``*.json.gz``.
        include_cache: also export the cached responses of the sweep's calls.

    Returns:
        The path written.
    """
    path = Path(out)
    if not (path.name.endswith(".json") or path.name.endswith(".gz")):
        raise ValidationError("out", str(out), "expected a file name ending in .json or .json.gz")
    store = _store()
    sid = _resolve(store, sweep_id)
    cols = list(_columns(store.read, "sweeps"))
    rec = dict(zip(cols, store.read(f"SELECT {', '.join(cols)} FROM sweeps WHERE sweep_id=?", (sid,))[0]))
    tags = [
        {"tag": t, "created_at": c}
        for t, c in store.read("SELECT tag, created_at FROM sweep_tags WHERE sweep_id=? ORDER BY tag", (sid,))
    ]
    calls = [
        {"call_id": c, "seq": s, "status": st, "created_at": ca, "row_json": rj}
        for c, s, st, ca, rj in store.read(
            "SELECT call_id, seq, status, created_at, row_json FROM calls WHERE sweep_id=? ORDER BY seq", (sid,)
        )
    ]
    # every stored column (later migrations materialise span values out of row_json), minus outbox state
    span_cols = [c for c in _columns(store.read, "spans") if c not in ("otlp", "export_state", "lease_until")]
    quoted = ", ".join(f'"{c}"' for c in span_cols)
    spans = []
    for r in store.read(
        f"SELECT {quoted}, otlp FROM spans WHERE sweep_id = ? OR trace_id IN "
        "(SELECT trace_id FROM spans WHERE sweep_id = ?) ORDER BY start_ns",
        (sid, sid),
    ):
        span = dict(zip(span_cols, r[:-1]))
        span["otlp_b64"] = base64.b64encode(bytes(r[-1])).decode("ascii") if r[-1] is not None else None
        spans.append(span)
    cache = []
    if include_cache:
        cache = [
            {"call_id": c, "model": m, "created_at": ca, "response_json": rj}
            for c, m, ca, rj in store.read(
                "SELECT call_id, model, created_at, response_json FROM cache WHERE call_id IN "
                "(SELECT call_id FROM calls WHERE sweep_id=?)",
                (sid,),
            )
        ]
    doc = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "llmlab_version": _versions().get("llmlab"),
        "sweep": rec,
        "tags": tags,
        "calls": calls,
        "spans": spans,
        "cache": cache,
    }
    data = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(gzip.compress(data, compresslevel=6, mtime=0) if path.name.endswith(".gz") else data)
    tmp.replace(path)  # never leave a half-written export under the real name
    return path


def _read_export(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ValidationError("file", str(path), "file not found")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValidationError("file", str(path), f"corrupt gzip data ({exc})") from None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValidationError("file", str(path), f"not an llmlab export (invalid JSON: {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        raise ValidationError("file", str(path), "not an llmlab export (no 'format': 'llmlab.experiment')")
    if not isinstance(doc.get("version"), int) or doc["version"] > EXPORT_VERSION:
        raise ValidationError(
            "file",
            str(path),
            f"export format version {doc.get('version')!r} is newer than this llmlab reads ({EXPORT_VERSION}); upgrade llmlab",
        )
    sweep = doc.get("sweep")
    if not isinstance(sweep, dict) or not isinstance(sweep.get("sweep_id"), str) or "spec_json" not in sweep:
        raise ValidationError("file", str(path), "the export has no sweep record")
    for key in ("calls", "spans", "tags", "cache"):
        if not isinstance(doc.get(key, []), list):
            raise ValidationError("file", str(path), f"'{key}' must be a list")
    return doc


def import_sweep(path: str | Path, *, replace: bool = False) -> str:
    """Load an :func:`export_sweep` file into the configured home; returns the sweep id.

    After the import, ``ll.load(id)``, ``ll.sweeps()``, ``ll.spans(sweep_id=id, source="local")``
    and the charts work as on the machine that ran it. Imported spans are not queued for export
    to this home's DataKit. Cache entries already present here are kept.

    Args:
        path: the ``.json``/``.json.gz`` file.
        replace: if the sweep already exists here, replace it (default: refuse).

    Raises:
        ValidationError: unreadable file, not an export, or the sweep exists and not ``replace``.
    """
    path = Path(path)
    doc = _read_export(path)
    store = _store()
    rec = doc["sweep"]
    sid = rec["sweep_id"]
    cols = _columns(store.read, "sweeps")
    span_cols = _columns(store.read, "spans")
    keep = [c for c in cols if c in rec]
    if "created_at" not in keep:
        raise ValidationError("file", str(path), "the sweep record has no created_at")

    def fn(db: sqlite3.Connection) -> None:
        if db.execute("SELECT 1 FROM sweeps WHERE sweep_id=?", (sid,)).fetchone():
            if not replace:
                raise ValidationError(
                    "file",
                    str(path),
                    f"sweep {sid} is already in {_home_hint(store)}; delete it first or pass replace=True (--replace)",
                )
            _delete_in(db, sid, keep_cache=True)
        db.execute(
            f"INSERT INTO sweeps ({', '.join(keep)}) VALUES ({', '.join('?' * len(keep))})", [rec[c] for c in keep]
        )
        db.executemany(
            "INSERT OR IGNORE INTO sweep_tags (sweep_id, tag, created_at) VALUES (?,?,?)",
            [(sid, t["tag"], t["created_at"]) for t in doc.get("tags", [])],
        )
        db.executemany(
            "INSERT INTO calls (sweep_id, call_id, seq, status, created_at, row_json) VALUES (?,?,?,?,?,?)",
            [(sid, c["call_id"], c["seq"], c["status"], c["created_at"], c["row_json"]) for c in doc["calls"]],
        )
        spans = doc.get("spans", [])
        if spans:
            local = [c for c in span_cols if c not in ("otlp", "export_state", "lease_until")]
            names = [c for c in local if any(c in sp for sp in spans[:1])]
            db.executemany(
                f"INSERT OR IGNORE INTO spans ({', '.join(chr(34) + c + chr(34) for c in names)}, otlp, export_state) "
                f"VALUES ({', '.join('?' * len(names))}, ?, NULL)",  # imported spans are not re-exported from here
                [
                    [sp.get(c) for c in names] + [base64.b64decode(sp["otlp_b64"]) if sp.get("otlp_b64") else b""]
                    for sp in spans
                ],
            )
            # an export from an older schema carries these values only inside row_json
            missing = [c for c in _span_value_columns() if c in local and c not in names]
            if missing:
                sets = ", ".join(f"\"{c}\" = json_extract(row_json, '$.{c}')" for c in missing)
                db.execute(f"UPDATE spans SET {sets} WHERE sweep_id = ? AND json_valid(row_json)", (sid,))
        db.executemany(
            "INSERT OR IGNORE INTO cache (call_id, model, created_at, response_json) VALUES (?,?,?,?)",
            [(c["call_id"], c["model"], c["created_at"], c["response_json"]) for c in doc.get("cache", [])],
        )

    try:
        store.write(fn)
    except (KeyError, TypeError) as exc:
        raise ValidationError("file", str(path), f"malformed export ({type(exc).__name__}: {exc})") from None
    except sqlite3.Error as exc:
        raise StoreError(f"import of {path} failed: {exc}") from None
    return sid
