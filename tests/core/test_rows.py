"""The runner's column store (ColumnRows): the frame it builds is the frame a list of the same row dicts gives."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

import llmlab as ll
from llmlab import schema
from llmlab.run import runner as runner_mod
from llmlab.run.retry import RetryPolicy
from llmlab.run.rows import ColumnRows


class _Recording(ColumnRows):
    """ColumnRows that also keeps a copy of each row dict, to build the frame the old way."""

    views: ClassVar[list[_Recording]] = []

    def __init__(self) -> None:
        super().__init__()
        self.dicts: list[dict] = []

    def append(self, row):
        self.dicts.append(dict(row))
        return super().append(row)

    def take(self, positions):
        positions = [int(i) for i in positions]
        base = super().take(positions)
        view = _Recording()
        view._cols, view._n = base._cols, base._n
        view.dicts = [self.dicts[i] for i in positions]
        _Recording.views.append(view)
        return view


@pytest.fixture
def recorded(monkeypatch):
    _Recording.views = []
    monkeypatch.setattr(runner_mod, "ColumnRows", _Recording)
    return _Recording.views


def _same_frame(view: _Recording, res, params=()) -> None:
    new = schema.sweep_frame(view, params=params)
    old = schema.sweep_frame(view.dicts, params=params)
    pd.testing.assert_frame_equal(new, old, check_exact=True)
    assert new.dtypes.to_dict() == old.dtypes.to_dict()
    pd.testing.assert_frame_equal(res.df, old, check_exact=True)
    assert list(view) == [{k: d.get(k) for k in view[0]} for d in view.dicts]


def test_sweep_frame_from_columns_equals_the_frame_from_row_dicts(tmp_path, recorded):
    ll.configure(home=tmp_path, datakit=None)
    sweep = ll.Sweep(
        prompts=["What is a rainbow? 🌈", "用一句话解释光合作用。", "x"],
        models=["local/tiny"],
        temperature=[0.0, 0.7],
        max_tokens=8,
        params={"presence_penalty": [0.0, 0.5]},
    )
    res = sweep.run(display=False)
    view = recorded[-1]
    assert len(view) == 12 and (res.df["status"] == "ok").all()
    assert str(res.df["completion"].dtype) == "str" and str(res.df["latency_ms"].dtype) == "Float64"
    _same_frame(view, res, params=["presence_penalty"])
    # a cached re-run: every row cached, spent nothing
    again = sweep.run(display=False, cache=True)
    assert again.df["cached"].all()
    _same_frame(recorded[-1], again, params=["presence_penalty"])


def test_prompt_rows_with_extra_columns_and_a_template(tmp_path, recorded):
    ll.configure(home=tmp_path, datakit=None)
    prompts = [
        {"text": "the cat sat", "reference": "cat", "n": 1, "model": "m1"},
        {"text": "rain falls", "reference": None, "n": 2.5, "model": "m2"},
    ]
    res = ll.Sweep(prompts=prompts, template="Summarize: {text}", models=["local/tiny"], max_tokens=6).run(
        display=False
    )
    view = recorded[-1]
    assert {"text", "reference", "n", "data.model"} <= set(res.df.columns)
    _same_frame(view, res)


def test_error_rows(tmp_path, recorded):
    ll.configure(home=tmp_path, datakit=None)
    ll.provider("downhost", base_url="http://127.0.0.1:9/v1", api_key_env=None)
    res = ll.Sweep(prompts=["hi", "ho"], models=["downhost/m", "local/tiny"], temperature=0.0, max_tokens=4).run(
        display=False, retry=RetryPolicy(max_attempts=1)
    )
    assert sorted(res.df["status"]) == ["error", "error", "ok", "ok"]
    _same_frame(recorded[-1], res)
    # only errors: the columns a failed call never fills are None in every row
    res = ll.Sweep(prompts=["hi"], models=["downhost/m"], temperature=0.0, max_tokens=4).run(
        display=False, retry=RetryPolicy(max_attempts=1)
    )
    assert res.df["status"].tolist() == ["error"]
    _same_frame(recorded[-1], res)


# --- the class on its own -------------------------------------------------------------------


def _frames(dicts: list[dict], order: list[int] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = ColumnRows()
    for d in dicts:
        rows.append(d)
    if order is not None:
        rows, dicts = rows.take(order), [dicts[i] for i in order]
    new, old = schema.sweep_frame(rows), schema.sweep_frame(dicts)
    pd.testing.assert_frame_equal(new, old, check_exact=True)
    return new, old


def test_values_of_another_type_turn_the_column_into_a_list():
    dicts = [
        {"latency_ms": 1.5, "max_tokens": 4, "cached": True, "prompt": "a", "temperature": 0.0},
        {"latency_ms": 2, "max_tokens": "8", "cached": 1, "prompt": 3, "temperature": math.nan},
        {"latency_ms": None, "max_tokens": True, "cached": None, "prompt": None, "temperature": np.float64(0.5)},
        {"latency_ms": 2.5, "max_tokens": 2**70, "cached": False, "prompt": "\ud800", "temperature": 1.0},
    ]
    rows = ColumnRows()
    for d in dicts:
        rows.append(d)
    for name in dicts[0]:
        got = rows.column(name)
        assert [type(v) for v in got] == [type(d[name]) for d in dicts], name
        assert [repr(v) for v in got] == [repr(d[name]) for d in dicts], name
    assert rows[1] == dicts[1] or math.isnan(rows[1]["temperature"])
    # the frame is what the dicts give (pandas infers those columns as before), errors included
    first = ColumnRows()
    for d in dicts[:3]:
        first.append(d)
    with pytest.raises(TypeError, match="bool-like"):
        schema.frame(dicts[:3])  # cached: True, 1, None
    with pytest.raises(TypeError, match="bool-like"):
        schema.frame(first)
    kept = [{k: v for k, v in d.items() if k != "cached"} for d in dicts[:3]]
    rows2 = ColumnRows()
    for d in kept:
        rows2.append(d)
    pd.testing.assert_frame_equal(schema.frame(rows2), schema.frame(kept), check_exact=True)


def test_late_and_missing_keys_are_none():
    dicts = [
        {"call_id": "a", "latency_ms": 1.0},
        {"call_id": "b", "topic": "x", "max_tokens": 3, "cached": True},
        {"latency_ms": 2.0, "topic": None},
    ]
    rows = ColumnRows()
    for d in dicts:
        rows.append(d)
    assert list(rows) == [
        {"call_id": "a", "latency_ms": 1.0, "topic": None, "max_tokens": None, "cached": None},
        {"call_id": "b", "latency_ms": None, "topic": "x", "max_tokens": 3, "cached": True},
        {"call_id": None, "latency_ms": 2.0, "topic": None, "max_tokens": None, "cached": None},
    ]
    assert rows[-1] == list(rows)[2] and rows[0:2] == list(rows)[:2]
    assert rows.column("topic") == [None, "x", None] and rows.column("nope") == [None] * 3
    _frames(dicts)
    _frames(dicts, [2, 0, 1])


def test_unicode_text_and_none_in_every_kind():
    text = ["🌈 rainbow", "光合作用", "", None, "e\u0301 ñ \x00 z", "a" * 1000]
    dicts = [
        {
            "completion": t,
            "error": "",
            "latency_ms": None if i % 2 else i / 3,
            "input_tokens": None if i % 3 == 0 else i,
            "cached": None if i == 4 else bool(i % 2),
            "start_time": None if i == 2 else f"2024-05-0{i + 1}T10:00:00.123456+00:00",
            "topic": None,
        }
        for i, t in enumerate(text)
    ]
    rows = ColumnRows()
    for d in dicts:
        rows.append(d)
    assert rows.column("completion") == text
    assert [rows[i] for i in range(len(dicts))] == dicts
    new, _ = _frames(dicts)
    assert str(new["completion"].dtype) == "str" and new["topic"].dtype == object
    assert str(new["start_time"].dtype).startswith("datetime64") and new["start_time"].isna().sum() == 1
    _frames(dicts, [5, 3, 1, 0, 2, 4])
    # every value None: the column is object (as a frame of dicts infers it), not str; also in a view
    new, _ = _frames(dicts, [3])
    assert new["completion"].dtype == object and str(new["error"].dtype) == "str"
    new, _ = _frames([{"completion": None, "latency_ms": None, "seed": None, "cached": None}] * 3)
    assert new["completion"].tolist() == [None] * 3


def test_take_moves_rows_into_order_and_frames_without_touching_the_store():
    def six() -> ColumnRows:
        rows = ColumnRows()
        for i in range(6):
            rows.append({"call_id": f"c{i}", "repeat": i, "completion": "x" * i, "cost_usd": i / 10, "x": [i]})
        rows.append({"call_id": "c6", "repeat": None, "completion": None, "cost_usd": None, "x": None})
        return rows

    rows = six()
    taken = rows.take([4, 0, 6, 5])
    assert len(rows) == 0 and list(rows) == [] and len(taken) == 4  # moved, not copied
    assert [r["call_id"] for r in taken] == ["c4", "c0", "c6", "c5"]
    assert taken.column("repeat") == [4, 0, None, 5] and taken[1]["completion"] == "" and taken[2]["completion"] is None
    assert taken.column("x") == [[4], [0], None, [5]] and taken.take([3, 0]).column("call_id") == ["c5", "c4"]
    df = schema.frame(six().take([4, 0, 6, 5]))
    assert df["call_id"].tolist() == ["c4", "c0", "c6", "c5"] and df["cost_usd"].tolist()[:2] == [0.4, 0.0]
    assert df["cost_usd"].isna().tolist() == [False, False, True, False] and df["completion"].isna().tolist()[2]
    with pytest.raises(IndexError):
        six().take([7])
    # grid order from each grid index's row position (-1: never ran); the positions follow the move
    from array import array

    row_at = array("q", [3, -1, 0, 6])
    ordered = six().in_grid_order(row_at)
    assert ordered.column("call_id") == ["c3", "c0", "c6"] and row_at.tolist() == [0, -1, 1, 2]
    # rows appended after a frame shares their buffers: the frame keeps its values
    whole = schema.frame(ordered)
    ordered.append({"call_id": "c9", "repeat": 9, "completion": "y", "cost_usd": 0.6})
    assert (
        len(whole) == 3
        and len(schema.frame(ordered)) == 4
        and whole["repeat"].tolist()[:2] == [3, 0]
        and whole["repeat"].isna().tolist() == [False, False, True]
    )
    assert len(ColumnRows()) == 0 and schema.frame(ColumnRows()).shape[0] == 0
    empty = ColumnRows()
    empty.append({})
    empty.append({})
    assert len(empty) == 2 and list(empty) == [{}, {}] and empty[1] == {}
    # a value that does not fit in the very first row
    first = ColumnRows()
    first.append({"prompt": 3, "latency_ms": 1, "cached": "x"})
    first.append({"prompt": "a"})
    assert list(first) == [
        {"prompt": 3, "latency_ms": 1, "cached": "x"},
        {"prompt": "a", "latency_ms": None, "cached": None},
    ]


def test_the_frame_shares_the_buffers():
    rows = ColumnRows()
    for i in range(100):
        rows.append({"latency_ms": float(i), "input_tokens": i, "cached": i % 2 == 0, "completion": str(i)})
    df = rows.frame()
    col = rows._cols["latency_ms"]
    assert np.shares_memory(df["latency_ms"].array._data, np.frombuffer(col.values, dtype=np.float64))
    text = rows._cols["completion"]
    assert (
        df["completion"].array._pa_array.chunks[0].buffers()[2].address
        == np.frombuffer(text.data, np.uint8).ctypes.data
    )
    out = schema.sweep_frame(rows)
    assert np.shares_memory(out["latency_ms"].array._data, np.frombuffer(col.values, dtype=np.float64))


def test_sweep_frame_leaves_a_callers_frame_as_it_is():
    times = pd.to_datetime(["2024-05-01T10:00:00.5+00:00", None], utc=True)
    user = pd.DataFrame(
        {"latency_ms": [1, 2], "cached": [True, False], "call_id": ["a", "b"], "start_time": times},
    )
    before = user.copy()
    out = schema.sweep_frame(user)
    pd.testing.assert_frame_equal(user, before)
    assert str(user["start_time"].dtype) == "datetime64[us, UTC]"  # as the caller made it
    assert str(out["start_time"].dtype) == "datetime64[ns, UTC]"  # times are nanoseconds in every llmlab frame
    assert out["start_time"].equals(user["start_time"].dt.as_unit("ns"))
    assert not np.shares_memory(out["start_time"].array._ndarray, user["start_time"].array._ndarray)
    assert str(out["latency_ms"].dtype) == "Float64" and out["cached"].dtype == "boolean"


def test_times_are_kept_as_nanoseconds_and_read_back_as_written():
    stamps = [
        "2026-11-30T23:40:00.123456789+00:00",
        "2026-11-30T23:40:00.123456+00:00",  # pd.Timestamp.now(): microseconds
        "2026-11-30T23:40:00+00:00",
        None,
    ]
    rows = ColumnRows()
    for t in stamps:
        rows.append({"call_id": "c", "start_time": t, "end_time": t})
    assert rows.column("start_time") == stamps and rows[2]["end_time"] == stamps[2]
    assert type(rows._cols["start_time"]).__name__ == "_Times"
    new, old = _frames([{"start_time": t, "end_time": t} for t in stamps])
    assert str(new["start_time"].dtype) == "datetime64[ns, UTC]"
    assert new["start_time"][0].nanosecond == 789 and new["start_time"].isna().tolist() == [False] * 3 + [True]
    # a time that would not read back as written (another zone, a space, no seconds): kept as given
    for odd in ("2026-11-30T23:40:00.5+01:00", "2026-11-30 23:40:00+00:00", "2026-11-30T23:40+00:00"):
        rows = ColumnRows()
        for t in (stamps[0], odd):
            rows.append({"start_time": t})
        assert rows.column("start_time") == [stamps[0], odd]
        new, _ = _frames([{"start_time": stamps[0]}, {"start_time": odd}])
        assert new["start_time"][1] == pd.Timestamp(odd).tz_convert("UTC")
    taken = ColumnRows()
    for t in stamps:
        taken.append({"start_time": t})
    assert taken.take([3, 0]).column("start_time") == [None, stamps[0]]
