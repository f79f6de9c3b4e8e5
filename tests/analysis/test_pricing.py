"""Price table, lookup and re-pricing (hand-computed costs)."""

from __future__ import annotations

import json
import re
import warnings

import pandas as pd
import pytest

from llmlab import config
from llmlab.errors import ConfigError
from llmlab.pricing import PriceWarning, cost_for, load_prices, lookup, price, price_table
from llmlab.schema import coerce


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    for var in ("LLMLAB_HOME", "LLMLAB_DATAKIT_URL", "TRACELOOP_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    config.configure(home=tmp_path, datakit=None)
    yield tmp_path
    config.reset_for_tests()


def frame(**cols):
    return coerce(pd.DataFrame(cols))


def test_shipped_table_shape_and_coverage():
    raw = json.loads((__import__("llmlab.paths", fromlist=["DATA_DIR"]).DATA_DIR / "prices.json").read_text())
    assert raw["currency"] == "USD" and raw["version"]
    models = raw["models"]
    for name in [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "o3",
        "o4-mini",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "gpt-3.5-turbo",
        "moonshot-v1-8k",
        "moonshot-v1-32k",
        "moonshot-v1-128k",
        "kimi-k2-0711-preview",
        "kimi-latest",
        "deepseek-chat",
        "deepseek-reasoner",
        "qwen-turbo",
        "qwen-plus",
        "qwen-max",
        "qwen2.5-72b-instruct",
        "local/tiny",
        "local/small",
    ]:
        entry = models[name]
        assert entry["input"] >= 0 and entry["output"] >= 0
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", entry["effective"]) and entry["source"] and entry["provider"]
    for name, entry in models.items():
        if entry["provider"] == "moonshot":
            assert "CNY" in entry["source"], name
    assert models["local/tiny"]["source"] == "llmlab demo price, not a real cost"
    assert models["local/small"]["source"] == "llmlab demo price, not a real cost"


def test_lookup_rules():
    t = load_prices()
    assert lookup("gpt-4o", t) == "gpt-4o"
    assert lookup("GPT-4o", t) == "gpt-4o"
    assert lookup("openai/gpt-4o-mini", t) == "gpt-4o-mini"
    assert lookup("gpt-4o-mini-2024-07-18", t) == "gpt-4o-mini"
    assert lookup("gpt-4o-2024-08-06", t) == "gpt-4o"
    assert lookup("gpt-4o-2024-05-13", t) == "gpt-4o-2024-05-13"  # own (older) price wins over the prefix
    assert lookup("gpt-4.1-mini-2025-04-14", t) == "gpt-4.1-mini"
    assert lookup("gpt-3.5-turbo-0613", t) == "gpt-3.5-turbo"
    assert lookup("deepseek-chat-latest", t) == "deepseek-chat"
    assert lookup("qwen-plus-20250514", t) == "qwen-plus"
    assert lookup("tiny", t, provider="local") == "local/tiny"
    assert lookup("local/small", t) == "local/small"
    # a different model is not a "dated suffix"
    assert lookup("gpt-4o-mini-search", t) is None
    assert lookup("gpt-4-turbo-2024-04-09", t) == "gpt-4-turbo"
    assert lookup("nope", t) is None and lookup(None, t) is None and lookup("", t) is None


def test_price_formula_with_cached_tokens():
    df = frame(
        model=["gpt-4o", "gpt-4o-mini"],
        input_tokens=[1000, 2_000_000],
        output_tokens=[500, 1_000_000],
        status=["ok", "ok"],
        cached=[False, False],
    )
    df["cached_input_tokens"] = [400, 0]
    out = price(df)
    # gpt-4o: (1000-400)*2.5/1e6 + 400*1.25/1e6 + 500*10/1e6 = 0.0015 + 0.0005 + 0.005
    assert out["cost_usd"][0] == pytest.approx(0.007)
    # gpt-4o-mini: 2M*0.15/1e6 + 1M*0.6/1e6 = 0.3 + 0.6
    assert out["cost_usd"][1] == pytest.approx(0.9)
    assert str(out["cost_usd"].dtype) == "Float64"
    assert df["cost_usd"].isna().all()  # the input is not modified


def test_price_rules_cache_errors_and_missing_tokens():
    df = frame(
        model=["gpt-4o", "gpt-4o", "gpt-4o", "gpt-4o"],
        input_tokens=[1000, None, 100, None],
        output_tokens=[1000, None, None, 10],
        status=["ok", "error", "error", "ok"],
        cached=[True, False, False, False],
    )
    out = price(df)
    assert out["cost_usd"][0] == 0.0  # served from llmlab's cache: not paid again
    assert out["cost_usd"][1] == 0.0  # failed request without usage: not billed
    assert out["cost_usd"][2] == pytest.approx(100 * 2.5 / 1e6)  # error with usage is priced
    assert pd.isna(out["cost_usd"][3])  # ok row with missing usage: unknown, never 0


def test_unknown_models_one_warning_naming_all():
    df = frame(
        model=["mystery-1", "gpt-4o", "mystery-2", "mystery-1"],
        input_tokens=[10, 10, 10, 10],
        output_tokens=[10, 10, 10, 10],
        status=["ok"] * 4,
        cached=[False] * 4,
    )
    with pytest.warns(PriceWarning) as rec:
        out = price(df)
    assert len(rec) == 1
    assert "mystery-1" in str(rec[0].message) and "mystery-2" in str(rec[0].message)
    assert issubclass(PriceWarning, UserWarning)
    assert out["cost_usd"].isna().tolist() == [True, False, True, True]


def test_extra_prices_and_user_file_layering(_home):
    df = frame(
        model=["gpt-4o", "my-model"],
        input_tokens=[1_000_000, 1_000_000],
        output_tokens=[0, 0],
        status=["ok", "ok"],
        cached=[False, False],
    )
    (_home / "prices.json").write_text(
        json.dumps({"models": {"gpt-4o": {"input": 1.0, "output": 2.0}, "my-model": {"input": 3.0, "output": 4.0}}})
    )
    out = price(df)
    assert out["cost_usd"].tolist() == [pytest.approx(1.0), pytest.approx(3.0)]
    out = price(df, prices={"my-model": {"input": 5.0, "output": 6.0}})
    assert out["cost_usd"].tolist() == [pytest.approx(1.0), pytest.approx(5.0)]
    # no cached_input price → cached input billed like input
    df["cached_input_tokens"] = [0, 500_000]
    assert price(df)["cost_usd"][1] == pytest.approx(3.0)


def test_price_table_shows_source_date_and_which_layer_won(_home):
    (_home / "prices.json").write_text(json.dumps({"gpt-4o": {"input": 1.0, "output": 2.0}}))
    table = price_table(prices={"my-model": {"input": 5.0, "output": 6.0, "source": "our contract"}}).set_index("model")
    shipped = table.loc["gpt-4o-mini"]
    assert (shipped["input"], shipped["cached_input"], shipped["output"]) == (0.15, 0.075, 0.6)
    assert shipped["layer"] == "shipped" and shipped["effective"] == "2024-07-18" and "openai.com" in shipped["source"]
    assert table.loc["gpt-4o", "layer"] == "home" and table.loc["gpt-4o", "source"] == str(_home / "prices.json")
    assert pd.isna(table.loc["gpt-4o", "cached_input"]) and table.loc["gpt-4o", "input"] == 1.0
    assert table.loc["my-model", "layer"] == "code" and table.loc["my-model", "source"] == "our contract"
    assert table.loc["local/tiny", "source"] == "llmlab demo price, not a real cost"
    assert list(table.index) == sorted(table.index)


def test_bad_price_entries_are_config_errors(_home):
    with pytest.raises(ConfigError, match="input"):
        load_prices({"x": {"input": "cheap", "output": 1}})
    with pytest.raises(ConfigError, match="output"):
        load_prices({"x": {"input": 1, "output": -1}})
    (_home / "prices.json").write_text("{not json")
    with pytest.raises(ConfigError, match="prices.json"):
        load_prices()


def test_cost_for():
    t = load_prices()
    assert cost_for("gpt-4o-mini", 1000, 1000, t) == pytest.approx(1000 * 0.15 / 1e6 + 1000 * 0.6 / 1e6)
    assert cost_for("local/tiny", 1_000_000, 1_000_000, t) == pytest.approx(0.03)
    assert cost_for("unknown-model", 10, 10, t) is None


def test_price_empty_frame_and_no_model():
    out = price(coerce(pd.DataFrame()))
    assert len(out) == 0 and "cost_usd" in out
    df = frame(model=[None], input_tokens=[1], output_tokens=[1], status=["ok"], cached=[False])
    with pytest.warns(PriceWarning, match="no model"):
        assert pd.isna(price(df)["cost_usd"][0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        price(frame(model=["gpt-4o"], input_tokens=[1], output_tokens=[1], status=["ok"], cached=[False]))
