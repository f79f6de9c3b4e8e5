"""Judging that works: a judge must be named (never the local n-gram models), and pairwise judging
asks in both orders so a position-biased judge yields ties, not a fake winner. The judge is a
scripted endpoint with known verdicts (llmlab.testing.JudgeServer); its calls go through the run
layer, so they record to and replay from a cassette."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import llmlab as ll
from llmlab.analysis.judges import PAIRWISE_RUBRIC, pair_prompt, parse_preference
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
    cmp = ll.compare(ll.evals.preference_scores(pref), by="template_name", metric="preference")
    diff = cmp.loc[cmp["template_name"] == "terse", ["diff_low", "diff_high"]].iloc[0]  # terse - steps
    assert (at["ci_low"], at["ci_high"]) == pytest.approx(
        (max(0, (1 - diff.iloc[1]) / 2), min(1, (1 - diff.iloc[0]) / 2))
    )
    assert at["ci_low"] < 0.5 < at["ci_high"] and at["winner"] is None  # 6 of 8 is not enough to be sure
    assert at["verdict"].startswith("No clear preference between template_name=terse and template_name=steps")
    # the judge saw the shared question once, and each answer in both positions
    assert any(p.startswith(PAIRWISE_RUBRIC + "\n\nRequest:\nQuestion 0?") for p in js.app.prompts)
    # ll.compare reads it in long form, paired by prompt
    assert cmp.attrs["unit"] == "prompt" and cmp["n"].tolist() == [N, N]


def _repeated(outcomes: list[tuple[str, str]]) -> pd.DataFrame:
    """A sweep of two templates on ``len(outcomes)`` prompts × 2 repeats; ``outcomes[i][r]`` says which
    answer the "longer" judge prefers on prompt i, repeat r: "b" (steps longer), "a" or "tie"."""
    words = {"b": (2, 6), "a": (6, 2), "tie": (4, 4)}
    rows = []
    for i, pair in enumerate(outcomes):
        for r, outcome in enumerate(pair):
            for name, n in zip(("terse", "steps"), words[outcome]):
                rows.append(
                    {
                        "prompt_id": f"p{i}",
                        "template_name": name,
                        "model": "openai/x",
                        "temperature": 0.7,
                        "repeat": r,
                        "call_id": f"{name}-{i}-{r}",
                        "prompt": f"Question {i}?",
                        "completion": " ".join([f"w{r}"] * n) + f" {i}",
                        "status": "ok",
                    }
                )
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    ("outcomes", "winner"),
    [
        # b wins most comparisons; per-prompt scores are fractions (1, 0.75, 0.25): 9 "wins" of 12 prompts
        # is not enough for a binary Wilson interval, but the paired bootstrap over prompts is sure
        ([("b", "b")] * 4 + [("b", "tie")] * 6 + [("a", "tie")] * 2, "template_name=steps"),
        # no true preference: as many prompts lean a as lean b
        ([("b", "tie"), ("a", "tie"), ("b", "b"), ("a", "a")] * 3, None),
    ],
)
def test_pairwise_judge_and_compare_of_its_scores_name_the_same_winner(judge, outcomes, winner):
    judge("longer")
    pref = ll.evals.pairwise_judge(_repeated(outcomes), a="terse", b="steps", model="judge/longer", cache=False)
    assert pref.attrs["n_prompts"] == len(outcomes) and len(pref) == 2 * len(outcomes)
    cmp = ll.compare(ll.evals.preference_scores(pref), by="template_name", metric="preference")
    assert cmp.attrs["unit"] == "prompt"
    assert pref.attrs["winner"] == cmp.attrs["winner"] == winner
    if winner:
        assert pref.attrs["ci_low"] > 0.5 and pref.attrs["verdict"].startswith("The judge (judge/longer) prefers")
        assert cmp.attrs["verdict"].startswith(f"{winner} wins")
    else:
        assert pref.attrs["ci_low"] < 0.5 < pref.attrs["ci_high"]
        assert pref.attrs["verdict"].startswith("No clear preference") and cmp.attrs["verdict"].startswith("No clear")


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


def test_judge_runs_are_tagged_and_left_out_of_the_sweep_history(judge, home, capsys):
    from llmlab.cli import main

    judge("longer")
    res = ll.Sweep(prompts=["hi", "yo"], models=["local/tiny"], max_tokens=4, name="mine").run(display=False)
    pref = ll.evals.pairwise_judge(_answers(), a="terse", b="steps", model="judge/longer", cache=False)
    scored = ll.evals.llm_judge(_answers().iloc[:2], model="judge/longer", cache=False)
    assert len(pref) == N and len(scored) == 2
    assert ll.sweeps().sweep_id.tolist() == [res.sweep_id]  # the newest is the user's sweep, not a judge run
    everything = ll.sweeps(include_judges=True)
    judged = everything[everything["name"] != "mine"]
    assert len(everything) == 3 and all("judge" in t for t in judged["tags"])
    assert set(ll.sweeps(tag="judge")["sweep_id"]) == set(judged["sweep_id"])
    assert len(ll.load(judged.sweep_id.iloc[0]).df) > 0  # a judge run still loads
    capsys.readouterr()
    assert main(["sweeps", "--json"]) == 0
    assert [json.loads(line)["sweep_id"] for line in capsys.readouterr().out.splitlines()] == [res.sweep_id]
    assert main(["sweeps", "--all", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_pairwise_judge_on_a_frame_without_variants_says_so():
    df = _answers().drop(columns="template_name").assign(template_name=None)
    with pytest.raises(ValidationError, match="this frame has no template_name values; pairwise_judge compares two"):
        ll.evals.pairwise_judge(df, a="terse", model="openai/x")
