"""compare_sweeps over common cells (partially overlapping grids, template changes), with paired
bootstrap intervals and spec/grid diffs; diff of outputs with word-level markers, text and HTML."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import llmlab as ll
from llmlab import schema
from llmlab.analysis.diffing import html_pair, mark_plain, word_ops
from llmlab.analysis.similarity import word_ratio
from llmlab.text import tokenize


def _result(sweep_id: str, rows: list[dict], **spec) -> ll.SweepResult:
    base = {
        "sweep_id": sweep_id,
        "model": "m",
        "temperature": 0.0,
        "top_p": 1.0,
        "max_tokens": 16,
        "repeat": 0,
        "params": "",
        "status": "ok",
        "error": "",
        "cached": False,
        "cost_usd": 0.0,
        "output_tokens": 5,
    }
    full = [{**base, "call_id": f"{sweep_id}-{i}", **r} for i, r in enumerate(rows)]
    return ll.SweepResult(sweep_id, schema.frame(full), spec={"models": ["m"], "temperature": [0.0], **spec})


# --- word diff on known strings -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "marked"),
    [
        ("the quick brown fox", "the slow brown dog", "the [-quick-]{+slow+} brown [-fox-]{+dog+}"),
        ("Hello, world.", "Hello world!", "Hello[-,-] world[-.-]{+!+}"),
        ("a b", "a b c d", "a b {+c d+}"),
        ("one two three", "three", "[-one two-] three"),
        ("same text", "same text", "same text"),
        ("", "new", "{+new+}"),
        ("Explain: {text}", "Explain briefly: {text}", "Explain {+briefly+}: {text}"),
        ("今天天气很好", "今天天气不好", "今天天气[-很-]{+不+}好"),
        # changes separated only by spaces read as one replacement, not word-by-word confetti
        (
            "Sometimes a computer is the model",
            "You see their DNA is the model",
            "[-Sometimes a computer-]{+You see their DNA+} is the model",
        ),
        ("x a b y", "x c y", "x [-a b-]{+c+} y"),
    ],
)
def test_word_diff_markers(a, b, marked):
    assert mark_plain(a, b) == marked
    ops = word_ops(a, b)
    assert "".join(x for _, x, _ in ops) == a and "".join(y for _, _, y in ops) == b


def test_tokenize_round_trips_and_word_ratio():
    for text in ["", "  spaced  out\n\nlines\t", "naïve café — ok?", "x=1; y=[2, 3]", "混合 text 和 中文。"]:
        assert "".join(tokenize(text)) == text
    assert word_ratio("a b c", "a b c") == 1.0
    assert word_ratio("a b c", "x y z") < word_ratio("a b c", "a b z") < 1.0
    assert word_ratio(None, "") == 1.0


def test_html_pair_escapes_and_highlights():
    left, right = html_pair("use <b>bold</b> & more", "use <i>bold</i> & more")
    assert "<b>" not in left and "&lt;" in left and "&amp;" in left
    assert left.count("<del") == 2 and ">b</del>" in left and "<ins" not in left
    assert right.count("<ins") == 2 and ">i</ins>" in right and "<del" not in right


# --- compare_sweeps -----------------------------------------------------------------------------


def test_compare_over_partially_overlapping_grids():
    """a: 3 prompts x temperatures {0.0, 0.7}; b: 2 of those prompts + 1 new x {0.7, 1.0}. Common
    cells are the 2 shared prompts at 0.7; the rest is reported as only in a / only in b."""
    a = ll.Sweep(
        prompts=["What is a rainbow?", "Why is the sky blue?", "Explain photosynthesis."],
        models=["local/tiny"],
        temperature=[0.0, 0.7],
        max_tokens=10,
        seed=5,
        name="grid-a",
    ).run(display=False)
    b = ll.Sweep(
        prompts=["Why is the sky blue?", "Explain photosynthesis.", "What is rain?"],
        models=["local/tiny"],
        temperature=[0.7, 1.0],
        max_tokens=10,
        seed=5,
        name="grid-b",
    ).run(display=False, cache=False)
    cmp = ll.compare_sweeps(a.sweep_id, b.sweep_id)
    assert cmp.a == a.sweep_id and cmp.b == b.sweep_id and cmp.match == "prompt_id"
    assert len(cmp.cells) == 2 and cmp.only_a == 4 and cmp.only_b == 4
    assert set(cmp.cells["temperature"]) == {0.7}
    sky = a.df.loc[a.df["prompt"] == "Why is the sky blue?", "prompt_id"].iloc[0]
    assert sky in set(cmp.cells["prompt_id"])
    metrics = cmp.metrics.set_index("metric")
    assert list(metrics.index) == ["latency_ms", "ttft_ms", "output_tokens", "cost_usd", "error"]
    assert (metrics["n"] == 2).all()
    # the same seeded request gives the same output: no token difference, interval [0, 0]
    assert metrics.loc["output_tokens", "diff"] == 0 and metrics.loc["output_tokens", "better"] == "neither"
    lat = metrics.loc["latency_ms"]
    assert lat["diff_low"] <= lat["diff"] <= lat["diff_high"]
    grid = cmp.grid_diff.set_index("parameter")
    assert grid.loc["temperature", "removed"] == [0.0] and grid.loc["temperature", "added"] == [1.0]
    assert grid.loc["temperature", "kept"] == [0.7] and not grid.loc["models", "changed"]
    assert set(cmp.spec_changes["field"]) == {"name", "temperature", "prompt_fingerprint"}
    text = cmp.to_text()
    assert (
        "2 common cells" in text
        and "4 only in a, 4 only in b" in text
        and "grid temperature: removed [0.0], added [1.0]" in text
    )
    assert "<table" in cmp._repr_html_()


def test_compare_paired_differences_with_confidence_intervals():
    rng = np.random.default_rng(1)
    base = rng.uniform(100, 400, size=20)  # prompts differ a lot in difficulty...
    rows_a = [{"prompt_id": f"p{i}", "latency_ms": base[i], "score": 0.5} for i in range(20)]
    rows_b = [{"prompt_id": f"p{i}", "latency_ms": base[i] + 50.0, "score": 0.9} for i in range(20)]
    rows_b[3].update(status="error", error="HTTP 500", latency_ms=None)
    rows_b[7].update(status="error", error="HTTP 500", latency_ms=None)
    a, b = _result("sw-a", rows_a), _result("sw-b", rows_b)
    cmp = ll.compare_sweeps(a, b, metric=["latency_ms", "score", "error"])
    m = cmp.metrics.set_index("metric")
    # ...but b is exactly 50 ms slower on every cell: the paired interval is exactly [50, 50]
    assert m.loc["latency_ms", "n"] == 18  # timings leave out the error rows
    assert m.loc["latency_ms", "diff"] == pytest.approx(50.0)
    assert m.loc["latency_ms", "diff_low"] == pytest.approx(50.0) and m.loc["latency_ms", "diff_high"] == pytest.approx(
        50.0
    )
    assert m.loc["latency_ms", "better"] == "a"  # lower latency is better
    assert m.loc["score", "diff"] == pytest.approx(0.4) and m.loc["score", "better"] == "b"
    assert m.loc["error", "n"] == 20 and m.loc["error", "b"] == pytest.approx(0.1)
    assert "latency_ms: b is higher" in cmp.verdict and "worse" in cmp.verdict
    assert "score: b is higher" in cmp.verdict and "better" in cmp.verdict
    # same inputs and seed, same numbers
    again = ll.compare_sweeps(a, b, metric=["latency_ms", "score", "error"])
    pd.testing.assert_frame_equal(again.metrics, cmp.metrics)
    noisy = _result("sw-c", [{"prompt_id": f"p{i}", "latency_ms": base[i] + rng.normal(0, 80)} for i in range(20)])
    verdict = ll.compare_sweeps(a, noisy, metric="latency_ms").metrics.iloc[0]
    assert verdict["diff_low"] < verdict["diff"] < verdict["diff_high"]


def test_compare_with_too_few_common_cells_names_no_winner():
    a = _result("sw-a", [{"prompt_id": f"p{i}", "latency_ms": 100.0 + i} for i in range(3)])
    b = _result("sw-b", [{"prompt_id": f"p{i}", "latency_ms": 900.0 + i} for i in range(3)])
    m = ll.compare_sweeps(a, b, metric="latency_ms").metrics.iloc[0]
    # 800 ms slower on all 3 cells, but three cells cannot carry a 95% claim
    assert m["n"] == 3 and m["diff"] == pytest.approx(800.0) and m["better"] == "neither"
    assert m["verdict"].startswith("latency_ms: too few common prompts to tell (n=3 prompts")
    one = ll.compare_sweeps(
        _result("sw-c", [{"prompt_id": "p0", "latency_ms": 1.0}]),
        _result("sw-d", [{"prompt_id": "p0", "latency_ms": 2.0}]),
        metric="latency_ms",
    )
    row = one.metrics.iloc[0]
    assert pd.isna(row["diff_low"]) and pd.isna(row["diff_high"]) and pd.isna(row["p_value"])


def test_compare_after_a_template_change_pairs_by_row_prompt_id():
    """prompt_id identifies the prompt row, not the rendered text (#13): after a template change the
    cells still pair by prompt_id, and the template diff shows what changed."""
    rows = pd.DataFrame({"text": ["rain after sun", "green plants", "blue sky"]})
    a = ll.Sweep(
        prompts=rows, template="Explain: {text}", models=["local/tiny"], temperature=[0.0, 0.5], max_tokens=8, seed=1
    ).run(display=False)
    b = ll.Sweep(
        prompts=rows,
        template="Explain briefly: {text}",
        system="You are terse.",
        models=["local/tiny"],
        temperature=[0.0, 0.5],
        max_tokens=8,
        seed=1,
    ).run(display=False)
    assert set(a.df["prompt_id"]) == set(b.df["prompt_id"])
    cmp = ll.compare_sweeps(a.sweep_id, b.sweep_id, metric="output_tokens")
    assert cmp.match == "prompt_id" and len(cmp.cells) == 6 and cmp.only_a == 0 and cmp.only_b == 0
    for row in cmp.cells.itertuples():  # each cell pairs the same row at the same setting
        pa = a.df[(a.df["prompt_id"] == row.prompt_id) & (a.df["temperature"] == row.temperature)]["prompt"].iloc[0]
        pb = b.df[(b.df["prompt_id"] == row.prompt_id) & (b.df["temperature"] == row.temperature)]["prompt"].iloc[0]
        assert pb == pa.replace("Explain:", "Explain briefly:")
    assert "-Explain: {text}" in cmp.template_diff and "+Explain briefly: {text}" in cmp.template_diff
    assert cmp.template_words == "Explain {+briefly+}: {text}"
    assert "+You are terse." in cmp.system_diff
    assert {"template", "system"} <= set(cmp.spec_changes["field"])
    changes = cmp.variant_diffs.set_index(["kind", "name"])["change"]
    assert changes[("template", "t1")] == "changed" and changes[("system", "s1")] == "added"
    by_row = ll.compare_sweeps(a.sweep_id, b.sweep_id, match="prompt_index")
    assert len(by_row.cells) == 6
    d = ll.diff(a.sweep_id, b.sweep_id, prompt_id=b.df["prompt_id"].iloc[0])
    assert len(d.cells) == 2


def test_compare_and_diff_key_cells_by_variant_name():
    """Two wordings × 2 temperatures × 3 questions: every cell pairs with the same variant's cell."""
    rows = [{"id": f"q{i}", "q": f"question {i}?"} for i in range(3)]
    common = {"prompts": rows, "models": ["local/tiny"], "temperature": [0.0, 0.5], "max_tokens": 6}
    a = ll.Sweep(template={"terse": "Answer: {q}", "steps": "Steps: {q}"}, **common).run(display=False)
    b = ll.Sweep(template={"terse": "Answer briefly: {q}", "steps": "Steps: {q}"}, **common).run(display=False)
    cmp = ll.compare_sweeps(a.sweep_id, b.sweep_id, metric="output_tokens")
    assert len(cmp.cells) == 12 and cmp.only_a == 0 and cmp.only_b == 0
    assert set(cmp.cells["template_name"]) == {"terse", "steps"}
    changes = cmp.variant_diffs.set_index("name")["change"]
    assert changes["terse"] == "changed" and changes["steps"] == "same"
    versions = cmp.variant_diffs.set_index("name")
    assert (versions.loc["terse", "version_a"], versions.loc["terse", "version_b"]) == (1, 2)
    assert "terse" in cmp._repr_html_()
    assert "+Answer briefly: {q}" in cmp.template_diff and "Steps" not in cmp.template_diff
    assert "template terse: changed" in cmp.to_text()
    d = ll.diff(a.sweep_id, b.sweep_id)
    same = d.cells.groupby("template_name")["same"].all()
    assert bool(same["steps"])  # the unchanged wording, cached: identical outputs


def test_compare_rejects_bad_input():
    a = _result("sw-a", [{"prompt_id": "p0", "latency_ms": 1.0}])
    with pytest.raises(ll.ValidationError, match="metric='score': no such column in sweep a"):
        ll.compare_sweeps(a, a, metric="score")
    with pytest.raises(ll.ValidationError, match="match='fuzzy'"):
        ll.compare_sweeps(a, a, match="fuzzy")
    with pytest.raises(ll.ValidationError, match="a='sw-missing': no such sweep"):
        ll.compare_sweeps("sw-missing", a)


# --- ll.diff ------------------------------------------------------------------------------------


def test_diff_side_by_side_on_known_outputs():
    a = _result(
        "sw-a",
        [
            {"prompt_id": "p1", "completion": "the quick brown fox", "temperature": 0.0, "prompt": "Name an animal."},
            {"prompt_id": "p1", "completion": "same words", "temperature": 0.7, "prompt": "Name an animal."},
            {"prompt_id": "p2", "completion": "uses <b>tags</b>", "temperature": 0.0},
        ],
    )
    b = _result(
        "sw-b",
        [
            {"prompt_id": "p1", "completion": "the slow brown dog", "temperature": 0.0},
            {"prompt_id": "p1", "completion": "same words", "temperature": 0.7},
            {"prompt_id": "p2", "completion": "uses <i>tags</i>", "temperature": 0.0},
            {"prompt_id": "p3", "completion": "only in b", "temperature": 0.0},
        ],
    )
    d = ll.diff(a, b)
    assert len(d.cells) == 3
    cells = d.cells.set_index(["prompt_id", "temperature"])
    assert cells.loc[("p1", 0.0), "marked"] == "the [-quick-]{+slow+} brown [-fox-]{+dog+}"
    assert bool(cells.loc[("p1", 0.7), "same"]) and cells.loc[("p1", 0.7), "similarity"] == 1.0
    text = str(d)
    assert "3 cells, 2 differ" in text
    assert "a: the quick brown fox" in text and "b: the slow brown dog" in text
    assert "Δ: the [-quick-]{+slow+} brown [-fox-]{+dog+}" in text
    assert '── p1 "Name an animal."  model=m, temperature=0.0' in text  # what was asked, not just its id
    page = d._repr_html_()
    assert ">quick</del>" in page and ">slow</ins>" in page and "&lt;" in page and "<b>tags" not in page
    only_p1 = ll.diff(a, b, prompt_id="p1", temperature=0.0)
    assert only_p1.cells["completion_b"].tolist() == ["the slow brown dog"]
    changed = ll.diff(a, b, only_changed=True, limit=1)
    assert len(changed.cells) == 2 and "1 more cells" in str(changed)
    with pytest.raises(ll.ValidationError, match="prompt_id='p9'"):
        ll.diff(a, b, prompt_id="p9")
    with pytest.raises(ll.ValidationError, match="colour='red': not a setting"):
        ll.diff(a, b, colour="red")


def test_diff_of_two_stored_sweeps():
    prompts = ["What is a rainbow?", "Why is the sky blue?"]
    a = ll.Sweep(prompts=prompts, models=["local/tiny"], temperature=1.0, max_tokens=12, seed=1).run(display=False)
    b = ll.Sweep(prompts=prompts, models=["local/tiny"], temperature=1.0, max_tokens=12, seed=2).run(display=False)
    # the seed is not part of a cell: the same prompt and setting with another seed is compared
    d = ll.diff(a.sweep_id, b.sweep_id)
    assert len(d.cells) == 2
    for row in d.cells.itertuples():
        assert row.completion_a == a.df.set_index("prompt_id").loc[row.prompt_id, "completion"]
        assert row.completion_b == b.df.set_index("prompt_id").loc[row.prompt_id, "completion"]
        assert row.same == (row.completion_a == row.completion_b)
        if not row.same:
            assert "[-" in row.marked or "{+" in row.marked


def test_compare_sweeps_counts_prompts_not_repeats():
    # 6 prompts × 3 identical repeats: 18 common cells, but only 6 prompts of evidence
    rows_a = [{"prompt_id": f"p{i}", "repeat": r, "score": 0.1 * i} for i in range(6) for r in range(3)]
    rows_b = [
        {"prompt_id": f"p{i}", "repeat": r, "score": 0.1 * i + (0.02 if i % 2 else -0.01)}
        for i in range(6)
        for r in range(3)
    ]
    m = ll.compare_sweeps(_result("sw-a", rows_a), _result("sw-b", rows_b), metric="score").metrics.iloc[0]
    assert m["n"] == 6 and m["n_cells"] == 18
    assert m["diff"] == pytest.approx(0.005)
    assert m["better"] == "neither" and "n=6 prompts" in m["verdict"]


def test_compare_sweeps_simulation_false_positives_and_power():
    """Paired by prompt: no difference → "better" named rarely; a gain of a tenth of the prompt spread → found."""

    def rate(gain: float, trials: int = 100) -> float:
        rng = np.random.default_rng(11)
        found = 0
        for t in range(trials):
            base = rng.normal(0, 1, 20)
            rows_a = [
                {"prompt_id": f"p{i}", "repeat": r, "score": base[i] + rng.normal(0, 0.12)}
                for i in range(20)
                for r in range(2)
            ]
            rows_b = [
                {"prompt_id": f"p{i}", "repeat": r, "score": base[i] + gain + rng.normal(0, 0.12)}
                for i in range(20)
                for r in range(2)
            ]
            m = ll.compare_sweeps(_result("a", rows_a), _result("b", rows_b), metric="score", n_boot=400, seed=t)
            found += m.metrics.iloc[0]["better"] != "neither"
        return found / trials

    assert rate(0.0) <= 0.07
    assert rate(0.1) >= 0.90
