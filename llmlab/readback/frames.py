"""Rows to the canonical call frame: the one shape every reading of spans returns, whatever its source.

Both readers end here: :mod:`llmlab.readback.spans` (the local store's columns, as Arrow) and
:mod:`llmlab.readback.datakit_query` (canonical row dicts decoded from DQL points). One place for coercion,
text dtypes, de-duplication and pricing is what makes frames from the two sources compare equal.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from llmlab import schema
from llmlab.errors import ConfigError
from llmlab.text import is_finite_number

__all__ = ["SOURCES", "dedupe_attempts", "finish", "frame_from_arrow", "rows_to_frame", "to_ns"]

#: Where spans can be read from: the local store, or DQL over HTTP (the embedded collector or a real DataKit).
SOURCES = ("local", "datakit")


def to_ns(value: Any, name: str) -> int | None:
    """A time bound given as a datetime, a timestamp string or epoch seconds (or ns), as epoch nanoseconds.

    Naive times are taken as UTC; ``None`` stays ``None``. ``name`` (the argument's name) words the
    :class:`~llmlab.errors.ConfigError` raised for anything else.
    """
    if value is None:
        return None
    problem = f"{name}={value!r:.80}: expected a datetime, a timestamp string or epoch seconds"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        ns = int(value * 1e9) if is_finite_number(value) and value < 1e11 else value  # seconds, or already ns
        # NaN would filter nothing, inf would not convert, past int64 the store cannot compare it
        if not is_finite_number(ns) or not -(2**63) < int(ns) < 2**63:
            raise ConfigError(problem + " (a finite time within the years 1677-2262)")
        return int(ns)
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError):
        raise ConfigError(problem) from None
    if ts is pd.NaT:  # "nan", "NaT", "": no time at all, not "since the beginning"
        raise ConfigError(problem)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return int(ts.value)


def dedupe_attempts(df: pd.DataFrame) -> pd.DataFrame:
    """Keep the last attempt of each llmlab call (retried attempts share sweep_id+call_id)."""
    if df.empty or "call_id" not in df:
        return df
    mask = df["call_id"].notna() & df["sweep_id"].notna()
    ours = df[mask].sort_values("start_time").drop_duplicates(["sweep_id", "call_id"], keep="last")
    return pd.concat([ours, df[~mask]]).sort_values("start_time", kind="stable").reset_index(drop=True)


def rows_to_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Canonical frame from canonical row dicts read from DataKit (priced, one row per span,
    attempts deduplicated)."""
    return finish(pd.DataFrame(list(rows)), points=True)


def frame_from_arrow(table: Any) -> pd.DataFrame:
    """Canonical frame from the store's span columns (a ``pyarrow.Table`` as ``SpanColumns.read`` returns).

    Times are cut to whole microseconds, DataKit's precision, so both sources compare equal.
    """
    import pyarrow as pa

    n = table.num_rows
    extras = table["extras"].to_pylist() if table["extras"].null_count < n else []
    # DataKit's microsecond precision, as schema.datakit_times does for the other sources
    start_ns = table["start_ns"].to_numpy()
    start = start_ns // 1000 * 1000
    end = start + (table["end_ns"].to_numpy() - start_ns) // 1000 * 1000
    table = table.drop_columns(["rowid", "start_ns", "end_ns", "extras"])
    df = table.to_pandas(types_mapper=lambda t: {pa.float64(): pd.Float64Dtype(), pa.int64(): pd.Int64Dtype()}.get(t))
    df["start_time"] = pd.to_datetime(start, unit="ns", utc=True)
    df["end_time"] = pd.to_datetime(end, unit="ns", utc=True)
    df = df.rename(columns={"name": "span_name"})
    df["tokens_estimated"] = df["tokens_estimated"].fillna(0).astype(bool)
    df["cached"] = False
    df["cost_usd"] = np.nan
    df["retries"] = df["attempts"].sub(1).clip(lower=0)
    for i, raw in enumerate(extras):  # association properties of other apps' spans (and m001 rows)
        if not raw:
            continue
        for key, value in json.loads(raw).items():
            if key.startswith("assoc.") or key in schema.VARIANT_ATTRS:
                if key not in df:
                    df[key] = pd.Series([None] * n, dtype=object)
                df.at[i, key] = value
    return finish(df)


_PANDAS3 = int(pd.__version__.split(".", 1)[0]) >= 3
_TEXT_COLUMNS = [
    c
    for c in schema.CANONICAL_COLUMNS + schema.EXTRA_COLUMNS
    if c not in schema.FLOAT_COLUMNS | schema.INT_COLUMNS | schema.BOOL_COLUMNS | schema.TIME_COLUMNS
]


def _text_dtypes(df: pd.DataFrame) -> pd.DataFrame:
    """One dtype for the text columns whatever the source (an all-NA column would otherwise be
    ``object`` from one source and ``str`` from another), so frames from the local store and
    from DataKit compare equal."""
    for col in _TEXT_COLUMNS:
        s = df[col]
        df[col] = s.astype("str") if _PANDAS3 else s.astype(object).where(s.notna(), None)
    return df


def _dedupe_points(df: pd.DataFrame) -> pd.DataFrame:
    """One row per span: a span DataKit stored twice (an export whose answer was lost and was
    re-sent; DataKit does not de-duplicate) is one call."""
    if df.empty:
        return df
    keyed = df["span_id"].notna() & df["trace_id"].notna()
    dup = keyed & df.duplicated(["trace_id", "span_id"], keep="first")
    return df[~dup].reset_index(drop=True) if dup.any() else df


def finish(df: pd.DataFrame, points: bool = False) -> pd.DataFrame:
    """Coerce ``df`` to the canonical dtypes, de-duplicate it and price it.

    ``points=True`` for rows read from DataKit, which may hold one span twice (a re-sent export).
    """
    from llmlab.pricing import price

    df = schema.coerce(df)
    if points:  # the local store keys spans by (trace_id, span_id): only DataKit can repeat one
        df = _dedupe_points(df)
    df = _text_dtypes(df)
    df = dedupe_attempts(df)
    if not df.empty:
        df = price(df)
    return df
