"""Judging that works: a judge must be named (never the local n-gram models), and pairwise judging
asks in both orders so a position-biased judge yields ties, not a fake winner. The judge is a
scripted endpoint with known verdicts (llmlab.testing.JudgeServer); its calls go through the run
layer, so they record to and replay from a cassette."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import llmlab as ll
from llmlab.analysis.judges import pair_prompt, parse_preference, wilson_interval
from llmlab.errors import ValidationError
from llmlab.testing import JudgeServer

N = 8


def _answers() -> pd.DataFrame:
    """Two wordings on the same 8 prompts: "steps" answers are longer on prompts 0-5, shorter on 6-7."""
    rows = []
    for i in range(N):
        for name in ("terse", "steps"):
            long_steps = i < 6
            words = 6 if (name == "steps") == long_steps else 2
            rows.append(
                {
                    "prompt_id": f"p{i}",
                    "template_name": name,
                    "model": "openai/x",
                    "temperature": 0.0,
                    "repeat": 0,
                    "call_id": f"{name}-{i}",
                    "prompt": f"Question {i}?",
                    "completion": " ".join(["word"] * words) + f" {i}",
                    "status": "ok",
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture
def judge():
    servers = {}

    def start(rule: str) -> JudgeServer:
        js = JudgeServer(rule).start()
        servers[rule] = js
        ll.provider("judge", base_url=js.base_url)
        return js

    yield start
    for js in servers.values():
        js.stop()


def test_a_judge_must_be_named_and_not_a_local_ngram_model():
    df = _answers()
    with pytest.raises(ValidationError, match=r"name a judge model.*ll\.configure\(judge="):
        ll.evals.llm_judge(df)
    for local in ("local/small", "local/tiny"):
        with pytest.raises(ValidationError, match="cannot read a rubric"):
            ll.evals.llm_judge(df, model=local)
        with pytest.raises(ValidationError, match="cannot read a rubric"):
            ll.evals.pairwise_judge(df, a="terse", b="steps", model=local)
    assert ll.configure(judge="openai/gpt-4o-mini").judge == "openai/gpt-4o-mini"


def test_judge_setting_from_the_environment(monkeypatch):
    monkeypatch.setenv("LLMLAB_JUDGE", "moonshot/kimi")
    assert ll.configure().judge == "moonshot/kimi"
    assert ll.configure(judge=None).judge is None


def test_pairwise_prefers_the_longer_answer_in_both_orders(judge):
    js = judge("longer")
    pref = ll.evals.pairwise_judge(
        _answers(), by="template_name", a="terse", b="steps", model="judge/longer", cache=False
    )
    assert js.app.requests == 2 * N  # every pair asked twice, once per order
    assert pref["prompt_id"].tolist() == [f"p{i}" for i in range(N)]
    assert pref["preference"].tolist() == ["b"] * 6 + ["a"] * 2
    assert pref["judge_ab"].tolist()[:6] == ["B"] * 6 and pref["judge_ba"].tolist()[:6] == ["A"] * 6
    assert pref["answer_b"][0].startswith("word word word") and pref["call_id_a"][0] == "terse-0"
    at = pref.attrs
    assert at["win_rate"] == pytest.approx(6 / 8) and at["n_prompts"] == N
    assert (at["ci_low"], at["ci_high"]) == pytest.approx(wilson_interval(6, 8))
    assert at["ci_low"] < 0.5 < at["ci_high"] and at["winner"] is None  # 6 of 8 is not enough to be sure
    assert at["verdict"].startswith("No clear preference between template_name=terse and template_name=steps")
    # the judge saw the shared question once, and each answer in both positions
    assert "Request:\nQuestion 0?" in js.app.prompts[0]
    # ll.compare reads it in long form, paired by prompt
    cmp = ll.compare(ll.evals.preference_scores(pref), by="template_name", metric="preference")
    assert cmp.attrs["unit"] == "prompt" and cmp["n"].tolist() == [N, N]


def test_a_position_biased_judge_gives_ties_not_a_winner(judge):
    judge("first")
    pref = ll.evals.pairwise_judge(_answers(), a="terse", b="steps", model="judge/first", cache=False)
    assert pref["preference"].tolist() == ["tie"] * N and pref.attrs["winner"] is None
    assert pref.attrs["position_flips"] == N and pref.attrs["win_rate"] == 0.5
    assert "picked the same position in both orders" in pref.attrs["verdict"]


def test_a_clear_preference_names_a_winner_and_silence_warns(judge):
    df = _answers()
    df.loc[df["template_name"] == "steps", "completion"] = "a much longer and more careful answer"
    judge("longer")
    pref = ll.evals.pairwise_judge(df, a="terse", b="steps", model="judge/longer", cache=False)
    assert pref.attrs["winner"] == "template_name=steps" and pref.attrs["ci_low"] > 0.5
    assert pref.attrs["verdict"].startswith(
        "The judge (judge/longer) prefers template_name=steps over template_name=terse"
    )
    ll.configure(judge="judge/silent")
    judge("silent")
    with pytest.warns(ll.evals.JudgeWarning, match=f"{N} of {N} pairs have no preference"):
        quiet = ll.evals.pairwise_judge(df, a="terse", b="steps", cache=False)
    assert quiet["preference"].isna().all() and quiet.attrs["verdict"].startswith("No verdicts")


def test_llm_judge_scores_with_the_scripted_judge(judge):
    judge("longer")
    out = ll.evals.llm_judge(_answers().iloc[:4], model="judge/longer", cache=False)
    # terse answers have 3 words, steps answers 7: the scripted judge scores words out of 10
    assert out["judge"].tolist() == [pytest.approx(0.3), pytest.approx(0.7)] * 2


def test_judge_calls_record_to_and_replay_from_a_cassette(judge, tmp_path):
    js = judge("longer")
    cassette = tmp_path / "judge.json"
    recorded = ll.evals.pairwise_judge(
        _answers(), a="terse", b="steps", model="judge/longer", cache="record", cassette=cassette
    )
    assert js.app.requests == 2 * N and len(json.loads(cassette.read_text())["interactions"]) == 2 * N
    js.stop()  # replay needs no server and sends nothing
    replayed = ll.evals.pairwise_judge(
        _answers(), a="terse", b="steps", model="judge/longer", cache="replay", cassette=cassette
    )
    pd.testing.assert_frame_equal(replayed, recorded)
    assert replayed.attrs["verdict"] == recorded.attrs["verdict"]


def test_parse_preference_and_prompt():
    assert [parse_preference(t) for t in ("B", "**A**", "Answer B is better.", "tie", "Tie.", "hmm", None)] == [
        "B",
        "A",
        "B",
        "tie",
        "tie",
        None,
        None,
    ]
    p = pair_prompt("one", "two", request_first="Q1", request_second="Q2")
    assert "Request behind answer A:\nQ1" in p and p.index("Answer A:\none") < p.index("Answer B:\ntwo")
    with pytest.raises(ValidationError, match="expected one of the values"):
        ll.evals.pairwise_judge(_answers(), a="terse", b="nope", model="openai/x")
