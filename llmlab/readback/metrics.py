"""OpenTelemetry metrics back into pandas: ``ll.metrics()``.

OpenLLMetry (traceloop-sdk, metrics on by default) exports OTLP metrics to
``$TRACELOOP_BASE_URL/v1/metrics``; DataKit stores each data point as a point of measurement
``otel_service`` (see :mod:`llmlab.collector.metrics_query` for the shape) and answers DQL
``M::otel_service`` queries. This module runs that query (against the embedded collector or a
real DataKit) and turns the wide points back into one tidy row per metric data point.

What traceloop-sdk 0.62 (OpenAI instrumentation) sends, all cumulative unless the app sets
``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``:

============================================== ========= ===== ==============================
name                                           kind      unit  attributes (besides model etc.)
============================================== ========= ===== ==============================
``gen_ai.client.token.usage``                  histogram token ``gen_ai.token.type`` input/output
``gen_ai.client.operation.duration``           histogram s     ``error.type`` on failures
``gen_ai.server.time_to_first_token``          histogram s     streaming calls only
``llm.chat_completions.streaming_time_to_generate`` histogram s streaming calls only
``gen_ai.client.generation.choices``           sum       choice ``gen_ai.response.finish_reason``
``llm.openai.chat_completions.exceptions``     sum       time  ``error.type``
============================================== ========= ===== ==============================

DataKit 1.84 (``internal/plugins/inputs/opentelemetry/metric.go``) writes no ``__temporality``
tag and nothing else that tells a sum from a gauge (later DataKits, through cliutils
``otlp.ParseResourceMetricsV2``, tag sums with ``__temporality``; the embedded collector does
too). A point is therefore read as a sum when it carries ``__temporality`` or when its name is
one of OpenLLMetry's known counters (:data:`KNOWN_SUMS`, the ``sum`` rows above); any other
unmarked single value is a gauge. DataKit 1.84 also writes a histogram's ``_min``/``_max`` as 0
when the data point has none: ``min == max == 0`` with a non-zero ``sum`` reads as NA.

The duration histograms use the SDK's default buckets (0, 5, 10, 25 … seconds), far too coarse
for LLM latency: use ``count``/``sum`` (mean) from metrics and percentiles from spans.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from llmlab.config import get_config
from llmlab.errors import ConfigError

__all__ = ["KNOWN_SUMS", "METRIC_COLUMNS", "metrics", "points_to_frame"]

#: OpenLLMetry's counters (OTLP sums): read as sums even without DataKit's ``__temporality`` tag.
KNOWN_SUMS = frozenset(
    {
        "gen_ai.client.generation.choices",
        "llm.openai.chat_completions.exceptions",
        "llm.openai.embeddings.exceptions",
        "llm.openai.image_generations.exceptions",
        "llm.anthropic.completion.exceptions",
    }
)

MEASUREMENT = "otel_service"
#: Leading columns of ``ll.metrics()``; attribute columns (DataKit tag names) follow, sorted.
METRIC_COLUMNS = [
    "time",
    "service",
    "name",
    "kind",
    "unit",
    "temporality",
    "value",
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "bucket_bounds",
    "bucket_counts",
    "value_delta",
    "count_delta",
    "sum_delta",
]
_STATS = ("count", "sum", "min", "max", "avg")
_NOT_ATTRS = {"time", "le", "unit", "__temporality", "service_name", "remote_ip"}


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _le(text: Any) -> float:
    return math.inf if str(text) in ("+Inf", "inf", "+inf") else float(text)


def points_to_frame(points: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Tidy metric rows from DataKit ``otel_service`` points (dicts of column → value).

    A histogram's base point (``<name>_count``/``_sum``/…) and its bucket points (``<name>_bucket``
    with tag ``le``) are joined back into one row with ``bucket_bounds`` (upper bounds, the last
    ``inf``) and ``bucket_counts`` (per bucket, not cumulative, as in OTLP).
    """
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    buckets: dict[tuple[Any, ...], list[tuple[float, float]]] = {}
    for point in points:
        tags = {k: v for k, v in point.items() if v is not None and isinstance(v, str) and k != "time"}
        fields = {k: v for k, v in point.items() if v is not None and _is_num(v) and k != "time"}
        # DataKit writes an exponential histogram's _avg as a string
        for k, v in list(tags.items()):
            if k.endswith("_avg") and k[:-4] + "_count" in fields:
                fields[k] = float(v)
                del tags[k]
        attrs = tuple(sorted((k, v) for k, v in tags.items() if k not in ("le", "quantile")))
        t = point.get("time")
        if "le" in tags:
            for f, v in fields.items():
                if f.endswith("_bucket"):
                    buckets.setdefault((t, f[:-7], attrs), []).append((_le(tags["le"]), float(v)))
            continue
        hist = {f[: -len("_count")] for f in fields if f.endswith("_count") and f[: -len("_count")] + "_sum" in fields}
        for base in hist:
            row = rows.setdefault((t, base, attrs), {"kind": "histogram"})
            for stat in _STATS:
                if f"{base}_{stat}" in fields:
                    row[stat] = float(fields[f"{base}_{stat}"])
            if "avg" in row:
                row["kind"] = "exponential_histogram"
            if row.get("min") == 0.0 and row.get("max") == 0.0 and row.get("sum") not in (None, 0.0):
                row["min"] = row["max"] = None  # DataKit 1.84 writes 0 for an unset min/max (metric.go)
        for f, v in fields.items():
            if any(f == f"{base}_{stat}" for base in hist for stat in _STATS):
                continue
            kind = "sum" if "__temporality" in tags or f in KNOWN_SUMS else "gauge"
            if "quantile" in tags:  # a summary's quantile point: keep it as its own row
                kind = "summary_quantile"
            row = rows.setdefault(
                (t, f, attrs + ((("quantile", tags["quantile"]),) if "quantile" in tags else ())), {"kind": kind}
            )
            row["value"] = float(v)
    out = []
    for (t, name, attrs), row in rows.items():
        tags = dict(attrs)
        bk = sorted(buckets.get((t, name, attrs), []))
        counts, prev = [], 0.0
        for _, cum in bk:
            counts.append(cum - prev)
            prev = cum
        out.append(
            {
                "time": t,
                "service": tags.get("service_name"),
                "name": name,
                "kind": row["kind"],
                "unit": tags.get("unit"),
                "temporality": tags.get("__temporality"),
                "value": row.get("value"),
                **{s: row.get(s) for s in _STATS},
                "bucket_bounds": [b for b, _ in bk] if bk else None,
                "bucket_counts": counts if bk else None,
                **{k: v for k, v in tags.items() if k not in _NOT_ATTRS},
            }
        )
    return _frame(out)


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for col in METRIC_COLUMNS:
        if col not in df.columns:
            df[col] = pd.NA
    attrs = sorted(c for c in df.columns if c not in METRIC_COLUMNS)
    df = df[METRIC_COLUMNS + attrs]
    df["time"] = pd.to_datetime(df["time"], unit="ms", utc=True)
    for col in ("value", "count", "sum", "min", "max", "avg"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Float64")
    if df.empty:
        return df.reset_index(drop=True)
    df = df.sort_values(["time", "name"], kind="stable").reset_index(drop=True)
    return _deltas(df, attrs)


def _deltas(df: pd.DataFrame, attrs: list[str]) -> pd.DataFrame:
    """Per-interval increments of cumulative series (``*_delta``); delta series are copied.

    A series is one metric with one set of attributes (``service_instance_id`` among them, so a
    restarted process starts a new series). A drop in a cumulative value is a reset: the
    increment is then the new value. Without a ``__temporality`` tag (DataKit sets it on sums
    only) a histogram is taken as cumulative, the OTel SDK default.
    """
    keys = ["service", "name", *attrs]
    cumulative = df["temporality"].fillna("cumulative").eq("cumulative") & df["kind"].isin(
        ["sum", "histogram", "exponential_histogram"]
    )
    for col, out in (("value", "value_delta"), ("count", "count_delta"), ("sum", "sum_delta")):
        values = df[col].astype("float64")
        grouped = values.groupby([df[k].astype("string").fillna("") for k in keys], sort=False)
        diff = grouped.diff()
        diff = diff.where(diff.isna() | (diff >= 0), values)  # reset
        diff = diff.fillna(values)  # first point of a series: everything since it started
        df[out] = pd.Series(values.where(~cumulative, diff), index=df.index).astype("Float64")
        df.loc[df["kind"].isin(["gauge", "summary_quantile"]), out] = pd.NA
    return df


def _name_filter(names: Sequence[str]) -> str:
    parts = []
    for n in names:
        q = f"`{n}`"
        parts += [f"{q} >= 0", f"{q} < 0", f"`{n}_count` >= 0", f"`{n}_bucket` >= 0"]
    return "(" + " OR ".join(parts) + ")"


def metrics(
    name: str | Sequence[str] | None = None,
    since: Any = None,
    until: Any = None,
    service: str | None = None,
    source: str | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """OpenTelemetry metric data points as a tidy DataFrame (one row per data point).

    Args:
        name: a metric name (``"gen_ai.client.token.usage"``) or a list of them; default all.
        since, until: time window (datetime, ISO string, or epoch seconds; UTC assumed);
            default the last 30 days.
        service: only this ``service.name``.
        source: ``"datakit"`` (DQL ``M::otel_service`` over HTTP to the embedded collector or a
            real DataKit) — the only place metrics are kept; ``"local"`` is refused with a reason.
        limit: at most this many DataKit points are read (a histogram is 1 + one per bucket).

    Returns:
        columns :data:`METRIC_COLUMNS` (``time`` UTC; ``kind`` gauge/sum/histogram/…;
        ``value`` for gauges and sums; ``count``/``sum``/``min``/``max`` and
        ``bucket_bounds``/``bucket_counts`` for histograms; ``*_delta`` the increase since the
        previous point of the same series for cumulative series), then one column per
        attribute in DataKit's underscore form (``gen_ai_token_type``, ``gen_ai_response_model``).

    Example:
        >>> m = ll.metrics("gen_ai.client.token.usage")                      # doctest: +SKIP
        >>> m.groupby("gen_ai_token_type")["sum_delta"].sum()                 # doctest: +SKIP
    """
    from llmlab.readback.datakit_query import dql_string, iter_points
    from llmlab.readback.frames import to_ns

    names: list[str] | None
    if name is None:
        names = None
    elif isinstance(name, str):
        names = [name]
    elif isinstance(name, (list, tuple)) and name and all(isinstance(n, str) and n for n in name):
        names = list(name)
    else:
        raise ConfigError(f"name={name!r}: expected a metric name or a list of metric names")
    for n in names or []:
        if "`" in n or not n.strip():
            raise ConfigError(f"name={n!r}: not a valid metric name")
    if service is not None and (not isinstance(service, str) or not service):
        raise ConfigError(f"service={service!r}: expected a service name")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise ConfigError(f"limit={limit!r}: expected a positive integer")
    config = get_config()
    source = source or "datakit"
    if source == "local":
        raise ConfigError(
            "source='local': metrics are not kept in the local store, only by the collector "
            "(DataKit or the embedded one); use source='datakit'"
        )
    if source != "datakit":
        raise ConfigError(f"source={source!r}: expected 'datakit'")
    since_ns, until_ns = to_ns(since, "since"), to_ns(until, "until")
    now_ms = int(time.time() * 1000)
    start_ms = since_ns // 1_000_000 if since_ns is not None else now_ms - 30 * 24 * 3600 * 1000
    end_ms = until_ns // 1_000_000 if until_ns is not None else now_ms + 60_000
    conds = []
    if service is not None:
        conds.append(f"service_name = {dql_string(service)}")
    if names:
        conds.append(_name_filter(names))
    where = f" {{ {', '.join(conds)} }}" if conds else ""
    query = f"M::{MEASUREMENT}{where} ORDER BY time ASC"
    points = list(iter_points(config, query, (start_ms, end_ms), limit))
    df = points_to_frame(points)
    if names and not df.empty:
        df = df[df["name"].isin(names)].reset_index(drop=True)
    return df
