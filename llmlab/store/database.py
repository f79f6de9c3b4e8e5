"""The local store: one SQLite database under ``home`` (calls, cache, spans/outbox, sweeps).

Why SQLite: a real, crash-safe database with no server, safe for several processes sharing one
home (WAL mode + busy timeout). All writes of a process go through one writer thread that
group-commits whatever is queued, so hundreds of concurrent calls cost a handful of fsyncs;
a caller that needs durability (the runner, before it reports a call finished) waits on the
returned future. Reads use a connection per thread.
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
from typing import Any

from llmlab import sqlkit
from llmlab.errors import StoreError
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
_SPAN_INSERT = (
    f"INSERT OR IGNORE INTO spans ({', '.join(chr(34) + c + chr(34) for c in SPAN_RECORD_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(SPAN_RECORD_COLUMNS))})"
)

log = logging.getLogger("llmlab.store")

WriteFn = Callable[[sqlite3.Connection], Any]


class Prepared:
    """A write with a CPU-bound first step (encoding a span, say) that the writer thread runs before it
    takes the database's write lock: the caller's thread (the event loop) does none of it, and the
    lock is never held while Python encodes. ``prepare()``'s result is passed to ``write(conn, value)``."""

    __slots__ = ("prepare", "value", "write")

    def __init__(self, prepare: Callable[[], Any], write: Callable[[sqlite3.Connection, Any], Any]) -> None:
        self.prepare = prepare
        self.write = write
        self.value: Any = None

    def __call__(self, db: sqlite3.Connection) -> Any:
        return self.write(db, self.value)


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
        for fn, fut in batch:  # encoding first, outside the write lock; a write that cannot be prepared fails alone
            if isinstance(fn, Prepared):
                try:
                    fn.value = fn.prepare()
                except Exception as exc:
                    _settle(fut, None, exc)
                    continue
            ready.append((fn, fut))
        if not ready:
            return
        batch = ready
        # Not sqlkit.transaction(): a group commit settles each queued write on its own (a savepoint per
        # item, so one failing write does not undo the others) and tells "locked" apart from "commit failed".
        results: list[tuple[concurrent.futures.Future[Any], bool, Any]] = []
        for attempt in range(20):
            try:
                db.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:  # another process holds the write lock
                if attempt == 19:
                    for _, fut in batch:
                        _settle(fut, None, StoreError(f"store is locked: {exc}"))
                    return
                time.sleep(0.05 * (attempt + 1))
        for fn, fut in batch:
            try:
                db.execute("SAVEPOINT item")
                value = fn(db)
                db.execute("RELEASE item")
                results.append((fut, True, value))
            except Exception as exc:
                db.execute("ROLLBACK TO item")
                db.execute("RELEASE item")
                results.append((fut, False, exc))
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

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every write queued so far is committed."""
        self.write(lambda db: None, timeout)

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
        """Persist a finished call (and its response in the cache) in one transaction."""
        # compact separators: a tenth of a short call's row is ", " and ": "
        row_json = json.dumps(row, default=str, separators=(",", ":"))
        cache_json = None if cache_entry is None else json.dumps(cache_entry, default=str, separators=(",", ":"))

        def fn(db: sqlite3.Connection) -> None:
            now = utcnow_iso()
            db.execute(
                "INSERT OR REPLACE INTO calls (sweep_id, call_id, seq, status, created_at, row_json) VALUES (?,?,?,?,?,?)",
                (sweep_id, row["call_id"], seq, row["status"], now, row_json),
            )
            if cache_json is not None:
                db.execute(
                    "INSERT OR REPLACE INTO cache (call_id, model, created_at, response_json) VALUES (?,?,?,?)",
                    (row["call_id"], str(row.get("model")), now, cache_json),
                )
            db.execute("DELETE FROM call_claims WHERE call_id=?", (row["call_id"],))  # done: waiters read the cache

        return self.submit(fn)

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
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                elsewhere.update(
                    r[0] for r in db.execute(f"SELECT call_id FROM cache WHERE call_id IN ({marks})", chunk)
                )
            now = utcnow_iso()
            db.executemany(
                "INSERT OR REPLACE INTO call_claims (call_id, owner, host, pid, claimed_at) VALUES (?,?,?,?,?)",
                [(cid, owner, host, pid, now) for cid in ids if cid not in elsewhere],
            )
            return elsewhere

        return self.write(fn)

    def release_claims(self, owner: str) -> None:
        """Drop every claim ``owner`` still holds (calls it skipped, or that failed)."""
        self.write(lambda db: db.execute("DELETE FROM call_claims WHERE owner=?", (owner,)))

    def cached_responses(self, call_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = list(call_ids)
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for cid, js in self.read(f"SELECT call_id, response_json FROM cache WHERE call_id IN ({marks})", chunk):
                out[cid] = json.loads(js)
        return out

    def call_rows(self, sweep_id: str) -> list[dict[str, Any]]:
        return [
            json.loads(r[0]) for r in self.read("SELECT row_json FROM calls WHERE sweep_id=? ORDER BY seq", (sweep_id,))
        ]

    # spans (also the export outbox) -------------------------------------------------------
    def put_spans(self, records: Sequence[tuple[Any, ...]]) -> concurrent.futures.Future[Any]:
        """Insert span records (see ``llmlab.tracing.export.span_record``)."""

        def fn(db: sqlite3.Connection) -> None:
            db.executemany(_SPAN_INSERT, records)

        return self.submit(fn)

    def put_span_later(self, make_record: Callable[[], tuple[Any, ...] | None]) -> concurrent.futures.Future[Any]:
        """Insert the span record ``make_record()`` builds, building it on the writer thread (in queue
        order with the other writes, so a call row written after it is never on disk before it);
        ``None``: nothing to insert."""

        def write(db: sqlite3.Connection, record: tuple[Any, ...] | None) -> None:
            if record is not None:
                db.execute(_SPAN_INSERT, record)

        return self.submit(Prepared(make_record, write))

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
