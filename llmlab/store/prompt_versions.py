"""Prompt versions: every distinct template/system/messages text ever run, kept once.

A version is keyed by (kind, name, hash of the text); a changed text under a name already known
becomes that name's next ``version``. Each version lists the sweeps that used it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from llmlab.store.database import Store, utcnow_iso

__all__ = ["VERSION_COLUMNS", "list_versions", "record_versions", "versions_of_sweep"]

VERSION_COLUMNS = ["name", "kind", "version", "hash", "text", "first_used", "sweeps"]


def record_versions(store: Store, sweep_id: str, variants: Iterable[tuple[str, str, str, str | None]]) -> None:
    """Record that ``sweep_id`` ran these (kind, name, hash, text) variants; new texts get the next
    version of their name. ``text`` may be None (``trace_content=False``): only the hash is kept."""
    items = list(variants)
    if not items:
        return
    now = utcnow_iso()

    def fn(db: sqlite3.Connection) -> None:
        for kind, name, digest, text in items:
            known = db.execute(
                "SELECT 1 FROM prompt_versions WHERE kind=? AND name=? AND hash=?", (kind, name, digest)
            ).fetchone()
            if not known:
                (top,) = db.execute(
                    "SELECT coalesce(max(version), 0) FROM prompt_versions WHERE kind=? AND name=?", (kind, name)
                ).fetchone()
                db.execute(
                    "INSERT INTO prompt_versions (kind, name, hash, version, text, first_used) VALUES (?,?,?,?,?,?)",
                    (kind, name, digest, top + 1, text, now),
                )
            elif text is not None:
                db.execute(
                    "UPDATE prompt_versions SET text=? WHERE kind=? AND name=? AND hash=? AND text IS NULL",
                    (text, kind, name, digest),
                )
            db.execute(
                "INSERT OR IGNORE INTO prompt_version_sweeps (kind, name, hash, sweep_id, used_at) VALUES (?,?,?,?,?)",
                (kind, name, digest, sweep_id, now),
            )

    store.write(fn)


def list_versions(store: Store, name: str | None = None) -> list[dict[str, Any]]:
    """Every version (of one name, or all), by name, kind and version, with the sweeps that used it."""
    where, params = ("WHERE v.name = ?", (name,)) if name is not None else ("", ())
    rows = store.read(
        "SELECT v.name, v.kind, v.version, v.hash, v.text, v.first_used, "
        "(SELECT group_concat(sweep_id, ',') FROM (SELECT sweep_id FROM prompt_version_sweeps s "
        "WHERE s.kind = v.kind AND s.name = v.name AND s.hash = v.hash ORDER BY used_at, sweep_id)) "
        f"FROM prompt_versions v {where} ORDER BY v.name, v.kind, v.version",
        params,
    )
    return [
        {**dict(zip(VERSION_COLUMNS[:-1], r[:-1])), "sweeps": (r[-1] or "").split(",") if r[-1] else []} for r in rows
    ]


def versions_of_sweep(store: Store, sweep_id: str) -> list[dict[str, Any]]:
    """The versions one sweep ran: kind, name, version, hash, text."""
    rows = store.read(
        "SELECT v.kind, v.name, v.version, v.hash, v.text FROM prompt_version_sweeps s JOIN prompt_versions v "
        "ON v.kind = s.kind AND v.name = s.name AND v.hash = s.hash WHERE s.sweep_id = ? ORDER BY v.kind, v.name",
        (sweep_id,),
    )
    return [dict(zip(["kind", "name", "version", "hash", "text"], r)) for r in rows]
