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

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from llmlab.errors import ValidationError
from llmlab.text import as_list, is_na

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
    "pareto_front",
    "percentile_interval",
    "stat_fn",
    "summary",
]

TIMING_METRICS = ("latency_ms", "ttft_ms", "tokens_per_s", "itl_ms", "queue_ms")

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


def _check_columns(df: pd.DataFrame, cols: Sequence[str], field: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValidationError(field, missing[0] if len(missing) == 1 else missing, "no such column in the frame")


def is_error(df: pd.DataFrame) -> pd.Series:
    """Boolean mask of error rows (``status == "error"``)."""
    if "status" not in df.columns:
        return pd.Series(False, index=df.index)
    return df["status"].astype("string").fillna("").str.lower().eq("error").astype(bool)


def is_cached(df: pd.DataFrame) -> pd.Series:
    """Boolean mask of rows served from llmlab's response cache."""
    if "cached" not in df.columns:
        return pd.Series(False, index=df.index)
    return df["cached"].astype("boolean").fillna(False).astype(bool)


def live_mask(df: pd.DataFrame) -> pd.Series:
    """Rows whose timings describe the endpoint: successful and not from llmlab's cache."""
    return ~is_error(df) & ~is_cached(df)


def numeric(series: pd.Series) -> np.ndarray:
    """A float ndarray with NaN for NA."""
    return pd.to_numeric(series, errors="coerce").astype("Float64").to_numpy(dtype=float, na_value=np.nan)


def metric_values(df: pd.DataFrame, metric: str) -> pd.Series:
    """The float values of ``metric`` per row (NaN where not applicable).

    ``error``/``error_rate`` give 1.0 for error rows and 0.0 otherwise; timing metrics are NaN on
    error and cached rows (see the module docstring).
    """
    if metric in ("error", "error_rate", "errors"):
        return pd.Series(is_error(df).astype(float).to_numpy(), index=df.index)
    _check_columns(df, [metric], "metric")
    values = pd.Series(numeric(df[metric]), index=df.index)
    if metric in TIMING_METRICS:
        values = values.where(live_mask(df))
    return values


def _fmt_value(v: Any) -> str:
    if is_na(v):
        return "NA"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return f"{v:.1f}" if v.is_integer() else f"{v:g}"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return str(v)


def group_label(by: str | Sequence[str], key: Any) -> str:
    """A readable label of a group: ``temperature=0.7`` or ``model=gpt-4o, temperature=0.0``."""
    cols = as_list(by)
    keys = key if isinstance(key, tuple) else (key,)
    return ", ".join(f"{c}={_fmt_value(k)}" for c, k in zip(cols, keys))


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
        cover live successful calls only; percentiles interpolate linearly.
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
    return out


# --- compare -----------------------------------------------------------------------------------

_LOWER = ("latency", "ttft", "_ms", "cost", "error", "itl", "queue", "retr", "attempt", "_tokens", "usd")
_HIGHER = ("per_s", "throughput", "score", "accuracy", "match", "similar", "f1", "valid", "pass", "judge")


def higher_is_better(metric: str) -> bool:
    """Whether larger values of ``metric`` are better, inferred from its name.

    Lower is better for latency/ttft/``*_ms``/cost/error/retries/token counts; higher for
    ``tokens_per_s`` and anything else (evaluator scores such as ``exact_match``).
    """
    name = metric.lower()
    if any(h in name for h in _HIGHER):
        return True
    return not any(low in name for low in _LOWER)


def stat_fn(stat: str | Callable[..., Any]) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """(name, fn) for a statistic: ``fn`` reduces an array over its last axis (so it runs on a whole
    stack of bootstrap resamples at once). ``stat`` is ``"mean"``, ``"median"``/``"p50"``, ``"pNN"``
    (linear-interpolation percentile) or a callable of one 1-d array; anything else raises
    ValidationError."""
    if callable(stat):
        name = getattr(stat, "__name__", "stat")
        return name, lambda a: np.apply_along_axis(stat, -1, a)
    s = str(stat).lower()
    if s == "mean":
        return "mean", lambda a: a.mean(axis=-1)
    if s in ("median", "p50"):
        return "median", lambda a: np.median(a, axis=-1)
    if s.startswith("p") and s[1:].replace(".", "", 1).isdigit():
        q = float(s[1:])
        return s, lambda a: np.percentile(a, q, axis=-1, method="linear")
    raise ValidationError("stat", stat, "expected 'mean', 'median', 'pNN' (e.g. 'p95') or a callable")


def format_metric(metric: str, value: float) -> str:
    """``value`` of ``metric`` as a reader would write it in a sentence: milliseconds for ``*_ms``,
    dollars for costs, tokens/s, a percentage for error rates, three significant digits otherwise."""
    if metric.endswith("_ms"):
        return f"{value:.1f} ms"
    if "cost" in metric or metric.endswith("usd"):
        return f"${value:.6g}"
    if metric == "tokens_per_s":
        return f"{value:.1f} tokens/s"
    if metric in ("error", "error_rate", "errors"):
        return f"{value:.1%}"
    return f"{value:.3g}"


def compare(
    df: pd.DataFrame,
    by: str | Sequence[str] = "temperature",
    metric: str = "latency_ms",
    baseline: Any = None,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int | None = 0,
    stat: str | Callable[..., Any] = "mean",
    higher_is_better: bool | None = None,
    min_n: int = MIN_N,
) -> pd.DataFrame:
    """Compare a metric across groups with bootstrap confidence intervals (``ll.compare``).

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
            default the first group in sorted order.
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
        ``.attrs`` holds ``verdict`` (a plain-language sentence), ``best``, ``metric``, ``stat``,
        ``ci``, ``higher_is_better``, ``baseline``, ``effect_size`` (``"hedges_g"`` or
        ``"cohens_h"``), ``min_n``.
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
    values = metric_values(df, metric) if len(df) else pd.Series(dtype=float)
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
        want = baseline if isinstance(baseline, tuple) else (baseline,)
        base_idx = next((i for i, k in enumerate(keys) if _same_key(k, want)), None)
        if base_idx is None:
            raise ValidationError(
                "baseline", baseline, f"not a group of {by_cols}; groups: {[group_label(by_cols, k) for k in keys]}"
            )

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
        "format_metric",
        "baseline",
        "small_sample",
    ]
    out = pd.DataFrame(rows, columns=cols)
    out["p_adj"] = holm(out["p_value"].to_numpy(dtype=float)) if len(out) else out["p_value"]
    out["n"] = out["n"].astype("int64")
    for c in ("estimate", "ci_low", "ci_high", "diff", "diff_low", "diff_high", "p_value", "p_adj", "effect_size"):
        out[c] = pd.array(out[c].astype(float), dtype="Float64")
    out["baseline"] = out["baseline"].astype(bool)
    out["small_sample"] = out["small_sample"].astype(bool)
    best_label, verdict = _verdict(groups, by_cols, metric, stat_name, ci, hib, alpha, int(min_n))
    out.attrs.update(
        verdict=verdict,
        best=best_label,
        metric=metric,
        stat=stat_name,
        ci=ci,
        higher_is_better=hib,
        baseline=None if base_idx is None else group_label(by_cols, keys[base_idx]),
        effect_size="cohens_h" if binary else "hedges_g",
        min_n=int(min_n),
    )
    return out


def boot_p_value(diffs: np.ndarray) -> float:
    """Two-sided bootstrap p-value that a difference is 0, from resampled differences.

    Twice the share of resamples on the far side of 0 (ties count half), with the usual +1
    correction so a p-value is never exactly 0 from a finite number of resamples. It agrees with
    the percentile interval: the ``1 - a`` interval excludes 0 about when ``p < a``.
    """
    d = np.asarray(diffs, dtype=float)
    d = d[~np.isnan(d)]
    if not d.size:
        return float("nan")
    below = float((d < 0).sum() + 0.5 * (d == 0).sum())
    above = float((d > 0).sum() + 0.5 * (d == 0).sum())
    return float(min(1.0, 2 * (min(below, above) + 1) / (d.size + 1)))


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaN entries are left out and stay NaN).

    Controls the chance of any false "significant" among the comparisons at the nominal level,
    without assuming they are independent; uniformly more powerful than plain Bonferroni.
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if not m:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adj
    return out


def effect_size(base: np.ndarray, other: np.ndarray, binary: bool = False) -> float:
    """Standardised difference ``other - base``: Hedges' g, or Cohen's h for 0/1 values.

    Hedges' g is Cohen's d (difference of means over the pooled standard deviation) times the
    small-sample correction ``1 - 3 / (4 (n1 + n2) - 9)``; NaN when either side has fewer than 2
    values or both have no spread. Cohen's h compares two rates: ``2 asin(sqrt(p2)) - 2 asin(sqrt(p1))``.
    Rough reading for both: 0.2 small, 0.5 medium, 0.8 large.
    """
    x = np.asarray(base, dtype=float)
    y = np.asarray(other, dtype=float)
    x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    if binary:
        if not x.size or not y.size:
            return float("nan")
        return float(2 * np.arcsin(np.sqrt(y.mean())) - 2 * np.arcsin(np.sqrt(x.mean())))
    n1, n2 = x.size, y.size
    if n1 < 2 or n2 < 2:
        return float("nan")
    pooled = math.sqrt(((n1 - 1) * x.var(ddof=1) + (n2 - 1) * y.var(ddof=1)) / (n1 + n2 - 2))
    if pooled == 0:
        return float("nan")
    return float((y.mean() - x.mean()) / pooled * (1 - 3 / (4 * (n1 + n2) - 9)))


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


def percentile_interval(boots: np.ndarray, alpha: float) -> tuple[float, float]:
    """The ``alpha`` and ``1 - alpha`` quantiles of bootstrap statistics (NaN resamples left out),
    i.e. the percentile interval at level ``1 - 2 * alpha``; ``(nan, nan)`` when none is left."""
    b = boots[~np.isnan(boots)]
    if not b.size:
        return float("nan"), float("nan")
    lo, hi = np.quantile(b, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _verdict(
    groups: list[Any], by: list[str], metric: str, stat: str, ci: float, hib: bool, alpha: float, min_n: int = MIN_N
) -> tuple[str | None, str]:
    with_data = [(k, n, e, b) for k, n, e, b, _ in groups if n]
    what = f"{stat} {metric}"
    level = f"{ci:.0%}"
    if not with_data:
        return None, f"No data: no {metric} values to compare."
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
            f"Only one group ({label}): {what} {format_metric(metric, e)} ({interval}n={n}); nothing to compare.",
        )
    pick = max if hib else min
    best = pick(with_data, key=lambda g: g[2])
    best_label = group_label(by, best[0])
    word = "highest" if hib else "lowest"
    small = [(group_label(by, k), n) for k, n, *_ in with_data if n < min_n]
    if small:
        names = ", ".join(f"{label} (n={n})" for label, n in small)
        return None, (
            f"Too few values to call a winner: {names} {'has' if len(small) == 1 else 'have'} fewer than "
            f"{min_n}, too few for a trustworthy {level} interval; {group_label(by, best[0])} has the {word} "
            f"{what} ({format_metric(metric, best[2])}) in this sample. Add repeats to tell."
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
            f"{head}; it beats {scope} with {level} confidence (bootstrap CI of the difference excludes 0).",
        )
    names = ", ".join(overlaps)
    return best_label, (
        f"No clear winner: the {level} intervals of {best_label} and {names} overlap "
        f"(the difference in {what} could be 0); {head} in this sample."
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
