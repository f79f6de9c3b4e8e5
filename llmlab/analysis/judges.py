"""Judging with a model: which judge, sending judge prompts, and A-vs-B preferences.

- :func:`resolve_judge` — the judge model: ``model=``, else ``ll.configure(judge=...)``; a local
  n-gram model is refused (it cannot follow a rubric).
- :func:`run_judge` — judge prompts sent through the normal run layer (``build_grid`` +
  ``run_grid_sync``), so judge calls are cached, traced and rate-limited like any sweep.
- :func:`pairwise_judge` (``ll.evals.pairwise_judge``) — which of two answers to the same prompt
  is better, asked in both orders; a preference that flips with the order is a tie.
- :func:`preference_scores` — a pairwise result in long form, for ``ll.compare(..., unit="prompt")``.
"""

from __future__ import annotations

import math
import re
import statistics
import warnings
from typing import Any

import numpy as np
import pandas as pd

from llmlab.analysis.estimates import group_label, is_error
from llmlab.analysis.stats import MIN_N, compare
from llmlab.config import get_config
from llmlab.errors import ValidationError
from llmlab.text import is_na

__all__ = [
    "PAIRWISE_RUBRIC",
    "PAIR_SETTINGS",
    "JudgeWarning",
    "pair_prompt",
    "pairwise_judge",
    "parse_preference",
    "preference_scores",
    "resolve_judge",
    "run_judge",
    "wilson_interval",
]

#: Columns that, with ``prompt_id``, make two calls comparable: same prompt, same other settings.
PAIR_SETTINGS = [
    "model",
    "temperature",
    "top_p",
    "max_tokens",
    "seed",
    "params",
    "template_name",
    "system_name",
    "repeat",
]

PAIRWISE_RUBRIC = (
    "Two answers to the same request follow. Which one responds better: correct, complete and clear? "
    "Judge the content, not the length or the order in which they are shown."
)
_PAIR_TEMPLATE = (
    "{rubric}\n\n{question}Answer A:\n{first}\n\nAnswer B:\n{second}\n\nReply with only one word: A, B, or tie."
)


class JudgeWarning(UserWarning):
    """Some judge replies carried no verdict or score (those rows are NA)."""


def resolve_judge(model: str | None) -> str:
    """The judge model to use: ``model``, else the configured ``judge``; a local n-gram model is refused.

    Raises:
        ValidationError: no judge is named, or it is a local n-gram model.
    """
    if model is None:
        model = get_config().judge
    if model is None:
        raise ValidationError(
            "model",
            None,
            "name a judge model, e.g. model='openai/gpt-4o-mini', or set one for the session with "
            "ll.configure(judge='provider/model') (env LLMLAB_JUDGE)",
        )
    from llmlab.plan.providers import split_model

    provider, _name = split_model(model)
    if provider == "local":
        raise ValidationError(
            "model",
            model,
            "the local models are small n-gram text generators: they cannot read a rubric or compare two "
            "answers, so their verdicts would be noise (most replies hold no score at all); judge with a chat "
            "model that follows instructions, e.g. 'openai/gpt-4o-mini'",
        )
    return model


def run_judge(
    prompts: list[str], model: str, name: str, max_tokens: int, concurrency: int, **run_kwargs: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Send each judge prompt once (temperature 0) through the run layer; returns ``(replies,
    failures)``, both keyed by prompt text (``failures`` holds the error of calls that failed)."""
    if not prompts:
        return {}, {}
    # the run layer, not the Sweep facade: a judge run shows no display and needs no SweepResult
    from llmlab.plan.grid import build_grid
    from llmlab.run.entry import run_grid_sync

    grid = build_grid(prompts=prompts, models=[model], temperature=[0.0], max_tokens=max_tokens, name=name)
    outcome = run_grid_sync(grid, concurrency=concurrency, **run_kwargs)
    _tag_judge_run(getattr(outcome, "sweep_id", None))
    frame = outcome.frame
    replies = replies_by_prompt(frame, grid, prompts)
    failures = {p: e for p, e in replies_by_prompt(frame, grid, prompts, failed=True).items() if p not in replies}
    return replies, failures


def _tag_judge_run(sweep_id: str | None) -> None:
    """Tag a judge run ``judge`` so ``ll.sweeps()`` leaves it out of the experiment history by default
    (``ll.sweeps(include_judges=True)`` lists it, ``ll.load`` still loads it); nothing when it was not recorded."""
    from llmlab.store import get_store
    from llmlab.store.experiments import JUDGE_TAG, add_tags

    if not sweep_id:
        return
    try:
        add_tags(get_store(), sweep_id, [JUDGE_TAG])
    except ValidationError:
        pass  # the run was not recorded (no such sweep in the store)


def replies_by_prompt(res_df: pd.DataFrame, grid: Any, prompts: list[str], failed: bool = False) -> dict[str, Any]:
    """Judge replies keyed by judge prompt (by the prompt text, else via the grid's prompt ids);
    with ``failed``, the error messages of the judge calls that failed instead."""
    ok = res_df[is_error(res_df) == failed] if len(res_df) else res_df
    column = "error" if failed else "completion"
    out: dict[str, Any] = {}
    if column not in ok.columns:
        return out
    wanted = set(prompts)
    if "prompt" in ok.columns:
        for p, c in zip(ok["prompt"].tolist(), ok[column].tolist()):
            if isinstance(p, str) and p in wanted:
                out.setdefault(p, c)
    if len(out) < len(prompts) and "prompt_id" in ok.columns and hasattr(grid, "calls"):
        by_id = {
            getattr(c, "prompt_id", None): prompts[c.prompt_index]
            for c in grid.calls
            if getattr(c, "prompt_index", None) is not None and c.prompt_index < len(prompts)
        }
        for pid, c in zip(ok["prompt_id"].tolist(), ok[column].tolist()):
            if pid in by_id:
                out.setdefault(by_id[pid], c)
    return out


# --- pairwise ------------------------------------------------------------------------------------

_VERDICT = re.compile(r"^\W*(?:answer\s*)?(a|b|tie|t|equal|both|neither)\b", re.IGNORECASE)
_NAMED = re.compile(r"\banswer\s+([ab])\b", re.IGNORECASE)


def parse_preference(text: Any) -> str | None:
    """``"A"``, ``"B"`` or ``"tie"`` from a judge's reply (``"B"``, ``"**A**"``, ``"Answer B is better"``,
    ``"tie"``), or None when it holds no verdict."""
    if not isinstance(text, str) or not text.strip():
        return None
    cleaned = text.replace("*", "").strip()
    m = _VERDICT.match(cleaned) or _NAMED.search(cleaned)
    if not m:
        return None
    word = m.group(1).lower()
    return word.upper() if word in ("a", "b") else "tie"


def pair_prompt(
    first: str,
    second: str,
    question: Any = None,
    rubric: str = PAIRWISE_RUBRIC,
    request_first: Any = None,
    request_second: Any = None,
) -> str:
    """The judge prompt showing ``first`` as Answer A and ``second`` as Answer B.

    ``question`` is the shared request; when the two answers were asked differently (template
    variants) and no shared question is known, each answer's own request is shown instead.
    """
    if not is_na(question):
        block = f"Request:\n{question}\n\n"
    elif not is_na(request_first) and not is_na(request_second):
        block = f"Request behind answer A:\n{request_first}\n\nRequest behind answer B:\n{request_second}\n\n"
    else:
        block = ""
    return _PAIR_TEMPLATE.format(rubric=rubric, question=block, first=first, second=second)


def wilson_interval(successes: float, n: int, ci: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a rate ``successes / n`` (``successes`` may be fractional: ties count
    half); ``(nan, nan)`` when ``n`` is 0. Unlike the normal approximation it stays inside [0, 1] and
    is not zero-width at 0 or n successes."""
    if n <= 0:
        return float("nan"), float("nan")
    z = statistics.NormalDist().inv_cdf(0.5 + ci / 2)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def _norm(value: Any) -> str:
    if is_na(value):
        return ""
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


def _side_rows(df: pd.DataFrame, by: str, value: Any, settings: list[str]) -> dict[tuple[str, ...], int]:
    """Key (prompt_id, other settings) → position of the first usable row of one side."""
    usable = ~is_error(df).to_numpy() & df["completion"].notna().to_numpy()
    side = df[by].map(_norm).to_numpy() == _norm(value)
    keys = zip(*(df[c].map(_norm).tolist() for c in ["prompt_id", *settings]))
    out: dict[tuple[str, ...], int] = {}
    for pos, key in enumerate(keys):
        if usable[pos] and side[pos] and key[0]:
            out.setdefault(key, pos)
    return out


def pairwise_judge(
    df: pd.DataFrame,
    by: str = "template_name",
    a: Any = None,
    b: Any = None,
    model: str | None = None,
    rubric: str = PAIRWISE_RUBRIC,
    question: str | None = None,
    max_tokens: int = 8,
    concurrency: int = 8,
    ci: float = 0.95,
    n_boot: int = 2000,
    seed: int | None = 0,
    **run_kwargs: Any,
) -> pd.DataFrame:
    """Which of two answers to the same prompt is better, asked of a judge model in both orders.

    Rows of ``df`` with ``by == a`` and ``by == b`` are paired when they share ``prompt_id`` and
    every other setting (:data:`PAIR_SETTINGS`: model, temperature, …, repeat). Each pair is shown
    to the judge twice, ``a``'s answer first and then ``b``'s first, because judges favour a
    position: the pair's preference is ``"a"`` or ``"b"`` only when both orders agree, ``"tie"``
    when they disagree (a preference that flips with the order) or the judge said tie, NA when a
    reply held no verdict. The judge calls go through the run layer (cached, traced,
    rate-limited; ``run_kwargs`` such as ``cache="replay"``, ``cassette=`` are passed on).

    Args:
        df: a call frame with ``prompt_id``, ``completion`` and the ``by`` column.
        by: the column whose two values are compared (e.g. ``template_name``, ``model``).
        a, b: the two values; default the two values of ``by`` when it has exactly two.
        model: the judge; default ``ll.configure(judge=...)``. Local n-gram models are refused.
        rubric: what "better" means, shown before the two answers.
        question: a column holding the request both answers respond to; default the ``prompt``
            column when both sides were asked the same text, else each side's own prompt is shown.
        ci: confidence level of the win-rate interval.
        n_boot, seed: resamples and seed of the paired bootstrap over prompts (as in ``ll.compare``).

    Returns:
        One row per pair: ``prompt_id``, the settings, ``preference`` (``"a"``/``"b"``/``"tie"``/NA),
        ``b_score`` (1 b, 0.5 tie, 0 a), ``answer_a``, ``answer_b``, ``call_id_a``, ``call_id_b``,
        ``judge_ab`` and ``judge_ba`` (the judge's raw replies with a first and with b first).
        ``.attrs``: ``win_rate`` (mean over prompts of b's per-prompt score, ties half),
        ``ci_low``/``ci_high`` (its interval from the paired bootstrap over prompts that
        ``ll.compare(preference_scores(result), by=by, metric="preference")`` uses, so the two name the
        same winner), ``n_prompts``, ``wins_a``, ``wins_b``, ``ties`` (pairs), ``position_flips`` (pairs
        whose verdict followed the position), ``verdict`` (plain sentences), ``winner`` (``"by=value"``:
        ``ll.compare``'s winner on the preference scores, else None), ``by``, ``a``, ``b``, ``model``.

    Raises:
        ValidationError: no judge model, a local judge, a missing column, or ``a``/``b`` not values of ``by``.
    """
    judge = resolve_judge(model)
    for col in ("prompt_id", "completion", by):
        if col not in df.columns:
            raise ValidationError("df", col, "the frame has no such column; pairwise judging needs it")
    if not 0 < ci < 1:
        raise ValidationError("ci", ci, "expected a confidence level between 0 and 1, e.g. 0.95")
    values = list(dict.fromkeys(v for v in df[by].tolist() if not is_na(v)))
    if a is None and b is None and len(values) == 2:
        a, b = sorted(values, key=_norm)
    if not values:
        raise ValidationError(
            "df",
            "<frame>",
            f"this frame has no {by} values; pairwise_judge compares two variants of a sweep "
            f"(or pass by= another column that holds the two values to compare)",
        )
    shown = {_norm(v) for v in values}
    for field, v in (("a", a), ("b", b)):
        if v is None or _norm(v) not in shown:
            raise ValidationError(field, v, f"expected one of the values of {by!r}: {values[:12]}")
    if _norm(a) == _norm(b):
        raise ValidationError("b", b, "a and b are the same value; nothing to compare")
    settings = [c for c in PAIR_SETTINGS if c in df.columns and c != by]
    side_a, side_b = _side_rows(df, by, a, settings), _side_rows(df, by, b, settings)
    keys = [k for k in side_a if k in side_b]
    completions = df["completion"].tolist()
    prompts = df["prompt"].tolist() if "prompt" in df.columns else [None] * len(df)
    questions = df[question].tolist() if question is not None else None
    if question is not None and question not in df.columns:
        raise ValidationError("question", question, "no such column")
    jobs = []
    for k in keys:
        i, j = side_a[k], side_b[k]
        ans_a, ans_b = str(completions[i]), str(completions[j])
        q = questions[i] if questions is not None else (prompts[i] if _norm(prompts[i]) == _norm(prompts[j]) else None)
        ab = pair_prompt(ans_a, ans_b, q, rubric, prompts[i], prompts[j])
        ba = pair_prompt(ans_b, ans_a, q, rubric, prompts[j], prompts[i])
        jobs.append((k, i, j, ans_a, ans_b, ab, ba))
    unique = list(dict.fromkeys(p for job in jobs for p in job[5:]))
    replies, failures = run_judge(unique, judge, "pairwise_judge", max_tokens, concurrency, **run_kwargs)
    rows, flips, unread = [], 0, 0
    call_ids = df["call_id"].tolist() if "call_id" in df.columns else [None] * len(df)
    for _key, i, j, ans_a, ans_b, ab, ba in jobs:
        r_ab, r_ba = replies.get(ab), replies.get(ba)
        v_ab, v_ba = parse_preference(r_ab), parse_preference(r_ba)
        first = {"A": "a", "B": "b"}.get(v_ab or "", "tie") if v_ab else None
        second = {"A": "b", "B": "a"}.get(v_ba or "", "tie") if v_ba else None
        if first is None or second is None:
            pref = None
            unread += 1
        elif first == second:
            pref = first
        else:
            pref = "tie"
            flips += int(first != "tie" and second != "tie")
        row = dict(zip(["prompt_id", *settings], [df[c].iloc[i] for c in ["prompt_id", *settings]]))
        row.update(
            preference=pref,
            b_score={"a": 0.0, "b": 1.0, "tie": 0.5}.get(pref or ""),
            answer_a=ans_a,
            answer_b=ans_b,
            call_id_a=call_ids[i],
            call_id_b=call_ids[j],
            judge_ab=None if is_na(r_ab) else r_ab,
            judge_ba=None if is_na(r_ba) else r_ba,
        )
        rows.append(row)
    cols = ["prompt_id", *settings, "preference", "b_score", "answer_a", "answer_b", "call_id_a", "call_id_b"]
    out = pd.DataFrame(rows, columns=[*cols, "judge_ab", "judge_ba"])
    out["preference"] = out["preference"].astype("string")
    out["b_score"] = pd.array(out["b_score"].astype(float), dtype="Float64")
    if failures or unread:
        warnings.warn(
            f"{unread} of {len(jobs)} pairs have no preference: the judge {judge} "
            + (f"failed {len(failures)} calls (e.g. {next(iter(failures.values()))})" if failures else "")
            + (" and " if failures and unread > len(failures) else "")
            + ("gave replies with no A/B/tie verdict (see judge_ab, judge_ba)" if unread > len(failures) else ""),
            JudgeWarning,
            stacklevel=2,
        )
    out.attrs.update(by=by, a=a, b=b)
    out.attrs.update(_summary(out, by, a, b, judge, ci, flips, n_boot, seed))
    return out


def _summary(
    out: pd.DataFrame, by: str, a: Any, b: Any, judge: str, ci: float, flips: int, n_boot: int, seed: int | None
) -> dict[str, Any]:
    decided = out[out["preference"].notna()]
    per_prompt = decided.groupby("prompt_id", sort=False)["b_score"].mean().astype(float)
    n = int(per_prompt.size)
    rate = float(per_prompt.mean()) if n else float("nan")
    label_a, label_b = group_label(by, a), group_label(by, b)
    level = f"{ci:.0%}"
    counts = decided["preference"].value_counts()
    stats = {
        "wins_a": int(counts.get("a", 0)),
        "wins_b": int(counts.get("b", 0)),
        "ties": int(counts.get("tie", 0)),
    }
    winner = None
    lo = hi = float("nan")
    if not n:
        sentences = [f"No verdicts: the judge ({judge}) gave no usable answer for any of the {len(out)} pairs."]
    else:
        # The same estimate as ll.compare(preference_scores(out), by=by, metric="preference"): a prompt's
        # score is a fraction (its repeats/settings, each asked in both orders), so the interval comes from
        # the paired bootstrap over prompts, not from counting each prompt as one win or loss.
        cmp, _diff_b, diff_lo, diff_hi = _compare_preference(out, by, a, b, ci, n_boot, seed)
        # b - a = 2 * win_rate - 1 on every prompt; the expanded interval may reach past a rate's [0, 1]
        lo, hi = max(0.0, (1 + diff_lo) / 2), min(1.0, (1 + diff_hi) / 2)
        winner = cmp.attrs.get("winner")
        interval = f"{level} CI {lo:.2f} to {hi:.2f}, {n} prompts; ties count half"
        if winner == label_b:
            sentences = [f"The judge ({judge}) prefers {label_b} over {label_a}: win rate {rate:.2f} ({interval})."]
        elif winner == label_a:
            sentences = [
                f"The judge ({judge}) prefers {label_a} over {label_b}: {label_b} wins only {rate:.2f} ({interval})."
            ]
        elif n < MIN_N:
            sentences = [
                f"Too few prompts to call a preference between {label_a} and {label_b}: {label_b}'s win rate "
                f"{rate:.2f} ({interval}); at least {MIN_N} prompts are needed."
            ]
        else:
            sentences = [
                f"No clear preference between {label_a} and {label_b}: {label_b}'s win rate {rate:.2f} ({interval}) "
                f"could be 0.5."
            ]
    if flips:
        sentences.append(
            f"On {flips} of {len(out)} pairs the judge picked the same position in both orders (position bias); "
            f"those count as ties."
        )
    return {
        "win_rate": rate,
        "ci_low": lo,
        "ci_high": hi,
        "n_prompts": n,
        **stats,
        "position_flips": flips,
        "verdict": " ".join(sentences),
        "winner": winner,
        "by": by,
        "a": a,
        "b": b,
        "model": judge,
    }


def _compare_preference(
    out: pd.DataFrame, by: str, a: Any, b: Any, ci: float, n_boot: int, seed: int | None
) -> tuple[pd.DataFrame, float, float, float]:
    """``ll.compare`` of the two sides' preference scores paired by prompt, and its ``b - a``
    difference with the interval (whichever side ``ll.compare`` took as the reference)."""
    scores = preference_scores(out, name="preference")
    cmp = compare(scores, by=by, metric="preference", unit="prompt", n_boot=n_boot, ci=ci, seed=seed)
    side = cmp[by].map(_norm).tolist()
    row_b = cmp.iloc[side.index(_norm(b))]
    row_a = cmp.iloc[side.index(_norm(a))]
    if bool(row_a["baseline"]):  # diff = b - a
        return cmp, float(row_b["diff"]), float(row_b["diff_low"]), float(row_b["diff_high"])
    return cmp, -float(row_a["diff"]), -float(row_a["diff_high"]), -float(row_a["diff_low"])


def preference_scores(pref: pd.DataFrame, name: str = "preference") -> pd.DataFrame:
    """A :func:`pairwise_judge` result in long form: two rows per judged pair, one per side, with the
    ``by`` column and a ``name`` score (1 preferred, 0.5 tie, 0 not preferred), so that
    ``ll.compare(preference_scores(pref), by=pref.attrs["by"], metric="preference")`` compares the
    two sides paired by prompt."""
    by, a, b = pref.attrs.get("by"), pref.attrs.get("a"), pref.attrs.get("b")
    if by is None:
        raise ValidationError(
            "pref", "<frame>", "expected the result of ll.evals.pairwise_judge (its .attrs name by, a, b)"
        )
    decided = pref[pref["b_score"].notna()]
    keep = [c for c in decided.columns if c in ["prompt_id", *PAIR_SETTINGS]]
    score_b = decided["b_score"].astype(float).to_numpy()
    side_a = decided[keep].assign(**{by: a, name: 1.0 - score_b})
    side_b = decided[keep].assign(**{by: b, name: score_b})
    return pd.concat([side_a, side_b], ignore_index=True)
