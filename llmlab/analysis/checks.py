"""Regression checks on a call frame (``ll.expect``, ``res.check``) and stable summaries for nbval
(``ll.report``, ``res.report``).

A regression notebook states what must keep holding — no errors, a quality score at least X,
cost at most Y, p95 latency at most Z, outputs that match a pattern or stay close to a stored
baseline — and :func:`expect` raises :class:`~llmlab.errors.CheckFailed` listing the offending
calls when one does not. Thresholds take a tolerance (``rel_tol``/``abs_tol``, as in
``math.isclose``): a maximum ``T`` allows values up to ``T + max(rel_tol*|T|, abs_tol)``, a
minimum allows down to ``T - max(rel_tol*|T|, abs_tol)``.

Everything printed here is stable across runs of the same responses: passing checks print their
expectation only (never a measured latency), and :func:`report` prints counts, tokens, cost and
scores rounded, plus a digest of the completions, so nbval's output comparison notices any
change in what the model said without the notebook printing every completion.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmlab.analysis.similarity import measure
from llmlab.analysis.stats import is_error, metric_values
from llmlab.errors import CheckFailed, ValidationError
from llmlab.text import is_na, snip

__all__ = ["BASELINE_VERSION", "Check", "CheckReport", "Report", "expect", "load_baseline", "report", "save_baseline"]

BASELINE_VERSION = 1
_MAX_LISTED = 10


@dataclasses.dataclass
class Check:
    """The outcome of one expectation.

    Attributes:
        name: short id (``no_errors``, ``min_score[quality]``, ``max_cost_usd``...).
        expectation: what was expected, in words (stable: no measured values).
        passed: whether it held.
        problem: on failure, what was measured (e.g. ``"p95 latency 812.4 ms"``).
        offending: on failure, the offending calls (call_id, model, prompt, value, ...).
    """

    name: str
    expectation: str
    passed: bool
    problem: str = ""
    offending: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)


class CheckReport:
    """All checks of one :func:`expect` call; prints as a stable text block."""

    def __init__(self, checks: list[Check], calls: int) -> None:
        self.checks = checks
        self.calls = calls

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def offending_call_ids(self) -> list[str]:
        """Every call id that broke at least one check, in frame order, once."""
        seen: dict[str, None] = {}
        for c in self.failed:
            if "call_id" in c.offending:
                for cid in c.offending["call_id"].astype(str):
                    seen.setdefault(cid, None)
        return list(seen)

    def __str__(self) -> str:
        n_failed = len(self.failed)
        head = (
            f"{len(self.checks)} checks passed on {self.calls} calls"
            if not n_failed
            else f"{n_failed} of {len(self.checks)} checks failed on {self.calls} calls"
        )
        lines = [head]
        for c in self.checks:
            if c.passed:
                lines.append(f"  ok    {c.expectation}")
                continue
            lines.append(f"  FAIL  {c.expectation}: {c.problem}")
            for text in _describe_calls(c.offending):
                lines.append(f"          {text}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


# --- helpers ------------------------------------------------------------------------------------


def _frame(data: Any) -> pd.DataFrame:
    df = getattr(data, "df", data)
    if not isinstance(df, pd.DataFrame):
        raise ValidationError("df", type(data).__name__, "expected a DataFrame of calls or a SweepResult")
    return df


def _threshold(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(float(value)):
        raise ValidationError(name, value, "must be a number")
    return float(value)


def _slack(threshold: float, rel_tol: float, abs_tol: float) -> float:
    return max(rel_tol * abs(threshold), abs_tol) + 1e-12


def _fmt(v: Any, digits: int = 4) -> str:
    if is_na(v):
        return "NA"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.{digits}g}"
    return str(v)


_ID_COLUMNS = ("call_id", "model", "temperature", "top_p", "repeat", "prompt")


def _offending(df: pd.DataFrame, mask: Any, value_name: str | None = None, values: Any = None) -> pd.DataFrame:
    cols = [c for c in _ID_COLUMNS if c in df.columns]
    out = df.loc[mask, cols].copy()
    if value_name is not None and values is not None:
        out[value_name] = pd.Series(values, index=df.index)[mask]
    return out.reset_index(drop=True)


def _describe_calls(off: pd.DataFrame) -> list[str]:
    lines = []
    for _, row in off.head(_MAX_LISTED).iterrows():
        parts = []
        for col in off.columns:
            v = row[col]
            if col == "prompt":
                parts.append(f"prompt={snip(v, 40)!r}")
            elif col == "repeat" and (v == 0 or v is None):
                continue
            elif col in ("completion", "error", "baseline"):
                parts.append(f"{col}={snip(v, 60)!r}")
            else:
                parts.append(f"{col}={_fmt(v)}")
        lines.append(" ".join(parts))
    if len(off) > _MAX_LISTED:
        lines.append(f"... and {len(off) - _MAX_LISTED} more")
    return lines


def _tol_text(rel_tol: float, abs_tol: float) -> str:
    parts = ([f"rel {rel_tol:g}"] if rel_tol else []) + ([f"abs {abs_tol:g}"] if abs_tol else [])
    return f" (tolerance {', '.join(parts)})" if parts else ""


# --- baselines ----------------------------------------------------------------------------------


def save_baseline(df: Any, path: str | os.PathLike[str]) -> Path:
    """Store the completions of a call frame as a baseline file for ``expect(baseline=...)``.

    The file maps each ``call_id`` (stable for the same request) to its model, prompt and
    completion, sorted, so re-saving an unchanged run gives an identical file.

    Returns:
        The path written.
    """
    frame = _frame(df)
    ok = frame[~is_error(frame)]
    calls = {
        str(r["call_id"]): {"model": r.get("model"), "prompt": r.get("prompt"), "completion": r.get("completion")}
        for r in ok.to_dict(orient="records")
    }
    data = {"version": BASELINE_VERSION, "calls": dict(sorted(calls.items()))}
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return out


def load_baseline(baseline: Any) -> dict[str, str]:
    """``call_id → completion`` from a baseline file, a DataFrame with those columns, or a dict."""
    if isinstance(baseline, (str, os.PathLike)):
        path = Path(baseline)
        if not path.exists():
            raise ValidationError(
                "baseline", str(path), "file not found; create it with ll.save_baseline(res.df, path)"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return {k: v.get("completion") for k, v in data["calls"].items()}
        except (ValueError, KeyError, AttributeError, TypeError):
            raise ValidationError("baseline", str(path), "not a baseline file (written by ll.save_baseline)") from None
    if isinstance(baseline, pd.DataFrame):
        missing = [c for c in ("call_id", "completion") if c not in baseline.columns]
        if missing:
            raise ValidationError("baseline", f"DataFrame without {missing}", "needs call_id and completion columns")
        return dict(zip(baseline["call_id"].astype(str), baseline["completion"]))
    if isinstance(baseline, Mapping):
        return {str(k): v for k, v in baseline.items()}
    raise ValidationError("baseline", type(baseline).__name__, "expected a baseline path, a DataFrame or a dict")


# --- expect -------------------------------------------------------------------------------------


def expect(
    df: Any,
    *,
    no_errors: bool = True,
    min_score: float | Mapping[str, float] | None = None,
    score: str = "score",
    min_mean_score: float | Mapping[str, float] | None = None,
    max_cost_usd: float | None = None,
    max_call_cost_usd: float | None = None,
    max_p95_latency_ms: float | None = None,
    match: str | re.Pattern[str] | None = None,
    baseline: Any = None,
    min_similarity: float = 0.9,
    similarity: str = "difflib",
    rel_tol: float = 0.0,
    abs_tol: float = 0.0,
    raise_on_failure: bool = True,
) -> CheckReport:
    """Assert regression thresholds on a call frame; raise ``CheckFailed`` listing offending calls.

    Args:
        df: a call frame (``res.df``, ``ll.spans()``) or a SweepResult.
        no_errors: every call has ``status == "ok"``.
        min_score: every call's score is at least this (a number for the column ``score``, or
            ``{"column": minimum, ...}``); NA scores count as failing.
        score: the score column a numeric ``min_score``/``min_mean_score`` refers to.
        min_mean_score: the mean score (NA skipped) is at least this; same forms as ``min_score``.
        max_cost_usd: the total ``cost_usd`` is at most this (the costliest calls are listed).
        max_call_cost_usd: every call's ``cost_usd`` is at most this.
        max_p95_latency_ms: the p95 of ``latency_ms`` over live successful calls is at most this
            (the calls slower than the threshold are listed).
        match: a regex every successful completion must contain (``re.search``).
        baseline: a file from :func:`save_baseline` (or a frame/dict ``call_id → completion``);
            each successful call's completion must be at least ``min_similarity`` similar to it.
        min_similarity: the similarity bound (0..1) for ``baseline``.
        similarity: ``"difflib"`` (character-level, default), ``"f1"`` or ``"cosine"`` (see
            ``llmlab.evals.similarity``).
        rel_tol, abs_tol: tolerance applied to every numeric threshold.
        raise_on_failure: False returns the report instead of raising.

    Returns:
        A :class:`CheckReport` (prints one stable line per check).

    Raises:
        CheckFailed: a check did not hold; the message lists the offending calls.
        ValidationError: a bad argument or a missing column, before anything is checked.
    """
    frame = _frame(df)
    for name, value in (("rel_tol", rel_tol), ("abs_tol", abs_tol)):
        if _threshold(name, value) < 0:
            raise ValidationError(name, value, "must be >= 0")
    tol = _tol_text(rel_tol, abs_tol)
    errors = is_error(frame)
    checks: list[Check] = []

    if no_errors:
        bad = errors.to_numpy()
        checks.append(
            Check(
                "no_errors",
                "no errors",
                not bad.any(),
                f"{int(bad.sum())} of {len(frame)} calls failed",
                _offending(frame, bad, "error", frame.get("error", None)),
            )
        )

    for kind, spec in (("min_score", min_score), ("min_mean_score", min_mean_score)):
        if spec is None:
            continue
        items = dict(spec) if isinstance(spec, Mapping) else {score: spec}
        for col, minimum in items.items():
            t = _threshold(f"{kind}[{col!r}]", minimum)
            if col not in frame.columns:
                raise ValidationError(
                    f"{kind}[{col!r}]", col, "no such score column in the frame (add it with llmlab.evals)"
                )
            values = pd.to_numeric(frame[col], errors="coerce").astype(float)
            limit = t - _slack(t, rel_tol, abs_tol)
            if kind == "min_score":
                bad = (values.isna() | (values < limit)).to_numpy()
                checks.append(
                    Check(
                        f"min_score[{col}]",
                        f"{col} >= {t:g} on every call{tol}",
                        not bad.any(),
                        f"{int(bad.sum())} calls below",
                        _offending(frame, bad, col, values),
                    )
                )
            else:
                mean = float(values.mean()) if values.notna().any() else float("nan")
                ok = not math.isnan(mean) and mean >= limit
                low = (values < t).to_numpy() & ~values.isna().to_numpy()
                checks.append(
                    Check(
                        f"min_mean_score[{col}]",
                        f"mean {col} >= {t:g}{tol}",
                        ok,
                        f"mean {_fmt(mean)}",
                        _offending(frame, low, col, values),
                    )
                )

    if max_cost_usd is not None or max_call_cost_usd is not None:
        if "cost_usd" not in frame.columns:
            raise ValidationError(
                "max_cost_usd", "cost_usd", "no cost_usd column in the frame (price it with ll.price)"
            )
        cost = pd.to_numeric(frame["cost_usd"], errors="coerce").astype(float)
        if max_cost_usd is not None:
            t = _threshold("max_cost_usd", max_cost_usd)
            total = float(cost.sum(skipna=True))
            unknown = int((cost.isna() & ~errors).sum())
            ok = total <= t + _slack(t, rel_tol, abs_tol) and unknown == 0
            top = cost.fillna(np.inf).sort_values(ascending=False).index[:_MAX_LISTED]
            mask = frame.index.isin(top) if not ok else np.zeros(len(frame), bool)
            problem = f"total ${total:.6g}" + (f", {unknown} calls without a price" if unknown else "")
            checks.append(
                Check(
                    "max_cost_usd", f"total cost <= ${t:g}{tol}", ok, problem, _offending(frame, mask, "cost_usd", cost)
                )
            )
        if max_call_cost_usd is not None:
            t = _threshold("max_call_cost_usd", max_call_cost_usd)
            bad = (cost > t + _slack(t, rel_tol, abs_tol)).to_numpy() | (cost.isna() & ~errors).to_numpy()
            checks.append(
                Check(
                    "max_call_cost_usd",
                    f"cost per call <= ${t:g}{tol}",
                    not bad.any(),
                    f"{int(bad.sum())} calls above",
                    _offending(frame, bad, "cost_usd", cost),
                )
            )

    if max_p95_latency_ms is not None:
        t = _threshold("max_p95_latency_ms", max_p95_latency_ms)
        lat = metric_values(frame, "latency_ms")
        live = lat.dropna().to_numpy()
        p95 = float(np.percentile(live, 95)) if len(live) else float("nan")
        limit = t + _slack(t, rel_tol, abs_tol)
        ok = not math.isnan(p95) and p95 <= limit
        slow = (lat > limit).to_numpy() if not ok else np.zeros(len(frame), bool)
        problem = f"p95 latency {p95:.1f} ms" if not math.isnan(p95) else "no live successful calls to measure"
        checks.append(
            Check(
                "max_p95_latency_ms",
                f"p95 latency <= {t:g} ms{tol}",
                ok,
                problem,
                _offending(frame, slow, "latency_ms", lat.round(1)),
            )
        )

    completions = (
        frame["completion"] if "completion" in frame.columns else pd.Series([None] * len(frame), index=frame.index)
    )
    if match is not None:
        try:
            pattern = re.compile(match) if isinstance(match, str) else match
        except re.error as exc:
            raise ValidationError("match", match, f"invalid regex: {exc}") from None
        texts = completions.astype("string")
        bad = np.array([not e and (is_na(t) or pattern.search(str(t)) is None) for t, e in zip(texts, errors)], bool)
        checks.append(
            Check(
                "match",
                f"every completion matches /{pattern.pattern}/",
                not bad.any(),
                f"{int(bad.sum())} completions do not match",
                _offending(frame, bad, "completion", completions),
            )
        )

    if baseline is not None:
        sim_fn = measure(similarity, "similarity")
        bound = _threshold("min_similarity", min_similarity)
        if not 0 <= bound <= 1:
            raise ValidationError("min_similarity", min_similarity, "must be in [0, 1]")
        ref = load_baseline(baseline)
        sims = []
        for cid, text, err in zip(frame["call_id"].astype(str), completions, errors):
            if err:
                sims.append(np.nan)
            elif cid not in ref or ref[cid] is None:
                sims.append(-1.0)  # not in the baseline: always offending
            else:
                sims.append(float(sim_fn("" if is_na(text) else str(text), str(ref[cid]))))
        sim = pd.Series(sims, index=frame.index, dtype=float)
        limit = bound - _slack(bound, rel_tol, abs_tol)
        bad = (sim < limit).to_numpy()
        missing = int((sim == -1.0).sum())
        problem = f"{int(bad.sum())} calls below" + (
            f" ({missing} not in the baseline: re-save it with ll.save_baseline)" if missing else ""
        )
        shown = sim.where(sim >= 0).round(3)
        off = _offending(frame, bad, "similarity", shown)
        if bad.any():
            off["completion"] = completions[bad].reset_index(drop=True)
            off["baseline"] = [ref.get(c) for c in off["call_id"].astype(str)] if "call_id" in off else None
        checks.append(
            Check(
                "baseline",
                f"completions >= {bound:g} similar to the baseline by {similarity}{tol}",
                not bad.any(),
                problem,
                off,
            )
        )

    result = CheckReport(checks, len(frame))
    if raise_on_failure and not result.passed:
        failure = CheckFailed(str(result))
        failure.report = result  # type: ignore[attr-defined]
        failure.call_ids = result.offending_call_ids()  # type: ignore[attr-defined]
        raise failure
    return result


# --- report -------------------------------------------------------------------------------------


class Report:
    """A stable, rounded text summary of a call frame (see :func:`report`)."""

    def __init__(self, frame: pd.DataFrame, title: str) -> None:
        self.frame = frame
        self.title = title

    def __str__(self) -> str:
        body = self.frame.to_string(index=False) if len(self.frame) else "(no calls)"
        return f"{self.title}\n{body}"

    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


def _digest(texts: Sequence[Any]) -> str:
    h = hashlib.sha256()
    for t in texts:
        # not text.is_na(): saved notebooks pin this digest, and a NaN completion has always hashed as "nan"
        h.update(("\x00" if t is None or t is pd.NA else str(t)).encode("utf-8") + b"\x1e")
    return h.hexdigest()[:8]


def report(df: Any, by: str | Sequence[str] | None = None, scores: Sequence[str] | str = (), digits: int = 3) -> Report:
    """A summary that prints the same for the same responses: made for nbval-checked cells.

    Per group: ``calls``, ``errors``, ``out_tokens`` (sum), ``cost_usd`` (sum, 3 significant
    digits), the mean of each ``scores`` column (``digits`` decimals) and ``digest``, 8 hex digits
    of a hash of the group's completions in call_id order — it changes whenever any completion
    changes. No timing column: latencies differ on every run.

    Args:
        df: a call frame or a SweepResult.
        by: grouping columns (default: the swept settings for a SweepResult, else ``model``).
        scores: score columns to average (e.g. those added by ``llmlab.evals``).
        digits: decimals of the score means.
    """
    frame = _frame(df)
    if by is None:
        by = df.setting_columns() if hasattr(df, "setting_columns") else ["model"]
    by_cols = [by] if isinstance(by, str) else list(by)
    score_cols = [scores] if isinstance(scores, str) else list(scores)
    for col in by_cols + score_cols:
        if col not in frame.columns:
            raise ValidationError("by" if col in by_cols else "scores", col, "no such column in the frame")
    rows = []
    groups = frame.groupby(by_cols, dropna=False, sort=True) if by_cols else [((), frame)]
    for key, g in groups:
        keys = key if isinstance(key, tuple) else (key,)
        g = g.sort_values("call_id", kind="stable") if "call_id" in g else g
        row: dict[str, Any] = {c: (k.item() if hasattr(k, "item") else k) for c, k in zip(by_cols, keys)}
        err = is_error(g)
        out_tokens = pd.to_numeric(g.get("output_tokens"), errors="coerce") if "output_tokens" in g else None
        cost = pd.to_numeric(g["cost_usd"], errors="coerce") if "cost_usd" in g else None
        row["calls"] = len(g)
        row["errors"] = int(err.sum())
        row["out_tokens"] = int(out_tokens.sum()) if out_tokens is not None and out_tokens.notna().any() else "NA"
        row["cost_usd"] = f"{float(cost.sum()):.3g}" if cost is not None and cost.notna().any() else "NA"
        for col in score_cols:
            vals = pd.to_numeric(g[col], errors="coerce")
            row[col] = f"{float(vals.mean()):.{digits}f}" if vals.notna().any() else "NA"
        row["digest"] = _digest(g["completion"].tolist() if "completion" in g else [])
        rows.append(row)
    out = pd.DataFrame(rows)
    errors = int(is_error(frame).sum())
    ordered = frame.sort_values("call_id", kind="stable") if "call_id" in frame else frame
    digest = _digest(ordered["completion"].tolist()) if "completion" in frame else "-"
    title = f"{len(frame)} calls, {errors} errors, completions digest {digest}"
    return Report(out, title)
