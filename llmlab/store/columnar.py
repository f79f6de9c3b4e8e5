"""A columnar (Parquet) cache of the LLM spans in the store, for fast ``ll.spans()``.

SQLite is the source of truth, but turning a million rows into Python objects costs seconds.
Spans never change once written, so finished ranges of them are copied, once, into Parquet
segments (``home/span-columns/g<generation>/seg-<lo>-<hi>.parquet``, by rowid) that pyarrow reads
column-wise in C; only the tail written since the last segment is read from SQLite. Deleting
spans bumps ``_meta.spans_generation`` (a trigger), which retires every segment: they are rebuilt
on the next read. Segment files are written to a temp name and renamed, so readers in other
processes never see half a file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from llmlab.store.migrations import SPAN_VALUE_COLUMNS

#: A tail longer than this is turned into a new segment at read time.
SEGMENT_MIN_ROWS = 50_000
ENVELOPE = ["sweep_id", "call_id", "trace_id", "span_id", "service", "start_ns", "end_ns", "parent_id", "name"]
_SEG = re.compile(r"seg-(\d+)-(\d+)\.parquet$")

_TYPES = {"REAL": pa.float64(), "INTEGER": pa.int64(), "TEXT": pa.string()}
SCHEMA = pa.schema(
    [("rowid", pa.int64())]
    + [(c, pa.int64() if c in ("start_ns", "end_ns") else pa.string()) for c in ENVELOPE]
    + [(name, _TYPES[kind]) for name, kind in SPAN_VALUE_COLUMNS]
    + [("extras", pa.string())]
)


def generation(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT value FROM _meta WHERE key = 'spans_generation'").fetchone()
    return int(row[0]) if row else 0


def _table_from_sql(db: sqlite3.Connection, where: str, params: list[Any]) -> pa.Table:
    """LLM spans matching ``where`` as an Arrow table (SQLite builds one JSON array per column)."""
    names = SCHEMA.names
    exprs = (
        ["rowid"]
        + [f'"{c}"' for c in ENVELOPE]
        + [_exact(n, k) for n, k in SPAN_VALUE_COLUMNS]
        + ["CASE WHEN row_json != '{}' THEN row_json END"]
    )
    select = ", ".join(f"json_group_array({e})" for e in exprs)
    row = db.execute(f"SELECT {select} FROM (SELECT * FROM spans WHERE {where} ORDER BY rowid)", params).fetchone()
    arrays = []
    for i, v in enumerate(row):
        kind = SCHEMA.field(i).type
        # REAL columns arrive as round-trip text (see _exact); Arrow parses them in C
        arrays.append(
            pa.array(json.loads(v), type=pa.string()).cast(kind)
            if kind == pa.float64()
            else pa.array(json.loads(v), type=kind)
        )
    return pa.Table.from_arrays(arrays, names=names)


def _exact(name: str, kind: str) -> str:
    """The SQL expression of one value column. SQLite's JSON writes a REAL with 15 significant
    digits, which changes the value; 17 (``%!.17g``) round-trip exactly."""
    if kind == "REAL":
        return f"""CASE WHEN "{name}" IS NOT NULL THEN printf('%!.17g', "{name}") END"""
    return f'"{name}"'


class SpanColumns:
    """Segments of one home; see the module docstring."""

    def __init__(self, home: Path) -> None:
        self.root = Path(home) / "span-columns"

    def _dir(self, gen: int) -> Path:
        return self.root / f"g{gen}"

    def _segments(self, gen: int) -> list[tuple[int, int, Path]]:
        d = self._dir(gen)
        if not d.is_dir():
            return []
        out = []
        for p in d.iterdir():
            m = _SEG.search(p.name)
            if m:
                out.append((int(m.group(1)), int(m.group(2)), p))
        return sorted(out)

    def _retire_old(self, gen: int) -> None:
        if not self.root.is_dir():
            return
        for p in self.root.iterdir():
            if p.is_dir() and p.name != f"g{gen}":
                shutil.rmtree(p, ignore_errors=True)

    def read(self, db: sqlite3.Connection, where: str, params: list[Any], arrow_filter: Any) -> pa.Table:
        """All LLM spans matching the filter (SQL ``where`` for the tail, ``arrow_filter`` for segments)."""
        db.execute("BEGIN")  # one snapshot for the generation, the tail and the segment bound
        try:
            gen = generation(db)
            segments = self._segments(gen)
            covered = segments[-1][1] if segments else 0
            max_rowid = db.execute("SELECT coalesce(max(rowid), 0) FROM spans").fetchone()[0]
            if max_rowid - covered >= SEGMENT_MIN_ROWS:
                self._retire_old(gen)
                new = self._write_segment(db, gen, covered + 1, max_rowid)
                if new is not None:
                    segments.append(new)
                covered = max_rowid
            tail = _table_from_sql(db, f"is_llm = 1 AND rowid > ? AND {where}", [covered, *params])
        finally:
            db.execute("COMMIT")
        tables = []
        for _, _, path in segments:
            try:
                t = pq.read_table(path, filters=arrow_filter)
            except (OSError, pa.ArrowInvalid):  # a segment vanished (retired by another process)
                return self.read_sql_only(db, where, params)
            tables.append(t)
        tables.append(tail)
        return pa.concat_tables([t.select(SCHEMA.names).cast(SCHEMA) for t in tables])

    def read_sql_only(self, db: sqlite3.Connection, where: str, params: list[Any]) -> pa.Table:
        return _table_from_sql(db, f"is_llm = 1 AND {where}", params)

    def _write_segment(self, db: sqlite3.Connection, gen: int, lo: int, hi: int) -> tuple[int, int, Path] | None:
        table = _table_from_sql(db, "is_llm = 1 AND rowid BETWEEN ? AND ?", [lo, hi])
        d = self._dir(gen)
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"seg-{lo:012d}-{hi:012d}.parquet"
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        try:
            pq.write_table(table, tmp, compression="zstd", row_group_size=256_000)
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
            return None
        return lo, hi, path


def arrow_filter(sweep_id: str | None, since: int | None, until: int | None) -> Any:
    """The pyarrow filter expression matching the SQL filters of ``ll.spans``."""
    expr = None
    for part in (
        (pc.field("sweep_id") == sweep_id) if sweep_id is not None else None,
        (pc.field("start_ns") >= since) if since is not None else None,
        (pc.field("start_ns") < until) if until is not None else None,
    ):
        if part is not None:
            expr = part if expr is None else expr & part
    return expr


__all__ = ["ENVELOPE", "SCHEMA", "SpanColumns", "arrow_filter"]
