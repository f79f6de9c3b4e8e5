"""ll.compare pairs by prompt: prompts that differ a lot in difficulty no longer hide a gain that
every prompt shows, repeats count once, and the error rates hold up by simulation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import llmlab as ll
from llmlab.analysis.paired import paired_diff
from llmlab.errors import ValidationError


def _prompts(rng, gain, n_prompts=20, repeats=3, noise=0.12, spread=1.0, groups=("terse", "steps")):
    """Scores of ``groups`` on the same prompts: difficulty spread ``spread`` between prompts, the
    last group ``gain`` better on every prompt, per-call noise ``noise``."""
    difficulty = rng.normal(0, spread, n_prompts)
    rows = []
    for k, g in enumerate(groups):
        add = gain if k == len(groups) - 1 else 0.0
        for p in range(n_prompts):
            for r in range(repeats):
                rows.append((g, f"p{p}", r, difficulty[p] + add + rng.normal(0, noise)))
    return pd.DataFrame(rows, columns=["template_name", "prompt_id", "repeat", "score"])


def test_a_gain_on_every_prompt_wins_although_prompts_differ_a_lot():
    rng = np.random.default_rng(3)
    difficulty = rng.uniform(0, 1, 20)
    df = pd.DataFrame(
        {
            "template_name": ["terse"] * 20 + ["steps"] * 20,
            "prompt_id": [f"p{i}" for i in range(20)] * 2,
            "score": np.concatenate([difficulty, difficulty + 0.05]),
        }
    )
    unpaired = ll.compare(df, by="template_name", metric="score", unit="call")
    assert unpaired.attrs["winner"] is None  # the issue: between-prompt spread drowns the gain
    out = ll.compare(df, by="template_name", metric="score")  # default: paired, prompts are shared
    assert out.attrs["unit"] == "prompt" and out.attrs["winner"] == "template_name=steps"
    terse = out.set_index("group").loc["template_name=terse"]
    assert terse["diff"] == pytest.approx(-0.05) and terse["diff_low"] == pytest.approx(-0.05)
    assert terse["p_adj"] < 0.01 and terse["n_pairs"] == 20
    v = out.attrs["verdict"]
    assert v == (
        "template_name=steps wins on mean score: it beats template_name=terse by +0.05 "
        "(95% CI +0.05 to +0.05, adjusted p < 0.001, 20 prompts)."
    )


def test_repeats_are_averaged_within_a_prompt_not_counted():
    df = pd.DataFrame(
        {
            "temperature": [0.0] * 9 + [0.7] * 9,
            "prompt_id": [f"p{i // 3}" for i in range(9)] * 2,
            "score": [0.2, 0.2, 0.2, 0.5, 0.5, 0.5, 0.9, 0.9, 0.9] + [0.3, 0.3, 0.3, 0.4, 0.4, 0.4, 1.0, 1.0, 1.0],
        }
    )
    out = ll.compare(df, by="temperature", metric="score")
    assert out["n"].tolist() == [3, 3] and out["n_calls"].tolist() == [9, 9]
    assert out.attrs["winner"] is None and out.attrs["verdict"].startswith("Too few prompts to call a winner")
    calls = ll.compare(df, by="temperature", metric="score", unit="call")
    assert calls["n"].tolist() == [9, 9] and "n_calls" not in calls.columns


def test_unit_choice_and_baseline():
    rng = np.random.default_rng(5)
    df = _prompts(rng, 0.3, groups=("a", "b", "c"))
    out = ll.compare(df, by="template_name", metric="score", baseline="a")
    assert out.attrs["baseline"] == "template_name=a" and bool(out["baseline"][0])
    assert out.attrs["winner"] == "template_name=c"
    # b and a are the same: only c's finding vs the baseline, then the winner, one sentence each
    assert out.attrs["verdict"].startswith("template_name=c is better than template_name=a by +0.3")
    assert (
        "template_name=c wins on mean score: it beats all 2 other groups (closest: template_name=b)"
        in (out.attrs["verdict"])
    )
    # no prompt_id → calls; prompt_id but no shared prompt → calls by default, per-prompt means on request
    apart = df.assign(prompt_id=df["template_name"] + df["prompt_id"])
    assert ll.compare(apart, by="template_name", metric="score").attrs["unit"] == "call"
    per = ll.compare(apart, by="template_name", metric="score", unit="prompt")
    assert per["n"].tolist() == [20, 20, 20]
    with pytest.raises(ValidationError, match="unit"):
        ll.compare(df.drop(columns="prompt_id"), by="template_name", metric="score", unit="prompt")
    with pytest.raises(ValidationError, match="unit"):
        ll.compare(df, by="template_name", metric="score", unit="row")


def test_paired_interval_covers_and_agrees_with_its_p_value():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 20)
    y = x + 0.3 + rng.normal(0, 0.3, 20)
    d, lo, hi, p = paired_diff(x, y, n_boot=2000, rng=np.random.default_rng(1))
    assert d == pytest.approx((y - x).mean()) and lo < d < hi and (lo > 0) == (p < 0.05)
    # close to a paired t interval at n=20 (the expansion is t-based)
    se = (y - x).std(ddof=1) / np.sqrt(20)
    assert lo == pytest.approx(d - 2.09 * se, abs=0.6 * se) and hi == pytest.approx(d + 2.09 * se, abs=0.6 * se)
    med = paired_diff(x, y, stat="median", rng=np.random.default_rng(1))
    assert med[1] < med[0] < med[2]
    assert np.isnan(paired_diff(x[:1], y[:1])[1])


def _rate(gain: float, trials: int = 200, seed: int = 2024) -> float:
    rng = np.random.default_rng(seed)
    named = 0
    for t in range(trials):
        out = ll.compare(_prompts(rng, gain), by="template_name", metric="score", n_boot=400, seed=t)
        named += out.attrs["winner"] is not None
    return named / trials


def test_simulation_no_true_difference_names_a_winner_rarely():
    # 20 prompts (difficulty sd 1), 3 repeats, call noise sd 0.12, no difference at all
    assert _rate(0.0) <= 0.07


def test_simulation_a_tenth_of_the_prompt_spread_is_found():
    # the same, but "steps" is better by 0.1 (a tenth of the between-prompt sd) on every prompt
    assert _rate(0.1) >= 0.90


def test_paired_interval_keeps_its_coverage_with_few_prompts():
    # a plain percentile interval of 5 paired differences covers the truth far less than 95% of the time
    rng = np.random.default_rng(8)
    covered = 0
    for _ in range(300):
        x = rng.normal(0, 1, 5)
        y = x + 0.3 + rng.normal(0, 0.5, 5)
        _, lo, hi, _ = paired_diff(x, y, n_boot=500, rng=rng)
        covered += lo <= 0.3 <= hi
    assert covered / 300 >= 0.92
