"""A call's stored row (``calls.row_json``) and the cached response that is derived from it.

**Compact rows.** A finished call's row holds ~40 keys, half of them at a default (no seed, no cost, no
error, not cached, no variant names...), and repeats ``sweep_id``, ``call_id`` and ``status`` that the
``calls`` table keeps in columns. Written with ``calls.fmt = 1`` (:data:`COMPACT`), ``row_json`` leaves
those out; :func:`unpack_row` puts them back, so every reader gets the row it got before: the same keys,
values and types (after JSON), in the same order. A row that would not come back exactly (one not built
by the runner) is stored whole, with ``fmt`` NULL, as every row of a home written before migration m011 is.

**The call row is the cache.** A cache entry's response is :data:`CACHE_FIELDS` of the call row that
paid for it; written in the same transaction as that row, the entry holds only a reference to it
(``cache.sweep_id``, ``response_json`` NULL). Whatever replaces or deletes the row first keeps the entry
whole: :func:`keep_cached_responses` (a row rewritten with other values) and :func:`release_sweep_rows`
(a sweep deleted while its entries stay) point the entry at another row holding the same response, or
write the response into the entry. Entries of older homes and imported ones hold their response.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "CACHE_FIELDS",
    "COMPACT",
    "cache_entries",
    "cache_rows",
    "dumps",
    "is_response_of",
    "keep_cached_responses",
    "pack_row",
    "release_sweep_rows",
    "response_of",
    "unpack_row",
]

#: ``calls.fmt`` of a compact row; NULL: ``row_json`` is the whole row.
COMPACT = 1

#: A cached response: these values of the call row that paid for it.
CACHE_FIELDS = (
    "completion",
    "finish_reason",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "tokens_estimated",
    "response_model",
    "latency_ms",
    "ttft_ms",
    "tokens_per_s",
    "itl_ms",
    "trace_id",
    "span_id",
    "start_time",
    "end_time",
    "service",
    "cost_usd",
)

_COLUMN = object()  # the key's value is the calls row's column of the same name

#: Format 1: the runner's keys in the runner's order (``llmlab.run.rows.base_row``), each with the value at
#: which it is left out. Released: never edit it (stored rows depend on it), add a format 2 instead.
_FORMAT_1: tuple[tuple[str, Any], ...] = (
    ("sweep_id", _COLUMN),
    ("call_id", _COLUMN),
    ("trace_id", None),
    ("span_id", None),
    ("service", "llmlab"),
    ("start_time", None),
    ("end_time", None),
    ("latency_ms", None),
    ("ttft_ms", None),
    ("tokens_per_s", None),
    ("provider", None),
    ("model", None),
    ("response_model", None),
    ("temperature", None),
    ("top_p", None),
    ("max_tokens", None),
    ("seed", None),
    ("repeat", 0),
    ("prompt_id", None),
    ("prompt", None),
    ("completion", None),
    ("finish_reason", None),
    ("input_tokens", None),
    ("output_tokens", None),
    ("total_tokens", None),
    ("tokens_estimated", False),
    ("cost_usd", None),
    ("status", _COLUMN),
    ("error", ""),
    ("cached", False),
    ("template_name", None),
    ("system_name", None),
    ("template_hash", None),
    ("system_hash", None),
    ("spent_usd", None),
    ("queue_ms", None),
    ("attempts", 1),
    ("retries", 0),
    ("itl_ms", None),
    ("params", ""),
)
_KEYS_1 = tuple(k for k, _ in _FORMAT_1)
_DEFAULTS_1 = dict(_FORMAT_1)


def dumps(value: Any) -> str:
    """JSON as the store writes it."""
    # compact separators: a tenth of a short call's row is ", " and ": "
    return json.dumps(value, default=str, separators=(",", ":"))


def _is_default(value: Any, default: Any, column: Any) -> bool:
    if default is _COLUMN:
        default = column
    if default is None:
        return value is None
    return type(value) is type(default) and value == default


def pack_row(row: Mapping[str, Any], sweep_id: str, status: str) -> tuple[str, int | None]:
    """``(row_json, fmt)`` of ``row`` stored in ``calls`` under ``sweep_id``/``row["call_id"]``/``status``:
    compact when the row comes back exactly (it has the runner's keys, in its order, before any other), else whole."""
    keys = tuple(row)
    if keys[: len(_KEYS_1)] != _KEYS_1:
        return dumps(dict(row)), None
    columns = {"sweep_id": sweep_id, "call_id": row["call_id"], "status": status}
    kept = {k: v for k, v in row.items() if k not in _DEFAULTS_1 or not _is_default(v, _DEFAULTS_1[k], columns.get(k))}
    return dumps(kept), COMPACT


def unpack_row(row_json: str, fmt: int | None, sweep_id: str, call_id: str, status: str) -> dict[str, Any]:
    """The row the runner built, from a ``calls`` row (``row_json``, ``fmt`` and its key columns)."""
    stored = json.loads(row_json)
    if fmt is None:
        return stored  # type: ignore[no-any-return]
    if fmt != COMPACT:
        raise ValueError(f"calls row of an unknown format {fmt!r} (written by a newer llmlab?)")
    columns = {"sweep_id": sweep_id, "call_id": call_id, "status": status}
    out = {k: stored[k] if k in stored else (columns[k] if d is _COLUMN else d) for k, d in _FORMAT_1}
    out.update((k, v) for k, v in stored.items() if k not in _DEFAULTS_1)
    return out


def response_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """The cached response a call row holds."""
    return {k: row.get(k) for k in CACHE_FIELDS}


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal with the same types (``False`` is not ``0``) and key order."""
    return list(a) == list(b) and all(type(a[k]) is type(b[k]) and a[k] == b[k] for k in a)


def is_response_of(entry: Mapping[str, Any], row: Mapping[str, Any]) -> bool:
    """Whether ``entry`` is exactly the response :func:`response_of` derives from ``row`` (so it need not be stored)."""
    return _same(entry, response_of(row))


def _chunks(ids: Sequence[str], size: int = 500) -> Iterable[Sequence[str]]:
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


def _entries(db: sqlite3.Connection, call_ids: Iterable[str]) -> Iterable[tuple[str, str, str, str | None, Any]]:
    """``(call_id, model, created_at, response_json, row)`` of the cache entries of ``call_ids``: the stored
    response's text, or (None and) the call row the entry is. An entry whose call row is missing (only a
    home edited by hand or by an older llmlab has one) is left out: its call is not answered."""
    ids = list(dict.fromkeys(call_ids))
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        for cid, model, created, response, row_json, fmt, sid, status in db.execute(
            "SELECT c.call_id, c.model, c.created_at, c.response_json, k.row_json, k.fmt, k.sweep_id, k.status "
            "FROM cache c LEFT JOIN calls k ON c.response_json IS NULL AND k.sweep_id = c.sweep_id "
            f"AND k.call_id = c.call_id WHERE c.call_id IN ({marks})",
            chunk,
        ):
            if response is not None:
                yield cid, model, created, response, None
            elif row_json is not None:
                yield cid, model, created, None, unpack_row(row_json, fmt, sid, cid, status)


def cache_entries(db: sqlite3.Connection, call_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``call_id`` → the cached response, for each of ``call_ids`` that has one."""
    return {
        cid: json.loads(text) if text is not None else response_of(row)
        for cid, _, _, text, row in _entries(db, call_ids)
    }


def cache_rows(db: sqlite3.Connection, call_ids: Iterable[str]) -> list[tuple[str, str, str, str]]:
    """``(call_id, model, created_at, response_json)`` of the cache entries of ``call_ids``, each with its
    response's JSON (a stored one verbatim)."""
    return [
        (cid, model, created, text if text is not None else dumps(response_of(row)))
        for cid, model, created, text, row in _entries(db, call_ids)
    ]


def _referenced_rows(
    db: sqlite3.Connection, where: str, params: Sequence[Any]
) -> list[tuple[str, str, dict[str, Any]]]:
    """``(call_id, sweep_id, response)`` of the cache entries that are a call row, selected by ``where``."""
    return [
        (cid, sid, response_of(unpack_row(row_json, fmt, sid, cid, status)))
        for cid, sid, row_json, fmt, status in db.execute(
            "SELECT c.call_id, c.sweep_id, k.row_json, k.fmt, k.status FROM cache c JOIN calls k "
            f"ON k.sweep_id = c.sweep_id AND k.call_id = c.call_id WHERE c.response_json IS NULL AND {where}",
            params,
        )
    ]


def _materialize(db: sqlite3.Connection, call_id: str, response: Mapping[str, Any]) -> None:
    db.execute("UPDATE cache SET response_json = ?, sweep_id = NULL WHERE call_id = ?", (dumps(response), call_id))


def keep_cached_responses(db: sqlite3.Connection, rows: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
    """Before call rows replace the rows stored under the same keys, given as ``(sweep_id, call_id, the new
    row's response)``: a cache entry that is one of those rows keeps its response (written into the entry)
    unless the new row holds the same one. For rows written without a cache entry of their own (a cache hit,
    an error)."""
    by_sweep: dict[str, dict[str, dict[str, Any]]] = {}
    for sid, cid, response in rows:
        by_sweep.setdefault(sid, {})[cid] = response
    for sid, new in by_sweep.items():
        for chunk in _chunks(list(new)):
            where = f"c.sweep_id = ? AND c.call_id IN ({','.join('?' * len(chunk))})"
            for cid, _, response in _referenced_rows(db, where, [sid, *chunk]):
                if not _same(response, new[cid]):
                    _materialize(db, cid, response)


def release_sweep_rows(db: sqlite3.Connection, sweep_id: str) -> None:
    """Before the call rows of ``sweep_id`` are deleted: every cache entry that is one of them and stays
    points at another sweep's row holding the same response, or gets the response written into it."""
    where = "c.sweep_id = ? AND c.call_id IN (SELECT call_id FROM calls WHERE sweep_id = ?)"
    for cid, _, response in _referenced_rows(db, where, (sweep_id, sweep_id)):
        for other, row_json, fmt, status in db.execute(
            "SELECT sweep_id, row_json, fmt, status FROM calls WHERE call_id = ? AND sweep_id != ?", (cid, sweep_id)
        ):
            if _same(response, response_of(unpack_row(row_json, fmt, other, cid, status))):
                db.execute("UPDATE cache SET sweep_id = ? WHERE call_id = ?", (other, cid))
                break
        else:
            _materialize(db, cid, response)
