"""Evaluators: scores, NA rules, edge cases, judge parsing."""

from __future__ import annotations

import functools

import pandas as pd
import pytest

import llmlab as ll
from llmlab.analysis import evals
from llmlab.errors import LlmlabError, ValidationError
from llmlab.schema import coerce


@pytest.fixture
def df():
    out = coerce(
        pd.DataFrame(
            {
                "completion": ["Paris.", "  paris ", "Lyon", "", None, "Paris", "北京"],
                "status": ["ok", "ok", "ok", "ok", "ok", "error", "ok"],
            }
        )
    )
    out["reference"] = ["Paris", "Paris", "Paris", "", "Paris", "Paris", "北京。"]
    return out


def scores(frame, col):
    return [None if pd.isna(v) else float(v) for v in frame[col]]


def test_exact_match(df):
    out = evals.exact_match(df)
    assert scores(out, "exact_match") == [1.0, 1.0, 0.0, 1.0, None, None, 1.0]
    assert str(out["exact_match"].dtype) == "Float64" and "exact_match" not in df.columns
    strict = evals.exact_match(df, normalize=False, name="strict")
    assert scores(strict, "strict") == [0.0, 0.0, 0.0, 1.0, None, None, 0.0]
    listed = evals.exact_match(df, reference=["Paris."] * 7)
    assert scores(listed, "exact_match")[0] == 1.0
    with pytest.raises(ValidationError, match="reference"):
        evals.exact_match(df, reference="answer")
    with pytest.raises(ValidationError, match="one per row"):
        evals.exact_match(df, reference=["x"])


def test_contains(df):
    assert scores(evals.contains(df, "PARIS"), "contains") == [1.0, 1.0, 0.0, 0.0, None, None, 0.0]
    assert scores(evals.contains(df, "PARIS", case=True), "contains")[0] == 0.0
    assert scores(evals.contains(df, ["paris", "lyon"], mode="any"), "contains")[:4] == [1.0, 1.0, 1.0, 0.0]
    assert scores(evals.contains(df, ["par", "is"], mode="all"), "contains")[:3] == [1.0, 1.0, 0.0]
    assert scores(evals.contains(df, "北"), "contains")[6] == 1.0
    with pytest.raises(ValidationError):
        evals.contains(df, [])
    with pytest.raises(ValidationError):
        evals.contains(df, "x", mode="most")


def test_regex(df):
    assert scores(evals.regex(df, r"^\s*[Pp]aris"), "regex") == [1.0, 1.0, 0.0, 0.0, None, None, 0.0]
    assert scores(evals.regex(df, r"Paris", fullmatch=True), "regex")[:2] == [0.0, 0.0]
    assert scores(evals.regex(df, r"^$"), "regex")[3] == 1.0
    with pytest.raises(ValidationError, match="invalid regular expression"):
        evals.regex(df, "([unclosed")


def test_valid_json_and_schema():
    df = coerce(
        pd.DataFrame(
            {
                "completion": ['{"a": 1}', '```json\n{"a": "x"}\n```', "not json", "", None, '{"a": 2}', "[1, 2]"],
                "status": ["ok", "ok", "ok", "ok", "ok", "error", "ok"],
            }
        )
    )
    assert scores(evals.valid_json(df), "valid_json") == [1.0, 1.0, 0.0, 0.0, None, None, 1.0]
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    assert scores(evals.json_schema(df, schema), "json_schema") == [1.0, 0.0, 0.0, 0.0, None, None, 0.0]
    with pytest.raises(ValidationError, match="invalid JSON schema"):
        evals.json_schema(df, {"type": "no-such-type"})


def test_custom_on_completion_and_row(df):
    out = evals.custom(df, lambda c: len(c) > 4, name="long")
    assert scores(out, "long") == [1.0, 1.0, 0.0, 0.0, None, None, 0.0]
    row = evals.custom(df, lambda r: r["reference"] == "Paris", name="ref_paris", on="row")
    assert scores(row, "ref_paris") == [1.0, 1.0, 1.0, 0.0, 1.0, None, 0.0]
    half = evals.custom(df, lambda c: None if c == "" else 0.5, name="half")
    assert scores(half, "half")[3] is None and scores(half, "half")[0] == 0.5
    with pytest.raises(ValidationError, match="scores must be"):
        evals.custom(df, lambda c: 3, name="bad")
    with pytest.raises(LlmlabError, match="failed on row"):
        evals.custom(df, lambda c: 1 / 0, name="boom")
    with pytest.raises(ValidationError):
        evals.custom(df, "not callable")


def test_similarity_methods():
    df = coerce(pd.DataFrame({"completion": ["the cat sat", "", "dog", "猫在睡觉"], "status": ["ok"] * 4}))
    df["reference"] = ["the cat sat down", "", "cat", "猫在吃"]
    f1 = scores(evals.similarity(df), "similarity")
    # P = 3/3, R = 3/4 → F1 = 2*1*0.75/1.75
    assert f1[0] == pytest.approx(6 / 7) and f1[1] == 1.0 and f1[2] == 0.0
    assert f1[3] == pytest.approx(2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3))
    cos = scores(evals.similarity(df, method="cosine"), "similarity")
    assert cos[0] == pytest.approx(3 / (3**0.5 * 4**0.5))
    dl = scores(evals.similarity(df, method="difflib"), "similarity")
    assert dl[0] == pytest.approx(2 * 11 / (11 + 16))
    with pytest.raises(ValidationError):
        evals.similarity(df, method="bert")


@pytest.mark.parametrize(
    "text, scale, expected",
    [
        ("8", 10, 0.8),
        ("Score: 7", 10, 0.7),
        ("**9**", 10, 0.9),
        ("8/10", 10, 0.8),
        ("0", 10, 0.0),
        ("Rating: 4 out of 5", 5, 0.75),
        ("5", 5, 1.0),
        ("1", 5, 0.0),
        ("I'd say 3.5.", 5, 0.625),
        ("4/5", 10, 0.8),
        ("评分：6", 10, 0.6),
        ("11", 10, None),
        ("0", 5, None),
        ("no idea", 10, None),
        ("", 10, None),
        (None, 10, None),
    ],
)
def test_parse_judge_score(text, scale, expected):
    got = evals.parse_judge_score(text, scale)
    assert got == (None if expected is None else pytest.approx(expected))


def test_judge_prompt_and_scale_validation():
    p = evals.judge_prompt("What is 2+2?", "4", scale=5, reference="4")
    assert "What is 2+2?" in p and "Reference answer:\n4" in p and "1 (worst) to 5 (best)" in p
    with pytest.raises(ValidationError):
        evals.parse_judge_score("3", scale=7)


def test_evaluate_and_score(df):
    out = evals.evaluate(df, [evals.exact_match, functools.partial(evals.contains, substring="paris")])
    assert {"exact_match", "contains"} <= set(out.columns)
    out = evals.score(df, short=lambda c: len(c) < 3)
    assert scores(out, "short") == [0.0, 0.0, 0.0, 1.0, None, None, 1.0]
    with pytest.raises(ValidationError):
        evals.evaluate(df, ["nope"])


def test_llm_judge_with_fake_run(df, monkeypatch):
    entry = pytest.importorskip("llmlab.run.entry")
    sent = {}

    class FakeOutcome:
        def __init__(self, prompts):
            self.frame = pd.DataFrame(
                {
                    "prompt": prompts,
                    "completion": ["Score: 8" if "Paris" in p else "unsure" for p in prompts],
                    "status": "ok",
                }
            )

    def fake_run_grid_sync(grid, concurrency=8, **kw):
        # the judge's grid goes to the run layer, which has no display to switch off
        prompts = [c.prompt for c in grid.calls]
        sent.update(
            prompts=prompts,
            models=sorted({c.qualified_model for c in grid.calls}),
            temperature=sorted({c.temperature for c in grid.calls}),
            max_tokens=sorted({c.max_tokens for c in grid.calls}),
            name=grid.name,
            display=kw.get("display", False),
        )
        return FakeOutcome(prompts)

    monkeypatch.setattr(entry, "run_grid_sync", fake_run_grid_sync)
    with pytest.warns(evals.JudgeWarning, match="3 of 4"):
        out = evals.llm_judge(df.iloc[:4], model="openai/gpt-4o-mini")
    assert sent["models"] == ["gpt-4o-mini"] and sent["temperature"] == [0.0] and sent["display"] is False
    assert len(sent["prompts"]) == 4 and sent["max_tokens"] == [8]
    assert scores(out, "judge") == [pytest.approx(0.8), None, None, None]
    assert out["judge_raw"][2] == "unsure"


def test_llm_judge_skips_error_and_na_rows(df, monkeypatch):
    entry = pytest.importorskip("llmlab.run.entry")

    def fake_run_grid_sync(grid, **kw):
        prompts = [c.prompt for c in grid.calls]
        frame = pd.DataFrame({"prompt": prompts, "completion": ["9/10"] * len(prompts), "status": "ok"})
        return type("Outcome", (), {"frame": frame})()

    monkeypatch.setattr(entry, "run_grid_sync", fake_run_grid_sync)
    ll.configure(judge="openai/judge-model")  # the session's judge, used when model= is left out
    out = evals.llm_judge(df)
    assert scores(out, "judge") == [0.9, 0.9, 0.9, 0.9, None, None, 0.9]


def test_llm_judge_says_when_the_judge_calls_fail():
    """A judge that cannot be reached (a real closed port) is reported as failed calls with the
    error, not as replies "with no score"."""
    import llmlab as ll
    from llmlab.run.retry import RetryPolicy

    ll.provider("deadjudge", base_url="http://127.0.0.1:9/v1", api_key_env=None)
    frame = coerce(pd.DataFrame({"prompt": ["2+2?", "3+3?"], "completion": ["4", "6"], "status": ["ok", "ok"]}))
    with pytest.warns(
        evals.JudgeWarning, match=r"2 of 2 judge calls to deadjudge/x failed \(e\.g\. .*Connection error"
    ) as record:
        out = evals.llm_judge(frame, model="deadjudge/x", retry=RetryPolicy(max_attempts=1))
    assert not any("no score" in str(w.message) for w in record)
    assert scores(out, "judge") == [None, None] and out["judge_raw"].isna().all()
