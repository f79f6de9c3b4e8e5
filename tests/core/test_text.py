"""The ground floor's text helpers (llmlab.text) and the grid's push pacing: one behaviour each, pinned."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from llmlab.errors import ValidationError
from llmlab.text import as_list, is_na, snip, tokenize
from llmlab.view.grid_state import MAX_BYTES_PER_S, MAX_UPDATES_PER_S, Pacer


@pytest.mark.parametrize("value", [None, math.nan, np.float32("nan"), pd.NA, pd.NaT])
def test_is_na_knows_every_missing_value(value):
    assert is_na(value)


@pytest.mark.parametrize("value", ["", "x", 0, False, [None], {"a": None}, pd.Timestamp("2025-01-01")])
def test_is_na_is_false_for_values_and_containers(value):
    assert not is_na(value)


def test_snip_collapses_whitespace_and_cuts_with_an_ellipsis():
    assert snip("a  b\n\tc", 80) == "a b c"
    assert snip("x" * 10, 5) == "xxxx…" and len(snip("x" * 10, 5)) == 5
    assert snip(None) == "" and snip(pd.NA) == "" and snip(42) == "42"


def test_tokenize_round_trips_and_keeps_words():
    text = "Hello, wörld_2 — 世界 42!"
    assert "".join(tokenize(text)) == text
    assert tokenize(text, words=True) == ["Hello", "wörld", "2", "世", "界", "42"]
    assert tokenize(None) == []


def test_as_list_none_means_nothing_unless_it_is_a_value():
    assert as_list(None) == [] and as_list(None, none_is_value=True) == [None]
    assert as_list("model") == ["model"] and as_list(("a", "b")) == ["a", "b"] and as_list(0.5) == [0.5]
    assert as_list({"k": 1}) == [{"k": 1}]
    with pytest.raises(ValidationError, match="temperature"):
        as_list([], "temperature")


def test_pacer_spaces_pages_by_rate_and_by_bytes():
    pacer = Pacer.for_rate(1000)  # asks for more than the bound: capped
    assert pacer.min_interval == pytest.approx(1 / MAX_UPDATES_PER_S)
    assert pacer.wait_s(0.0) <= 0
    pacer.sent(10.0, 0)
    assert pacer.wait_s(10.0) == pytest.approx(1 / MAX_UPDATES_PER_S)
    pacer.sent(10.0, MAX_BYTES_PER_S)  # a heavy page: a second before the next
    assert pacer.wait_s(10.5) == pytest.approx(0.5)
