"""Spans back into pandas: from the local store or from DataKit's DQL API, as canonical rows."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from llmlab import schema
from llmlab.config import Config, get_config
from llmlab.errors import ConfigError
from llmlab.text import is_finite_number

SOURCES = ("local", "datakit")


def _to_ns(value: Any, name: str) -> int | None:
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


def _dedupe_attempts(df: pd.DataFrame) -> pd.DataFrame:
    """Keep the last attempt of each llmlab call (retried attempts share sweep_id+call_id)."""
    if df.empty or "call_id" not in df:
        return df
    mask = df["call_id"].notna() & df["sweep_id"].notna()
    ours = df[mask].sort_values("start_time").drop_duplicates(["sweep_id", "call_id"], keep="last")
    return pd.concat([ours, df[~mask]]).sort_values("start_time", kind="stable").reset_index(drop=True)


def rows_to_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Canonical frame from canonical row dicts read from DataKit (priced, one row per span,
    attempts deduplicated)."""
    return _finish(pd.DataFrame(list(rows)), points=True)


def _local(
    config: Config, sweep_id: str | None, since: int | None, until: int | None, limit: int | None
) -> pd.DataFrame:
    """LLM spans from the store, read column-wise (Parquet segments + the SQLite tail)."""
    from llmlab.store import get_store
    from llmlab.store.columnar import SpanColumns, arrow_filter

    store = get_store(config.home)
    where, params = ["1 = 1"], []
    if sweep_id is not None:
        where.append("sweep_id = ?")
        params.append(sweep_id)
    if since is not None:
        where.append("start_ns >= ?")
        params.append(since)
    if until is not None:
        where.append("start_ns < ?")
        params.append(until)
    table = SpanColumns(config.home).read(
        store.connection(), " AND ".join(where), params, arrow_filter(sweep_id, since, until)
    )
    if table.num_rows:
        table = table.sort_by([("start_ns", "ascending")])
    if limit is not None and table.num_rows > limit:
        # the first `limit` by (µs start, span_id), as the DataKit path picks them
        import pyarrow.compute as pc

        us = pc.divide(table["start_ns"], 1000)
        order = pc.sort_indices(table.append_column("_us", us), [("_us", "ascending"), ("span_id", "ascending")])
        table = table.take(order.slice(0, limit)).sort_by([("start_ns", "ascending")])
    return _frame_from_arrow(table)


def _frame_from_arrow(table: Any) -> pd.DataFrame:
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
            if key.startswith("assoc."):
                if key not in df:
                    df[key] = pd.Series([None] * n, dtype=object)
                df.at[i, key] = value
    return _finish(df)


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


def _finish(df: pd.DataFrame, points: bool = False) -> pd.DataFrame:
    from llmlab.pricing import price

    df = schema.coerce(df)
    if points:  # the local store keys spans by (trace_id, span_id): only DataKit can repeat one
        df = _dedupe_points(df)
    df = _text_dtypes(df)
    df = _dedupe_attempts(df)
    if not df.empty:
        df = price(df)
    return df


def spans(
    sweep_id: str | None = None,
    since: Any = None,
    until: Any = None,
    source: str | None = None,
    limit: int | None = None,
    *,
    service: str | None = None,
) -> pd.DataFrame:
    """LLM spans as one tidy DataFrame with the canonical columns (one row per LLM call).

    Args:
        sweep_id: only spans of this sweep.
        since, until: time window (datetime, ISO string, or epoch seconds); UTC assumed.
        source: ``"local"`` (the local store) or ``"datakit"`` (DQL over HTTP to the embedded
            collector or a real DataKit); default: ``"datakit"`` when export is configured, else local.
        limit: at most this many spans (the earliest first).

    Example:
        >>> df = ll.spans(sweep_id=res.sweep_id)            # doctest: +SKIP
        >>> df.groupby("model")["latency_ms"].median()      # doctest: +SKIP
    """
    config = get_config()
    if source is None:
        source = "local" if config.datakit is None else "datakit"
    if source not in SOURCES:
        raise ConfigError(f"source={source!r}: expected one of {', '.join(SOURCES)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise ConfigError(f"limit={limit!r}: expected a positive integer")
    # bounds on whole µs (rounded up), the precision of start_time in every source: then the
    # store's ns start and DataKit's µs start fall on the same side of them
    since_ns, until_ns = (
        None if t is None else -(-t // 1000) * 1000 for t in (_to_ns(since, "since"), _to_ns(until, "until"))
    )
    if source == "local":
        df = _local(config, sweep_id, since_ns, until_ns, limit)
    else:
        from llmlab.readback.datakit_query import query_spans

        df = query_spans(config, sweep_id=sweep_id, since_ns=since_ns, until_ns=until_ns, limit=limit, service=service)
    if service is not None and source == "local" and not df.empty:
        df = df[df["service"] == service].reset_index(drop=True)
    return df


__all__ = ["rows_to_frame", "spans"]
