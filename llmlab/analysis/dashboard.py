"""An overview dashboard of LLM traffic over time (``ll.charts.dashboard``).

The Guance "OpenLLMetry" dashboard of the seed article shows request volume, request duration,
tokens and cost over time; this is the same view, drawn with plotly from a call frame (spans
read back with ``ll.spans()`` from any traced app, or a sweep's ``res.df``). Nothing is read or
fetched here: :func:`dashboard_frame` aggregates, :func:`dashboard` draws what it computed.

Rules (they decide what a number means):

- a call belongs to the interval holding its ``start_time`` (intervals are aligned to the epoch,
  as ``Timestamp.floor`` does); every interval between the first and the last is present, so
  an idle interval shows 0 requests rather than being skipped;
- requests, errors, error rate, tokens and cost count every call (errors too); latency and TTFT
  percentiles use live successful calls only (errors and llmlab cache hits left out, as in
  :mod:`llmlab.stats`), linear interpolation (numpy's default), NaN where an interval has none;
- cumulative cost is the running sum of the per-interval cost (NA costs count as 0) per group;
- the interval, unless given, is the smallest of :data:`INTERVALS` that gives at most
  :data:`MAX_BUCKETS` intervals over the data's time span.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from llmlab.analysis.plotting import say_empty
from llmlab.analysis.stats import is_cached, is_error
from llmlab.errors import ValidationError
from llmlab.text import is_na

__all__ = ["INTERVALS", "MAX_BUCKETS", "PANELS", "choose_interval", "dashboard", "dashboard_frame"]

#: Candidate intervals, shortest first (pandas offset aliases).
INTERVALS: tuple[str, ...] = (
    "1s",
    "2s",
    "5s",
    "10s",
    "15s",
    "30s",
    "1min",
    "2min",
    "5min",
    "10min",
    "15min",
    "30min",
    "1h",
    "2h",
    "6h",
    "12h",
    "1D",
    "7D",
)
#: The automatic interval gives at most this many intervals; consecutive candidates differ by at
#: most 3x, so it gives at least 20 too (spans shorter than 20 s, or longer than 60 days, aside).
MAX_BUCKETS = 60
#: Refuse an interval that would give more intervals than this (per group).
MAX_DRAWN = 20_000
#: Panel keys, in drawing order (also the ``meta["panel"]`` of each trace).
PANELS: tuple[str, ...] = ("requests", "latency", "ttft", "tokens", "cost", "error_rate")
_TITLES = {
    "requests": "requests per interval",
    "latency": "latency ms (p50 solid, p95 dotted)",
    "ttft": "time to first token ms (p50 solid, p95 dotted)",
    "tokens": "tokens per interval (in light, out dark)",
    "cost": "cumulative cost (USD)",
    "error_rate": "error rate",
}


def _interval(interval: Any) -> pd.Timedelta:
    try:
        td = pd.Timedelta(interval)
    except (ValueError, TypeError):
        raise ValidationError("interval", interval, "expected a duration such as '10s', '1min', '1h'") from None
    if td <= pd.Timedelta(0):
        raise ValidationError("interval", interval, "must be positive")
    return td


def choose_interval(start: pd.Timestamp, end: pd.Timestamp) -> str:
    """The smallest of :data:`INTERVALS` giving at most :data:`MAX_BUCKETS` intervals from start to end."""
    for alias in INTERVALS:
        td = pd.Timedelta(alias)
        if (end.floor(td) - start.floor(td)) / td + 1 <= MAX_BUCKETS:
            return alias
    return INTERVALS[-1]


def _label(value: Any) -> str:
    return "(none)" if is_na(value) else str(value)


def dashboard_frame(df: pd.DataFrame, interval: Any = None, by: str | None = "service") -> pd.DataFrame:
    """The numbers behind :func:`dashboard`: one row per interval × group.

    Args:
        df: a call frame with the canonical columns (``start_time`` required).
        interval: a duration (``"10s"``, ``"5min"``, a ``Timedelta``); default chosen from the
            time span (see the module docstring).
        by: the column splitting the traffic (``"service"``, ``"model"``, any column), or None.

    Returns:
        columns ``time`` (interval start, UTC), ``group``, ``requests``, ``errors``,
        ``error_rate``, ``latency_p50``, ``latency_p95``, ``ttft_p50``, ``ttft_p95``,
        ``input_tokens``, ``output_tokens``, ``cost_usd``, ``cum_cost_usd``; ``.attrs["interval"]``
        is the interval used.
    """
    if not isinstance(df, pd.DataFrame):
        raise ValidationError("df", type(df).__name__, "expected a pandas DataFrame")
    if "start_time" not in df.columns:
        raise ValidationError(
            "df", list(df.columns)[:8], "has no 'start_time' column: pass a call frame (ll.spans() or res.df)"
        )
    if by is not None and by not in df.columns:
        raise ValidationError("by", by, "no such column (try 'service' or 'model')")
    times = pd.to_datetime(df["start_time"], utc=True)
    ok = times.notna()
    df, times = df[ok], times[ok]
    columns = [
        "time",
        "group",
        "requests",
        "errors",
        "error_rate",
        "latency_p50",
        "latency_p95",
        "ttft_p50",
        "ttft_p95",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "cum_cost_usd",
    ]
    if df.empty:
        out = pd.DataFrame(columns=columns)
        out.attrs["interval"] = None if interval is None else str(interval)
        return out
    alias = choose_interval(times.min(), times.max()) if interval is None else interval
    td = _interval(alias)
    bucket = times.dt.floor(td)
    n_bins = int((bucket.max() - bucket.min()) / td) + 1
    if n_bins > MAX_DRAWN:
        raise ValidationError("interval", alias, f"gives {n_bins} intervals over this data; use a longer one")
    bins = pd.date_range(bucket.min(), bucket.max(), freq=td)
    groups = df[by].map(_label) if by is not None else pd.Series("all", index=df.index)
    err = is_error(df).to_numpy()
    live = ~err & ~is_cached(df).to_numpy()

    def col(name: str) -> pd.Series:
        if name not in df.columns:
            return pd.Series(np.nan, index=df.index)
        return pd.Series(
            pd.to_numeric(df[name], errors="coerce").astype("Float64").to_numpy(dtype=float, na_value=np.nan),
            index=df.index,
        )

    data = pd.DataFrame(
        {
            "time": bucket,
            "group": groups,
            "requests": 1,
            "errors": err.astype(int),
            "latency": col("latency_ms").where(live),
            "ttft": col("ttft_ms").where(live),
            "input_tokens": col("input_tokens").fillna(0.0),
            "output_tokens": col("output_tokens").fillna(0.0),
            "cost_usd": col("cost_usd").fillna(0.0),
        }
    )
    grouped = data.groupby(["group", "time"], sort=True)
    agg = grouped[["requests", "errors", "input_tokens", "output_tokens", "cost_usd"]].sum()
    # quantile() interpolates linearly, as numpy's percentile does
    for metric in ("latency", "ttft"):
        agg[f"{metric}_p50"] = grouped[metric].quantile(0.5)
        agg[f"{metric}_p95"] = grouped[metric].quantile(0.95)
    full = pd.MultiIndex.from_product([sorted(data["group"].unique()), bins], names=["group", "time"])
    agg = agg.reindex(full)
    for c in ("requests", "errors", "input_tokens", "output_tokens", "cost_usd"):
        agg[c] = agg[c].fillna(0)
    out = agg.reset_index()
    out["requests"] = out["requests"].astype(int)
    out["errors"] = out["errors"].astype(int)
    out["error_rate"] = (out["errors"] / out["requests"]).where(out["requests"] > 0)
    out["cum_cost_usd"] = out.groupby("group", sort=False)["cost_usd"].cumsum()
    out = out[columns]
    out.attrs["interval"] = str(alias)
    return out


def dashboard(
    df: pd.DataFrame, interval: Any = None, by: str | None = "service", title: str | None = None
) -> go.Figure:
    """One figure with the overview panels of LLM traffic over time, split by service or model.

    Panels: requests per interval, latency p50/p95 per interval, TTFT p50/p95, tokens in/out per
    interval, cumulative cost, error rate. Each trace carries ``meta = {"panel", "group",
    "stat"}`` and the figure ``layout.meta = {"interval": ...}``, so the numbers can be read
    back from ``fig.data``; they are those of :func:`dashboard_frame`.

    Args:
        df: a call frame (``ll.spans()``, ``res.df``).
        interval: interval length (``"10s"``, ``"1min"``, ``pd.Timedelta``); default: chosen from
            the data's time span, aiming at 20–60 intervals.
        by: ``"service"`` (default), ``"model"``, any other column, or None for one group.
        title: figure title; default names the interval.

    Example:
        >>> fig = ll.charts.dashboard(ll.spans(since="2025-01-01"), by="model")   # doctest: +SKIP
    """
    frame = dashboard_frame(df, interval=interval, by=by)
    alias = frame.attrs.get("interval")
    fig = make_subplots(
        rows=3,
        cols=2,
        shared_xaxes=True,
        vertical_spacing=0.09,
        horizontal_spacing=0.08,
        subplot_titles=[_TITLES[p] for p in PANELS],
    )
    fig.update_layout(
        title=title or (f"LLM traffic, {alias} intervals" + (f", by {by}" if by else "") if alias else "LLM traffic"),
        barmode="stack",
        height=820,
        hovermode="x unified",
        meta={"interval": alias, "by": by},
        legend={"orientation": "h", "y": -0.08},
    )
    if frame.empty:
        return say_empty(fig)
    palette = qualitative.Plotly
    pos = {p: (i // 2 + 1, i % 2 + 1) for i, p in enumerate(PANELS)}
    for gi, (group, g) in enumerate(frame.groupby("group", sort=True)):
        color = palette[gi % len(palette)]
        x = g["time"]

        def add(trace: Any, panel: str, stat: str, first: bool = False) -> None:
            trace.update(legendgroup=group, showlegend=first, meta={"panel": panel, "group": group, "stat": stat})  # noqa: B023 (called within this iteration)
            fig.add_trace(trace, row=pos[panel][0], col=pos[panel][1])

        add(go.Bar(x=x, y=g["requests"], name=group, marker_color=color), "requests", "requests", first=True)
        for stat, dash in (("p50", "solid"), ("p95", "dot")):
            for panel in ("latency", "ttft"):
                add(
                    go.Scatter(
                        x=x,
                        y=g[f"{panel}_{stat}"],
                        name=f"{group} {stat}",
                        mode="lines+markers",
                        line={"color": color, "dash": dash},
                        connectgaps=False,
                    ),
                    panel,
                    stat,
                )
        add(go.Bar(x=x, y=g["input_tokens"], name=f"{group} in", marker_color=color, opacity=0.55), "tokens", "input")
        add(go.Bar(x=x, y=g["output_tokens"], name=f"{group} out", marker_color=color), "tokens", "output")
        add(
            go.Scatter(x=x, y=g["cum_cost_usd"], name=group, mode="lines", line={"color": color, "shape": "hv"}),
            "cost",
            "cum_cost_usd",
        )
        add(
            go.Scatter(x=x, y=g["error_rate"], name=group, mode="lines+markers", line={"color": color}),
            "error_rate",
            "error_rate",
        )
    fig.update_yaxes(rangemode="tozero")
    fig.update_yaxes(range=[0, 1.05], tickformat=".0%", row=3, col=2)
    return fig
