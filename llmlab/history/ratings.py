"""Human ratings and prompt versions, read and written by sweep reference (``ll.ratings``,
``ll.prompt_versions``, and :func:`rate` for the grid's thumbs buttons).

The SQL is in :mod:`llmlab.store.ratings` and :mod:`llmlab.store.prompt_versions`; this module
resolves sweep names/prefixes, validates, and shapes frames.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from llmlab.history.catalog import _resolve, _store
from llmlab.store import prompt_versions as versions_sql
from llmlab.store import ratings as ratings_sql

__all__ = ["RATING_COLUMNS", "prompt_versions", "rate", "ratings", "unrate"]

RATING_COLUMNS = ["call_id", "sweep_id", "rating", "note", "rated_at", "scale"]


def rate(sweep_id: Any, call_id: str, value: int, note: str | None = None, scale: str | None = None) -> dict[str, Any]:
    """Store the rating of one call now (what the grid's thumbs/stars call from a click handler).

    Args:
        sweep_id: the sweep's id, a unique prefix, its name (newest run) or its SweepResult.
        call_id: the call rated.
        value: +1 / -1 (thumbs) or an integer 1..5; a new rating replaces the previous one.
        note: optional free text.
        scale: ``"thumbs"`` or ``"stars"``; by default -1 is a thumb, 2..5 stars, 1 the sweep's scale
            (a thumb up when it has no rating yet). A rating on the other scale than the sweep's is refused.

    Returns:
        The stored record: call_id, sweep_id, rating, note, rated_at (UTC ISO text).

    Raises:
        ValidationError: a bad value, an unknown sweep, or a call not in it.
    """
    store = _store()
    return ratings_sql.rate(store, _resolve(store, sweep_id), call_id, value, note, scale)


def unrate(sweep_id: Any, call_id: str) -> bool:
    """Remove one call's rating; True when there was one."""
    store = _store()
    return ratings_sql.clear_rating(store, _resolve(store, sweep_id), call_id)


def ratings(sweep_id: Any = None) -> pd.DataFrame:
    """Every stored rating (of one sweep, or all): call_id, sweep_id, rating, note, rated_at (UTC), scale
    (``thumbs`` or ``stars``)."""
    store = _store()
    sids = None if sweep_id is None else [_resolve(store, sweep_id)]
    df = pd.DataFrame(ratings_sql.ratings_of(store, sids), columns=RATING_COLUMNS)
    df["rating"] = pd.to_numeric(df["rating"]).astype("Int64")
    df["rated_at"] = pd.to_datetime(df["rated_at"], utc=True)
    return df


def prompt_versions(name: str | None = None) -> pd.DataFrame:
    """Every template/system/messages text ever run (of one variant name, or all), kept once.

    Columns: name, kind (template/system/messages), version (1, 2, … per name and kind: a changed
    text under a known name is its next version), hash, text (None when run with
    ``trace_content=False``), first_used (UTC), sweeps (ids that ran it, oldest first).
    """
    df = pd.DataFrame(versions_sql.list_versions(_store(), name), columns=versions_sql.VERSION_COLUMNS)
    df["version"] = pd.to_numeric(df["version"]).astype("Int64")
    df["first_used"] = pd.to_datetime(df["first_used"], utc=True)
    return df
