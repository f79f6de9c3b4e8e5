"""ll.spans(sweep_id=…) filters in DQL when DataKit has llmlab's customer tags, else reads the
sweep's window restricted to source opentelemetry and says once how to enable the fast path;
pages move a time cursor, never a deep OFFSET (issue #15, point 3)."""

from __future__ import annotations

import re

import pytest

import llmlab as ll
from llmlab.collector import DEFAULT_CUSTOMER_TAGS
from llmlab.readback import datakit_query
from llmlab.schema import SWEEP_CUSTOMER_TAGS
from llmlab.tracing import flush
from llmlab.tracing.export import drain
from tests.datakit.conftest import start_standin
from tests.datakit.test_read_back import NEW_GEN, _emit


def _sweep(url: str) -> str:
    config = ll.configure(datakit=url)
    res = ll.Sweep(prompts=["What is rain?", "Name a cloud"], temperature=[0.0, 0.7], max_tokens=4).run(display=False)
    flush()
    assert drain(config)["pending"] == 0
    return res.sweep_id


@pytest.fixture
def servers():
    made = []
    yield made
    for s in made:
        s.stop()
        s.app.state.storage.close()


def test_with_llmlabs_customer_tags_the_sweep_is_filtered_in_dql(tmp_path, servers, monkeypatch):
    servers.append(start_standin(tmp_path, customer_tags=DEFAULT_CUSTOMER_TAGS + SWEEP_CUSTOMER_TAGS))
    server = servers[0]
    sweep_id = _sweep(server.url)
    for i in range(30):  # unrelated spans in the same window
        _emit(server.url, f"other-{i % 3}", NEW_GEN, chunks=1)
    state = server.app.state.standin
    state.queries.clear()
    state.points_returned = 0
    monkeypatch.setattr(datakit_query, "PAGE", 3)
    df = ll.spans(sweep_id=sweep_id, source="datakit")
    assert len(df) == 4 and set(df["sweep_id"]) == {sweep_id}
    reads = [q["query"] for q in state.queries if ":(`span_id`)" not in q["query"]]  # all but the probe
    assert all(f"`llmlab_sweep_id` = '{sweep_id}'" in q and "`source` = 'opentelemetry'" in q for q in reads), reads
    assert state.points_returned <= 2 * 4 + 1  # the sweep's points (and the probe's one)
    # a time cursor: OFFSET only within one millisecond, never growing page after page
    offsets = [int(m.group(1)) for q in reads for m in [re.search(r"OFFSET (\d+)", q)] if m]
    assert all(o < 4 for o in offsets)


def test_without_them_the_window_is_read_with_one_warning(tmp_path, servers):
    servers.append(start_standin(tmp_path))  # the seed's customer_tags only
    server = servers[0]
    sweep_id = _sweep(server.url)
    _emit(server.url, "other", NEW_GEN)
    datakit_query._warned_slow.discard(server.url)
    with pytest.warns(datakit_query.SlowSweepQueryWarning, match="customer_tags"):
        df = ll.spans(sweep_id=sweep_id, source="datakit")
    assert len(df) == 4 and set(df["sweep_id"]) == {sweep_id}
    reads = [q for q in server.app.state.standin.queries if ":(`span_id`)" not in q["query"]]
    assert reads and all("`source` = 'opentelemetry'" in q["query"] for q in reads)
    assert all(q["time_range"][0] > 0 for q in reads)  # the sweep's window, not 30 days
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(ll.spans(sweep_id=sweep_id, source="datakit")) == 4  # said once


def test_time_cursor_pages_through_many_points_in_one_millisecond(collector_url, monkeypatch):
    for i in range(7):
        _emit(collector_url, "same-ms", {**NEW_GEN, "gen_ai.usage.output_tokens": i}, chunks=1)
    monkeypatch.setattr(datakit_query, "PAGE", 2)
    df = ll.spans(source="datakit", service="same-ms")
    assert sorted(df["output_tokens"]) == list(range(7)) and df["span_id"].is_unique


def test_an_unknown_sweep_is_an_empty_frame_not_advice_about_datakit(tmp_path, servers, monkeypatch):
    """No span of the sweep anywhere (a typo'd id, nothing exported yet): an empty frame, and no
    warning telling the user to change DataKit's customer_tags (warnings are errors in this suite)."""
    servers.append(start_standin(tmp_path))  # DataKit's default customer_tags: the slow path
    monkeypatch.setattr(datakit_query, "_warned_slow", set())
    _sweep(servers[0].url)
    assert ll.spans(sweep_id="sw-20260101-000000-abcdef", source="datakit").empty
