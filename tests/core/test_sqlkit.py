"""llmlab.sqlkit: the connection settings, the transaction helper and the migration runner both databases share."""

from __future__ import annotations

import sqlite3

import pytest

from llmlab.errors import StoreError
from llmlab.sqlkit import CACHE_KIB, Migrations, connect, transaction


def test_connect_uses_wal_and_autocommit(tmp_path):
    db = connect(tmp_path / "a.db", foreign_keys=True)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.isolation_level is None and not db.in_transaction
    assert db.execute("PRAGMA cache_size").fetchone()[0] == -CACHE_KIB  # a small page cache (see CACHE_KIB)


def test_transaction_commits_or_rolls_back(tmp_path):
    db = connect(tmp_path / "a.db")
    db.execute("CREATE TABLE t (x INTEGER)")
    with transaction(db):
        db.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(ZeroDivisionError), transaction(db):
        db.execute("INSERT INTO t VALUES (2)")
        1 / 0
    assert [r[0] for r in db.execute("SELECT x FROM t")] == [1] and not db.in_transaction


def _registry(ledger: str, table: str) -> Migrations:
    registry = Migrations(table, ledger=ledger)  # type: ignore[arg-type]

    @registry
    def m001_first(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE a (x INTEGER)")

    @registry
    def m002_second(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE b (x INTEGER)")

    return registry


@pytest.mark.parametrize(
    ("ledger", "table", "keys"),
    [("names", "_migrations", ["m001_first", "m002_second"]), ("versions", "migrations", [1, 2])],
)
def test_migrations_apply_once_and_record_in_the_layer_ledger(tmp_path, ledger, table, keys):
    db = connect(tmp_path / "a.db")
    registry = _registry(ledger, table)
    assert registry.apply(db) == ["m001_first", "m002_second"]
    assert registry.apply(db) == []
    assert registry.applied(db) == keys
    assert [name for name, _ in registry] == ["m001_first", "m002_second"]


def test_a_failing_migration_is_rolled_back_and_named(tmp_path):
    db = connect(tmp_path / "a.db")
    registry = _registry("names", "_migrations")

    @registry
    def m003_broken(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE c (x INTEGER)")
        db.execute("NOT SQL")

    with pytest.raises(StoreError, match="m003_broken"):
        registry.apply(db)
    assert registry.applied(db) == ["m001_first", "m002_second"]
    assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'c'").fetchone()[0] == 0


def test_migrations_are_numbered_in_order():
    registry = _registry("names", "_migrations")
    with pytest.raises(ValueError, match="not numbered after"):

        @registry
        def m002_again(db: sqlite3.Connection) -> None: ...

    with pytest.raises(ValueError, match="mNNN_label"):

        @registry
        def upgrade(db: sqlite3.Connection) -> None: ...
