"""Human ratings of a sweep's calls: one row per (sweep_id, call_id), written at once and durable.

A rating is a thumb (+1 / -1) or a score 1..5, with an optional note and the UTC time it was given.
:func:`rate` is what the grid's buttons and ``SweepResult.rate`` call; :func:`ratings_of` reads them back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from llmlab.errors import ValidationError
from llmlab.store.database import Store, get_store, utcnow_iso

__all__ = ["RATING_VALUES", "check_rating", "clear_rating", "rate", "rate_call", "ratings_of"]

#: Accepted rating values: thumbs down/up and the 1..5 scale.
RATING_VALUES = (-1, 1, 2, 3, 4, 5)

_COLUMNS = ["call_id", "sweep_id", "rating", "note", "rated_at"]


def check_rating(value: Any, note: Any = None) -> tuple[int, str | None]:
    """The rating as an int and the note as text; ValidationError for anything else
    (0, 6, 2.5, True, "good", a non-string note)."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValidationError("rating", value, "must be +1/-1 (thumbs) or an integer 1..5")
    if value not in RATING_VALUES:
        raise ValidationError("rating", value, "must be +1/-1 (thumbs) or an integer 1..5")
    if note is not None and not isinstance(note, str):
        raise ValidationError("note", note, "must be a string or None")
    return int(value), (note if note else None)


def rate(store: Store, sweep_id: str, call_id: str, value: Any, note: str | None = None) -> dict[str, Any]:
    """Store (or replace) the rating of one call of one sweep, now; returns the stored record.

    Raises ValidationError for a bad value or a call that is not in the sweep.
    """
    rating, text = check_rating(value, note)
    if not store.read("SELECT 1 FROM calls WHERE sweep_id=? AND call_id=?", (sweep_id, call_id)):
        raise ValidationError("call_id", call_id, f"no such call in sweep {sweep_id}")
    record = {"call_id": call_id, "sweep_id": sweep_id, "rating": rating, "note": text, "rated_at": utcnow_iso()}

    def fn(db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT OR REPLACE INTO ratings (sweep_id, call_id, rating, note, rated_at) VALUES (?,?,?,?,?)",
            (sweep_id, call_id, rating, text, record["rated_at"]),
        )

    store.write(fn)
    return record


def rate_call(sweep_id: str, call_id: str, value: Any, note: str | None = None) -> dict[str, Any]:
    """:func:`rate` in the configured home's store: what a grid button's click handler calls
    (the view layer sits below ``llmlab.history``, so it calls this, with the exact sweep id it shows)."""
    return rate(get_store(), sweep_id, call_id, value, note)


def clear_rating(store: Store, sweep_id: str, call_id: str) -> bool:
    """Remove one call's rating; True when there was one."""

    def fn(db: sqlite3.Connection) -> bool:
        return db.execute("DELETE FROM ratings WHERE sweep_id=? AND call_id=?", (sweep_id, call_id)).rowcount > 0

    return bool(store.write(fn))


def ratings_of(store: Store, sweep_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Every rating (of the given sweeps, or all), oldest first, as dicts of :data:`_COLUMNS`."""
    sql = f"SELECT {', '.join(_COLUMNS)} FROM ratings"
    params: tuple[Any, ...] = ()
    if sweep_ids is not None:
        if not sweep_ids:
            return []
        sql += f" WHERE sweep_id IN ({', '.join('?' * len(sweep_ids))})"
        params = tuple(sweep_ids)
    return [dict(zip(_COLUMNS, r)) for r in store.read(sql + " ORDER BY rated_at, sweep_id, call_id", params)]
