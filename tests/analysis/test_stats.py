"""summary(), compare() and pareto_front() against hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmlab.analysis.stats import compare, group_label, higher_is_better, holm, pareto_front, summary
from llmlab.errors import ValidationError
from llmlab.schema import coerce


def frame(**cols):
    return coerce(pd.DataFrame(cols))


@pytest.fixture
def calls():
    return frame(
        model=["a", "a", "a", "a", "a", "b", "b"],
        latency_ms=[100.0, 200.0, 300.0, 400.0, 9999.0, 50.0, None],
        ttft_ms=[10.0, 20.0, 30.0, 40.0, None, 5.0, None],
        tokens_per_s=[10.0, 20.0, 30.0, 40.0, None, 7.0, None],
        input_tokens=[10, 10, 10, 10, None, 5, None],
        output_tokens=[1, 2, 3, 4, None, 5, None],
        cost_usd=[0.1, 0.2, 0.3, 0.4, 0.0, None, 0.0],
        status=["ok", "ok", "ok", "ok", "error", "ok", "ok"],
        cached=[False, False, False, False, False, False, True],
    )


def test_summary_hand_computed(calls):
    s = summary(calls)
    assert list(s["model"]) == ["a", "b"]
    a, b = s.iloc[0], s.iloc[1]
    assert a["calls"] == 5 and a["errors"] == 1 and a["error_rate"] == pytest.approx(0.2)
    # the error row (9999 ms) is left out of timings
    assert a["latency_mean"] == pytest.approx(250.0)
    assert a["latency_p50"] == pytest.approx(250.0)
    assert a["latency_p95"] == pytest.approx(100 + 0.95 * 3 * 100)  # linear interpolation: 385
    assert a["ttft_p50"] == pytest.approx(25.0) and a["ttft_p95"] == pytest.approx(38.5)
    assert a["tokens_per_s"] == pytest.approx(25.0)
    assert a["input_tokens"] == 40 and a["output_tokens"] == 10
    assert a["cost_usd"] == pytest.approx(1.0) and bool(a["cost_complete"]) is True
    assert b["calls"] == 2 and b["cached"] == 1 and b["latency_p50"] == 50.0
    assert b["cost_usd"] == pytest.approx(0.0) and bool(b["cost_complete"]) is False


def test_summary_by_str_list_none_and_empty(calls):
    calls["temperature"] = [0.0, 0.7, 0.0, 0.7, 0.0, 0.0, 0.0]
    s = summary(calls, by=["model", "temperature"])
    assert list(zip(s["model"], s["temperature"])) == [("a", 0.0), ("a", 0.7), ("b", 0.0)]
    assert list(summary(calls, by="model")["calls"]) == [5, 2]
    assert list(summary(calls, by=None)["calls"]) == [7]
    empty = summary(coerce(pd.DataFrame()))
    assert len(empty) == 0 and "latency_p95" in empty.columns
    all_na = summary(frame(model=["x"], cost_usd=[None], status=["error"]))
    assert pd.isna(all_na["cost_usd"][0]) and pd.isna(all_na["latency_p50"][0])
    with pytest.raises(ValidationError, match="nope"):
        summary(calls, by="nope")


def test_summary_keeps_na_groups():
    s = summary(frame(model=["a", None], latency_ms=[1.0, 2.0], status=["ok", "ok"]))
    assert s["calls"].tolist() == [1, 1] and pd.isna(s["model"][1])


def _two_groups(a_vals, b_vals, col="latency_ms"):
    return frame(
        temperature=[0.0] * len(a_vals) + [0.7] * len(b_vals),
        **{col: a_vals + b_vals},
        status=["ok"] * (len(a_vals) + len(b_vals)),
    )


def test_compare_clear_winner_lower_is_better():
    df = _two_groups([100.0, 101, 102, 99, 98] * 4, [200.0, 201, 199, 202, 198] * 4)
    out = compare(df, by="temperature", metric="latency_ms")
    assert out["group"].tolist() == ["temperature=0.0", "temperature=0.7"]
    assert out["n"].tolist() == [20, 20]
    assert out["estimate"].tolist() == [pytest.approx(100.0), pytest.approx(200.0)]
    assert out["ci_low"][0] <= 100.0 <= out["ci_high"][0]
    assert pd.isna(out["diff"][0]) and bool(out["baseline"][0])
    assert out["diff"][1] == pytest.approx(100.0) and out["diff_low"][1] > 0
    v = out.attrs["verdict"]
    assert v.startswith("temperature=0.0 has the lowest mean latency_ms (100.0 ms)")
    assert "95% confidence" in v and out.attrs["best"] == "temperature=0.0"
    # deterministic given seed
    again = compare(df, by="temperature", metric="latency_ms")
    pd.testing.assert_frame_equal(out, again)


def test_compare_bootstrap_matches_numpy_by_hand():
    df = _two_groups([1.0, 2.0, 3.0], [4.0, 6.0])
    out = compare(df, metric="latency_ms", n_boot=500, seed=7)
    rng = np.random.default_rng(7)
    a = np.array([1.0, 2, 3])[rng.integers(0, 3, size=(500, 3))].mean(axis=1)
    b = np.array([4.0, 6])[rng.integers(0, 2, size=(500, 2))].mean(axis=1)
    assert out["ci_low"][0] == pytest.approx(np.quantile(a, 0.025))
    assert out["ci_high"][1] == pytest.approx(np.quantile(b, 0.975))
    assert out["diff_low"][1] == pytest.approx(np.quantile(b - a, 0.025))
    assert out["diff"][1] == pytest.approx(3.0)


def test_compare_no_clear_winner_and_higher_is_better():
    df = _two_groups([0.0, 1.0, 0.0, 1.0] * 2, [1.0, 0.0, 1.0, 1.0] * 2, col="score")
    out = compare(df, metric="score")
    assert out.attrs["higher_is_better"] is True
    assert out.attrs["verdict"].startswith(
        "No clear winner: the 95% intervals of temperature=0.7 and temperature=0.0 overlap"
    )
    clear = compare(_two_groups([0.0] * 10, [1.0] * 10, col="score"), metric="score")
    assert clear.attrs["verdict"].startswith("temperature=0.7 has the highest mean score (1)")


def test_compare_baseline_stat_error_and_edge_cases():
    df = _two_groups([100.0, 300.0, 200.0], [50.0, 60.0, 1000.0])
    out = compare(df, metric="latency_ms", baseline=0.7, stat="median")
    assert bool(out["baseline"][1]) and out["diff"][0] == pytest.approx(200.0 - 60.0)
    assert out["estimate"].tolist() == [pytest.approx(200.0), pytest.approx(60.0)]
    df["status"] = ["ok", "error", "ok", "ok", "ok", "ok"]
    err = compare(df, metric="error")
    assert err["estimate"].tolist() == [pytest.approx(1 / 3), pytest.approx(0.0)]
    assert "lowest mean error" in err.attrs["verdict"]
    one = compare(_two_groups([1.0, 2.0], []), metric="latency_ms")
    assert one.attrs["verdict"].startswith("Only one group (temperature=0.0)")
    none = compare(coerce(pd.DataFrame({"temperature": []})), metric="latency_ms")
    assert len(none) == 0 and none.attrs["verdict"].startswith("No data")
    with pytest.raises(ValidationError, match="baseline"):
        compare(df, baseline=5.0)
    with pytest.raises(ValidationError, match="stat"):
        compare(df, stat="mode")


def test_higher_is_better_inference():
    assert not higher_is_better("latency_ms") and not higher_is_better("cost_usd")
    assert not higher_is_better("error_rate") and not higher_is_better("output_tokens")
    assert higher_is_better("tokens_per_s") and higher_is_better("exact_match") and higher_is_better("judge")


def test_group_label():
    assert group_label("temperature", 0.7) == "temperature=0.7"
    assert group_label("temperature", 1.0) == "temperature=1.0"
    assert group_label(["model", "top_p"], ("gpt-4o", 0.9)) == "model=gpt-4o, top_p=0.9"
    assert group_label("seed", np.int64(3)) == "seed=3"
    assert group_label("model", pd.NA) == "model=NA"


def test_pareto_front_known_frame():
    pts = pd.DataFrame(
        {
            "quality": [0.9, 0.8, 0.7, 0.9, 0.5, None, 0.95],
            "cost": [1.0, 0.5, 0.6, 1.0, 0.1, 0.01, 3.0],
        },
        index=list("abcdefg"),
    )
    front = pareto_front(pts, minimize=["cost"], maximize=["quality"])
    # c is dominated by b (cheaper and better); a and d are identical (both on the front); f has no quality
    assert front.to_dict() == {"a": True, "b": True, "c": False, "d": True, "e": True, "f": False, "g": True}
    three = pareto_front(pd.DataFrame({"q": [1.0, 1.0], "c": [1.0, 1.0], "l": [10.0, 5.0]}), ["c", "l"], ["q"])
    assert three.tolist() == [False, True]
    assert pareto_front(pts.iloc[0:0], ["cost"], ["quality"]).tolist() == []
    with pytest.raises(ValidationError):
        pareto_front(pts)


# --- checked against scipy, multiple comparisons, effect sizes, small samples ---------------------


def test_compare_interval_and_p_value_agree_with_scipy():
    st = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.normal(100, 10, 40), rng.normal(104, 12, 40)
    out = compare(_two_groups(list(a), list(b)), metric="latency_ms", n_boot=20000)
    ref = st.bootstrap((a,), np.mean, n_resamples=20000, method="percentile", random_state=0).confidence_interval
    # two independent Monte Carlo runs of the same percentile bootstrap: equal up to resampling noise
    assert out["ci_low"][0] == pytest.approx(ref.low, abs=0.15)
    assert out["ci_high"][0] == pytest.approx(ref.high, abs=0.15)
    # for a mean difference at n=40 the bootstrap p-value is close to Welch's t-test
    assert out["p_value"][1] == pytest.approx(st.ttest_ind(b, a, equal_var=False).pvalue, abs=0.01)


def test_holm_adjustment_hand_computed():
    got = holm([0.01, 0.04, 0.03, 0.005, float("nan")])
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    assert got[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and np.isnan(got[4])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_compare_corrects_for_many_comparisons_against_the_baseline():
    rng = np.random.default_rng(3)
    df = frame(temperature=np.repeat(np.arange(10) / 10, 20), latency_ms=rng.normal(100, 10, 200), status=["ok"] * 200)
    out = compare(df, metric="latency_ms", n_boot=1000)
    rows = out[~out["baseline"]]
    assert rows["p_adj"].tolist() == pytest.approx(list(holm(rows["p_value"])))
    assert (rows["p_adj"] >= rows["p_value"]).all()
    # all ten groups come from one distribution: nothing survives the correction, and no winner is named
    assert (rows["p_adj"] >= 0.05).all()
    assert out.attrs["verdict"].startswith("No clear winner")


def test_effect_sizes_hand_computed():
    out = compare(_two_groups([1.0, 2, 3, 1, 2, 3], [4.0, 5, 6, 4, 5, 6]), metric="latency_ms")
    # means 2 and 5, both sd sqrt(0.8); d = 3/sqrt(0.8); Hedges' J = 1 - 3/(4*12-9)
    assert out["effect_size"][1] == pytest.approx(3 / np.sqrt(0.8) * (1 - 3 / 39))
    assert out.attrs["effect_size"] == "hedges_g" and pd.isna(out["effect_size"][0])
    df = _two_groups([1.0] * 6, [1.0] * 6)
    df["status"] = ["ok"] * 3 + ["error"] * 3 + ["ok"] * 6
    err = compare(df, metric="error")
    assert err.attrs["effect_size"] == "cohens_h"
    assert err["effect_size"][1] == pytest.approx(-2 * np.arcsin(np.sqrt(0.5)))


def test_small_samples_get_no_false_confidence():
    one = compare(_two_groups([100.0], [200.0]), metric="latency_ms")
    assert one["ci_low"].isna().all() and one["diff_low"].isna().all() and one["p_value"].isna().all()
    assert one["small_sample"].all() and one.attrs["best"] is None
    assert one.attrs["verdict"].startswith(
        "Too few values to call a winner: temperature=0.0 (n=1), temperature=0.7 (n=1)"
    )
    two = compare(_two_groups([100.0, 101.0], [200.0, 202.0] * 5), metric="latency_ms")
    assert two["small_sample"].tolist() == [True, False]
    assert "95% confidence" not in two.attrs["verdict"] and "temperature=0.0 (n=2)" in two.attrs["verdict"]
    # the same data with enough values per group do give a winner
    enough = compare(_two_groups([100.0, 101.0] * 3, [200.0, 202.0] * 3), metric="latency_ms")
    assert "95% confidence" in enough.attrs["verdict"] and enough.attrs["best"] == "temperature=0.0"
    single = compare(_two_groups([7.0], []), metric="latency_ms")
    assert "no interval from one value" in single.attrs["verdict"]


def test_interval_coverage_on_synthetic_data_with_a_known_difference():
    # true means 100 and 105: the 95% intervals should cover them about 95% of the time
    # (the percentile bootstrap runs a little narrow at n=30, so accept 88-99%)
    hits_diff = hits_mean = 0
    runs = 200
    for s in range(runs):
        rng = np.random.default_rng(1000 + s)
        df = _two_groups(list(rng.normal(100, 10, 30)), list(rng.normal(105, 10, 30)))
        out = compare(df, metric="latency_ms", n_boot=1000, seed=s)
        hits_diff += out["diff_low"][1] <= 5 <= out["diff_high"][1]
        hits_mean += out["ci_low"][0] <= 100 <= out["ci_high"][0]
    assert 0.88 <= hits_diff / runs <= 0.99
    assert 0.88 <= hits_mean / runs <= 0.99


def test_result_summary_pools_seeded_repeats_and_splits_a_swept_seed():
    import llmlab as ll

    def result(seeds, repeats):
        rows = [
            {
                "call_id": f"c{s}-{r}",
                "model": "m",
                "temperature": 0.0,
                "seed": s + r,
                "repeat": r,
                "latency_ms": 10.0,
                "status": "ok",
            }
            for s in seeds
            for r in range(repeats)
        ]
        return ll.SweepResult("sw", frame(**{k: [row[k] for row in rows] for k in rows[0]}))

    # seed=7, repeats=3 runs seeds 7, 8, 9: one setting, three repeats
    pooled = result([7], 3)
    assert pooled.setting_columns() == ["model"] and pooled.summary()["calls"].tolist() == [3]
    # seed=[1, 100] is a swept parameter: two settings
    swept = result([1, 100], 1)
    assert swept.setting_columns() == ["seed"] and swept.summary()["calls"].tolist() == [1, 1]
