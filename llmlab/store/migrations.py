"""Numbered schema migrations of the local store (applied in order, recorded in ``_migrations``).

Never edit a released migration: add the next number. Each function gets an open connection
inside a transaction; :func:`llmlab.sqlkit.Migrations.apply` runs them.
"""

from __future__ import annotations

import sqlite3

from llmlab.sqlkit import Migrations, run_script

__all__ = ["MIGRATIONS", "SPAN_VALUE_COLUMNS", "run_script"]

#: The store's migrations, recorded by name in ``_migrations`` (the ledger every home has had since m001).
MIGRATIONS = Migrations("_migrations", ledger="names")
migration = MIGRATIONS  # the decorator registering the next migration


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
        """,
    )


@migration
def m002_experiments(db: sqlite3.Connection) -> None:
    """Experiment metadata: where a sweep ran from (notebook/script, git), its totals, tags and a note.

    Sweeps written before this migration get their totals back-filled from their stored calls,
    so ``ll.sweeps()`` lists them like new ones; what was never recorded (source, git) stays NULL.
    """
    run_script(
        db,
        """
        ALTER TABLE sweeps ADD COLUMN note TEXT;
        ALTER TABLE sweeps ADD COLUMN source TEXT;
        ALTER TABLE sweeps ADD COLUMN git_commit TEXT;
        ALTER TABLE sweeps ADD COLUMN git_dirty INTEGER;
        ALTER TABLE sweeps ADD COLUMN llmlab_version TEXT;
        ALTER TABLE sweeps ADD COLUMN wall_s REAL;
        ALTER TABLE sweeps ADD COLUMN n_calls INTEGER;
        ALTER TABLE sweeps ADD COLUMN n_ok INTEGER;
        ALTER TABLE sweeps ADD COLUMN n_errors INTEGER;
        ALTER TABLE sweeps ADD COLUMN n_cached INTEGER;
        ALTER TABLE sweeps ADD COLUMN n_skipped INTEGER;
        ALTER TABLE sweeps ADD COLUMN input_tokens INTEGER;
        ALTER TABLE sweeps ADD COLUMN output_tokens INTEGER;
        ALTER TABLE sweeps ADD COLUMN cost_usd REAL;
        CREATE TABLE sweep_tags (
            sweep_id TEXT NOT NULL,
            tag TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (sweep_id, tag)
        );
        CREATE INDEX sweep_tags_tag ON sweep_tags (tag);
        CREATE INDEX sweeps_created ON sweeps (created_at);
        CREATE INDEX calls_call_id ON calls (call_id);
        UPDATE sweeps SET
            n_calls = coalesce(CASE WHEN json_valid(info_json) THEN json_extract(info_json, '$.calls') END,
                               (SELECT count(*) FROM calls c WHERE c.sweep_id = sweeps.sweep_id)),
            n_ok = (SELECT count(*) FROM calls c WHERE c.sweep_id = sweeps.sweep_id AND c.status = 'ok'),
            n_errors = (SELECT count(*) FROM calls c WHERE c.sweep_id = sweeps.sweep_id AND c.status = 'error'),
            n_cached = (SELECT coalesce(sum(CASE WHEN json_valid(c.row_json) THEN json_extract(c.row_json, '$.cached') END), 0) FROM calls c
                        WHERE c.sweep_id = sweeps.sweep_id),
            n_skipped = CASE WHEN json_valid(info_json) THEN json_extract(info_json, '$.skipped') END,
            input_tokens = (SELECT sum(CASE WHEN json_valid(c.row_json) THEN json_extract(c.row_json, '$.input_tokens') END) FROM calls c
                            WHERE c.sweep_id = sweeps.sweep_id),
            output_tokens = (SELECT sum(CASE WHEN json_valid(c.row_json) THEN json_extract(c.row_json, '$.output_tokens') END) FROM calls c
                             WHERE c.sweep_id = sweeps.sweep_id),
            cost_usd = (SELECT sum(CASE WHEN json_valid(c.row_json) THEN json_extract(c.row_json, '$.cost_usd') END) FROM calls c
                        WHERE c.sweep_id = sweeps.sweep_id),
            wall_s = CASE WHEN finished_at IS NULL THEN NULL
                          ELSE (julianday(finished_at) - julianday(created_at)) * 86400.0 END
        """,
    )


#: Canonical columns materialised on ``spans`` (besides the key/envelope columns of m001), so
#: ``ll.spans()`` reads them column-wise in C instead of parsing one JSON document per span.
SPAN_VALUE_COLUMNS: list[tuple[str, str]] = [
    ("latency_ms", "REAL"),
    ("ttft_ms", "REAL"),
    ("tokens_per_s", "REAL"),
    ("provider", "TEXT"),
    ("model", "TEXT"),
    ("response_model", "TEXT"),
    ("temperature", "REAL"),
    ("top_p", "REAL"),
    ("max_tokens", "INTEGER"),
    ("seed", "INTEGER"),
    ("repeat", "INTEGER"),
    ("prompt_id", "TEXT"),
    ("prompt", "TEXT"),
    ("completion", "TEXT"),
    ("finish_reason", "TEXT"),
    ("input_tokens", "INTEGER"),
    ("output_tokens", "INTEGER"),
    ("total_tokens", "INTEGER"),
    ("tokens_estimated", "INTEGER"),
    ("status", "TEXT"),
    ("error", "TEXT"),
    ("queue_ms", "REAL"),
    ("attempts", "INTEGER"),
    ("itl_ms", "REAL"),
    ("workflow", "TEXT"),
    ("params", "TEXT"),
]


@migration
def m003_span_columns(db: sqlite3.Connection) -> None:
    """Materialise the canonical columns of each span (back-filled from ``row_json``); from now
    on ``row_json`` only carries what has no column (association properties)."""
    for name, kind in SPAN_VALUE_COLUMNS:
        db.execute(f'ALTER TABLE spans ADD COLUMN "{name}" {kind}')
    sets = ", ".join(f"\"{name}\" = json_extract(row_json, '$.{name}')" for name, _ in SPAN_VALUE_COLUMNS)
    db.execute(f"UPDATE spans SET {sets} WHERE json_valid(row_json)")
    db.execute("CREATE INDEX spans_llm_start ON spans (is_llm, start_ns)")


@migration
def m004_span_generation(db: sqlite3.Connection) -> None:
    """A generation counter bumped by any delete of spans: it retires the columnar read cache."""
    run_script(
        db,
        """
        CREATE TABLE IF NOT EXISTS _meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT OR IGNORE INTO _meta (key, value) VALUES ('spans_generation', 0)
        """,
    )
    db.execute(  # one statement: its body holds a ';'
        "CREATE TRIGGER spans_deleted AFTER DELETE ON spans BEGIN "
        "UPDATE _meta SET value = value + 1 WHERE key = 'spans_generation'; END"
    )


@migration
def m005_call_claims(db: sqlite3.Connection) -> None:
    """Claims on calls being sent, so that two processes (or two sweeps) running the same calls
    into one home pay for each once: the second waits for the first's result."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS call_claims (call_id TEXT PRIMARY KEY, owner TEXT NOT NULL, host TEXT NOT NULL, "
        "pid INTEGER NOT NULL, claimed_at TEXT NOT NULL)"
    )


@migration
def m006_otlp_outbox(db: sqlite3.Connection) -> None:
    """A second outbox state per span, for a plain OTLP/HTTP endpoint exported to alongside (or
    instead of) DataKit: each destination delivers, retries and rejects on its own."""
    db.execute("ALTER TABLE spans ADD COLUMN otlp_state INTEGER")
    db.execute("ALTER TABLE spans ADD COLUMN otlp_lease_until REAL")
    db.execute("CREATE INDEX spans_otlp_pending ON spans (otlp_state) WHERE otlp_state = 0")


@migration
def m007_outbox_lease_owner(db: sqlite3.Connection) -> None:
    """Who holds an outbox lease (``host:pid``), so a replay can take over the leases of a process
    that died on the same host at once instead of waiting for them to expire."""
    db.execute("ALTER TABLE spans ADD COLUMN lease_owner TEXT")
    db.execute("ALTER TABLE spans ADD COLUMN otlp_lease_owner TEXT")


@migration
def m008_ratings(db: sqlite3.Connection) -> None:
    """Human ratings of calls (thumbs +1/-1 or 1..5 with an optional note), one per sweep and call."""
    run_script(
        db,
        """
        CREATE TABLE IF NOT EXISTS ratings (
            sweep_id TEXT NOT NULL,
            call_id TEXT NOT NULL,
            rating INTEGER NOT NULL,
            note TEXT,
            rated_at TEXT NOT NULL,
            PRIMARY KEY (sweep_id, call_id)
        )
        """,
    )


@migration
def m009_prompt_versions(db: sqlite3.Connection) -> None:
    """Every distinct template/system/messages text ever run, once per (kind, name, hash), numbered
    per name (a changed text under an existing name is its next version), and the sweeps that used it."""
    run_script(
        db,
        """
        CREATE TABLE IF NOT EXISTS prompt_versions (
            kind TEXT NOT NULL,
            name TEXT NOT NULL,
            hash TEXT NOT NULL,
            version INTEGER NOT NULL,
            text TEXT,
            first_used TEXT NOT NULL,
            PRIMARY KEY (kind, name, hash)
        );
        CREATE TABLE IF NOT EXISTS prompt_version_sweeps (
            kind TEXT NOT NULL,
            name TEXT NOT NULL,
            hash TEXT NOT NULL,
            sweep_id TEXT NOT NULL,
            used_at TEXT NOT NULL,
            PRIMARY KEY (kind, name, hash, sweep_id)
        );
        CREATE INDEX IF NOT EXISTS prompt_version_sweeps_sweep ON prompt_version_sweeps (sweep_id)
        """,
    )


@migration
def m010_rating_scale(db: sqlite3.Connection) -> None:
    """Each rating's scale, ``thumbs`` (+1/-1) or ``stars`` (1..5), so the two are never averaged together.
    Existing ratings: -1 is a thumb, 2..5 stars, and a 1 takes its sweep's scale (stars when the sweep
    has a rating of 2..5, else a thumb)."""
    db.execute("ALTER TABLE ratings ADD COLUMN scale TEXT")
    db.execute(
        "UPDATE ratings SET scale = CASE WHEN rating >= 2 OR (rating = 1 AND EXISTS (SELECT 1 FROM ratings r "
        "WHERE r.sweep_id = ratings.sweep_id AND r.rating >= 2)) THEN 'stars' ELSE 'thumbs' END"
    )


@migration
def m011_compact_calls_and_cache(db: sqlite3.Connection) -> None:
    """Bytes per call (see ``llmlab.store.callrows``): a call row may be stored compact (``calls.fmt`` 1:
    keys at their default and those kept in columns left out of ``row_json``; NULL: the whole row, as
    every row written before), and a cache entry may be the call row itself (``cache.sweep_id`` names
    the sweep whose ``calls`` row holds the response, ``response_json`` NULL). The cache table is
    rebuilt for that (``response_json`` nullable) as a WITHOUT ROWID table keyed by ``call_id``; its
    entries are copied as they are (each keeps its own response)."""
    db.execute("ALTER TABLE calls ADD COLUMN fmt INTEGER")
    run_script(
        db,
        """
        CREATE TABLE cache_m011 (
            call_id TEXT PRIMARY KEY,
            model TEXT NOT NULL,
            created_at TEXT NOT NULL,
            response_json TEXT,
            sweep_id TEXT,
            CHECK (response_json IS NOT NULL OR sweep_id IS NOT NULL)
        ) WITHOUT ROWID;
        INSERT INTO cache_m011 (call_id, model, created_at, response_json)
            SELECT call_id, model, created_at, response_json FROM cache WHERE call_id IS NOT NULL;
        DROP TABLE cache;
        ALTER TABLE cache_m011 RENAME TO cache
        """,
    )
