"""SQLite point store of the embedded collector.

One file (``home/collector.db``) may be shared by several processes (a notebook kernel and
``llmlab collector`` on the same home): WAL journal, a busy timeout, and numbered migrations
applied inside ``BEGIN IMMEDIATE`` so that two processes opening a fresh file do not race
(all three from :mod:`llmlab.sqlkit`, shared with the local store).

Spans are stored for fast ingest, not in their final query shape: the indexed point columns
(time, service, status, ids, name, start, duration, customer-tag blob) are computed at ingest,
while the span itself is kept as its protobuf bytes and turned into the ``message`` JSON only
when a query asks for that column (``MessageToDict`` per span costs more than everything else).
Resource and scope of a batch are stored once in ``contexts`` and shared by their spans.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llmlab import sqlkit
from llmlab.collector.regex import compile_regex
from llmlab.errors import QueryError, StoreError
from llmlab.sqlkit import Migrations, run_script, transaction

__all__ = ["MIGRATIONS", "QueryTimeout", "SpanGroup", "Storage", "compiled_regex"]

#: Numbered schema migrations, recorded by number in ``migrations`` (the ledger collector files have always had);
#: append, never edit.
MIGRATIONS = Migrations("migrations", ledger="versions")


@MIGRATIONS
def m001_initial(db: sqlite3.Connection) -> None:
    run_script(
        db,
        """
        CREATE TABLE contexts (
            id INTEGER PRIMARY KEY,
            digest TEXT NOT NULL UNIQUE,      -- sha1 of serialized Resource + InstrumentationScope
            service TEXT NOT NULL,
            resource_json TEXT NOT NULL,      -- protojson of the Resource
            scope_json TEXT NOT NULL          -- protojson of the InstrumentationScope
        );
        CREATE TABLE spans (
            id INTEGER PRIMARY KEY,
            ctx_id INTEGER NOT NULL REFERENCES contexts(id),
            trace_id TEXT NOT NULL,           -- 32 hex digits
            span_id TEXT NOT NULL,            -- 16 hex digits
            parent_id TEXT NOT NULL,          -- 16 hex digits, "0" for a root span (as DataKit)
            service TEXT NOT NULL,
            status TEXT NOT NULL,             -- ok | error
            span_kind TEXT NOT NULL,          -- client | server | internal | producer | consumer | unspecified
            resource TEXT NOT NULL,           -- span name (also the `operation` field)
            start_us INTEGER NOT NULL,
            duration_us INTEGER NOT NULL,
            time_ms INTEGER NOT NULL,         -- start in ms: DataKit's `time`
            tags TEXT,                        -- JSON {customer_tag_name: string value}, NULL if none
            span_pb BLOB NOT NULL,            -- opentelemetry.proto.trace.v1.Span bytes
            received_ms INTEGER NOT NULL,
            UNIQUE (trace_id, span_id)
        );
        CREATE INDEX spans_time ON spans(time_ms);
        CREATE INDEX spans_service_time ON spans(service, time_ms);
        CREATE TABLE metrics (
            id INTEGER PRIMARY KEY,
            service TEXT NOT NULL,
            name TEXT NOT NULL,
            type TEXT NOT NULL,               -- gauge | sum | histogram | exponential_histogram | summary
            unit TEXT NOT NULL,
            attributes TEXT NOT NULL,         -- JSON object of the data point attributes
            time_ns INTEGER NOT NULL,
            start_time_ns INTEGER,
            value REAL,                       -- gauge/sum value, histogram/summary sum
            data TEXT NOT NULL,               -- JSON: count, sum, min, max, bucket_counts, explicit_bounds, ...
            resource_json TEXT NOT NULL
        );
        CREATE INDEX metrics_name_time ON metrics(name, time_ns);
        CREATE TABLE logs (
            id INTEGER PRIMARY KEY,
            service TEXT NOT NULL,
            time_ns INTEGER NOT NULL,
            observed_time_ns INTEGER NOT NULL,
            severity_number INTEGER NOT NULL,
            severity_text TEXT NOT NULL,
            body TEXT NOT NULL,               -- JSON of the AnyValue body (protojson)
            attributes TEXT NOT NULL,         -- JSON object
            trace_id TEXT NOT NULL,
            span_id TEXT NOT NULL,
            resource_json TEXT NOT NULL
        );
        CREATE INDEX logs_time ON logs(time_ns);
        """,
    )


@MIGRATIONS
def m002_spans_without_ids_are_kept(db: sqlite3.Connection) -> None:
    """Spans are unique by (trace_id, span_id) only when both are real ids: DataKit writes an empty or all-zero
    id as ``"0"`` and stores every such span (internal/plugins/inputs/opentelemetry/trace.go, ``byteToString``),
    where the table's UNIQUE constraint silently dropped all but the first. The table is rebuilt with a partial
    unique index instead."""
    run_script(
        db,
        """
        CREATE TABLE spans_new (
            id INTEGER PRIMARY KEY,
            ctx_id INTEGER NOT NULL REFERENCES contexts(id),
            trace_id TEXT NOT NULL,
            span_id TEXT NOT NULL,
            parent_id TEXT NOT NULL,
            service TEXT NOT NULL,
            status TEXT NOT NULL,
            span_kind TEXT NOT NULL,
            resource TEXT NOT NULL,
            start_us INTEGER NOT NULL,
            duration_us INTEGER NOT NULL,
            time_ms INTEGER NOT NULL,
            tags TEXT,
            span_pb BLOB NOT NULL,
            received_ms INTEGER NOT NULL
        );
        INSERT INTO spans_new SELECT id, ctx_id, trace_id, span_id, parent_id, service, status, span_kind,
            resource, start_us, duration_us, time_ms, tags, span_pb, received_ms FROM spans;
        DROP TABLE spans;
        ALTER TABLE spans_new RENAME TO spans;
        UPDATE spans SET trace_id = '0' WHERE trace_id = '';
        UPDATE spans SET span_id = '0' WHERE span_id = '';
        CREATE INDEX spans_time ON spans(time_ms);
        CREATE INDEX spans_service_time ON spans(service, time_ms);
        CREATE UNIQUE INDEX spans_ids ON spans(trace_id, span_id) WHERE trace_id != '0' AND span_id != '0';
        """,
    )


class QueryTimeout(QueryError):
    """A query ran past its time limit (:meth:`Storage.deadline`) and was stopped."""


class SpanGroup:
    """Spans of one (Resource, InstrumentationScope) pair, ready for insertion.

    ``rows`` are lists in the column order of :data:`Storage.SPAN_COLUMNS`; ``ctx_id`` (the first)
    is filled in by :meth:`Storage.insert_spans`.
    """

    __slots__ = ("digest", "resource_json", "rows", "scope_json", "service")

    def __init__(self, digest: str, service: str, resource_json: str, scope_json: str, rows: list[list[Any]]) -> None:
        self.digest = digest
        self.service = service
        self.resource_json = resource_json
        self.scope_json = scope_json
        self.rows = rows


def _regexp(pattern: str, value: Any) -> bool:
    if value is None:
        return False
    try:
        return compiled_regex(pattern).search(str(value)) is not None
    except UnicodeError:  # a lone surrogate cannot be handed to RE2 (UTF-8): it matches nothing
        return False


def compiled_regex(pattern: str) -> Any:
    """The pattern compiled by RE2 (cached; see :mod:`llmlab.collector.regex`): the SQL ``regexp`` function and
    DQL filters see the same few patterns once per row.

    Raises:
        QueryError: the pattern is not valid RE2.
    """
    return compile_regex(pattern)


def _num(value: Any) -> float | None:
    """SQL function dql_num(x): a number, or NULL when x is not numeric (tags are strings)."""
    if value is None or isinstance(value, (int, float)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class Storage:
    """The collector's SQLite database: span points, metric data points, log records."""

    SPAN_COLUMNS = (
        "ctx_id",
        "trace_id",
        "span_id",
        "parent_id",
        "service",
        "status",
        "span_kind",
        "resource",
        "start_us",
        "duration_us",
        "time_ms",
        "tags",
        "span_pb",
        "received_ms",
    )

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {self.path.parent}: {exc}") from exc
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._ctx_cache: dict[str, int] = {}
        self._writer = self._connect()
        # Checkpoints copy the WAL into the database and fsync it; done inside COMMIT (the
        # default) they stall ingest for tens of ms every few batches. A background thread runs
        # PASSIVE checkpoints instead (they never block writers).
        self._writer.execute("PRAGMA wal_autocheckpoint=0")
        self._writer.execute("PRAGMA journal_size_limit=67108864")
        self._migrate()
        self._dirty = 0
        self._closed = threading.Event()
        self._kick = threading.Event()
        self._ckpt_thread = threading.Thread(target=self._checkpointer, name="llmlab-collector-checkpoint", daemon=True)
        self._ckpt_thread.start()
        placeholders = ",".join("?" * len(self.SPAN_COLUMNS))
        self._insert_sql = f"INSERT OR IGNORE INTO spans ({','.join(self.SPAN_COLUMNS)}) VALUES ({placeholders})"

    # --- connections -----------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlkit.connect(self.path)
            db.create_function("regexp", 2, _regexp, deterministic=True)
            db.create_function("dql_num", 1, _num, deterministic=True)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open collector database {self.path}: {exc}") from exc
        return db

    def reader(self) -> sqlite3.Connection:
        """A connection for queries, one per thread."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._connect()
            # every 10k SQLite VM steps: stop the statement ("interrupted") once this thread's deadline passed
            db.set_progress_handler(self._past_deadline, 10_000)
            self._local.db = db
        return db

    def _past_deadline(self) -> int:
        deadline = getattr(self._local, "deadline", None)
        return 1 if deadline is not None and time.monotonic() > deadline else 0

    @contextmanager
    def deadline(self, seconds: float | None) -> Iterator[None]:
        """Queries of this thread inside the block stop after ``seconds`` (SQLite statements are interrupted,
        Python loops call :meth:`check_deadline`); ``None``: no limit."""
        previous = getattr(self._local, "deadline", None)
        self._local.deadline = None if seconds is None else time.monotonic() + seconds
        try:
            yield
        finally:
            self._local.deadline = previous

    def check_deadline(self) -> None:
        """Raise :class:`QueryTimeout` if this thread's query deadline has passed."""
        if self._past_deadline():
            raise QueryTimeout("the query ran past its time limit; narrow its time range or filter")

    def _migrate(self) -> None:
        with self._write_lock:
            MIGRATIONS.apply(self._writer)

    def _checkpointer(self) -> None:
        db: sqlite3.Connection | None = None
        while not self._closed.is_set():
            self._kick.wait(1.0)
            self._kick.clear()
            if self._dirty <= 0 or self._closed.is_set():
                continue
            self._dirty = 0
            try:
                if db is None:
                    db = self._connect()
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:  # busy or closing: try again later
                pass
        if db is not None:
            db.close()

    def checkpoint(self) -> None:
        """Copy the WAL into the database file now (tests, backups)."""
        with self._write_lock:
            self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def migrations(self) -> list[int]:
        """Numbers of the migrations this database has."""
        return [int(v) for v in MIGRATIONS.applied(self.reader())]

    def close(self) -> None:
        self._closed.set()
        self._kick.set()
        self._ckpt_thread.join(5)
        with self._write_lock:
            try:
                self._writer.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                pass
            self._writer.close()
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # --- writes ----------------------------------------------------------------------------

    def _ctx_id(self, group: SpanGroup) -> int:
        cid = self._ctx_cache.get(group.digest)
        if cid is None:
            db = self._writer
            db.execute(
                "INSERT OR IGNORE INTO contexts (digest, service, resource_json, scope_json) VALUES (?, ?, ?, ?)",
                (group.digest, group.service, group.resource_json, group.scope_json),
            )
            cid = db.execute("SELECT id FROM contexts WHERE digest = ?", (group.digest,)).fetchone()[0]
        return cid

    def insert_spans(self, groups: Sequence[SpanGroup]) -> int:
        """Insert span rows; a span already stored (same trace_id, span_id) is skipped.

        Returns:
            the number of spans newly stored.
        """
        db = self._writer
        with self._write_lock:
            try:
                with transaction(db):
                    stored = 0
                    new_ctx: dict[str, int] = {}
                    for group in groups:
                        cid = self._ctx_id(group)
                        new_ctx[group.digest] = cid
                        rows = group.rows
                        for row in rows:
                            row[0] = cid
                        cur = db.executemany(self._insert_sql, rows)
                        stored += max(cur.rowcount, 0)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot write spans to {self.path}: {exc}") from exc
            self._ctx_cache.update(new_ctx)
        self._dirty += stored + 1
        if self._dirty > 2000:
            self._kick.set()
        return stored

    def _insert_many(self, sql: str, rows: Iterable[tuple]) -> int:
        db = self._writer
        with self._write_lock:
            try:
                with transaction(db):
                    cur = db.executemany(sql, list(rows))
            except sqlite3.Error as exc:
                raise StoreError(f"cannot write to {self.path}: {exc}") from exc
            return cur.rowcount

    def insert_metrics(self, rows: Iterable[tuple]) -> int:
        """Rows: (service, name, type, unit, attributes, time_ns, start_time_ns, value, data, resource_json)."""
        return self._insert_many(
            "INSERT INTO metrics (service, name, type, unit, attributes, time_ns, start_time_ns, value, data,"
            " resource_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def insert_logs(self, rows: Iterable[tuple]) -> int:
        """Rows: (service, time_ns, observed_time_ns, severity_number, severity_text, body, attributes,
        trace_id, span_id, resource_json)."""
        return self._insert_many(
            "INSERT INTO logs (service, time_ns, observed_time_ns, severity_number, severity_text, body,"
            " attributes, trace_id, span_id, resource_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    # --- reads -----------------------------------------------------------------------------

    def context(self, ctx_id: int) -> tuple[str, str]:
        """(resource_json, scope_json) of a context id."""
        row = self.reader().execute("SELECT resource_json, scope_json FROM contexts WHERE id = ?", (ctx_id,)).fetchone()
        return (row[0], row[1]) if row else ("{}", "{}")

    def count(self, table: str = "spans") -> int:
        if table not in ("spans", "metrics", "logs", "contexts"):
            raise ValueError(table)
        return self.reader().execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def digest(*parts: bytes) -> str:
    h = hashlib.sha1()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(obj: Any) -> str:
    """Compact JSON (one shared encoder: json.dumps with options builds a new one per call)."""
    return _ENCODER.encode(obj)
