"""``ll.summary`` and ``ll.compare`` show money as money (µ$ for tiny sums) while their values stay floats."""

from __future__ import annotations

import numpy as np
import pandas as pd

import llmlab as ll
from llmlab.analysis.money import MoneyFrame, money_columns, signed_usd


def _calls(n_prompts: int = 6) -> pd.DataFrame:
    rows = []
    for p in range(n_prompts):
        for model, cost in (("local/tiny", 1e-6), ("local/small", 5.88e-6)):
            rows.append(
                {
                    "prompt_id": f"p{p}",
                    "model": model,
                    "cost_usd": cost + p * 1e-8,
                    "latency_ms": 10.0 + p,
                    "status": "ok",
                    "cached": False,
                    "input_tokens": 5,
                    "output_tokens": 7,
                }
            )
    return pd.DataFrame(rows)


def test_summary_shows_micro_dollars_but_keeps_float_values():
    s = ll.summary(_calls(), by="model")
    assert isinstance(s, pd.DataFrame) and isinstance(s, MoneyFrame)
    # the values: floats, computable as before
    assert s["cost_usd"].dtype == "Float64"
    assert np.isclose(float(s["cost_usd"].sum()), 6 * (1e-6 + 5.88e-6) + 2 * 15 * 1e-8)
    small = float(s.loc[s.model == "local/small", "cost_usd"].iloc[0])
    assert np.isclose(small, 6 * 5.88e-6 + 15e-8)
    # the display: text and HTML both show µ$, never an exponent
    text, html = repr(s), s._repr_html_()
    assert "35.4 µ$" in text and "6.15 µ$" in text, text
    assert "35.4 µ$" in html and "e-0" not in html
    assert "e-0" not in text
    # only the display: the explicit exports and the raw frame are untouched
    assert "µ$" not in s.to_csv() and "µ$" not in pd.DataFrame(s).to_string()
    # derived frames keep the money display; a column is a plain Series of floats
    assert "µ$" in repr(s[["model", "cost_usd"]]) and "µ$" in repr(s[s.calls > 0])
    assert type(s["cost_usd"]) is pd.Series


def test_compare_of_cost_shows_money_with_signed_differences_and_keeps_attrs():
    c = ll.compare(_calls(), by="model", metric="cost_usd", baseline="local/small")
    assert isinstance(c, MoneyFrame)
    assert c.attrs["metric"] == "cost_usd" and c.attrs["verdict"]
    assert set(money_columns(c)) == {"estimate", "ci_low", "ci_high", "diff", "diff_low", "diff_high"}
    tiny = c[c.model == "local/tiny"]
    assert float(tiny["diff"].iloc[0]) < 0  # tiny is cheaper: a negative difference, still a float
    with pd.option_context("display.width", 400, "display.max_columns", 40):
        text = repr(c)
    assert "-4.88 µ$" in text and "5.9 µ$" in text, text
    assert "e-0" not in text and "e-0" not in c._repr_html_()
    assert "µ$" in c.attrs["verdict"] and "e-0" not in c.attrs["verdict"], c.attrs["verdict"]  # the sentence too
    # p-values, effect sizes and counts are not money
    assert "p_value" not in money_columns(c) and "n" not in money_columns(c)


def test_compare_of_a_non_money_metric_shows_plain_numbers():
    c = ll.compare(_calls(), by="model", metric="latency_ms")
    assert money_columns(c) == []
    assert "µ$" not in repr(c) and "µ$" not in c._repr_html_()


def test_signed_usd_formats():
    assert signed_usd(5.88222e-06) == "5.88 µ$"
    assert signed_usd(-5.88222e-06) == "-5.88 µ$"
    assert signed_usd(0.0123) == "$0.0123"
    assert signed_usd(pd.NA) == "-" and signed_usd(float("nan")) == "-" and signed_usd(None) == "-"


def test_other_numbers_are_shown_rounded_but_kept_exact():
    import pandas as pd

    import llmlab as ll

    df = pd.DataFrame({"model": ["a", "b"], "latency_ms": [168.895236, 4148.228325], "status": ["ok", "ok"]})
    table = ll.summary(df, by=["model"])
    with pd.option_context("display.max_columns", 50, "display.width", 400):
        shown = repr(table)
    assert "168.9" in shown and "168.895236" not in shown and "4,148" in shown
    assert table["latency_mean"].tolist() == [168.895236, 4148.228325]  # the values are untouched
