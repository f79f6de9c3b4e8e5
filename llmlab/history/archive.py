"""Moving an experiment between homes: :func:`export_sweep` writes one sweep to a self-contained JSON
file (gzip when named ``*.gz``), :func:`import_sweep` loads such a file into the configured home.

Stored JSON (spec, info, call rows, cached responses) is copied verbatim, so an import gives back
exactly the same frame; span protobufs travel base64-encoded.
"""

from __future__ import annotations

import base64
import datetime as _dt
import gzip
import json
import sqlite3
from pathlib import Path
from typing import Any

from llmlab.errors import StoreError, ValidationError
from llmlab.history.catalog import _home_hint, _resolve, _store
from llmlab.run.provenance import package_versions
from llmlab.store import experiments

__all__ = ["EXPORT_FORMAT", "EXPORT_VERSION", "export_sweep", "import_sweep"]

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
    for key in ("calls", "spans", "tags", "cache", "ratings", "prompt_versions"):
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
    if "created_at" not in rec:
        raise ValidationError("file", str(path), "the sweep record has no created_at")
    try:
        # decoded before the write, so a malformed span is reported like any other malformed row
        spans = [
            {**sp, "otlp": base64.b64decode(sp["otlp_b64"]) if sp.get("otlp_b64") else None}
            for sp in doc.get("spans", [])
        ]
        written = experiments.import_rows(
            store,
            rec,
            tags=doc.get("tags", []),
            calls=doc["calls"],
            spans=spans,
            cache=doc.get("cache", []),
            replace=replace,
            ratings=doc.get("ratings", []),
            prompt_versions=doc.get("prompt_versions", []),
        )
    except (KeyError, TypeError) as exc:
        raise ValidationError("file", str(path), f"malformed export ({type(exc).__name__}: {exc})") from None
    except sqlite3.Error as exc:
        raise StoreError(f"import of {path} failed: {exc}") from None
    if not written:
        raise ValidationError(
            "file",
            str(path),
            f"sweep {sid} is already in {_home_hint(store)}; delete it first or pass replace=True (--replace)",
        )
    return sid
