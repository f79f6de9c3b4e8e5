"""The local store: one SQLite database under ``home`` (calls, cache, spans/outbox, sweeps).

Why SQLite: a real, crash-safe database with no server, safe for several processes sharing one
home (WAL mode + busy timeout). All writes of a process go through one writer thread that
group-commits whatever is queued, so hundreds of concurrent calls cost a handful of fsyncs;
a caller that needs durability (the runner, before it reports a call finished) waits on the
returned future. Reads use a connection per thread.

The writer shares the GIL with a busy event loop: each SQLite statement (and each zlib call) lets
go of it, and getting it back can take milliseconds. So a batch costs a handful of statements
whatever its size: finished calls and spans are queued as :class:`Rows` and written with one
multi-row statement per table, in one transaction.
"""

from __future__ import annotations

import concurrent.futures
import datetime as _dt
import json
import logging
import os
import queue
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from llmlab import sqlkit
from llmlab.errors import StoreError
from llmlab.store import callrows
from llmlab.store.migrations import MIGRATIONS, SPAN_VALUE_COLUMNS

#: Column order of a span record (see ``llmlab.tracing.export.span_record``).
SPAN_RECORD_COLUMNS: list[str] = (
    [
        "trace_id",
        "span_id",
        "parent_id",
        "name",
        "service",
        "sweep_id",
        "call_id",
        "start_ns",
        "end_ns",
        "is_llm",
        "row_json",
        "attrs_json",
        "otlp",
        "export_state",
    ]
    + [name for name, _ in SPAN_VALUE_COLUMNS]
    + ["otlp_state"]
)


class _Statement(NamedTuple):
    """A statement the writer runs once per batch for the rows of every queued :class:`Rows` write:
    ``head`` followed by one ``(?,...)`` group per row (``in_list``: ``head (?,?,...)``, one value per row)."""

    head: str
    width: int
    in_list: bool = False

    def sql(self, n: int) -> str:
        if self.in_list:
            return f"{self.head}({','.join('?' * n)})"
        group = f"({','.join('?' * self.width)})"
        return self.head + ",".join([group] * n)


#: The batched statements, in the order a batch runs them: a span before the call row that points at it
#: (see :meth:`Store.put_span_later`), a call row before the cache entry that is that row, then the claims
#: the calls end.
STATEMENTS: dict[str, _Statement] = {
    "spans": _Statement(
        f"INSERT OR IGNORE INTO spans ({', '.join(chr(34) + c + chr(34) for c in SPAN_RECORD_COLUMNS)}) VALUES ",
        len(SPAN_RECORD_COLUMNS),
    ),
    "calls": _Statement(
        "INSERT OR REPLACE INTO calls (sweep_id, call_id, seq, status, created_at, row_json, fmt) VALUES ", 7
    ),
    "cache": _Statement(
        "INSERT OR REPLACE INTO cache (call_id, model, created_at, response_json, sweep_id) VALUES ", 5
    ),
    "claims_done": _Statement("DELETE FROM call_claims WHERE call_id IN ", 1, in_list=True),
}

Row = tuple[str, tuple[Any, ...]]  # (statement name, its parameters for one row)

log = logging.getLogger("llmlab.store")

WriteFn = Callable[[sqlite3.Connection], Any]


class Rows:
    """A write made only of rows of the batched :data:`STATEMENTS`. The writer runs each statement once per
    batch for the rows of every queued ``Rows`` (a multi-row INSERT, one DELETE ... IN), in one transaction,
    instead of a few statements per write; should that fail, each write of the batch runs alone (``__call__``),
    so a bad one fails by itself. ``keep``: ``(sweep_id, call_id, response)`` of call rows written without a
    cache entry of their own (see :func:`llmlab.store.callrows.keep_cached_responses`).

    ``prepare``, when given, builds the rows (encodes a span, say) on the writer thread before it takes the
    write lock: the caller's thread (the event loop) does none of it, and the lock is never held while Python
    encodes; a write whose rows cannot be built fails alone."""

    __slots__ = ("keep", "prepare", "rows")

    def __init__(
        self,
        rows: list[Row] | None = None,
        prepare: Callable[[], list[Row] | None] | None = None,
        keep: list[tuple[str, str, dict[str, Any]]] | None = None,
    ) -> None:
        self.rows: list[Row] = rows or []
        self.prepare = prepare
        self.keep = keep or []

    def __call__(self, db: sqlite3.Connection) -> None:
        _run_rows(db, [self])


def _run_rows(db: sqlite3.Connection, writes: Sequence[Rows]) -> None:
    """Run the rows of ``writes``: each statement once for all of them (in chunks under SQLite's limit of
    host parameters), in :data:`STATEMENTS` order."""
    by_statement: dict[str, list[tuple[Any, ...]]] = {name: [] for name in STATEMENTS}
    keep: list[tuple[str, str, dict[str, Any]]] = []
    for write in writes:
        keep.extend(write.keep)
        for name, params in write.rows:
            by_statement[name].append(params)
    limit = _variable_limit(db)
    for name, statement in STATEMENTS.items():
        rows = by_statement[name]
        if name == "calls" and keep:
            callrows.keep_cached_responses(db, keep)
        for chunk in sqlkit.shaped_chunks(rows, statement.width, limit):
            db.execute(statement.sql(len(chunk)), [v for params in chunk for v in params])


def _variable_limit(db: sqlite3.Connection) -> int:
    """How many ``?`` one statement may hold on ``db`` (asked of SQLite where Python can, 3.11+)."""
    getlimit = getattr(db, "getlimit", None)
    category = getattr(sqlite3, "SQLITE_LIMIT_VARIABLE_NUMBER", None)
    return int(getlimit(category)) if getlimit is not None and category is not None else sqlkit.MAX_VARIABLES


def _distinct_calls(writes: Sequence[Rows]) -> bool:
    """Whether no call row is written twice (then one multi-row statement equals the writes one by one)."""
    keys = [(params[0], params[1]) for w in writes for name, params in w.rows if name == "calls"]
    return len(keys) == len(set(keys))


def utcnow_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def connect(path: Path) -> sqlite3.Connection:
    """Open the store's database at ``path`` (created with its folder if missing) with the shared llmlab settings.

    See :func:`llmlab.sqlkit.connect`; the store also enforces foreign keys. Raises :class:`StoreError`.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return sqlkit.connect(path, foreign_keys=True)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the store at {path}: {exc}") from None


def migrate(db: sqlite3.Connection) -> list[str]:
    """Apply the store's pending numbered migrations to ``db``; returns the names applied (none when up to date)."""
    return MIGRATIONS.apply(db)


#: a claim from another host cannot be checked for liveness; after this long it is presumed dead
_FOREIGN_CLAIM_TTL_S = 600.0
#: who makes claims: host and a per-process nonce (a pid alone can be reused after a crash)
_PROCESS = f"{socket.gethostname()}/{uuid.uuid4().hex[:12]}"


def _claim_alive(process: str, pid: int, claimed_at: str, owner: str, local_owners: Collection[str]) -> bool:
    """Whether the sweep that made a claim may still be sending the call."""
    if process == _PROCESS:  # this process: its sweeps say whether they run
        return owner in local_owners
    if process.rsplit("/", 1)[0] != _PROCESS.rsplit("/", 1)[0]:  # another host: no way to ask, so by age
        age = (_dt.datetime.now(_dt.timezone.utc) - _dt.datetime.fromisoformat(claimed_at)).total_seconds()
        return age < _FOREIGN_CLAIM_TTL_S
    if pid == os.getpid():  # our pid, another process's claim: that process is gone (the pid was reused)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _settle(fut: concurrent.futures.Future[Any], value: Any, error: BaseException | None) -> None:
    """Resolve a write's future. A waiter that gave up (a cancelled sweep task cancels the future it
    awaited) does not undo the write, and must not kill the writer thread either."""
    try:
        if error is None:
            fut.set_result(value)
        else:
            fut.set_exception(error)
    except concurrent.futures.InvalidStateError:
        pass


class Store:
    """Access to one home's database. Obtain it with :func:`get_store`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        migrate(self._conn())
        self._queue: queue.SimpleQueue[tuple[WriteFn, concurrent.futures.Future[Any]] | None] = queue.SimpleQueue()
        #: call_id → owner of the claims this process made and has not ended (put_call ends them)
        self._claimed: dict[str, str] = {}
        self._claimed_lock = threading.Lock()
        self._writer = threading.Thread(target=self._write_loop, name="llmlab-store-writer", daemon=True)
        self._writer.start()
        self._closed = False

    # connections --------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = connect(self.path)
        return db

    def connection(self) -> sqlite3.Connection:
        """This thread's read connection (autocommit; use BEGIN/COMMIT for a snapshot)."""
        return self._conn()

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"store read failed ({self.path}): {exc}") from None

    # writes -------------------------------------------------------------------------------
    def submit(self, fn: WriteFn) -> concurrent.futures.Future[Any]:
        """Run ``fn(conn)`` on the writer thread inside a transaction; returns a future."""
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if self._closed:
            fut.set_exception(StoreError("store is closed"))
            return fut
        self._queue.put((fn, fut))
        return fut

    def write(self, fn: WriteFn, timeout: float = 60.0) -> Any:
        """Run ``fn(conn)`` in a committed transaction and wait for it."""
        return self.submit(fn).result(timeout)

    def _write_loop(self) -> None:
        db = connect(self.path)
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < 1000:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            self._run_batch(db, batch)

    def _run_batch(self, db: sqlite3.Connection, batch: list[tuple[WriteFn, concurrent.futures.Future[Any]]]) -> None:
        ready = []
        for fn, fut in batch:  # rows built first, outside the write lock; one that cannot be built fails alone
            if isinstance(fn, Rows) and fn.prepare is not None:
                try:
                    fn.rows, fn.prepare = fn.prepare() or [], None
                except Exception as exc:
                    _settle(fut, None, exc)
                    continue
            ready.append((fn, fut))
        if all(isinstance(fn, Rows) and not fn.rows and not fn.keep for fn, _ in ready):
            for _, fut in ready:  # nothing to write (a flush): every write queued before it is committed
                _settle(fut, None, None)
            return
        batch = ready
        # Not sqlkit.transaction(): a group commit settles each queued write on its own and tells "locked"
        # apart from "commit failed". Rows writes run together, one statement per table for all of them; any
        # other write runs in a savepoint of its own, and so does each Rows write when running them together
        # failed, so one failing write does not undo the others.
        if not self._begin(db, batch):
            return
        results: list[tuple[concurrent.futures.Future[Any], bool, Any]] = []
        writes = [fn for fn, _ in batch]
        if all(isinstance(fn, Rows) for fn in writes) and _distinct_calls(writes):  # type: ignore[arg-type]
            try:  # the common case: no savepoint at all
                _run_rows(db, writes)  # type: ignore[arg-type]
                results = [(fut, True, None) for _, fut in batch]
            except Exception as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if len(batch) == 1:
                    _settle(batch[0][1], None, exc)
                    return
                if not self._begin(db, batch):
                    return
                results = [(fut, *self._run_alone(db, fn)) for fn, fut in batch]
        else:
            i = 0
            while i < len(batch):
                j = i
                while j < len(batch) and isinstance(batch[j][0], Rows):
                    j += 1
                if j - i > 1 and self._run_together(db, batch[i:j], results):
                    i = j
                    continue
                for fn, fut in batch[i : max(j, i + 1)]:
                    results.append((fut, *self._run_alone(db, fn)))
                i = max(j, i + 1)
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            db.execute("ROLLBACK")
            for fut, _, _ in results:
                _settle(fut, None, StoreError(f"store commit failed: {exc}"))
            return
        for fut, ok, value in results:
            if ok:
                _settle(fut, value, None)
            else:
                _settle(fut, None, value if isinstance(value, Exception) else StoreError(str(value)))

    @staticmethod
    def _begin(db: sqlite3.Connection, batch: list[tuple[WriteFn, concurrent.futures.Future[Any]]]) -> bool:
        """Open the batch's transaction (True), or fail every write of the batch (False)."""
        for attempt in range(20):
            try:
                db.execute("BEGIN IMMEDIATE")
                return True
            except sqlite3.OperationalError as exc:  # another process holds the write lock
                if attempt == 19:
                    for _, fut in batch:
                        _settle(fut, None, StoreError(f"store is locked: {exc}"))
                    return False
                time.sleep(0.05 * (attempt + 1))
        return False

    @staticmethod
    def _run_together(
        db: sqlite3.Connection,
        run: list[tuple[WriteFn, concurrent.futures.Future[Any]]],
        results: list[tuple[concurrent.futures.Future[Any], bool, Any]],
    ) -> bool:
        """Run consecutive :class:`Rows` writes as one (True), or leave nothing of them written (False)."""
        writes = [fn for fn, _ in run]
        if not _distinct_calls(writes):  # type: ignore[arg-type]
            return False
        db.execute("SAVEPOINT rows")
        try:
            _run_rows(db, writes)  # type: ignore[arg-type]
        except Exception:
            db.execute("ROLLBACK TO rows")
            db.execute("RELEASE rows")
            return False
        db.execute("RELEASE rows")
        results.extend((fut, True, None) for _, fut in run)
        return True

    @staticmethod
    def _run_alone(db: sqlite3.Connection, fn: WriteFn) -> tuple[bool, Any]:
        try:
            db.execute("SAVEPOINT item")
            value = fn(db)
            db.execute("RELEASE item")
            return True, value
        except Exception as exc:
            db.execute("ROLLBACK TO item")
            db.execute("RELEASE item")
            return False, exc

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every write queued so far is committed."""
        self.submit(Rows()).result(timeout)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._writer.join(10)

    # sweeps -------------------------------------------------------------------------------
    def start_sweep(self, sweep_id: str, name: str | None, spec: dict[str, Any], info: dict[str, Any]) -> None:
        def fn(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO sweeps (sweep_id, name, created_at, status, spec_json, info_json) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT(sweep_id) DO UPDATE SET status='running', finished_at=NULL",
                (sweep_id, name, utcnow_iso(), "running", json.dumps(spec, default=str), json.dumps(info, default=str)),
            )

        self.write(fn)

    def finish_sweep(self, sweep_id: str, status: str, info: dict[str, Any]) -> None:
        def fn(db: sqlite3.Connection) -> None:
            old = db.execute("SELECT info_json FROM sweeps WHERE sweep_id=?", (sweep_id,)).fetchone()
            merged = {**(json.loads(old[0]) if old else {}), **info}
            db.execute(
                "UPDATE sweeps SET finished_at=?, status=?, info_json=? WHERE sweep_id=?",
                (utcnow_iso(), status, json.dumps(merged, default=str), sweep_id),
            )

        self.write(fn)

    def sweep_record(self, sweep_id: str) -> dict[str, Any] | None:
        rows = self.read(
            "SELECT sweep_id, name, created_at, finished_at, status, spec_json, info_json FROM sweeps WHERE sweep_id=?",
            (sweep_id,),
        )
        if not rows:
            return None
        r = rows[0]
        return {
            "sweep_id": r[0],
            "name": r[1],
            "created_at": r[2],
            "finished_at": r[3],
            "status": r[4],
            "spec": json.loads(r[5]),
            "info": json.loads(r[6]),
        }

    # calls and cache ----------------------------------------------------------------------
    def put_call(
        self, sweep_id: str, seq: int, row: dict[str, Any], cache_entry: dict[str, Any] | None
    ) -> concurrent.futures.Future[Any]:
        """Persist a finished call (and its response in the cache) in one transaction.

        The row is stored compact, and a cache entry that is the row's own response is stored as a
        reference to the row (see :mod:`llmlab.store.callrows`); the claim on the call ends."""
        call_id, status = row["call_id"], row["status"]
        row_json, fmt = callrows.pack_row(row, sweep_id, status)
        now = utcnow_iso()
        rows: list[Row] = [("calls", (sweep_id, call_id, seq, status, now, row_json, fmt))]
        keep = []
        if cache_entry is None:
            keep.append((sweep_id, call_id, callrows.response_of(row)))
        elif callrows.is_response_of(cache_entry, row):
            rows.append(("cache", (call_id, str(row.get("model")), now, None, sweep_id)))
        else:
            rows.append(("cache", (call_id, str(row.get("model")), now, callrows.dumps(cache_entry), None)))
        with self._claimed_lock:
            claimed = self._claimed.pop(call_id, None) is not None
        if claimed:  # done: waiters read the cache (a claim this process did not make ends with its maker)
            rows.append(("claims_done", (call_id,)))
        return self.submit(Rows(rows, keep=keep))

    # claims: one process sends a call, the others wait for its result ------------------------
    def claim_calls(self, call_ids: Sequence[str], owner: str, local_owners: Collection[str] = ()) -> set[str]:
        """Claim ``call_ids`` for ``owner`` (a sweep id) unless another owner that is still running
        holds them or they are answered in the cache already; returns the ids not claimed (the
        caller waits for their answer). Claims of a process that is gone (a crash, a kill -9) are
        taken over; so are claims made in this process by an owner not in ``local_owners`` (the
        sweeps running here now)."""
        ids = list(call_ids)
        host, pid = _PROCESS, os.getpid()

        def fn(db: sqlite3.Connection) -> set[str]:
            held: dict[str, tuple[str, str, int, str]] = {}
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                for cid, *rest in db.execute(
                    f"SELECT call_id, owner, host, pid, claimed_at FROM call_claims WHERE call_id IN ({marks})", chunk
                ):
                    held[cid] = tuple(rest)  # type: ignore[assignment]
            elsewhere = {
                cid for cid, (o, h, p, at) in held.items() if o != owner and _claim_alive(h, p, at, o, local_owners)
            }
            # answered since the caller looked: not to be sent again (the caller finds it in the cache)
            elsewhere.update(callrows.cache_entries(db, ids))
            now = utcnow_iso()
            mine = [cid for cid in ids if cid not in elsewhere]
            for i in range(0, len(mine), 500):  # one statement per 500 claims, not one step per call
                chunk = mine[i : i + 500]
                db.execute(
                    "INSERT OR REPLACE INTO call_claims (call_id, owner, host, pid, claimed_at) VALUES "
                    + ",".join(["(?,?,?,?,?)"] * len(chunk)),
                    [v for cid in chunk for v in (cid, owner, host, pid, now)],
                )
            with self._claimed_lock:
                self._claimed.update(dict.fromkeys(mine, owner))
            return elsewhere

        return self.write(fn)

    def release_claims(self, owner: str) -> None:
        """Drop every claim ``owner`` still holds (calls it skipped, or that failed)."""
        self.write(lambda db: db.execute("DELETE FROM call_claims WHERE owner=?", (owner,)))
        with self._claimed_lock:
            self._claimed = {cid: o for cid, o in self._claimed.items() if o != owner}

    def cached_responses(self, call_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """``call_id`` → the cached response of each of ``call_ids`` that has one."""
        try:  # an entry and the call row it is are read by one statement: one snapshot
            return callrows.cache_entries(self._conn(), call_ids)
        except sqlite3.Error as exc:
            raise StoreError(f"store read failed ({self.path}): {exc}") from None

    def call_rows(self, sweep_id: str) -> list[dict[str, Any]]:
        """The stored rows of the sweep's calls, in plan order, as the runner built them."""
        return [
            callrows.unpack_row(row_json, fmt, sweep_id, call_id, status)
            for call_id, status, row_json, fmt in self.read(
                "SELECT call_id, status, row_json, fmt FROM calls WHERE sweep_id=? ORDER BY seq", (sweep_id,)
            )
        ]

    # spans (also the export outbox) -------------------------------------------------------
    def put_spans(self, records: Sequence[tuple[Any, ...]]) -> concurrent.futures.Future[Any]:
        """Insert span records (see ``llmlab.tracing.export.span_record``)."""
        return self.submit(Rows([("spans", tuple(record)) for record in records]))

    def put_span_later(self, make_record: Callable[[], tuple[Any, ...] | None]) -> concurrent.futures.Future[Any]:
        """Insert the span record ``make_record()`` builds, building it on the writer thread (in queue
        order with the other writes: in the same transaction as a call row queued after it, or an earlier
        one, so a call row written after it is never on disk before it); ``None``: nothing to insert."""

        def rows() -> list[Row]:
            record = make_record()
            return [] if record is None else [("spans", record)]

        return self.submit(Rows(prepare=rows))

    def pending_count(self, column: str = "export_state") -> int:
        """Spans waiting to be delivered to DataKit (``otlp_state``: to the plain OTLP endpoint)."""
        if column not in ("export_state", "otlp_state"):
            raise ValueError(f"not an outbox state column: {column!r}")
        return int(self.read(f"SELECT count(*) FROM spans WHERE {column} = 0")[0][0])


_stores: dict[Path, Store] = {}
_stores_lock = threading.Lock()


def get_store(home: Path | None = None) -> Store:
    """The process-wide :class:`Store` of ``home`` (default: the configured home)."""
    if home is None:
        from llmlab.config import get_config

        path = get_config().db_path
    else:
        path = Path(home) / "llmlab.db"
    path = path.resolve()
    with _stores_lock:
        store = _stores.get(path)
        if store is None or store._closed:
            store = _stores[path] = Store(path)
        return store
