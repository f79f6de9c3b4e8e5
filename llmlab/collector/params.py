"""Query-request parameters shared by the span (``T::``, :mod:`llmlab.collector.dql`) and metric (``M::``,
:mod:`llmlab.collector.metrics_query`) evaluators: both read ``time_range``, ``limit`` and ``offset`` from
an entry of a request's ``queries`` the same way, as DataKit does.
"""

from __future__ import annotations

import json
from typing import Any

from llmlab.errors import QueryError

__all__ = ["DEFAULT_LIMIT", "int_param", "intersect_ranges", "request_range"]

#: Rows (or series points) returned when a query sets no ``limit``, as DataKit.
DEFAULT_LIMIT = 1000


def intersect_ranges(
    a: tuple[int | None, int | None] | None, b: tuple[int | None, int | None] | None
) -> tuple[int | None, int | None] | None:
    """The overlap of two ``(start_ms, end_ms)`` ranges, either end open (``None``); ``None`` means no bound."""
    if a is None:
        return b
    if b is None:
        return a
    lo = [x for x in (a[0], b[0]) if x is not None]
    hi = [x for x in (a[1], b[1]) if x is not None]
    return (max(lo) if lo else None, min(hi) if hi else None)


def request_range(value: Any) -> tuple[int | None, int | None] | None:
    """A request's ``time_range`` (``[start_ms, end_ms]``, ends may be null or 0 for open) as a range.

    Raises :class:`~llmlab.errors.QueryError` for anything else.
    """
    if value is None:
        return None
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in value)
    ):
        raise QueryError(f"time_range must be [start_ms, end_ms], got {json.dumps(value)[:80]}")
    lo, hi = value
    return (int(lo) if lo else None, int(hi) if hi else None)


def int_param(spec: dict[str, Any], key: str) -> int | None:
    """``spec[key]`` as a non-negative integer (``limit``, ``offset``), or ``None`` when absent.

    Raises :class:`~llmlab.errors.QueryError` for anything else (a bool included).
    """
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise QueryError(f"{key} must be a non-negative integer, got {value!r}")
    return value
