"""Paired, prompt-clustered comparisons: ``ll.compare(..., unit="prompt")`` and ``compare_sweeps``.

When the settings being compared ran the *same prompts*, a prompt's difficulty is shared by every
setting and cancels out of the per-prompt difference, so pairing by prompt finds a consistent gain
that a comparison of independent calls drowns in between-prompt spread. And the prompt is the
unit that was sampled: repeats of one prompt (identical at temperature 0) are averaged into one
value, never counted as independent evidence.

The difference of two settings is estimated from their per-prompt values and its interval comes
from resampling prompts (a cluster bootstrap), as an *expanded* percentile interval that keeps its
95 % coverage with few prompts, where a plain percentile interval is too narrow (see :func:`paired_diff`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from llmlab.analysis.estimates import (
    boot_p_value,
    effect_size,
    format_metric,
    group_label,
    holm,
    metric_values,
    percentile_interval,
    stat_fn,
)
from llmlab.errors import ValidationError

__all__ = ["UNITS", "compare_by_prompt", "paired_diff", "per_prompt", "resolve_unit", "shares_prompts", "t_quantile"]

UNITS = ("prompt", "call")
_NA = float("nan")


def _prompt_codes(df: pd.DataFrame) -> np.ndarray:
    """Each row's prompt number (``-1`` where ``prompt_id`` is NA)."""
    return pd.factorize(df["prompt_id"].astype("string"))[0]


def _group_codes(df: pd.DataFrame, by: Sequence[str]) -> np.ndarray:
    return df.groupby(list(by), dropna=False, sort=True).ngroup().to_numpy()


def shares_prompts(df: pd.DataFrame, by: Sequence[str]) -> bool:
    """Whether at least two groups of ``df`` by ``by`` ran a common ``prompt_id``."""
    if "prompt_id" not in df.columns or not len(df):
        return False
    p = _prompt_codes(df)
    ok = p >= 0
    if not ok.any():
        return False
    g = _group_codes(df, by)[ok]
    pairs = np.unique(np.stack([p[ok], g]), axis=1)  # distinct (prompt, group)
    return bool((np.bincount(pairs[0]) >= 2).any())


def resolve_unit(df: pd.DataFrame, by: Sequence[str], unit: str | None) -> str:
    """``"prompt"`` or ``"call"``: the caller's choice, else prompt when groups share prompts."""
    if unit is None:
        return "prompt" if shares_prompts(df, by) else "call"
    if unit not in UNITS:
        raise ValidationError("unit", unit, "expected 'prompt' (paired by prompt_id), 'call' or None (automatic)")
    if unit == "prompt" and ("prompt_id" not in df.columns or not df["prompt_id"].notna().any()):
        raise ValidationError("unit", unit, "the frame has no prompt_id values to pair or cluster by")
    return unit


def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom (Cornish-Fisher expansion,
    Abramowitz & Stegun 26.7.5: within 0.01 of the exact value for df >= 3 at the usual levels)."""
    z = statistics.NormalDist().inv_cdf(q)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def paired_diff(
    x: np.ndarray,
    y: np.ndarray,
    stat: str | Callable[..., Any] = "mean",
    n_boot: int = 2000,
    ci: float = 0.95,
    rng: np.random.Generator | None = None,
) -> tuple[float, float, float, float]:
    """``stat(y) - stat(x)`` over paired units (``x[i]`` and ``y[i]`` are one prompt), with its interval.

    Units are resampled together (``n_boot`` times, all at once). The interval is an *expanded
    percentile* bootstrap interval (Hesterberg): the resampled differences are spread about the
    estimate by ``sqrt(n / (n - 1)) * t(n - 1) / z``, which corrects the plain percentile
    interval's known narrowness with few units (at 20 prompts it covers ~93 % instead of 95 %; at
    4 it is far too narrow) and behaves like a paired t interval without assuming normality. The
    two-sided p-value is read off the same expanded resamples, so the ``ci`` interval excludes 0
    about when ``p < 1 - ci``. When every unit moved by the same amount the interval is that
    amount and p is the smallest the resampling can show.

    Returns:
        ``(diff, low, high, p_value)``; the last three are NaN with fewer than 2 units.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    _name, fn = stat_fn(stat)
    n = int(x.size)
    if not n:
        return _NA, _NA, _NA, _NA
    est = float(fn(y[None, :])[0] - fn(x[None, :])[0])
    if n < 2:
        return est, _NA, _NA, _NA
    d = y - x
    if float(np.ptp(d)) <= 1e-12 * max(1.0, abs(est)):  # every prompt moved by exactly the same amount
        return est, est, est, (1.0 if est == 0 else min(1.0, 2 / (int(n_boot) + 1)))
    rng = rng if rng is not None else np.random.default_rng(0)
    alpha = (1 - ci) / 2
    idx = rng.integers(0, n, size=(int(n_boot), n))
    boots = np.asarray(fn(y[idx]) - fn(x[idx]), dtype=float)
    z = statistics.NormalDist().inv_cdf(1 - alpha)
    spread = math.sqrt(n / (n - 1)) * t_quantile(1 - alpha, n - 1) / z
    expanded = est + (boots - est) * spread
    lo, hi = percentile_interval(expanded, alpha)
    return est, lo, hi, boot_p_value(expanded)


def per_prompt(df: pd.DataFrame, values: pd.Series, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Groups × prompts matrix of the mean metric value (repeats and other settings averaged; NaN
    where a group has no value for a prompt). ``codes`` is each row's group number (-1: none)."""
    p = _prompt_codes(df)
    v = values.to_numpy(dtype=float)
    ok = (p >= 0) & (codes >= 0) & ~np.isnan(v)
    n_p = int(p.max()) + 1 if len(p) else 0
    flat = codes[ok] * n_p + p[ok]
    sums = np.bincount(flat, weights=v[ok], minlength=n_groups * n_p)
    counts = np.bincount(flat, minlength=n_groups * n_p)
    with np.errstate(invalid="ignore", divide="ignore"):
        mat = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return mat.reshape(n_groups, n_p)


def _fmt_diff(metric: str, v: float) -> str:
    text = format_metric(metric, v)
    return f"+{text}" if v > 0 else text


def _fmt_p(p: float) -> str:
    return "adjusted p < 0.001" if p < 0.001 else f"adjusted p = {p:.2g}"


def _finding(metric: str, d: dict[str, Any], level: str) -> str:
    return (
        f"{_fmt_diff(metric, d['diff'])} ({level} CI {_fmt_diff(metric, d['lo'])} to {_fmt_diff(metric, d['hi'])}, "
        f"{_fmt_p(d['p_adj'])}, {d['n']} prompts)"
    )


def _pairs(
    mat: np.ndarray, ref: int, others: list[int], stat: Any, n_boot: int, ci: float, rng: np.random.Generator
) -> dict[int, dict[str, Any]]:
    """Paired comparison of each group in ``others`` against ``ref`` over their common prompts, Holm-adjusted."""
    out: dict[int, dict[str, Any]] = {}
    for j in others:
        both = ~np.isnan(mat[ref]) & ~np.isnan(mat[j])
        x, y = mat[ref][both], mat[j][both]
        diff, lo, hi, p = paired_diff(x, y, stat, n_boot, ci, rng)
        out[j] = {"diff": diff, "lo": lo, "hi": hi, "p": p, "n": int(both.sum()), "x": x, "y": y}
    adj: list[float] = list(holm([out[j]["p"] for j in others])) if others else []
    for j, pa in zip(others, adj):
        out[j]["p_adj"] = float(pa)
    return out


def compare_by_prompt(
    df: pd.DataFrame,
    by: list[str],
    groups: list[tuple[tuple[Any, ...], pd.DataFrame]],
    metric: str,
    baseline_idx: int | None,
    n_boot: int,
    ci: float,
    seed: int | None,
    stat: str | Callable[..., Any],
    hib: bool,
    min_n: int,
) -> pd.DataFrame:
    """The ``unit="prompt"`` branch of :func:`llmlab.analysis.stats.compare` (see its docstring)."""
    stat_name, fn = stat_fn(stat)
    rng = np.random.default_rng(seed)
    alpha = (1 - ci) / 2
    level = f"{ci:.0%}"
    values = metric_values(df, metric)
    codes = np.full(len(df), -1)
    pos = pd.Series(np.arange(len(df)), index=df.index)
    n_calls = []
    for i, (_key, g) in enumerate(groups):
        codes[pos.loc[g.index].to_numpy()] = i
        n_calls.append(int(values.loc[g.index].notna().sum()))
    mat = per_prompt(df, values, codes, len(groups))
    keys = [k for k, _ in groups]
    labels = [group_label(by, k) for k in keys]
    n_prompts = [int((~np.isnan(row)).sum()) for row in mat]
    est, ci_lo, ci_hi = [], [], []
    for row in mat:
        u = row[~np.isnan(row)]
        if not u.size:
            est.append(_NA)
            ci_lo.append(_NA)
            ci_hi.append(_NA)
            continue
        est.append(float(fn(u[None, :])[0]))
        boots = np.asarray(fn(u[rng.integers(0, u.size, size=(int(n_boot), u.size))]), dtype=float)
        lo, hi = percentile_interval(boots, alpha) if u.size > 1 else (_NA, _NA)
        ci_lo.append(lo)
        ci_hi.append(hi)
    with_data = [i for i in range(len(groups)) if n_prompts[i]]
    best = None
    if with_data:
        best = (max if hib else min)(with_data, key=lambda i: est[i])
    ref = baseline_idx if baseline_idx is not None else best
    others = [i for i in with_data if i != ref] if ref is not None else []
    vs_ref = _pairs(mat, ref, others, stat, n_boot, ci, rng) if ref is not None else {}

    rows = []
    for i, key in enumerate(keys):
        out_row: dict[str, Any] = dict(zip(by, key))
        out_row.update(group=labels[i], n=n_prompts[i], estimate=est[i], ci_low=ci_lo[i], ci_high=ci_hi[i])
        c = vs_ref.get(i)
        out_row.update(
            diff=c["diff"] if c else _NA,
            diff_low=c["lo"] if c else _NA,
            diff_high=c["hi"] if c else _NA,
            p_value=c["p"] if c else _NA,
            p_adj=c["p_adj"] if c else _NA,
            effect_size=effect_size(c["x"], c["y"]) if c else _NA,
            baseline=i == ref,
            small_sample=n_prompts[i] < min_n,
            n_calls=n_calls[i],
            n_pairs=c["n"] if c else n_prompts[i],
        )
        rows.append(out_row)

    # the winner: the best group, compared (paired, Holm) with every other group
    if best is not None and best == ref:
        vs_best = vs_ref
    elif best is not None:
        vs_best = _pairs(mat, best, [i for i in with_data if i != best], stat, n_boot, ci, rng)
    else:
        vs_best = {}
    winner, verdict = _verdict(metric, stat_name, hib, level, 1 - ci, min_n, labels, best, vs_best, with_data)
    if baseline_idx is not None and baseline_idx != best and vs_ref:
        verdict = _baseline_sentences(metric, hib, level, 1 - ci, labels, baseline_idx, vs_ref) + " " + verdict
    out = pd.DataFrame(rows)
    out.attrs.update(verdict=verdict, winner=winner, unit="prompt", baseline=None if ref is None else labels[ref])
    return out


def _verdict(
    metric: str,
    stat: str,
    hib: bool,
    level: str,
    sig: float,
    min_n: int,
    labels: list[str],
    best: int | None,
    vs_best: dict[int, dict[str, Any]],
    with_data: list[int],
) -> tuple[str | None, str]:
    what = f"{stat} {metric}"
    if best is None:
        return None, f"No data: no {metric} values to compare."
    if not vs_best:
        return None, f"Only one group ({labels[best]}): nothing to compare."
    # the hardest rival to beat: the largest adjusted p (NaN first: no common prompts), then the smallest margin
    rival = max(vs_best, key=lambda j: (math.isnan(vs_best[j]["p_adj"]), vs_best[j]["p_adj"], -abs(vs_best[j]["diff"])))
    r = vs_best[rival]
    # vs_best holds other - best; turn it round to best - other for the sentence
    lead = {**r, "diff": -r["diff"], "lo": -r["hi"], "hi": -r["lo"]}
    if r["n"] < min_n:
        return None, (
            f"Too few prompts to call a winner: {labels[best]} and {labels[rival]} share only {r['n']} prompts "
            f"(at least {min_n} are needed); {labels[best]} has the {'highest' if hib else 'lowest'} {what} "
            f"in this sample. Add prompts to tell."
        )
    worse = all(
        c["n"] >= min_n and c["p_adj"] < sig and ((c["hi"] < 0) if hib else (c["lo"] > 0)) for c in vs_best.values()
    )
    if worse:
        scope = labels[rival] if len(vs_best) == 1 else f"all {len(vs_best)} other groups (closest: {labels[rival]})"
        return labels[best], f"{labels[best]} wins on {what}: it beats {scope} by {_finding(metric, lead, level)}."
    return None, (
        f"No clear winner on {what}: {labels[best]} vs {labels[rival]} differs by {_finding(metric, lead, level)}, "
        f"which could be 0."
    )


def _baseline_sentences(
    metric: str, hib: bool, level: str, sig: float, labels: list[str], base: int, vs: dict[int, dict[str, Any]]
) -> str:
    found = []
    for j, c in vs.items():
        if c["n"] and c["p_adj"] < sig and (c["lo"] > 0 or c["hi"] < 0):
            word = "better" if (c["diff"] > 0) == hib else "worse"
            found.append(f"{labels[j]} is {word} than {labels[base]} by {_finding(metric, c, level)}.")
    return " ".join(found) if found else f"No group differs from {labels[base]} with {level} confidence."
