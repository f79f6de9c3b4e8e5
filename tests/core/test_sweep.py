"""Sweep spec: prompt sets, template filling, grid expansion, stable ids, validation."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import llmlab as ll
from llmlab.errors import ConfigError, ValidationError
from llmlab.plan.grid import call_id_for


def test_grid_expands_models_temperature_top_p_params_repeats():
    sweep = ll.Sweep(
        prompts=["a b", "c d", "e f"],
        models=["local/tiny", "local/small"],
        temperature=[0.0, 0.7, 1.0],
        top_p=[1.0, 0.9],
        max_tokens=[8, 16],
        repeats=2,
        params={"presence_penalty": [0.0, 0.5]},
    )
    plan = sweep.plan()
    assert len(plan) == 3 * 2 * 3 * 2 * 2 * 2 * 2
    assert plan["call_id"].is_unique
    assert set(plan["presence_penalty"]) == {0.0, 0.5}
    assert set(plan["repeat"]) == {0, 1}
    combos = plan.groupby(["prompt_id", "model", "temperature", "top_p", "max_tokens", "presence_penalty"]).size()
    assert (combos == 2).all()  # repeats
    assert plan.attrs["calls"] == len(plan)
    assert plan.attrs["est_cost_usd"] is not None and plan.attrs["est_cost_usd"] > 0


def test_call_id_is_stable_and_depends_on_every_part():
    msgs = [{"role": "user", "content": "hi"}]
    base = call_id_for(msgs, "local/tiny", {"temperature": 0.7}, 0)
    assert base == call_id_for(msgs, "local/tiny", {"temperature": 0.7}, 0)
    assert base != call_id_for(msgs, "local/tiny", {"temperature": 0.7}, 1)
    assert base != call_id_for(msgs, "local/small", {"temperature": 0.7}, 0)
    assert base != call_id_for(msgs, "local/tiny", {"temperature": 0.8}, 0)
    assert base != call_id_for([{"role": "user", "content": "hi!"}], "local/tiny", {"temperature": 0.7}, 0)
    a = ll.Sweep(prompts=["x y"], temperature=[0.5]).plan()["call_id"].tolist()
    b = ll.Sweep(prompts=["x y"], temperature=[0.5]).plan()["call_id"].tolist()
    assert a == b


def test_template_filled_from_dataframe_csv_and_jsonl(tmp_path):
    df = pd.DataFrame({"text": ["the cat sat", "rain falls"], "reference": ["cat", "rain"]})
    plan = ll.Sweep(prompts=df, template="Summarize: {text}", temperature=0.0).plan()
    assert plan["prompt"].tolist() == ["Summarize: the cat sat", "Summarize: rain falls"]
    csv_path = tmp_path / "p.csv"
    df.to_csv(csv_path, index=False)
    assert (
        ll.Sweep(prompts=csv_path, template="Summarize: {text}", temperature=0.0).plan()["prompt"].tolist()
        == plan["prompt"].tolist()
    )
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in df.to_dict("records")), encoding="utf-8")
    assert (
        ll.Sweep(prompts=str(jsonl), template="Summarize: {text}", temperature=0.0).plan()["prompt"].tolist()
        == plan["prompt"].tolist()
    )


def test_message_lists_and_system_message():
    msgs = [
        [{"role": "user", "content": "one"}],
        [{"role": "system", "content": "be terse"}, {"role": "user", "content": "two"}],
    ]
    sweep = ll.Sweep(prompts=msgs, system="you are helpful", temperature=0.0)
    assert sweep.calls[0].messages[0] == {"role": "system", "content": "you are helpful"}
    assert sweep.calls[1].messages[0]["content"] == "be terse"  # an explicit system message wins
    assert [c.prompt for c in sweep.calls] == ["one", "two"]


def test_seed_with_repeats_gives_one_seed_per_repeat():
    plan = ll.Sweep(prompts=["a"], temperature=0.7, seed=10, repeats=3).plan()
    assert plan["seed"].tolist() == [10, 11, 12]


@pytest.mark.parametrize(
    "kwargs, field, fragment",
    [
        ({"temperature": [0.5, 2.5]}, "temperature", "[0, 2]"),
        ({"temperature": -0.1}, "temperature", "[0, 2]"),
        ({"top_p": 0.0}, "top_p", "(0, 1]"),
        ({"top_p": [1.2]}, "top_p", "(0, 1]"),
        ({"max_tokens": 0}, "max_tokens", "positive integer"),
        ({"max_tokens": -5}, "max_tokens", "positive integer"),
        ({"repeats": 0}, "repeats", "positive integer"),
        (
            {"models": ["nosuch/model"]},
            "models",
            "provider 'nosuch' is unknown; known: ",
        ),  # a typo is not sent to openai
        ({"models": ["local/huge"]}, "models", "unknown local model"),
        ({"prompts": []}, "prompts", "empty"),
        ({"prompts": ["  "]}, "prompts[0]", "empty prompt"),
        ({"prompts": pd.DataFrame({"text": []})}, "prompts", "empty"),
        ({"prompts": [{"text": "a"}], "template": "Summarize: {body}"}, "template", "{body} is missing"),
        ({"params": {"stream": [True]}}, "params['stream']", "set by the Sweep"),
        ({"temperature": "hot"}, "temperature", "must be a number"),
    ],
)
def test_invalid_input_names_field_and_value(kwargs, field, fragment):
    args = {"prompts": ["hello there"], "models": ["local/tiny"], **kwargs}
    with pytest.raises(ValidationError) as info:
        ll.Sweep(**args)
    message = str(info.value)
    assert message.startswith(field), message
    assert fragment in message


def test_unknown_provider_and_missing_key_fail_before_sending(monkeypatch):
    with pytest.raises(ConfigError, match="unknown"):
        from llmlab.plan.providers import get_provider

        get_provider("moonshot-not-registered")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    sweep = ll.Sweep(prompts=["hi"], models=["gpt-4o-mini"], temperature=0.0)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        sweep.run(display=False)
    ll.provider("moonshot", base_url="https://api.moonshot.cn/v1", api_key_env="MOONSHOT_API_KEY")
    with pytest.raises(ConfigError, match="MOONSHOT_API_KEY"):
        ll.Sweep(prompts=["hi"], models=["moonshot/kimi-k2"], temperature=0.0).run(display=False)
    # nothing was stored as a call
    from llmlab.store import get_store

    assert get_store().read("SELECT count(*) FROM calls")[0][0] == 0


def test_bad_prompt_files_name_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": oops}\n', encoding="utf-8")
    with pytest.raises(ValidationError, match=r"bad.jsonl:2.*invalid JSON"):
        ll.Sweep(prompts=bad, template="{text}")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ValidationError, match="not UTF-8"):
        ll.Sweep(prompts=latin, template="{text}")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("text,reference\na,b,c\n", encoding="utf-8")
    with pytest.raises(ValidationError, match="ragged.csv:2"):
        ll.Sweep(prompts=ragged, template="{text}")
    with pytest.raises(ValidationError, match="file not found"):
        ll.Sweep(prompts=tmp_path / "missing.csv")


def test_a_model_name_with_a_slash_goes_to_the_provider_named_first():
    # a typo'd provider is an error (above); a vLLM-style name is written with its provider
    call = ll.Sweep(prompts=["hi"], models=["openai/meta-llama/Llama-3-8B"], temperature=0.0).calls[0]
    assert (call.provider, call.model, call.qualified_model) == (
        "openai",
        "meta-llama/Llama-3-8B",
        "meta-llama/Llama-3-8B",
    )
    assert call.request_kwargs()["model"] == "meta-llama/Llama-3-8B"
