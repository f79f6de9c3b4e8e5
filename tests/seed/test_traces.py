"""``ll.traces``: the call list and per-call detail, on a sweep read from the local store.
(The workflow → task → openai.chat tree of an app read over DQL is in test_seed_app.py.)"""

from __future__ import annotations

import pandas as pd
import pytest

import llmlab as ll
from llmlab.errors import ValidationError
from llmlab.readback.traces import messages, span_tree, trace_spans

EVIL = "<b>hi</b> & <script>alert(1)</script>"


@pytest.fixture
def sweep_df():
    ll.configure(datakit=None)
    res = ll.Sweep(
        prompts=[EVIL, "What is a span?"], models=["local/tiny"], temperature=[0.0], max_tokens=8, name="traces"
    ).run(display=False)
    return res.df


def test_list_detail_and_escaping(sweep_df):
    view = ll.traces(sweep_df)
    assert len(view) == 2
    spans = view.spans
    assert set(spans["trace_id"]) == set(sweep_df["trace_id"])
    assert (spans["name"] == "openai.chat").all()
    html = view._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<details>") == 2 and "2 call(s)" in html
    i = int(view.calls.index[view.calls["prompt"] == EVIL][0])
    detail = view.detail_html(i)
    completion = view.calls.loc[i, "completion"]
    assert completion and completion.split()[0].replace("&", "&amp;") in detail
    assert view.tree(i).startswith("openai.chat  ")
    ins, outs = messages(view.trace(i).iloc[0]["attributes"])
    assert ins == [("user", EVIL)] and outs[0][0] == "assistant" and outs[0][1] == completion


def test_widget_selection_shows_the_call(sweep_df):
    view = ll.traces(sweep_df)
    box = view.widget()
    select, pane = box.children
    assert len(select.options) == 2
    select.value = 1
    assert pane.value == view.detail_html(1)
    select.value = 0
    assert pane.value == view.detail_html(0)


def test_span_tree_orders_children_and_survives_orphans():
    t = pd.Timestamp("2026-01-01", tz="UTC")
    spans = pd.DataFrame(
        {
            "span_id": ["r", "b", "a", "c", "o"],
            "parent_id": [None, "r", "r", "a", "missing"],
            "name": ["root", "second", "first", "leaf", "orphan"],
            "start_time": [t, t + pd.Timedelta("2ms"), t + pd.Timedelta("1ms"), t + pd.Timedelta("1ms"), t],
        }
    )
    assert [(d, s["name"]) for d, s in span_tree(spans)] == [
        (0, "root"),
        (1, "first"),
        (2, "leaf"),
        (1, "second"),
        (0, "orphan"),
    ]


def test_bad_input_is_named(sweep_df):
    with pytest.raises(ValidationError, match="trace_ids"):
        trace_spans(["not-hex!"], source="local")
    with pytest.raises(ValidationError, match="limit"):
        ll.traces(sweep_df, limit=0)
    with pytest.raises(ValidationError, match="trace_id"):
        ll.traces(pd.DataFrame({"x": [1]}))
    assert len(ll.traces(sweep_df, limit=1)) == 1
    assert "newest 1 of 2" in ll.traces(sweep_df, limit=1)._repr_html_()
