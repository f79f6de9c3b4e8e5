"""SQLite plumbing shared by the local store (``llmlab.store``) and the embedded collector (``llmlab.collector``).

Both keep a database file that several processes may open at once (a notebook kernel, ``llmlab collector``,
a second kernel on the same home), so both want the same things from SQLite: WAL journal, a busy timeout long
enough to wait out another process's commit, explicit ``BEGIN IMMEDIATE`` transactions (a deferred
transaction that later needs the write lock can fail with SQLITE_BUSY without waiting), and numbered schema
migrations recorded in a table so that each is applied exactly once per file. This module is that shared part;
what each database holds stays with its layer.
"""

from __future__ import annotations

import datetime as _dt
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, NamedTuple, TypeVar, overload

from llmlab.errors import StoreError

__all__ = ["BUSY_TIMEOUT_S", "Migration", "Migrations", "connect", "run_script", "shaped_chunks", "transaction"]

T = TypeVar("T")

#: The row counts a multi-row statement is built for (largest first). Each distinct statement text is a
#: prepared statement the connection caches for its life, and a prepared multi-row statement grows with its
#: rows: one shape per batch size (up to 500 rows) kept ~0.2-0.4 KB per call of a 10,000-call sweep's memory,
#: and shapes up to 64 rows ~0.05 KB more than up to 16, for no speed a benchmark could see.
STATEMENT_ROWS = tuple(2**k for k in range(4, -1, -1))

#: How long a connection waits for another connection's write lock before giving up.
BUSY_TIMEOUT_S = 30.0

#: Each connection's page cache, in KiB (SQLite's default is 2,000). A sweep's writer connection filled its
#: cache, 0.2 KB per call of a 10,000-call sweep's peak memory, for no speed a benchmark could see: pages
#: missed here come from the OS's file cache (reading back 10,000 calls and their spans took as long).
CACHE_KIB = 256

#: SQLite's default limit of host parameters per statement (since 3.32; 999 before)
MAX_VARIABLES = 32766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999


def connect(path: str | Path, *, timeout: float = BUSY_TIMEOUT_S, foreign_keys: bool = False) -> sqlite3.Connection:
    """Open ``path`` in autocommit mode with the settings every llmlab database uses.

    WAL journal (readers never block the writer), ``synchronous=NORMAL`` (durable at checkpoints, safe
    against corruption), a page cache of :data:`CACHE_KIB`, a busy timeout of ``timeout`` seconds, and
    ``foreign_keys`` when asked for. The connection may be used from other threads (each layer serialises its
    own writes) and has no implicit transactions: write through :func:`transaction`. Raises ``sqlite3.Error``;
    the caller words the error for its own database.
    """
    db = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    for attempt in range(100):
        try:
            db.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError:  # another process holds the lock while switching: not retried by SQLite
            if attempt == 99:
                raise
            time.sleep(0.05)
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    if foreign_keys:
        db.execute("PRAGMA foreign_keys=ON")
    return db


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the ``with`` body in one ``BEGIN IMMEDIATE`` transaction on ``db`` (an autocommit connection).

    Commits when the body returns; rolls back and re-raises when it raises (anything, KeyboardInterrupt
    included) or when the COMMIT itself fails. IMMEDIATE takes the write lock up front, so a transaction that
    reads then writes cannot fail half-way because another process wrote in between.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # a failed COMMIT leaves the transaction open
            db.execute("ROLLBACK")
        raise


def shaped_chunks(items: Sequence[T], width: int = 1, limit: int = MAX_VARIABLES) -> Iterator[Sequence[T]]:
    """``items`` in consecutive chunks whose sizes are in :data:`STATEMENT_ROWS` (one per binary digit of what
    is left, largest first), each under ``limit`` host parameters at ``width`` per item: a batch of any size
    then runs through a handful of statement shapes.

    >>> [len(c) for c in shaped_chunks(range(40))]
    [16, 16, 8]
    """
    sizes = [n for n in STATEMENT_ROWS if n * width <= limit] or [1]
    i = 0
    while i < len(items):
        n = next(size for size in sizes if size <= len(items) - i)
        yield items[i : i + n]
        i += n


def run_script(db: sqlite3.Connection, script: str) -> None:
    """Execute the ``;``-separated statements of ``script`` one by one, inside the caller's transaction.

    ``executescript()`` would COMMIT the caller's transaction first, which a migration must not do. Statements
    whose body holds a ``;`` (triggers) must be executed on their own instead.
    """
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


class Migration(NamedTuple):
    """One schema migration: a function named ``mNNN_label`` that changes the schema of an open connection."""

    name: str
    fn: Callable[[sqlite3.Connection], None]

    @property
    def number(self) -> int:
        return int(_NAME.fullmatch(self.name).group(1))  # type: ignore[union-attr]  # checked on registration

    @property
    def label(self) -> str:
        return _NAME.fullmatch(self.name).group(2)  # type: ignore[union-attr]


_NAME = re.compile(r"m(\d{3,})_(\w+)")

#: The ledger tables, in the two shapes databases written by earlier versions already have (kept so they open).
_LEDGERS = {
    # the store: keyed by the migration's full name, ISO time
    "names": (
        "CREATE TABLE IF NOT EXISTS {table} (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)",
        "SELECT name FROM {table} ORDER BY name",
        "INSERT INTO {table} (name, applied_at) VALUES (?, ?)",
        "SELECT 1 FROM {table} WHERE name = ?",
    ),
    # the collector: keyed by number, the label beside it, epoch milliseconds
    "versions": (
        "CREATE TABLE IF NOT EXISTS {table} (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_ms INTEGER NOT NULL)",
        "SELECT version FROM {table} ORDER BY version",
        "INSERT INTO {table} (version, name, applied_ms) VALUES (?, ?, ?)",
        "SELECT 1 FROM {table} WHERE version = ?",
    ),
}


class Migrations:
    """An ordered registry of numbered migrations and the ledger table that records which ones a file has.

    Register migrations with the instance as a decorator, in order, each named ``mNNN_label`` with a number
    higher than the last; never edit a released one, add the next. :meth:`apply` applies what a database lacks,
    each migration in its own ``BEGIN IMMEDIATE`` transaction together with its ledger row, so two processes
    opening one old file at once apply each migration exactly once. The registry reads like a list of
    :class:`Migration` (name, fn) pairs.
    """

    def __init__(self, table: str = "_migrations", *, ledger: Literal["names", "versions"] = "names") -> None:
        if not re.fullmatch(r"\w+", table):
            raise ValueError(f"not a table name: {table!r}")
        self.table = table
        self.ledger = ledger
        self._create, self._select, self._insert, self._has = (sql.format(table=table) for sql in _LEDGERS[ledger])
        self._items: list[Migration] = []

    def __call__(self, fn: Callable[[sqlite3.Connection], None]) -> Callable[[sqlite3.Connection], None]:
        """Register ``fn`` as the next migration (a decorator); returns ``fn`` unchanged."""
        if not _NAME.fullmatch(fn.__name__):
            raise ValueError(f"a migration is named mNNN_label, not {fn.__name__!r}")
        item = Migration(fn.__name__, fn)
        if self._items and item.number <= self._items[-1].number:
            raise ValueError(f"migration {item.name} is not numbered after {self._items[-1].name}")
        self._items.append(item)
        return fn

    def __iter__(self) -> Iterator[Migration]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> Migration: ...
    @overload
    def __getitem__(self, index: slice) -> list[Migration]: ...
    def __getitem__(self, index: int | slice) -> Migration | list[Migration]:
        return self._items[index]

    def _key(self, item: Migration) -> str | int:
        return item.name if self.ledger == "names" else item.number

    def applied(self, db: sqlite3.Connection) -> list[str | int]:
        """The ledger's keys (names, or numbers for a ``versions`` ledger) of the migrations ``db`` has."""
        return [row[0] for row in db.execute(self._select)]

    def apply(self, db: sqlite3.Connection) -> list[str]:
        """Apply every registered migration ``db`` lacks, in order; returns the names of those applied.

        Raises :class:`~llmlab.errors.StoreError` naming the migration that failed; that migration is rolled
        back and the ones before it stay applied.
        """
        done: list[str] = []
        db.execute(self._create)
        for item in self._items:
            key = self._key(item)
            try:
                with transaction(db):
                    # checked under the write lock: another process opening the same file may be applying it too
                    if db.execute(self._has, (key,)).fetchone():
                        continue
                    item.fn(db)
                    if self.ledger == "names":
                        db.execute(
                            self._insert,
                            (item.name, _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")),
                        )
                    else:
                        db.execute(self._insert, (item.number, item.label, int(time.time() * 1000)))
            except Exception as exc:
                raise StoreError(f"migration {item.name} failed: {exc}") from None
            done.append(item.name)
        return done
