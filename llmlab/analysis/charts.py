"""Plotly figures from a call frame (``ll.charts.*``).

Each function takes a frame with the canonical columns and returns a
``plotly.graph_objects.Figure``; nothing is read, written or fetched (``fig.write_html`` is the
caller's business). Shared rules:

- groups are labelled ``column=value`` (``temperature=0.7``) and ordered by value;
- timing charts use live successful calls (errors and llmlab cache hits left out, see
  :mod:`llmlab.stats`), and say how many were left out;
- an empty frame gives a figure with a "no data" annotation, not an exception;
- traces are per group at most (never per row); above :data:`LARGE` rows, box plots are drawn
  from precomputed quartiles and scatter plots use WebGL (``Scattergl``);
- hover text carries the first 80 characters of prompt and completion.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from llmlab.analysis.dashboard import dashboard
from llmlab.analysis.plotting import empty_figure
from llmlab.analysis.similarity import jaccard, word_set
from llmlab.analysis.stats import (
    _check_columns,
    _groups,
    group_label,
    is_error,
    live_mask,
    metric_values,
    numeric,
    pareto_front,
)
from llmlab.errors import ValidationError
from llmlab.text import as_list, snip

__all__ = ["GRID_COLUMNS", "LARGE", "cost", "dashboard", "diversity", "heatmap", "latency", "pareto", "ttft"]

#: Above this many rows, box plots are aggregated and scatters use WebGL.
LARGE = 5000
#: Columns that make up a sweep's "setting" when they vary.
GRID_COLUMNS = ("model", "temperature", "top_p", "max_tokens", "params")
SNIPPET = 80
_FRONT = "#1f77b4"
_GREY = "#b0b0b0"


def _titles(metric: str) -> str:
    units = {
        "latency_ms": "latency (ms)",
        "ttft_ms": "time to first token (ms)",
        "itl_ms": "inter-token latency (ms)",
        "queue_ms": "queue time (ms)",
        "cost_usd": "cost (USD)",
        "tokens_per_s": "throughput (tokens/s)",
        "input_tokens": "input tokens",
        "output_tokens": "output tokens",
        "total_tokens": "total tokens",
        "error": "error rate",
        "error_rate": "error rate",
    }
    return units.get(metric, metric)


def _no_values(df: pd.DataFrame, metric: str) -> str:
    """Why a frame has nothing to plot for ``metric``: say what was left out, and the first error."""
    errors = is_error(df)
    cached = ~errors & ~live_mask(df)
    parts = []
    if errors.any():
        first = (
            next((e for e in df.loc[errors, "error"].tolist() if isinstance(e, str) and e), "") if "error" in df else ""
        )
        parts.append(
            f"{int(errors.sum())} of {len(df)} calls failed" + (f" (e.g. {snip(first, SNIPPET)})" if first else "")
        )
    if cached.any() and metric in ("latency_ms", "ttft_ms", "tokens_per_s", "itl_ms", "queue_ms"):
        parts.append(f"{int(cached.sum())} cache hit(s) have no timing")
    return f"no {metric} values" + (": " + "; ".join(parts) if parts else "")


def _note(fig: go.Figure, text: str) -> None:
    fig.add_annotation(
        text=text,
        showarrow=False,
        x=0,
        y=-0.18,
        xref="paper",
        yref="paper",
        xanchor="left",
        font={"size": 11, "color": "#666"},
    )


def _hover(df: pd.DataFrame) -> list[str]:
    prompts = df["prompt"] if "prompt" in df.columns else pd.Series([None] * len(df), index=df.index)
    comps = df["completion"] if "completion" in df.columns else pd.Series([None] * len(df), index=df.index)
    return [
        f"prompt: {snip(p, SNIPPET)}<br>completion: {snip(c, SNIPPET)}"
        for p, c in zip(prompts.tolist(), comps.tolist())
    ]


def _distribution(df: pd.DataFrame, by: str | Sequence[str], metric: str, title: str) -> go.Figure:
    by_cols = as_list(by)
    if df is None or not len(df):
        return empty_figure(title)
    _check_columns(df, by_cols + [metric], "by/metric")
    values = metric_values(df, metric)
    keep = values.notna()
    dropped = int((~live_mask(df) & df[metric].notna()).sum()) if metric in df.columns else 0
    sub = df[keep]
    if not len(sub):
        return empty_figure(title, _no_values(df, metric))
    labels: list[str] = []
    ys: list[float] = []
    order: list[str] = []
    hover: list[str] = []
    stats_rows = []
    for key, g in _groups(sub, by_cols):
        label = group_label(by_cols, key) if by_cols else "all"
        order.append(label)
        v = values.loc[g.index].to_numpy(dtype=float)
        labels.extend([label] * len(v))
        ys.extend(v.tolist())
        hover.extend(_hover(g))
        stats_rows.append((label, v))
    fig = go.Figure()
    if len(sub) > LARGE:
        q = [np.percentile(v, [0, 25, 50, 75, 100], method="linear") for _, v in stats_rows]
        fig.add_trace(
            go.Box(
                x=order,
                q1=[r[1] for r in q],
                median=[r[2] for r in q],
                q3=[r[3] for r in q],
                lowerfence=[r[0] for r in q],
                upperfence=[r[4] for r in q],
                mean=[float(v.mean()) for _, v in stats_rows],
                name=metric,
                marker_color=_FRONT,
            )
        )
    else:
        fig.add_trace(
            go.Box(
                x=labels,
                y=ys,
                text=hover,
                name=metric,
                boxpoints="all",
                jitter=0.4,
                pointpos=0,
                boxmean=True,
                marker={"color": _FRONT, "size": 5, "opacity": 0.6},
                hovertemplate="%{x}<br>" + _titles(metric) + ": %{y:.1f}<br>%{text}<extra></extra>",
            )
        )
    fig.update_layout(title=title, showlegend=False, xaxis_title=", ".join(by_cols) or "", yaxis_title=_titles(metric))
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=order)
    if dropped:
        _note(fig, f"{dropped} error or cached row(s) left out")
    return fig


def latency(df: pd.DataFrame, by: str | Sequence[str] = "temperature") -> go.Figure:
    """Box plot with points of ``latency_ms`` per group (live successful calls)."""
    return _distribution(df, by, "latency_ms", f"Latency by {', '.join(as_list(by)) or 'all'}")


def ttft(df: pd.DataFrame, by: str | Sequence[str] = "model") -> go.Figure:
    """Box plot with points of time to first token (``ttft_ms``) per group."""
    return _distribution(df, by, "ttft_ms", f"Time to first token by {', '.join(as_list(by)) or 'all'}")


def cost(df: pd.DataFrame, by: str | Sequence[str] = "model") -> go.Figure:
    """Bar chart of total ``cost_usd`` per group.

    A group whose costs are all NA (no price) gets no bar (``y`` is None) and is named in a note;
    a group with some NA costs shows the sum of the known ones, marked incomplete. Run
    ``ll.price(df)`` first to (re)compute costs.
    """
    by_cols = as_list(by)
    title = f"Cost by {', '.join(by_cols) or 'all'}"
    if df is None or not len(df):
        return empty_figure(title)
    _check_columns(df, by_cols + ["cost_usd"], "by/cost")
    xs: list[str] = []
    ys: list[float | None] = []
    texts: list[str] = []
    unknown: list[str] = []
    partial: list[str] = []
    for key, g in _groups(df, by_cols):
        label = group_label(by_cols, key) if by_cols else "all"
        c = numeric(g["cost_usd"])
        xs.append(label)
        known = c[~np.isnan(c)]
        if not known.size:
            ys.append(None)
            texts.append("unknown")
            unknown.append(label)
            continue
        total = float(known.sum())
        ys.append(total)
        if known.size < c.size:
            partial.append(f"{label} ({c.size - known.size} of {c.size} calls unpriced)")
            texts.append(f"${total:.4g}*")
        else:
            texts.append(f"${total:.4g}")
    fig = go.Figure(
        go.Bar(
            x=xs,
            y=ys,
            text=texts,
            textposition="outside",
            marker_color=_FRONT,
            hovertemplate="%{x}<br>cost: $%{y:.6f}<extra></extra>",
            name="cost_usd",
        )
    )
    fig.update_layout(title=title, xaxis_title=", ".join(by_cols), yaxis_title="cost (USD)", showlegend=False)
    fig.update_xaxes(type="category")
    notes = []
    if unknown:
        notes.append("cost unknown (no price, or no token counts): " + "; ".join(unknown))
    if partial:
        notes.append("* incomplete: " + "; ".join(partial))
    if notes:
        _note(fig, "<br>".join(notes))
    return fig


_AGGS = {
    "mean": np.mean,
    "median": np.median,
    "sum": np.sum,
    "min": np.min,
    "max": np.max,
    "count": len,
    "p50": lambda v: np.percentile(v, 50, method="linear"),
    "p95": lambda v: np.percentile(v, 95, method="linear"),
}


def heatmap(
    df: pd.DataFrame, x: str = "temperature", y: str = "top_p", value: str = "latency_ms", agg: str = "mean"
) -> go.Figure:
    """Heatmap of ``agg(value)`` over an ``x`` × ``y`` grid; empty cells are None (not 0).

    ``agg`` is one of mean, median, sum, min, max, count, p50, p95; ``value="error"`` plots the
    error rate.
    """
    title = f"{agg} {value} by {x} and {y}"
    if agg not in _AGGS:
        raise ValidationError("agg", agg, f"expected one of {sorted(_AGGS)}")
    if df is None or not len(df):
        return empty_figure(title)
    _check_columns(df, [x, y], "x/y")
    values = metric_values(df, value)
    sub = df[values.notna()]
    if not len(sub):
        return empty_figure(title, _no_values(df, value))
    xkeys = sorted(sub[x].dropna().unique().tolist())
    ykeys = sorted(sub[y].dropna().unique().tolist())
    z: list[list[float | None]] = [[None for _ in xkeys] for _ in ykeys]
    for (xv, yv), g in sub.groupby([x, y], sort=True):
        v = values.loc[g.index].to_numpy(dtype=float)
        aggregate: Any = _AGGS[agg]
        z[ykeys.index(yv)][xkeys.index(xv)] = float(aggregate(v))
    fig = go.Figure(
        go.Heatmap(
            x=[group_label(x, k) for k in xkeys],
            y=[group_label(y, k) for k in ykeys],
            z=z,
            colorscale="Viridis",
            texttemplate="%{z:.4g}",
            colorbar={"title": {"text": _titles(value)}},
            hovertemplate="%{x}<br>%{y}<br>" + f"{agg} {_titles(value)}" + ": %{z:.4g}<extra></extra>",
        )
    )
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y)
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category")
    return fig


def setting_columns(df: pd.DataFrame) -> list[str]:
    """The grid columns that vary in ``df`` (model, temperature, top_p, max_tokens, params)."""
    cols = []
    for c in GRID_COLUMNS:
        if c in df.columns and df[c].astype("string").nunique(dropna=False) > 1:
            cols.append(c)
    return cols


def _hashable(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Grid columns with unhashable values (params dicts) turned into strings for grouping."""
    out = df.copy()
    for c in cols:
        if out[c].map(lambda v: isinstance(v, (dict, list))).any():
            out[c] = out[c].map(lambda v: str(v) if isinstance(v, (dict, list)) else v)
    return out


#: Plot area of the Pareto chart in pixels (the figure adds fixed margins), and how labels are sized in it.
_PLOT_W, _PLOT_H = 600.0, 340.0
_CHAR_W, _LINE_H, _MARKER_R = 7.0, 16.0, 7.0
_LABEL_PAD_X, _LABEL_PAD_Y = 120.0, 2 * 16.0 + 8.0
#: At most this many front settings are written on the chart; the rest are in the hover text.
MAX_LABELS = 8
_POSITIONS = ("top center", "bottom center", "middle right", "middle left", "top right", "bottom left")


def _padded_range(values: np.ndarray, pad_px: float, size_px: float) -> tuple[float, float]:
    """An axis range showing ``values`` with ``pad_px`` pixels free on both sides (for labels)."""
    v = values[~np.isnan(values)]
    if not v.size:
        return 0.0, 1.0
    lo, hi = float(v.min()), float(v.max())
    span = hi - lo or (abs(hi) * 0.2 or 1.0)
    pad_px = min(pad_px, size_px / 3)
    pad = pad_px * span / (size_px - 2 * pad_px)
    return lo - pad, hi + pad


def _label_box(px: float, py: float, w: float, pos: str) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) in pixels of a label of width ``w`` at ``pos`` around a marker at (px, py)."""
    r, h = _MARKER_R, _LINE_H
    vert, horiz = pos.split()
    x0 = {"center": px - w / 2, "right": px + r, "left": px - r - w}[horiz]
    y0 = {"top": py + r, "bottom": py - r - h, "middle": py - h / 2}[vert]
    return x0, y0, x0 + w, y0 + h


def _place_labels(
    sel: pd.DataFrame, shown: pd.DataFrame, xr: tuple[float, float], yr: tuple[float, float]
) -> list[str | None]:
    """A text position for up to :data:`MAX_LABELS` front points (spread along the front), chosen so
    no label overlaps another label or any marker, or leaves the plot area; None: hover only."""
    if not len(sel):
        return []

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (x - xr[0]) / (xr[1] - xr[0]) * _PLOT_W, (y - yr[0]) / (yr[1] - yr[0]) * _PLOT_H

    markers = [to_px(x, y) for x, y in zip(shown["x"], shown["quality"])]
    n = len(sel)
    order = (
        list(range(n))
        if n <= MAX_LABELS
        else sorted({round(i * (n - 1) / (MAX_LABELS - 1)) for i in range(MAX_LABELS)})
    )
    placed: list[tuple[float, float, float, float]] = []
    out: list[str | None] = [None] * n

    def free(box: tuple[float, float, float, float]) -> bool:
        x0, y0, x1, y1 = box
        if x0 < 0 or y0 < 0 or x1 > _PLOT_W or y1 > _PLOT_H:
            return False
        if any(x0 < b[2] and b[0] < x1 and y0 < b[3] and b[1] < y1 for b in placed):
            return False
        r = _MARKER_R
        return not any(x0 < mx + r and mx - r < x1 and y0 < my + r and my - r < y1 for mx, my in markers)

    for i in order:
        px, py = to_px(float(sel["x"].iloc[i]), float(sel["quality"].iloc[i]))
        w = _CHAR_W * len(str(sel["setting"].iloc[i]))
        for pos in _POSITIONS:
            box = _label_box(px, py, w, pos)
            if free(box):
                placed.append(box)
                out[i] = pos
                break
    return out


def pareto(
    df: pd.DataFrame,
    quality: str = "score",
    cost: str | None = "cost_usd",
    latency: str | None = "latency_ms",
    by: str | Sequence[str] | None = None,
) -> go.Figure:
    """Quality against cost (or latency) with one point per setting, the Pareto front highlighted.

    A setting is ``by``, or else the grid columns that vary (:func:`setting_columns`). Per
    setting: mean ``quality``, mean ``cost`` per call, mean ``latency`` (live calls). The front is
    computed over quality (maximised) and every cost/latency objective that has values
    (minimised) that every rated setting has (a partly unknown cost is left out of the front, with
    a note), with :func:`llmlab.stats.pareto_front`. ``fig.data[0]`` holds dominated settings
    (grey), ``fig.data[1]`` the front. The x axis is cost if known, else latency.

    Labels never overlap or leave the plot: at most :data:`MAX_LABELS` front settings are written
    on the chart, each at the first position around its marker (above, below, right, left, …) that
    overlaps no other label or marker; the axis ranges leave room for them. Every setting, labelled
    or not, is in the hover text.
    """
    title = f"{quality} vs cost and latency"
    if df is None or not len(df):
        return empty_figure(title)
    if quality not in df.columns:
        raise ValidationError(
            "quality", quality, "no such column; add a score first, e.g. df = ll.evals.exact_match(df)"
        )
    by_cols = as_list(by) if by is not None else setting_columns(df)
    _check_columns(df, by_cols, "by")
    work = _hashable(df, by_cols)
    q_vals = metric_values(work, quality)
    c_vals = metric_values(work, cost) if cost and cost in work.columns else None
    l_vals = metric_values(work, latency) if latency and latency in work.columns else None
    rows = []
    for key, g in _groups(work, by_cols):

        def m(vals: pd.Series | None) -> float:
            if vals is None:
                return float("nan")
            v = vals.loc[g.index].to_numpy(dtype=float)  # noqa: B023 (called within this iteration)
            v = v[~np.isnan(v)]
            return float(v.mean()) if v.size else float("nan")

        rows.append(
            {
                "setting": group_label(by_cols, key) if by_cols else "all",
                "quality": m(q_vals),
                "cost": m(c_vals),
                "latency": m(l_vals),
                "n": len(g),
            }
        )
    points = pd.DataFrame(rows)
    rated = points[points["quality"].notna()]
    if not len(rated):
        return empty_figure(title, _no_values(df, quality))
    # an objective takes part only when every rated setting has it (an unknown cost is not a low one)
    minimize = [c for c in ("cost", "latency") if len(rated) and rated[c].notna().all()]
    left_out = [c for c in ("cost", "latency") if c not in minimize and rated[c].notna().any()]
    front = pareto_front(points, minimize=minimize, maximize=["quality"])
    xcol = "cost" if "cost" in minimize else ("latency" if "latency" in minimize else None)
    if xcol is None:
        points["x"] = np.arange(len(points), dtype=float)
        xtitle = "setting"
    else:
        points["x"] = points[xcol]
        xtitle = "cost per call (USD)" if xcol == "cost" else "latency (ms)"
    hover = [
        f"{r.setting}<br>{quality}: {r.quality:.3g}<br>cost/call: "
        + ("NA" if np.isnan(r.cost) else f"${r.cost:.6g}")
        + "<br>latency: "
        + ("NA" if np.isnan(r.latency) else f"{r.latency:.1f} ms")
        + f"<br>n={r.n}"
        for r in points.itertuples()
    ]
    scatter = go.Scattergl if len(points) > 1000 else go.Scatter
    shown = points[points["quality"].notna()]
    xr = _padded_range(shown["x"].to_numpy(dtype=float), _LABEL_PAD_X, _PLOT_W)
    yr = _padded_range(shown["quality"].to_numpy(dtype=float), _LABEL_PAD_Y, _PLOT_H)
    fig = go.Figure()
    for mask, name, color in (
        (~front & points["quality"].notna(), "dominated", _GREY),
        (front, "Pareto front", _FRONT),
    ):
        sel = points[mask.to_numpy()]
        on_front = name == "Pareto front"
        if on_front:
            sel = sel.sort_values("x")
        # only (a few of) the front's settings are labelled, each where its label overlaps no other label
        # or marker and stays inside the plot; every point keeps its setting in the hover text. No line:
        # the front is over cost, latency and quality, so joining its points in this 2-D view would draw a
        # frontier that isn't there.
        places = _place_labels(sel, shown, xr, yr) if on_front and scatter is go.Scatter else [None] * len(sel)
        labelled = any(p is not None for p in places)
        fig.add_trace(
            scatter(
                x=sel["x"].tolist(),
                y=sel["quality"].tolist(),
                mode="markers+text" if labelled else "markers",
                text=[s if (p is not None or not labelled) else "" for s, p in zip(sel["setting"], places)],
                name=name,
                textposition=[p or "top center" for p in places],
                marker={"color": color, "size": 11 if on_front else 8},
                hovertext=[hover[i] for i in sel.index],
                hoverinfo="text",
                **({} if scatter is go.Scattergl else {"cliponaxis": False}),
            )
        )
    if scatter is go.Scatter:
        fig.update_layout(width=_PLOT_W + 180, height=_PLOT_H + 140, margin={"l": 80, "r": 100, "t": 60, "b": 80})
        fig.update_xaxes(range=list(xr))
        fig.update_yaxes(range=list(yr))
    fig.update_layout(title=title, xaxis_title=xtitle, yaxis_title=f"{quality} (mean)")
    notes = []
    missing = int(points["quality"].isna().sum())
    if missing:
        notes.append(f"{missing} setting(s) without {quality} values are not shown")
    for c in left_out:
        notes.append(f"{c} is unknown for some settings, so the front ignores {c}")
    if notes:
        _note(fig, "<br>".join(notes))
    return fig


def diversity_table(df: pd.DataFrame, by: str | Sequence[str] = "temperature") -> pd.DataFrame:
    """Per group: mean share of distinct completions and mean pairwise token-Jaccard distance.

    Computed per (prompt, setting) cell over successful calls — setting being ``by`` plus the
    other grid columns that vary — for cells with at least 2 completions (repeats), then averaged
    per ``by`` group. Words are those of :func:`llmlab.analysis.similarity.word_set` (case-folded;
    each CJK character a word).
    """
    by_cols = as_list(by)
    _check_columns(df, by_cols, "by")
    ok = df[~is_error(df) & df["completion"].notna()] if "completion" in df.columns else df.iloc[0:0]
    prompt_key = "prompt_id" if "prompt_id" in ok.columns and ok["prompt_id"].notna().all() else "prompt"
    if prompt_key not in ok.columns:
        raise ValidationError("df", prompt_key, "need a prompt or prompt_id column to find repeats")
    cell_cols = [prompt_key] + by_cols + [c for c in setting_columns(ok) if c not in by_cols]
    work = _hashable(ok, cell_cols)
    per_group: dict[tuple[Any, ...], list[tuple[float, float]]] = {}
    for key, g in work.groupby(cell_cols, dropna=False, sort=True):
        comps = list(g["completion"].tolist())
        if len(comps) < 2:
            continue
        distinct = len(set(comps)) / len(comps)
        sets = [word_set(c) for c in comps]
        dists = [1.0 - jaccard(a, b) for a, b in itertools.combinations(sets, 2)]
        gkey = tuple(key[1 : 1 + len(by_cols)])
        per_group.setdefault(gkey, []).append((distinct, float(np.mean(dists))))
    rows = []
    for gkey in sorted(per_group, key=lambda k: tuple((pd.isna(v), v) for v in k)):
        vals = np.array(per_group[gkey])
        rows.append(
            {
                **dict(zip(by_cols, gkey)),
                "group": group_label(by_cols, gkey),
                "cells": len(vals),
                "distinct_share": float(vals[:, 0].mean()),
                "jaccard_distance": float(vals[:, 1].mean()),
            }
        )
    return pd.DataFrame(rows, columns=by_cols + ["group", "cells", "distinct_share", "jaccard_distance"])


def diversity(df: pd.DataFrame, by: str | Sequence[str] = "temperature") -> go.Figure:
    """Output diversity per group from repeats (see :func:`diversity_table`).

    ``fig.data[0]``: mean share of distinct completions; ``fig.data[1]``: mean pairwise
    token-Jaccard distance; both 0..1, x = group labels.
    """
    title = f"Output diversity by {', '.join(as_list(by))}"
    if df is None or not len(df):
        return empty_figure(title)
    table = diversity_table(df, by)
    if not len(table):
        return empty_figure(title, "no repeated calls: run the sweep with repeats > 1")
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=table["group"].tolist(),
            y=table["distinct_share"].tolist(),
            name="distinct completions (share)",
            hovertemplate="%{x}<br>distinct share: %{y:.2f}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Bar(
            x=table["group"].tolist(),
            y=table["jaccard_distance"].tolist(),
            name="mean pairwise Jaccard distance",
            hovertemplate="%{x}<br>Jaccard distance: %{y:.2f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        barmode="group",
        xaxis_title=", ".join(as_list(by)),
        yaxis_title="diversity (0 = identical, 1 = all different)",
        yaxis_range=[0, 1.05],
    )
    fig.update_xaxes(type="category")
    return fig
