"""Spans back into pandas: from the local store or from DataKit's DQL API, as canonical rows."""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any, Iterable

import pandas as pd

from . import schema
from .config import Config, get_config
from .errors import ConfigError

SOURCES = ("local", "datakit")


def _to_ns(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value * 1e9) if value < 1e11 else int(value)  # seconds, or already ns
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ConfigError(f"{name}={value!r}: expected a datetime, a timestamp string or epoch seconds") from None
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
    """Canonical frame from canonical row dicts (priced, attempts deduplicated)."""
    from .pricing import price

    df = schema.frame(rows)
    df = _dedupe_attempts(df)
    if not df.empty:
        df = price(df)
    return df


def _local(config: Config, sweep_id: str | None, since: int | None, until: int | None, limit: int | None) -> pd.DataFrame:
    from .store import get_store

    store = get_store(config.home)
    where, params = ["is_llm = 1"], []
    if sweep_id is not None:
        where.append("sweep_id = ?")
        params.append(sweep_id)
    if since is not None:
        where.append("start_ns >= ?")
        params.append(since)
    if until is not None:
        where.append("start_ns < ?")
        params.append(until)
    sql = f"SELECT row_json FROM spans WHERE {' AND '.join(where)} ORDER BY start_ns"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    loads = json.loads
    rows = [loads(r[0]) for r in store.read(sql, params)]
    return rows_to_frame(rows)


def spans(sweep_id: str | None = None, since: Any = None, until: Any = None, source: str | None = None,
          limit: int | None = None, *, service: str | None = None) -> pd.DataFrame:  # fmt: skip
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
    since_ns, until_ns = _to_ns(since, "since"), _to_ns(until, "until")
    if source == "local":
        df = _local(config, sweep_id, since_ns, until_ns, limit)
    else:
        from .datakit_query import query_spans

        df = query_spans(config, sweep_id=sweep_id, since_ns=since_ns, until_ns=until_ns, limit=limit, service=service)
    if service is not None and source == "local" and not df.empty:
        df = df[df["service"] == service].reset_index(drop=True)
    return df


__all__ = ["spans", "rows_to_frame", "_dt"]
