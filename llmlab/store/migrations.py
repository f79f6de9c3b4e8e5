"""Numbered schema migrations of the local store (applied in order, recorded in ``_migrations``).

Never edit a released migration: add the next number. Each function gets an open connection
inside a transaction.
"""

from __future__ import annotations

import sqlite3
from typing import Callable

MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = []


def run_script(db: sqlite3.Connection, script: str) -> None:
    """Execute ``;``-separated statements inside the caller's transaction (executescript would commit)."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def migration(fn: Callable[[sqlite3.Connection], None]) -> Callable[[sqlite3.Connection], None]:
    MIGRATIONS.append((fn.__name__, fn))
    return fn


@migration
def m001_initial(db: sqlite3.Connection) -> None:
    run_script(
        db,
        """
        CREATE TABLE sweeps (
            sweep_id TEXT PRIMARY KEY,
            name TEXT,
            created_at TEXT NOT NULL,
            finished_at TEXT,
            status TEXT NOT NULL DEFAULT 'running',
            spec_json TEXT NOT NULL,
            info_json TEXT NOT NULL DEFAULT '{}'
        );
        CREATE TABLE calls (
            sweep_id TEXT NOT NULL,
            call_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            status TEXT NOT NULL,
            created_at TEXT NOT NULL,
            row_json TEXT NOT NULL,
            PRIMARY KEY (sweep_id, call_id)
        );
        CREATE TABLE cache (
            call_id TEXT PRIMARY KEY,
            model TEXT NOT NULL,
            created_at TEXT NOT NULL,
            response_json TEXT NOT NULL
        );
        CREATE TABLE spans (
            trace_id TEXT NOT NULL,
            span_id TEXT NOT NULL,
            parent_id TEXT,
            name TEXT,
            service TEXT,
            sweep_id TEXT,
            call_id TEXT,
            start_ns INTEGER NOT NULL,
            end_ns INTEGER NOT NULL,
            is_llm INTEGER NOT NULL,
            row_json TEXT NOT NULL,
            attrs_json TEXT NOT NULL,
            otlp BLOB NOT NULL,
            export_state INTEGER,
            lease_until REAL,
            PRIMARY KEY (trace_id, span_id)
        );
        CREATE INDEX spans_sweep ON spans (sweep_id);
        CREATE INDEX spans_start ON spans (start_ns);
        CREATE INDEX spans_pending ON spans (export_state) WHERE export_state = 0;
        CREATE INDEX calls_sweep_seq ON calls (sweep_id, seq);
        """
    )
