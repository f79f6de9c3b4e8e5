"""Spans back into pandas: from the local store or from DataKit's DQL API, as canonical rows."""

from __future__ import annotations

from typing import Any

import pandas as pd

from llmlab.config import Config, get_config
from llmlab.errors import ConfigError
from llmlab.readback.datakit_query import query_spans
from llmlab.readback.frames import SOURCES, frame_from_arrow, rows_to_frame, to_ns


def _local(
    config: Config, sweep_id: str | None, since: int | None, until: int | None, limit: int | None
) -> pd.DataFrame:
    """LLM spans from the store, read column-wise (Parquet segments + the SQLite tail)."""
    from llmlab.store import get_store
    from llmlab.store.columnar import SpanColumns, arrow_filter

    store = get_store(config.home)
    where: list[str] = ["1 = 1"]
    params: list[Any] = []
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
    return frame_from_arrow(table)


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
        None if t is None else -(-t // 1000) * 1000 for t in (to_ns(since, "since"), to_ns(until, "until"))
    )
    if source == "local":
        df = _local(config, sweep_id, since_ns, until_ns, limit)
    else:
        df = query_spans(config, sweep_id=sweep_id, since_ns=since_ns, until_ns=until_ns, limit=limit, service=service)
    if service is not None and source == "local" and not df.empty:
        df = df[df["service"] == service].reset_index(drop=True)
    return df


__all__ = ["rows_to_frame", "spans"]
