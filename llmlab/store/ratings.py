"""Human ratings of a sweep's calls: one row per (sweep_id, call_id), written at once and durable.

A rating is a thumb (+1 / -1, scale ``thumbs``) or a score 1..5 (scale ``stars``), with an optional
note and the UTC time it was given. One sweep is rated on one scale: its first rating fixes it, and
a rating on the other scale is refused (a mean of thumbs and stars means nothing). A value of 1 is
a thumb up, or one star when the sweep is rated in stars or ``scale="stars"`` is given.
:func:`rate` is what the grid's buttons and ``SweepResult.rate`` call; :func:`ratings_of` reads them back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from llmlab.errors import ValidationError
from llmlab.store.database import Store, get_store, utcnow_iso

__all__ = ["RATING_VALUES", "SCALES", "check_rating", "clear_rating", "rate", "rate_call", "ratings_of", "sweep_scale"]

#: Accepted rating values: thumbs down/up and the 1..5 scale.
RATING_VALUES = (-1, 1, 2, 3, 4, 5)

#: The two rating scales.
SCALES = ("thumbs", "stars")

_COLUMNS = ["call_id", "sweep_id", "rating", "note", "rated_at", "scale"]


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


def sweep_scale(store: Store, sweep_id: str, except_call: str | None = None) -> str | None:
    """The scale the sweep's ratings are on (``thumbs``/``stars``), None when it has none (but ``except_call``'s)."""
    rows = store.read(
        "SELECT scale FROM ratings WHERE sweep_id=? AND call_id IS NOT ? AND scale IS NOT NULL LIMIT 1",
        (sweep_id, except_call),
    )
    return str(rows[0][0]) if rows else None


def _scale_of(value: int, scale: str | None, current: str | None) -> str:
    if scale is not None and scale not in SCALES:
        raise ValidationError("scale", scale, "expected 'thumbs' (+1/-1) or 'stars' (1..5)")
    implied = "thumbs" if value == -1 else "stars" if value >= 2 else None
    if scale is not None and implied is not None and scale != implied:
        raise ValidationError("rating", value, f"is not a rating on the {scale} scale")
    return scale or implied or current or "thumbs"


def rate(
    store: Store, sweep_id: str, call_id: str, value: Any, note: str | None = None, scale: str | None = None
) -> dict[str, Any]:
    """Store (or replace) the rating of one call of one sweep, now; returns the stored record.

    ``scale`` is ``"thumbs"`` or ``"stars"``; by default -1 is a thumb, 2..5 stars, and 1 whatever the
    sweep is rated in (a thumb up in a sweep not rated yet).

    Raises ValidationError for a bad value, a call that is not in the sweep, or a rating on the other
    scale than the sweep's other ratings.
    """
    rating, text = check_rating(value, note)
    if not store.read("SELECT 1 FROM calls WHERE sweep_id=? AND call_id=?", (sweep_id, call_id)):
        raise ValidationError("call_id", call_id, f"no such call in sweep {sweep_id}")
    current = sweep_scale(store, sweep_id, except_call=call_id)
    kind = _scale_of(rating, scale, current)
    if current is not None and kind != current:
        shown = {"thumbs": "thumbs (+1/-1)", "stars": "stars (1..5)"}
        raise ValidationError(
            "rating",
            value,
            f"sweep {sweep_id} is rated in {shown[current]}, and a rating in {shown[kind]} cannot be averaged "
            f"with them; rate it in {shown[current]}, or clear the sweep's ratings first (res.rate(call_id, None))",
        )
    record = {
        "call_id": call_id,
        "sweep_id": sweep_id,
        "rating": rating,
        "note": text,
        "rated_at": utcnow_iso(),
        "scale": kind,
    }

    def fn(db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT OR REPLACE INTO ratings (sweep_id, call_id, rating, note, rated_at, scale) VALUES (?,?,?,?,?,?)",
            (sweep_id, call_id, rating, text, record["rated_at"], kind),
        )

    store.write(fn)
    return record


def rate_call(
    sweep_id: str, call_id: str, value: Any, note: str | None = None, scale: str | None = None
) -> dict[str, Any]:
    """:func:`rate` in the configured home's store: what a grid button's click handler calls
    (the view layer sits below ``llmlab.history``, so it calls this, with the exact sweep id it shows)."""
    return rate(get_store(), sweep_id, call_id, value, note, scale)


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
