"""Issue #13: prompt variants as an axis, unique prompt ids, cached rows that keep what they cost."""

from __future__ import annotations

import pytest

import llmlab as ll
from llmlab.errors import ValidationError
from llmlab.plan.variants import text_hash

ROWS = [{"id": "q1", "question": "Why is the sky blue?"}, {"id": "q2", "question": "What is rain?"}]


def test_template_list_and_dict_are_named_axes():
    by_list = ll.Sweep(prompts=ROWS, template=["A: {question}", "B: {question}"], temperature=[0.0], max_tokens=8)
    assert {c.template_name for c in by_list.calls} == {"t1", "t2"}
    sweep = ll.Sweep(
        prompts=ROWS,
        template={"terse": "Answer: {question}", "steps": "Step by step: {question}"},
        system=["Be brief.", "Be kind."],
        temperature=[0.0, 0.7],
        max_tokens=8,
    )
    plan = sweep.plan()
    assert len(plan) == 2 * 2 * 2 * 2
    assert plan["call_id"].is_unique
    assert set(plan["template_name"]) == {"terse", "steps"} and set(plan["system_name"]) == {"s1", "s2"}
    # every variant of one question shares its prompt id
    assert set(plan["prompt_id"]) == {"q1", "q2"}
    assert (plan.groupby("prompt_id").size() == 8).all()
    call = next(c for c in sweep.calls if c.template_name == "steps" and c.system_name == "s2")
    assert call.messages[0] == {"role": "system", "content": "Be kind."}
    assert call.template_hash == text_hash("Step by step: {question}")
    spec = sweep.spec()
    assert spec["template"] == {"terse": "Answer: {question}", "steps": "Step by step: {question}"}
    assert {(v["kind"], v["name"]) for v in spec["variants"]} >= {("template", "terse"), ("system", "s2")}


def test_messages_variants_fill_placeholders():
    convo = [{"role": "system", "content": "You are a tutor."}, {"role": "user", "content": "Q: {question}"}]
    sweep = ll.Sweep(prompts=ROWS, messages={"tutor": convo, "plain": convo[1:]}, temperature=[0.0], max_tokens=8)
    assert {c.template_name for c in sweep.calls} == {"tutor", "plain"}
    tutor = next(c for c in sweep.calls if c.template_name == "tutor" and c.prompt_id == "q2")
    assert tutor.messages == (
        {"role": "system", "content": "You are a tutor."},
        {"role": "user", "content": "Q: What is rain?"},
    )
    single = ll.Sweep(prompts=ROWS, messages=convo, temperature=[0.0], max_tokens=8)
    assert {c.template_name for c in single.calls} == {"m1"}
    with pytest.raises(ValidationError, match="not both"):
        ll.Sweep(prompts=ROWS, messages=convo, template="{question}")
    with pytest.raises(ValidationError, match="missing"):
        ll.Sweep(prompts=ROWS, messages=[{"role": "user", "content": "{nope}"}])


def test_bad_variants_are_refused_before_sending():
    with pytest.raises(ValidationError, match="same text"):
        ll.Sweep(prompts=ROWS, template=["A {question}", "A {question}"])
    with pytest.raises(ValidationError, match=r"template\['b'\]"):
        ll.Sweep(prompts=ROWS, template={"a": "{question}", "b": "{missing}"})
    with pytest.raises(ValidationError):
        ll.Sweep(prompts=ROWS, template={})
    with pytest.raises(ValidationError, match=r"system\[1\]"):
        ll.Sweep(prompts=ROWS, template="{question}", system=["ok", ""])


def test_single_template_call_ids_are_unchanged():
    # pinned before variants existed: a plain template sweep keeps its call ids (and so its cache)
    sweep = ll.Sweep(prompts=[{"text": "rain"}], template="Explain: {text}", models=["local/tiny"], temperature=[0.0])
    from llmlab.plan.grid import call_id_for

    msgs = [{"role": "user", "content": "Explain: rain"}]
    params = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 64, "seed": None}
    assert sweep.calls[0].call_id == call_id_for(msgs, "local/tiny", params, 0)
    assert sweep.calls[0].template_name == "t1"


def test_repeated_prompt_ids_are_refused_naming_them(tmp_path):
    path = tmp_path / "faq.csv"
    path.write_text("id,question\n1,a?\n2,b?\n1,c?\n3,d?\n3,e?\n")
    with pytest.raises(ValidationError, match=r"prompt ids repeat: '1', '3'"):
        ll.Sweep(prompts=str(path), template="{question}")
    with pytest.raises(ValidationError, match="prompt ids repeat"):
        ll.Sweep(prompts=["same", "same"])


def test_generated_prompt_id_identifies_the_row_not_the_text():
    rows = [{"question": "a?"}, {"question": "b?"}]
    one = ll.Sweep(prompts=rows, template=["X {question}", "Y {question}"], temperature=[0.0])
    ids = {c.template_name: c.prompt_id for c in one.calls if c.prompt_index == 0}
    assert ids["t1"] == ids["t2"]
    other = ll.Sweep(prompts=rows, template="Z {question}", temperature=[0.0])
    assert other.calls[0].prompt_id == ids["t1"]


def test_variants_run_end_to_end_into_df_spans_and_summary():
    sweep = ll.Sweep(
        prompts=ROWS,
        template={"terse": "Answer: {question}", "steps": "Step by step: {question}"},
        system="Be brief.",
        temperature=[0.0],
        max_tokens=6,
    )
    res = sweep.run(display=False)
    df = res.df
    assert list(df.columns[:3]) == ["model", "template_name", "system_name"]
    assert set(df["template_name"]) == {"terse", "steps"} and set(df["system_name"]) == {"s1"}
    assert "template_name" in res.setting_columns()
    summary = ll.summary(df, by="template_name")
    assert set(summary["template_name"]) == {"terse", "steps"}
    spans = ll.spans(sweep_id=res.sweep_id, source="local")
    assert set(spans["template_name"]) == {"terse", "steps"}
    loaded = ll.load(res.sweep_id).df
    assert list(loaded["template_name"]) == list(df["template_name"])


def test_cached_rows_keep_their_cost_and_spend_nothing():
    base = {"prompts": ROWS, "template": "Answer: {question}", "max_tokens": 6}
    first = ll.Sweep(temperature=[0.0], **base).run(display=False)
    paid = first.df.set_index("call_id")
    assert (paid["spent_usd"] == paid["cost_usd"]).all() and (paid["cost_usd"] > 0).all()
    second = ll.Sweep(temperature=[0.0, 0.5], **base).run(display=False).df
    hits = second[second["cached"]].set_index("call_id")
    assert len(hits) == 2
    for col in ("cost_usd", "latency_ms", "ttft_ms", "output_tokens"):
        assert (hits[col] == paid.loc[hits.index, col]).all(), col
    assert (hits["spent_usd"] == 0).all()
    fresh = second[~second["cached"]]
    assert (fresh["spent_usd"] == fresh["cost_usd"]).all()
    summary = ll.summary(second, by="temperature")
    assert (summary["cost_usd"] > 0).all()


def test_charts_group_by_variant_and_no_text_is_kept_without_trace_content():
    res = ll.Sweep(
        prompts=ROWS, template={"terse": "A: {question}", "steps": "S: {question}"}, temperature=[0.0], max_tokens=6
    ).run(display=False)
    fig = ll.charts.latency(res.df, by="template_name")
    assert {str(x) for t in fig.data for x in t.x} == {"template_name=terse", "template_name=steps"}
    ll.configure(trace_content=False)
    quiet = ll.Sweep(prompts=ROWS, template={"secret": "Private {question}"}, temperature=[0.0], max_tokens=6)
    quiet.run(display=False)
    versions = ll.prompt_versions("secret")
    assert len(versions) == 1 and versions["text"][0] is None and versions["hash"][0]


def test_a_stored_spec_rebuilds_the_same_calls_for_every_kind_of_variant():
    """One inverse of Grid.spec() (import's cache check and a reloaded grid's message lists both use it): a
    messages= sweep rebuilds too (import used to leave out "messages" and dropped such sweeps' cache)."""
    from llmlab.plan.grid import build_grid, grid_from_spec

    for kwargs in (
        {"template": {"terse": "Answer: {q}", "steps": "Steps: {q}"}, "system": "Be exact."},
        {"messages": {"m": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "{q}"}]}},
    ):
        grid = build_grid([{"id": "a", "q": "Why?"}, {"id": "b", "q": "How?"}], temperature=[0.0, 0.7], **kwargs)
        again = grid_from_spec(grid.spec())
        assert [c.call_id for c in again.calls] == [c.call_id for c in grid.calls]
        assert [c.messages for c in again.calls] == [c.messages for c in grid.calls]
