"""Query-request parameters shared by the span (``T::``, :mod:`llmlab.collector.dql`) and metric (``M::``,
:mod:`llmlab.collector.metrics_query`) evaluators: both read ``time_range``, ``limit`` and ``offset`` from
an entry of a request's ``queries`` the same way, as DataKit does.
"""

from __future__ import annotations

import json
import math
from typing import Any

from llmlab.errors import QueryError

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_CONDITIONS",
    "MAX_IN_VALUES",
    "MAX_LIMIT",
    "MAX_OFFSET",
    "MAX_QUERIES",
    "MAX_QUERY_CHARS",
    "MAX_TIME_MS",
    "bounded_int",
    "bounded_number",
    "check_time",
    "int_param",
    "intersect_ranges",
    "operands",
    "request_range",
]

#: Rows (or series points) returned when a query sets no ``limit``, as DataKit.
DEFAULT_LIMIT = 1000

# Bounds on everything a query request can make the collector do: each number and list is checked before it
# reaches SQLite (an int past 2^63 is an OverflowError there, 200 nested ANDs a "parser stack overflow", 40,000
# IN values "too many SQL variables") and answered 400 with the reason instead.
#: Largest ``limit`` (DQL ``LIMIT`` or the request's ``limit``).
MAX_LIMIT = 1_000_000
#: Largest ``offset``.
MAX_OFFSET = 2**53
#: Largest time (ms since the epoch, either sign) in a time range: ×10^6 for nanoseconds still fits int64
#: (year 2255).
MAX_TIME_MS = 9_000_000_000_000
#: Entries of ``queries`` in one request.
MAX_QUERIES = 100
#: Characters of one DQL query.
MAX_QUERY_CHARS = 64 * 1024
#: Conditions (comparisons, IN lists, re/wildcard) in one filter (SQLite's expression tree is at most 1000 deep),
#: and values in one IN list.
MAX_CONDITIONS = 500
MAX_IN_VALUES = 1000


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
    return (
        check_time(lo, "time_range start") if lo else None,
        check_time(hi, "time_range end") if hi else None,
    )


def check_time(value: float, what: str) -> int:
    """A time in ms as an int within ±:data:`MAX_TIME_MS`; :class:`~llmlab.errors.QueryError` otherwise
    (NaN, Infinity, 1e300)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise QueryError(f"{what} must be a finite number of ms, got {value!r}")
    if not -MAX_TIME_MS <= value <= MAX_TIME_MS:
        raise QueryError(f"{what} {value:.6g} ms is out of range (at most {MAX_TIME_MS} ms from the epoch)")
    return int(value)


def bounded_number(value: int | float) -> int | float:
    """A numeric literal of a filter, storable by SQLite: an int past int64 becomes a float (10^23 compares as
    1e23), a non-finite float (``1e999``) is a :class:`~llmlab.errors.QueryError`."""
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        try:
            return float(value)
        except OverflowError:
            raise QueryError(f"number {str(value)[:40]}... is too large") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise QueryError(f"number {value!r} is not finite")
    return value


def int_param(spec: dict[str, Any], key: str) -> int | None:
    """``spec[key]`` as a non-negative integer (``limit``, ``offset``), or ``None`` when absent.

    Raises :class:`~llmlab.errors.QueryError` for anything else (a bool included).
    """
    value = spec.get(key)
    if value is None:
        return None
    return bounded_int(value, key)


def bounded_int(value: Any, key: str) -> int:
    """``value`` as a ``limit``/``offset``: an int in [0, MAX_LIMIT] / [0, MAX_OFFSET], else a QueryError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise QueryError(f"{key} must be a non-negative integer, got {str(value)[:40]}")
    cap = MAX_LIMIT if key == "limit" else MAX_OFFSET
    if value > cap:
        raise QueryError(f"{key} {str(value)[:40]} is too large (at most {cap})")
    return value


def operands(node: Any) -> list[Any]:
    """The operands of a chain of one operator in a parsed filter (``a AND b AND c`` → [a, b, c]), iteratively:
    a filter of hundreds of conditions is a tree that deep."""
    kind = node[0]
    out: list[Any] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if n[0] == kind:
            stack += [n[2], n[1]]
        else:
            out.append(n)
    return out
