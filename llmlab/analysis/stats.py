"""Summaries and comparisons of call frames: ``ll.summary``, ``ll.compare``, Pareto fronts.

Everything works on any frame with the canonical columns and is pure (no I/O).

Conventions, so the numbers mean the same thing everywhere (charts use them too):

- Percentiles use numpy's default *linear* interpolation (``np.percentile(..., method="linear")``):
  p50 of [1, 2, 3, 4] is 2.5, p95 of 1..20 is 19.05.
- Timing metrics (``latency_ms``, ``ttft_ms``, ``tokens_per_s``, ``itl_ms``, ``queue_ms``)
  describe *live successful* calls: rows with ``status="error"`` or ``cached=True`` (answered from
  llmlab's response cache) are left out of them, because a failure or a cache hit says nothing
  about the endpoint's speed. Counts, tokens and cost use every row.
- NA values are skipped, never treated as 0; a statistic over no values is NA.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from llmlab.analysis.estimates import (
    TIMING_METRICS,
    _check_columns,
    boot_p_value,
    effect_size,
    format_metric,
    group_label,
    higher_is_better,
    holm,
    is_cached,
    is_error,
    live_mask,
    metric_values,
    numeric,
    percentile_interval,
    stat_fn,
)
from llmlab.analysis.money import show_money
from llmlab.analysis.paired import compare_by_prompt, resolve_unit, shares_prompts
from llmlab.errors import ValidationError
from llmlab.text import as_list

__all__ = [
    "MIN_N",
    "TIMING_METRICS",
    "boot_p_value",
    "compare",
    "effect_size",
    "format_metric",
    "group_label",
    "higher_is_better",
    "holm",
    "is_cached",
    "is_error",
    "live_mask",
    "metric_values",
    "numeric",
    "pareto_front",
    "percentile_interval",
    "stat_fn",
    "summary",
]

#: Fewest values a group needs before ``compare`` will call it better or worse than another: a
#: percentile bootstrap of 2-4 values has only a handful of distinct resamples and its interval is
#: far too narrow (a 95% interval of 3 normal values covers the truth only ~70% of the time).
MIN_N = 5

SUMMARY_COLUMNS = [
    "calls",
    "errors",
    "error_rate",
    "latency_mean",
    "latency_p50",
    "latency_p95",
    "ttft_p50",
    "ttft_p95",
    "tokens_per_s",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "cost_complete",
    "cached",
]


# --- helpers shared with charts ----------------------------------------------------------------


def _groups(df: pd.DataFrame, by: list[str]) -> list[tuple[tuple[Any, ...], pd.DataFrame]]:
    """Groups in sorted key order, NA keys kept (last)."""
    if not by:
        return [((), df)]
    out = []
    for key, g in df.groupby(by, dropna=False, sort=True):
        out.append((key if isinstance(key, tuple) else (key,), g))
    return out


def _pct(values: np.ndarray, q: float) -> float:
    values = values[~np.isnan(values)]
    return float(np.percentile(values, q, method="linear")) if values.size else float("nan")


def _mean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def _sum(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.sum()) if values.size else float("nan")


# --- summary -----------------------------------------------------------------------------------


def summary(df: pd.DataFrame, by: str | Sequence[str] | None = ("model",)) -> pd.DataFrame:
    """One row per group with counts, error rate, latency/TTFT percentiles, throughput, tokens, cost.

    Public as ``ll.summary``.

    Args:
        df: a call frame (canonical columns).
        by: a column name or list of them (default ``["model"]``); ``None``/``[]`` → one overall row.

    Returns:
        The ``by`` columns, then ``calls, errors, error_rate, latency_mean, latency_p50,
        latency_p95, ttft_p50, ttft_p95, tokens_per_s`` (median of live calls), ``input_tokens,
        output_tokens`` (sums, NA if none known), ``cost_usd`` (sum of known costs, NA if none),
        ``cost_complete`` (every row has a cost) and ``cached`` (llmlab cache hits). Timing columns
        cover live successful calls only; percentiles interpolate linearly. The frame *shows*
        ``cost_usd`` as money (``5.88 µ$``, :mod:`llmlab.analysis.money`); its values stay floats.
    """
    by_cols = as_list(by)
    _check_columns(df, by_cols, "by")
    rows = []
    ratings: list[np.ndarray] = []  # human ratings (res.rate / the grid's thumbs), a score like any other
    for key, g in _groups(df, by_cols):
        ratings.append(numeric(g["rating"]) if "rating" in g else np.array([]))
        live = live_mask(g).to_numpy()
        err = is_error(g).to_numpy()
        lat = numeric(g["latency_ms"])[live] if "latency_ms" in g else np.array([])
        ttft = numeric(g["ttft_ms"])[live] if "ttft_ms" in g else np.array([])
        tps = numeric(g["tokens_per_s"])[live] if "tokens_per_s" in g else np.array([])
        cost = numeric(g["cost_usd"]) if "cost_usd" in g else np.full(len(g), np.nan)
        row: dict[str, Any] = dict(zip(by_cols, key))
        n = len(g)
        row.update(
            calls=n,
            errors=int(err.sum()),
            error_rate=float(err.mean()) if n else float("nan"),
            latency_mean=_mean(lat),
            latency_p50=_pct(lat, 50),
            latency_p95=_pct(lat, 95),
            ttft_p50=_pct(ttft, 50),
            ttft_p95=_pct(ttft, 95),
            tokens_per_s=_pct(tps, 50),
            input_tokens=_sum(numeric(g["input_tokens"])) if "input_tokens" in g else float("nan"),
            output_tokens=_sum(numeric(g["output_tokens"])) if "output_tokens" in g else float("nan"),
            cost_usd=_sum(cost),
            cost_complete=bool(n and not np.isnan(cost).any()),
            cached=int(is_cached(g).sum()),
        )
        rows.append(row)
    out = pd.DataFrame(rows, columns=by_cols + SUMMARY_COLUMNS)
    for col in ("calls", "errors", "cached", "input_tokens", "output_tokens"):
        out[col] = pd.array(out[col].astype("float").round(), dtype="Int64")
    for col in (
        "error_rate",
        "latency_mean",
        "latency_p50",
        "latency_p95",
        "ttft_p50",
        "ttft_p95",
        "tokens_per_s",
        "cost_usd",
    ):
        out[col] = pd.array(out[col].astype(float), dtype="Float64")
    out["cost_complete"] = out["cost_complete"].astype("boolean")
    if any(np.isfinite(r).any() for r in ratings):  # only when something was rated: other summaries keep their shape
        out["rating"] = pd.array([_mean(r[np.isfinite(r)]) for r in ratings], dtype="Float64")
        out["rated"] = pd.array([int(np.isfinite(r).sum()) for r in ratings], dtype="Int64")
    return show_money(out)


# --- compare -----------------------------------------------------------------------------------


def compare(
    df: pd.DataFrame,
    by: str | Sequence[str] = "temperature",
    metric: str = "latency_ms",
    baseline: Any = None,
    unit: str | None = None,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int | None = 0,
    stat: str | Callable[..., Any] = "mean",
    higher_is_better: bool | None = None,
    min_n: int = MIN_N,
) -> pd.DataFrame:
    """Compare a metric across groups with bootstrap confidence intervals (``ll.compare``).

    **Paired by prompt** (``unit="prompt"``, the default when the frame has ``prompt_id`` values
    and the groups ran common prompts): the unit is the prompt, not the call. Each group's calls
    of one prompt (repeats, other settings) are averaged into one value, so identical repeats at
    temperature 0 count once; ``n`` is the number of prompts (``n_calls`` the calls behind them).
    Every group is compared with the reference — ``baseline`` if given, else the best group — by
    the per-prompt differences over the prompts both ran (``n_pairs``), resampling prompts (an
    expanded percentile interval, see :mod:`llmlab.analysis.paired`), Holm-adjusted across
    groups. A prompt's difficulty cancels out of its difference, so a small gain on every prompt
    is found even when prompts differ a lot. The verdict is one sentence per finding: the winner,
    its margin over the closest rival with the interval, the adjusted p and the number of prompts.
    ``unit="prompt"`` on groups with no common prompt averages per prompt and compares unpaired.

    **Independent calls** (``unit="call"``, the default otherwise) — the rest of this docstring:
    Each group's values (NA dropped; timing metrics from live successful calls only; ``metric=
    "error"`` compares error rates) are resampled ``n_boot`` times with replacement, all at once
    with numpy, from one generator seeded by ``seed`` (same inputs and seed → same numbers).
    ``ci_low``/``ci_high`` are the percentile interval of the resampled statistic. For every group
    but the baseline, ``diff = estimate - baseline estimate`` with the percentile interval of the
    differences of independent resamples, its two-sided bootstrap ``p_value`` (how often the
    resampled difference falls on the other side of 0, doubled), ``p_adj`` (Holm-adjusted over all
    the comparisons against the baseline, so a table of many settings does not show a "significant"
    row by chance) and an effect size: Hedges' g (difference of means over the pooled standard
    deviation, small-sample corrected) or, for ``metric="error"``, Cohen's h between the two rates.

    Small samples are reported, not trusted: a group with fewer than 2 values has no interval, and
    the verdict names no winner while a group it would rely on has fewer than ``min_n`` values.
    The verdict's "beats all other groups" needs the interval of the difference to exclude 0 for
    *every* other group (an intersection-union test, so it needs no further correction).

    Args:
        df: a call frame.
        by: grouping column(s).
        metric: the column to compare (``latency_ms``, ``cost_usd``, a score column, ``error`` …).
        baseline: the group key to diff against (a value, or a tuple for several ``by`` columns);
            default the first group in sorted order (``unit="call"``) or the best group (``"prompt"``).
        unit: ``"prompt"`` (paired/clustered by ``prompt_id``), ``"call"`` (every call independent) or
            ``None`` (prompt when groups share prompts, else call).
        n_boot: number of bootstrap resamples.
        ci: confidence level of the intervals.
        seed: random seed.
        stat: ``"mean"``, ``"median"``, ``"p95"``-style percentile, or a callable on a 1-D array.
        higher_is_better: direction; ``None`` infers it from the metric name (lower is better for
            latency, cost, errors; higher for scores).
        min_n: fewest values per group for the verdict to name a winner (default :data:`MIN_N`).

    Returns:
        One row per group: the ``by`` columns, ``group`` (label), ``n``, ``estimate``, ``ci_low``,
        ``ci_high``, ``diff``, ``diff_low``, ``diff_high`` (per-comparison interval), ``p_value``,
        ``p_adj`` (Holm), ``effect_size``, ``baseline`` (bool), ``small_sample`` (n < min_n).
        With ``unit="prompt"`` also ``n_calls`` and ``n_pairs`` (prompts in common with the reference).
        ``.attrs`` holds ``verdict`` (a plain-language sentence), ``winner`` (``"col=value"`` of a
        group that beats every other with confidence, else None), ``unit``, ``best``, ``metric``, ``stat``,
        ``ci``, ``higher_is_better``, ``baseline``, ``effect_size`` (``"hedges_g"`` or
        ``"cohens_h"``), ``min_n``. Comparing a money metric (``cost_usd``, ``spent_usd``), the
        estimate/interval/diff columns are *shown* as money (:mod:`llmlab.analysis.money`), values stay floats.
    """
    by_cols = as_list(by)
    if not by_cols:
        raise ValidationError("by", by, "name at least one column to group by")
    _check_columns(df, by_cols, "by")
    if not 0 < ci < 1:
        raise ValidationError("ci", ci, "expected a confidence level between 0 and 1, e.g. 0.95")
    if int(n_boot) < 1:
        raise ValidationError("n_boot", n_boot, "expected a positive number of resamples")
    stat_name, fn = stat_fn(stat)
    hib = _higher(metric) if higher_is_better is None else bool(higher_is_better)
    unit = resolve_unit(df, by_cols, unit)
    values = metric_values(df, metric) if len(df) else pd.Series(dtype=float)
    if unit == "prompt" and shares_prompts(df, by_cols):
        grouped = _groups(df, by_cols)
        base = _baseline_index([k for k, _ in grouped], baseline, by_cols) if baseline is not None else None
        out = compare_by_prompt(df, by_cols, grouped, metric, base, int(n_boot), ci, seed, stat, hib, int(min_n))
        best = out.loc[out["estimate"].notna()]
        best_label = None
        if len(best):
            best_label = str(best.loc[best["estimate"].idxmax() if hib else best["estimate"].idxmin(), "group"])
        out = _typed(out, by_cols, extra=["n_calls", "n_pairs"])
        out.attrs.update(
            best=best_label,
            metric=metric,
            stat=stat_name,
            ci=ci,
            higher_is_better=hib,
            effect_size="hedges_g",
            min_n=int(min_n),
        )
        return show_money(out)
    if unit == "prompt":  # no common prompts: one value per prompt and group, compared unpaired
        df, values = _per_prompt_frame(df, by_cols, values)
    rng = np.random.default_rng(seed)
    alpha = (1 - ci) / 2
    groups = []
    for key, g in _groups(df, by_cols) if len(df) else []:
        v = values.loc[g.index].to_numpy(dtype=float)
        v = v[~np.isnan(v)]
        if v.size:
            est = float(fn(v[None, :])[0])
            boots = fn(v[rng.integers(0, v.size, size=(int(n_boot), v.size))])
            if v.size < 2:  # one value resamples to itself: a zero-width "interval" would be a lie
                boots = np.full(int(n_boot), np.nan)
        else:
            est, boots = float("nan"), np.full(int(n_boot), np.nan)
        groups.append((key, v.size, est, boots, v))

    keys = [k for k, *_ in groups]
    if baseline is None:
        base_idx = next((i for i, g in enumerate(groups) if g[1]), 0 if groups else None)
    else:
        base_idx = _baseline_index(keys, baseline, by_cols)

    binary = metric in ("error", "error_rate", "errors")
    rows = []
    for i, (key, n, est, boots, v) in enumerate(groups):
        lo, hi = percentile_interval(boots, alpha)
        row = dict(zip(by_cols, key))
        row.update(group=group_label(by_cols, key), n=n, estimate=est, ci_low=lo, ci_high=hi)
        if base_idx is not None and i != base_idx:
            d = boots - groups[base_idx][3]
            dlo, dhi = percentile_interval(d, alpha)
            row.update(
                diff=est - groups[base_idx][2],
                diff_low=dlo,
                diff_high=dhi,
                p_value=boot_p_value(d),
                effect_size=effect_size(groups[base_idx][4], v, binary),
            )
        else:
            row.update(
                diff=float("nan"),
                diff_low=float("nan"),
                diff_high=float("nan"),
                p_value=float("nan"),
                effect_size=float("nan"),
            )
        row["baseline"] = i == base_idx
        row["small_sample"] = n < int(min_n)
        rows.append(row)
    out = _typed(pd.DataFrame(rows), by_cols)
    best_label, winner, verdict = _verdict(groups, by_cols, metric, stat_name, ci, hib, alpha, int(min_n))
    out.attrs.update(
        verdict=verdict,
        winner=winner,
        unit=unit,
        best=best_label,
        metric=metric,
        stat=stat_name,
        ci=ci,
        higher_is_better=hib,
        baseline=None if base_idx is None else group_label(by_cols, keys[base_idx]),
        effect_size="cohens_h" if binary else "hedges_g",
        min_n=int(min_n),
    )
    return show_money(out)


def _baseline_index(keys: list[tuple[Any, ...]], baseline: Any, by_cols: list[str]) -> int:
    want = baseline if isinstance(baseline, tuple) else (baseline,)
    idx = next((i for i, k in enumerate(keys) if _same_key(k, want)), None)
    if idx is None:
        raise ValidationError(
            "baseline", baseline, f"not a group of {by_cols}; groups: {[group_label(by_cols, k) for k in keys]}"
        )
    return idx


def _per_prompt_frame(df: pd.DataFrame, by_cols: list[str], values: pd.Series) -> tuple[pd.DataFrame, pd.Series]:
    """One row per (group, prompt_id) with the mean value of its calls (rows without a prompt_id kept as they are)."""
    tmp = df[by_cols].copy()
    tmp["__v"] = values.to_numpy(dtype=float)
    tmp["__p"] = df["prompt_id"].astype("string").to_numpy()
    has = tmp["__p"].notna()
    agg = tmp[has].groupby(by_cols + ["__p"], dropna=False, sort=True)["__v"].mean().reset_index()
    rest = tmp[~has]
    out = pd.concat([agg, rest], ignore_index=True)
    return out[by_cols], pd.Series(out["__v"].to_numpy(dtype=float), index=out.index)


def _typed(out: pd.DataFrame, by_cols: list[str], extra: Sequence[str] = ()) -> pd.DataFrame:
    """The result columns in their order and dtypes."""
    cols = by_cols + [
        "group",
        "n",
        "estimate",
        "ci_low",
        "ci_high",
        "diff",
        "diff_low",
        "diff_high",
        "p_value",
        "p_adj",
        "effect_size",
        "baseline",
        "small_sample",
        *extra,
    ]
    out = out.reindex(columns=cols)
    if not extra:
        out["p_adj"] = holm(out["p_value"].to_numpy(dtype=float)) if len(out) else out["p_value"]
    for c in extra:
        out[c] = out[c].astype("int64")
    out["n"] = out["n"].astype("int64")
    for c in ("estimate", "ci_low", "ci_high", "diff", "diff_low", "diff_high", "p_value", "p_adj", "effect_size"):
        out[c] = pd.array(out[c].astype(float), dtype="Float64")
    out["baseline"] = out["baseline"].astype(bool)
    out["small_sample"] = out["small_sample"].astype(bool)
    return out


_higher = higher_is_better


def _same_key(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        try:
            if x == y or (pd.isna(x) and pd.isna(y)):
                continue
        except (TypeError, ValueError):
            pass
        if str(x) != str(y):
            return False
    return True


def _verdict(
    groups: list[Any], by: list[str], metric: str, stat: str, ci: float, hib: bool, alpha: float, min_n: int = MIN_N
) -> tuple[str | None, str | None, str]:
    """(best label, winner label or None, verdict sentence) of a ``unit="call"`` comparison."""
    with_data = [(k, n, e, b) for k, n, e, b, _ in groups if n]
    what = f"{stat} {metric}"
    level = f"{ci:.0%}"
    if not with_data:
        return None, None, f"No data: no {metric} values to compare."
    if len(with_data) == 1:
        k, n, e, b = with_data[0]
        lo, hi = percentile_interval(b, alpha)
        label = group_label(by, k)
        interval = (
            f"{level} CI {format_metric(metric, lo)} to {format_metric(metric, hi)}, "
            if n > 1
            else "no interval from one value, "
        )
        return (
            label,
            None,
            f"Only one group ({label}): {what} {format_metric(metric, e)} ({interval}n={n}); nothing to compare.",
        )
    pick = max if hib else min
    best = pick(with_data, key=lambda g: g[2])
    best_label = group_label(by, best[0])
    word = "highest" if hib else "lowest"
    small = [(group_label(by, k), n) for k, n, *_ in with_data if n < min_n]
    if small:
        names = ", ".join(f"{label} (n={n})" for label, n in small)
        return (
            None,
            None,
            (
                f"Too few values to call a winner: {names} {'has' if len(small) == 1 else 'have'} fewer than "
                f"{min_n}, too few for a trustworthy {level} interval; {group_label(by, best[0])} has the {word} "
                f"{what} ({format_metric(metric, best[2])}) in this sample. Add repeats to tell."
            ),
        )
    overlaps = []
    for k, _n, _e, b in with_data:
        if k is best[0]:
            continue
        lo, hi = percentile_interval(b - best[3], alpha)
        if (not hib and lo <= 0) or (hib and hi >= 0):
            overlaps.append(group_label(by, k))
    head = f"{best_label} has the {word} {what} ({format_metric(metric, best[2])})"
    if not overlaps:
        others = len(with_data) - 1
        scope = "the other group" if others == 1 else f"all {others} other groups"
        return (
            best_label,
            best_label,
            f"{head}; it beats {scope} with {level} confidence (bootstrap CI of the difference excludes 0).",
        )
    names = ", ".join(overlaps)
    return (
        best_label,
        None,
        (
            f"No clear winner: the {level} intervals of {best_label} and {names} overlap "
            f"(the difference in {what} could be 0); {head} in this sample."
        ),
    )


# --- Pareto front --------------------------------------------------------------------------------


def pareto_front(points: pd.DataFrame, minimize: Sequence[str] = (), maximize: Sequence[str] = ()) -> pd.Series:
    """Which points are Pareto-optimal (not dominated by any other point).

    A point is dominated when another is at least as good on every objective and strictly better
    on one. Points with NA in an objective are never on the front; identical points are both on
    it.

    Args:
        points: one row per setting.
        minimize: columns where lower is better (cost, latency).
        maximize: columns where higher is better (quality).

    Returns:
        A boolean Series aligned with ``points.index``.
    """
    cols = list(minimize) + list(maximize)
    if not cols:
        raise ValidationError("minimize/maximize", cols, "name at least one objective column")
    _check_columns(points, cols, "objective")
    if not len(points):
        return pd.Series([], index=points.index, dtype=bool)
    # turn everything into "lower is better"
    mat = np.column_stack([numeric(points[c]) for c in minimize] + [-numeric(points[c]) for c in maximize])
    valid = ~np.isnan(mat).any(axis=1)
    on_front = valid.copy()
    idx = np.flatnonzero(valid)
    m = mat[idx]
    for pos, i in enumerate(idx):
        le = (m <= m[pos]).all(axis=1)
        lt = (m < m[pos]).any(axis=1)
        if (le & lt).any():
            on_front[i] = False
    return pd.Series(on_front, index=points.index, dtype=bool)
