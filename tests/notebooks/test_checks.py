"""Regression checks (ll.expect / res.check) and the stable report printed for nbval."""

from __future__ import annotations

import pandas as pd
import pytest

import llmlab as ll
from llmlab.results import SweepResult


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "call_id": ["c1", "c2", "c3", "c4"],
            "model": ["local/tiny", "local/tiny", "local/small", "local/small"],
            "temperature": [0.0, 0.7, 0.0, 0.7],
            "top_p": [1.0] * 4,
            "repeat": [0] * 4,
            "prompt": ["What is a rainbow?"] * 4,
            "completion": ["A rainbow is light.", "A rainbow bends light.", "Rainbows are arcs of light.", "Light!"],
            "status": ["ok"] * 4,
            "error": [""] * 4,
            "cached": [False] * 4,
            "latency_ms": [100.0, 200.0, 300.0, 1000.0],
            "output_tokens": [5, 5, 6, 2],
            "cost_usd": [0.001, 0.001, 0.002, 0.002],
            "quality": [0.9, 0.8, 0.4, 0.95],
        }
    )


def test_passing_checks_print_a_stable_report():
    report = ll.expect(
        _frame(),
        min_mean_score={"quality": 0.7},
        max_cost_usd=0.006,
        max_p95_latency_ms=1000,
        match="(?i)light",
        baseline={
            "c1": "A rainbow is light.",
            "c2": "A rainbow bends light.",
            "c3": "Rainbows are arcs of light.",
            "c4": "Light!",
        },
    )
    assert report.passed
    assert str(report) == (
        "6 checks passed on 4 calls\n"
        "  ok    no errors\n"
        "  ok    mean quality >= 0.7\n"
        "  ok    total cost <= $0.006\n"
        "  ok    p95 latency <= 1000 ms\n"
        "  ok    every completion matches /(?i)light/\n"
        "  ok    completions >= 0.9 similar to the baseline by difflib"
    )  # no measured value in a passing line: it prints the same on every run


def test_failure_lists_the_offending_calls():
    df = _frame()
    df.loc[1, ["status", "error", "completion"]] = ["error", "HTTP 500: upstream died", None]
    with pytest.raises(ll.CheckFailed) as info:
        ll.expect(df, min_score={"quality": 0.5}, max_p95_latency_ms=500)
    text = str(info.value)
    assert text.startswith("3 of 3 checks failed on 4 calls")
    assert "FAIL  no errors: 1 of 4 calls failed" in text and "call_id=c2" in text and "HTTP 500: upstream died" in text
    assert (
        "FAIL  quality >= 0.5 on every call: 1 calls below" in text and "call_id=c3" in text and "quality=0.4" in text
    )
    assert (
        "FAIL  p95 latency <= 500 ms: p95 latency 930.0 ms" in text
    )  # the error row has no timing and "latency_ms=1000" in text
    assert info.value.call_ids == ["c2", "c3", "c4"]
    assert isinstance(info.value, AssertionError)  # pytest and nbval report it as a failed assertion


def test_tolerances_widen_thresholds():
    df = _frame()  # total cost 0.006, p95 latency 895 ms
    with pytest.raises(ll.CheckFailed, match=r"total \$0.006"):
        ll.expect(df, max_cost_usd=0.0055)
    ll.expect(df, max_cost_usd=0.0055, rel_tol=0.1)  # 0.0055 * 1.1 = 0.00605 >= 0.006
    with pytest.raises(ll.CheckFailed, match="p95 latency 895.0 ms"):
        ll.expect(df, max_p95_latency_ms=850, abs_tol=40)
    ll.expect(df, max_p95_latency_ms=850, abs_tol=50)
    ll.expect(df, min_score={"quality": 0.42}, abs_tol=0.03)  # 0.4 >= 0.42 - 0.03
    with pytest.raises(ll.CheckFailed):
        ll.expect(df, min_score={"quality": 0.42}, abs_tol=0.01)


def test_na_scores_and_unpriced_calls_fail():
    df = _frame()
    df.loc[0, "quality"] = None
    df.loc[2, "cost_usd"] = None
    with pytest.raises(ll.CheckFailed) as info:
        ll.expect(df, min_score={"quality": 0.1}, max_cost_usd=1.0)
    assert "call_id=c1" in str(info.value) and "quality=NA" in str(info.value)
    assert "1 calls without a price" in str(info.value)


def test_match_and_baseline_similarity(tmp_path):
    df = _frame()
    path = ll.save_baseline(df, tmp_path / "baseline.json")
    first = path.read_text()
    ll.save_baseline(df, path)
    assert path.read_text() == first  # an unchanged run saves an identical file
    ll.expect(df, baseline=path, min_similarity=1.0)
    changed = df.copy()
    changed.loc[2, "completion"] = "Something else entirely, about the weather."
    with pytest.raises(ll.CheckFailed) as info:
        ll.expect(changed, baseline=path, min_similarity=0.8, match=r"(?i)light")
    text = str(info.value)
    assert "FAIL  completions >= 0.8 similar to the baseline by difflib: 1 calls below" in text
    assert "FAIL  every completion matches /(?i)light/: 1 completions do not match" in text
    assert text.count("call_id=c3") == 2 and "baseline='Rainbows are arcs of light.'" in text
    extra = pd.concat([df, df.iloc[[0]].assign(call_id="c9")], ignore_index=True)
    with pytest.raises(ll.CheckFailed, match=r"1 not in the baseline: re-save it with ll.save_baseline"):
        ll.expect(extra, baseline=path)


def test_bad_arguments_are_named():
    df = _frame()
    with pytest.raises(ll.ValidationError, match="min_score\\['judge'\\]"):
        ll.expect(df, min_score={"judge": 0.5})
    with pytest.raises(ll.ValidationError, match="match="):
        ll.expect(df, match="([")
    with pytest.raises(ll.ValidationError, match="baseline=.*file not found.*save_baseline"):
        ll.expect(df, baseline="/nonexistent/baseline.json")
    with pytest.raises(ll.ValidationError, match="max_cost_usd='cheap'"):
        ll.expect(df, max_cost_usd="cheap")
    with pytest.raises(ll.ValidationError, match="similarity='bleu'"):
        ll.expect(df, baseline={"c1": "x"}, similarity="bleu")


def test_report_is_rounded_has_no_timings_and_digests_completions():
    df = _frame()
    text = str(ll.report(df, by="model", scores="quality"))
    assert text.splitlines()[0].startswith("4 calls, 0 errors, completions digest ")
    assert "latency" not in text
    assert "0.675" in text and "0.850" in text  # quality means, 3 decimals
    slower = df.assign(latency_ms=df["latency_ms"] * 3.3)
    assert str(ll.report(slower, by="model", scores="quality")) == text  # timings never change it
    reordered = df.iloc[::-1].reset_index(drop=True)
    assert str(ll.report(reordered, by="model", scores="quality")) == text  # nor does row order
    changed = df.copy()
    changed.loc[3, "completion"] = "Light."
    new = str(ll.report(changed, by="model", scores="quality"))
    assert new != text
    old_rows, new_rows = text.splitlines()[2:], new.splitlines()[2:]
    assert [a == b for a, b in zip(old_rows, new_rows)] == [False, True]  # only local/small's digest moved


def test_sweep_result_delegates():
    df = _frame()
    res = SweepResult("sw-x", df, spec={})
    assert str(res.check(max_cost_usd=1)) == "2 checks passed on 4 calls\n  ok    no errors\n  ok    total cost <= $1"
    assert "temperature" in str(res.report())  # grouped by the settings that vary
    with pytest.raises(ll.CheckFailed):
        res.check(min_score={"quality": 0.99})
