"""Estimation primitives shared by :mod:`llmlab.analysis.stats`, :mod:`llmlab.analysis.paired` and the
charts: metric values per row, group labels, statistics, bootstrap intervals and p-values, Holm
adjustment, effect sizes, and how a metric reads in a sentence. Pure functions, no I/O; the
conventions are those of :mod:`llmlab.analysis.stats` (re-exported there).
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
    "TIMING_METRICS",
    "boot_p_value",
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
    "percentile_interval",
    "stat_fn",
]


TIMING_METRICS = ("latency_ms", "ttft_ms", "tokens_per_s", "itl_ms", "queue_ms")


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
    dollars for costs (:func:`llmlab.pricing.format_usd`, ``-0.251 µ$`` for a small negative difference),
    tokens/s, a percentage for error rates, three significant digits otherwise."""
    if metric.endswith("_ms"):
        return f"{value:.1f} ms"
    if "cost" in metric or metric.endswith("usd"):
        from llmlab.analysis.money import signed_usd

        return signed_usd(value)
    if metric == "tokens_per_s":
        return f"{value:.1f} tokens/s"
    if metric in ("error", "error_rate", "errors"):
        return f"{value:.1%}"
    return f"{value:.3g}"


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


def percentile_interval(boots: np.ndarray, alpha: float) -> tuple[float, float]:
    """The ``alpha`` and ``1 - alpha`` quantiles of bootstrap statistics (NaN resamples left out),
    i.e. the percentile interval at level ``1 - 2 * alpha``; ``(nan, nan)`` when none is left."""
    b = boots[~np.isnan(boots)]
    if not b.size:
        return float("nan"), float("nan")
    lo, hi = np.quantile(b, [alpha, 1 - alpha])
    return float(lo), float(hi)
