"""A grid's calls are made when read: the same calls, ids and messages as planning them all up front, in a
fraction of the memory (a 10,000-call sweep no longer holds 10,000 Calls before it sends anything)."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from llmlab.errors import ValidationError
from llmlab.plan.calls import call_id_for
from llmlab.plan.grid import build_grid


def _grid(**kw):
    args = {
        "prompts": [{"id": f"q{i}", "topic": t} for i, t in enumerate(["rain", "snow", "雪", "🌈"])],
        "template": {"short": "Explain {topic}.", "long": "Explain {topic} to a child, step by step."},
        "system": {"plain": "Be brief.", "kind": "Be kind."},
        "models": ["local/tiny", "local/small"],
        "temperature": [0, 0.7],
        "top_p": [1.0],
        "max_tokens": [8],
        "seed": [3],
        "repeats": 2,
        "params": {"presence_penalty": [0.0, 0.5]},
    }
    args.update(kw)
    return build_grid(**args)


def test_reading_a_call_by_index_gives_the_call_iteration_gives():
    grid = _grid()
    listed = list(grid.calls)
    assert len(listed) == len(grid.calls) == 4 * 4 * 2 * 2 * 2 * 2
    assert [grid.calls[i] for i in range(len(grid.calls))] == listed
    assert grid.calls[-1] == listed[-1] and grid.calls[3:7] == listed[3:7]
    assert list(grid.calls.call_ids()) == [c.call_id for c in listed]
    assert len(set(grid.calls.call_ids())) == len(listed)
    with pytest.raises(IndexError):
        grid.calls[len(listed)]


def test_grid_order_and_every_field_follow_the_axes():
    grid = _grid()
    first, second = grid.calls[0], grid.calls[1]
    # prompt row, then variant, then setting, then repeat (innermost)
    assert (first.prompt_id, first.repeat, second.repeat) == ("q0", 0, 1)
    assert first.seed == 3 and second.seed == 4  # one seed per repeat
    assert first.messages == ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Explain rain."})
    assert first.data == {"id": "q0", "topic": "rain"}
    assert (first.template_name, first.system_name) == ("short", "plain")
    assert (first.provider, first.model, first.temperature, first.params) == (
        "local",
        "tiny",
        0.0,
        {"presence_penalty": 0.0},
    )
    last = grid.calls[-1]
    assert (last.prompt_id, last.template_name, last.system_name, last.model) == ("q3", "long", "kind", "small")
    assert last.messages[-1]["content"] == "Explain 🌈 to a child, step by step."


def test_ids_are_the_hash_of_what_is_sent():
    grid = _grid()
    for call in list(grid.calls)[::7]:
        key = {"temperature": call.temperature, "top_p": call.top_p, "max_tokens": call.max_tokens, "seed": call.seed}
        expected = call_id_for(call.messages, f"{call.provider}/{call.model}", {**key, **call.params}, call.repeat)
        # temperature=0 was given as an int: the id hashes it as given (ids never change across versions)
        if call.temperature == 0.0:
            key["temperature"] = 0
            expected = call_id_for(call.messages, f"{call.provider}/{call.model}", {**key, **call.params}, call.repeat)
        assert call.call_id == expected
        assert grid.calls.index_of(call.call_id) == list(grid.calls.call_ids()).index(call.call_id)
    assert grid.calls.index_of("no-such-id") is None


def test_messages_by_id_and_rendered_rows():
    grid = _grid()
    by_id = grid.calls.messages_by_id()
    some = grid.calls[37]
    assert by_id[some.call_id] == some.messages
    assert by_id.get("missing") is None and len(by_id) == len(grid.calls)
    # variant by variant, then prompt row
    assert len(grid.messages) == 4 * 4
    msgs, data = grid.messages[1]
    assert msgs[-1]["content"] == "Explain snow." and data["id"] == "q1"


def test_identical_rendered_prompts_are_refused_when_planned():
    with pytest.raises(ValidationError, match="same request"):
        build_grid([{"id": "a", "t": "x"}, {"id": "b", "t": "x"}], template="Say {t}", models=["local/tiny"])


def test_a_bad_row_is_named_when_the_grid_is_planned_not_when_read():
    with pytest.raises(ValidationError) as err:
        build_grid([{"t": "fine"}, {"t": None}], template={"a": "Say {t}", "b": "Tell {t}"}, models=["local/tiny"])
    assert "prompts[1].t" in str(err.value)


def test_a_big_grid_holds_ids_not_calls():
    """20,000 planned calls: what the grid adds beyond the prompt rows the user passed is ~20 bytes of id a
    call plus shared settings (it was ~1.1 KB a call when every Call was built up front)."""
    prompts = [f"Question {i}: how does rain form over the sea?" for i in range(10_000)]
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        grid = build_grid(prompts, models=["local/tiny"], temperature=[0.2, 0.9], max_tokens=8)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(grid.calls) == 20_000
    # plain-string prompts are kept as the strings (TextRows), not as a {"prompt": text} dict each (~180 bytes):
    # what is left is each row's prompt id (~60 bytes, 30 a call here) and each call's 20-byte id
    assert held / len(grid.calls) < 80, f"{held / len(grid.calls):.0f} bytes per planned call"


def test_plain_string_prompts_plan_exactly_as_prompt_rows_do():
    """A list of strings is kept as the strings, but reads, plans, fingerprints and sends exactly as the same
    prompts given as {"prompt": text} rows: same spec, same call ids (the cache keys), same messages."""
    texts = ["Why is the sky blue?", "Explain tides.", "What is rain?"]
    as_text = build_grid(texts, models=["local/tiny"], temperature=[0.0, 0.7], max_tokens=8)
    as_rows = build_grid([{"prompt": t} for t in texts], models=["local/tiny"], temperature=[0.0, 0.7], max_tokens=8)
    assert as_text.spec() == as_rows.spec()
    assert list(as_text.calls) == list(as_rows.calls) and list(as_text.messages) == list(as_rows.messages)
    assert as_text.rows == as_rows.rows and list(as_text.rows) == [{"prompt": t} for t in texts]
    row = as_text.rows[1]
    row["prompt"] = "edited"  # a row read is the reader's own: the grid's prompts stay as planned
    assert as_text.rows[1] == {"prompt": "Explain tides."} and as_text.calls[2].prompt == "Explain tides."
    assert as_text.rows[1:] == [{"prompt": "Explain tides."}, {"prompt": "What is rain?"}]


def test_editing_a_conversation_after_planning_changes_nothing_sent():
    """Calls are made when read; the rows they read are the grid's own copies, so a later edit of the caller's
    conversation cannot send other text under the id (the cache key) computed when the grid was planned."""
    conversation = [{"role": "user", "content": "Tell me about the ocean"}]
    grid = build_grid([{"id": "c1", "messages": conversation}], models=["local/tiny"], temperature=0, max_tokens=8)
    before = grid.calls[0]
    conversation[0]["content"] = "Tell me about mountains"
    conversation.append({"role": "user", "content": "and rivers"})
    assert grid.calls[0] == before and before.messages[-1]["content"] == "Tell me about the ocean"


def test_a_sweep_and_its_result_pickle(home):
    import pickle

    import llmlab as ll

    ll.configure(home=home, datakit=None)
    sweep = ll.Sweep(prompts=["hello", "rain"], template={"a": "Say {prompt}", "b": "Tell {prompt}"}, max_tokens=4)
    res = sweep.run(display=False)
    copy = pickle.loads(pickle.dumps(sweep))
    assert list(copy.calls) == list(sweep.calls)
    again = pickle.loads(pickle.dumps(res))
    assert dict(again.message_lists()) == dict(res.message_lists())
    assert again.df.equals(res.df)
