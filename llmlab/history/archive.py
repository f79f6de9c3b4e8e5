"""Moving an experiment between homes: :func:`export_sweep` writes one sweep to a self-contained JSON
file (gzip when named ``*.gz``), :func:`import_sweep` loads such a file into the configured home.

Stored JSON (spec, info, call rows, cached responses) is copied verbatim, so an import gives back
exactly the same frame; span protobufs travel base64-encoded.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import gzip
import json
import os
import re
import sqlite3
import stat
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmlab.errors import ConfigError, LlmlabError, StoreError, ValidationError
from llmlab.history.catalog import _home_hint, _resolve, _store
from llmlab.plan.grid import grid_from_spec
from llmlab.run.provenance import package_versions
from llmlab.store import experiments
from llmlab.store.ratings import check_rating

__all__ = ["EXPORT_FORMAT", "EXPORT_VERSION", "MAX_IMPORT_MB", "export_sweep", "import_sweep"]

EXPORT_FORMAT = "llmlab.experiment"
EXPORT_VERSION = 1


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
    rows = experiments.export_rows(store, _resolve(store, sweep_id), include_cache=include_cache)
    spans = []
    for span in rows["spans"]:
        otlp = span.pop("otlp")
        span["otlp_b64"] = base64.b64encode(otlp).decode("ascii") if otlp is not None else None
        spans.append(span)
    doc = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "llmlab_version": package_versions().get("llmlab"),
        "sweep": rows["sweep"],
        "tags": rows["tags"],
        "calls": rows["calls"],
        "spans": spans,
        "cache": rows["cache"],
        "ratings": rows["ratings"],
        "prompt_versions": rows["prompt_versions"],
    }
    data = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(gzip.compress(data, compresslevel=6, mtime=0) if path.name.endswith(".gz") else data)
    tmp.replace(path)  # never leave a half-written export under the real name
    return path


#: Largest export ``import_sweep`` reads, in MiB, both on disk and once decompressed (a gzip bomb stops
#: when its inflated size passes this, while inflating); ``LLMLAB_IMPORT_MAX_MB`` raises or lowers it.
MAX_IMPORT_MB = 256
_CHUNK = 1 << 20
#: a sweep id, call id, trace or span id: printable, no path separators, no surrounding blanks
_ID = re.compile(r"[^\x00-\x1f\x7f/\\]{1,200}")
_HEX = re.compile(r"[0-9a-fA-F]{1,64}")
#: JSON text columns that must hold an object (any other ``*_json`` field must still parse)
_OBJECT_JSON = ("spec_json", "info_json", "row_json", "attrs_json", "response_json")
_SCALAR = (str, int, float, type(None))


def _limit_bytes() -> int:
    raw = os.environ.get("LLMLAB_IMPORT_MAX_MB")
    try:
        mb = float(raw) if raw else MAX_IMPORT_MB
    except ValueError:
        raise ConfigError(f"LLMLAB_IMPORT_MAX_MB={raw!r}: must be a number of MiB") from None
    return max(1, int(mb * 1024 * 1024))


def _bad(path: Path, problem: str) -> ValidationError:
    return ValidationError("file", str(path), problem)


def _read_bounded(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is gzip, never more than the cap (checked while reading/inflating)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise _bad(path, "file not found") from None
    except OSError as exc:
        raise _bad(path, f"cannot read it ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):  # a directory, FIFO (would block), device (/dev/zero never ends)
        raise _bad(path, "not a regular file")
    limit = _limit_bytes()
    cap = f"{limit / 2**20:g} MiB (LLMLAB_IMPORT_MAX_MB)"
    if st.st_size > limit:
        raise _bad(path, f"the file is {st.st_size / 2**20:.1f} MiB, over the import limit of {cap}")
    chunks: list[bytes] = []  # not a growing bytearray: its doubling reallocations would triple the peak
    size = 0
    gz = False
    try:
        with open(path, "rb") as raw:
            gz = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
            while chunk := stream.read(_CHUNK):
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    what = "decompresses to" if gz else "is"
                    raise _bad(path, f"the export {what} more than {cap}; refusing to read further")
    except (OSError, EOFError, zlib.error) as exc:
        raise _bad(path, f"corrupt gzip data ({exc})" if gz else f"cannot read it ({exc})") from None
    return b"".join(chunks)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate key {dup!r}")
    return obj


def _check_row(path: Path, where: str, row: Any, required: Sequence[str]) -> dict[str, Any]:
    """One row of the file: an object of scalar fields, the ``required`` ones present and every
    ``*_json`` field parseable JSON (an object for the known ones)."""
    if not isinstance(row, dict):
        raise _bad(path, f"{where} must be an object")
    for key in required:
        if row.get(key) is None:
            raise _bad(path, f"{where}.{key} is missing")
    for key, value in row.items():
        if not isinstance(value, _SCALAR) and not key.endswith("_b64"):
            raise _bad(path, f"{where}.{key} must be a string, number or null, not {type(value).__name__}")
        if isinstance(value, int) and not -(2**63) <= value < 2**63:  # SQLite's INTEGER is 64-bit
            raise _bad(path, f"{where}.{key}={value} does not fit a 64-bit integer")
        if key.endswith("_json") and value is not None:
            if not isinstance(value, str):
                raise _bad(path, f"{where}.{key} must be JSON text")
            try:
                parsed = json.loads(value)
            except ValueError as exc:
                raise _bad(path, f"{where}.{key} is not valid JSON ({exc})") from None
            if key in _OBJECT_JSON and not isinstance(parsed, dict):
                raise _bad(path, f"{where}.{key} must be a JSON object")
    return row


def _check_id(path: Path, where: str, value: Any, pattern: re.Pattern[str] = _ID) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value) or value != value.strip():
        raise _bad(path, f"{where}={value!r} is not a well-formed id")
    return value


def _check_int(path: Path, where: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(path, f"{where} must be an integer")


def _read_export(path: Path) -> dict[str, Any]:
    """Read and verify the whole file (format, version, ids, every JSON field) before anything is written."""
    raw = _read_bounded(path)
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _bad(path, f"not an llmlab export (invalid JSON: {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        raise _bad(path, "not an llmlab export (no 'format': 'llmlab.experiment')")
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _bad(path, f"version={version!r}: the export format version must be an integer from 1")
    if version > EXPORT_VERSION:
        raise _bad(
            path,
            f"export format version {version!r} is newer than this llmlab reads ({EXPORT_VERSION}); upgrade llmlab",
        )
    sweep = doc.get("sweep")
    if not isinstance(sweep, dict) or "sweep_id" not in sweep or "spec_json" not in sweep:
        raise _bad(path, "the export has no sweep record")
    _check_row(path, "sweep", sweep, ("sweep_id", "created_at", "spec_json"))
    sid = _check_id(path, "sweep.sweep_id", sweep["sweep_id"])
    for key in ("calls", "spans", "tags", "cache", "ratings", "prompt_versions"):
        if not isinstance(doc.get(key, []), list):
            raise _bad(path, f"'{key}' must be a list")
    for i, tag in enumerate(doc.get("tags", [])):
        _check_row(path, f"tags[{i}]", tag, ("tag", "created_at"))
        try:
            experiments.check_tag(tag["tag"], f"tags[{i}].tag")
        except ValidationError as exc:
            raise _bad(path, f"tags[{i}].tag={tag['tag']!r}: {exc.problem}") from None
    seen: set[str] = set()
    for i, call in enumerate(doc.get("calls", [])):
        _check_row(path, f"calls[{i}]", call, ("call_id", "seq", "status", "created_at", "row_json"))
        if _check_id(path, f"calls[{i}].call_id", call["call_id"]) in seen:
            raise _bad(path, f"calls[{i}].call_id={call['call_id']!r} appears twice")
        seen.add(call["call_id"])
        _check_int(path, f"calls[{i}].seq", call["seq"])
    for i, span in enumerate(doc.get("spans", [])):
        _check_row(path, f"spans[{i}]", span, ("trace_id", "span_id", "start_ns", "end_ns", "row_json"))
        _check_id(path, f"spans[{i}].trace_id", span["trace_id"], _HEX)
        _check_id(path, f"spans[{i}].span_id", span["span_id"], _HEX)
        _check_int(path, f"spans[{i}].start_ns", span["start_ns"])
        _check_int(path, f"spans[{i}].end_ns", span["end_ns"])
        if span.get("sweep_id") not in (None, sid):
            _check_id(path, f"spans[{i}].sweep_id", span["sweep_id"])
        b64 = span.get("otlp_b64")
        if b64 is not None:
            try:
                span["otlp"] = base64.b64decode(b64, validate=True) if isinstance(b64, str) else None
            except (binascii.Error, ValueError) as exc:
                raise _bad(path, f"spans[{i}].otlp_b64 is not valid base64 ({exc})") from None
            if span["otlp"] is None:
                raise _bad(path, f"spans[{i}].otlp_b64 must be a base64 string")
    for i, entry in enumerate(doc.get("cache", [])):
        _check_row(path, f"cache[{i}]", entry, ("call_id", "model", "created_at", "response_json"))
        _check_id(path, f"cache[{i}].call_id", entry["call_id"])
    return doc


def _request_ids(spec: dict[str, Any]) -> tuple[dict[str, str] | None, str]:
    """(call_id → model of every request the sweep's spec expands to, recomputed as the runner does,
    or None with the reason when the spec cannot be expanded here: prompts too large to have been
    stored, a provider not registered on this machine)."""
    try:
        grid = grid_from_spec(spec)
    except (LlmlabError, ValueError, TypeError, KeyError) as exc:
        return None, f"its requests cannot be recomputed here: {exc}"
    return {c.call_id: c.qualified_model for c in grid.calls}, "they answer no request of the imported sweep"


def _verified_cache(path: Path, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The file's cache entries that answer one of its own sweep's calls for exactly that call's request."""
    cache = doc.get("cache", [])
    if not cache:
        return []
    own = {c["call_id"] for c in doc["calls"]}
    requests, why = _request_ids(json.loads(doc["sweep"]["spec_json"]))
    kept = [
        e for e in cache if requests is not None and e["call_id"] in own and requests.get(e["call_id"]) == e["model"]
    ]
    if len(kept) < len(cache):
        warnings.warn(
            f"{path}: {len(cache) - len(kept)} of {len(cache)} cached responses not imported ({why})", stacklevel=3
        )
    return kept


def _own_ratings(path: Path, doc: dict[str, Any], sid: str) -> list[dict[str, Any]]:
    """Ratings of the file's own calls only (a rating can no more be planted on another sweep than an
    answer), each a valid rating with its time."""
    own = {c.get("call_id") for c in doc.get("calls", []) if isinstance(c, dict)}
    kept = []
    for i, r in enumerate(doc.get("ratings", [])):
        _check_row(path, f"ratings[{i}]", r, ("call_id", "rating", "rated_at"))
        try:
            check_rating(r["rating"], r.get("note"))
        except ValidationError as exc:
            raise _bad(path, f"ratings[{i}]: {exc}") from None
        if r["call_id"] in own and r.get("sweep_id") in (None, sid):
            kept.append({**r, "sweep_id": sid})
    return kept


def import_sweep(path: str | Path, *, replace: bool = False) -> str:
    """Load an :func:`export_sweep` file into the configured home; returns the sweep id.

    After the import, ``ll.load(id)``, ``ll.sweeps()``, ``ll.spans(sweep_id=id, source="local")``
    and the charts work as on the machine that ran it. Imported spans are not queued for export
    to this home's DataKit. Cache entries already present here are kept.

    The whole file is verified before anything is written, and written in one transaction: its
    size (at most ``MAX_IMPORT_MB``, also once decompressed), format and version, well-formed ids,
    every JSON field. A cache entry is imported only when it answers a call of the imported sweep
    and its call id is that call's request hash, recomputed from the sweep's spec as the runner
    does; others are dropped with a warning (a file cannot plant answers for other sweeps).

    Args:
        path: the ``.json``/``.json.gz`` file.
        replace: if the sweep already exists here, replace it (default: refuse).

    Raises:
        ValidationError: unreadable file, not an export, a malformed field, or the sweep exists and
            not ``replace``.
        StoreError: the store refused the rows (nothing is written).
    """
    path = Path(path)
    doc = _read_export(path)
    rec = doc["sweep"]
    sid = rec["sweep_id"]
    cache = _verified_cache(path, doc)
    store = _store()
    spans = [{**sp, "otlp": sp.get("otlp")} for sp in doc.get("spans", []) if sp.get("sweep_id") in (None, sid)]
    try:
        written = experiments.import_rows(
            store,
            rec,
            tags=doc.get("tags", []),
            calls=doc["calls"],
            spans=spans,
            cache=cache,
            replace=replace,
            ratings=_own_ratings(path, doc, sid),
            prompt_versions=doc.get("prompt_versions", []),
        )
    except (KeyError, TypeError) as exc:
        raise _bad(path, f"malformed export ({type(exc).__name__}: {exc})") from None
    except sqlite3.Error as exc:
        raise StoreError(f"import of {path} failed, nothing written: {exc}") from None
    if not written:
        raise _bad(
            path, f"sweep {sid} is already in {_home_hint(store)}; delete it first or pass replace=True (--replace)"
        )
    return sid
