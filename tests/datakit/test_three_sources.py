"""ll.spans() gives the same frame for the same calls from the local store, the embedded collector
and a real DataKit's DQL answer shape (clean_message on and off): same columns, dtypes, values."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import llmlab as ll
from llmlab.collector import ensure_embedded
from llmlab.tracing import flush
from llmlab.tracing.export import drain
from tests.datakit.datakit_shape import DataKitShape
from tests.datakit.test_read_back import LEGACY, NEW_GEN, _emit


def _by_span(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("span_id").reset_index(drop=True)


@pytest.fixture
def shapes():
    made: list[DataKitShape] = []

    def make(upstream: str, clean_message: bool) -> DataKitShape:
        made.append(DataKitShape(upstream, clean_message))
        return made[-1]

    yield make
    for s in made:
        s.stop()


def test_local_embedded_and_real_datakit_agree_on_every_column(counting_provider, shapes, home):
    home.mkdir(parents=True, exist_ok=True)
    prices = {"okp/tiny": {"input": 1.5, "output": 6.0}, "badp/tiny": {"input": 1.5, "output": 6.0}}
    (home / "prices.json").write_text(json.dumps(prices))
    counting_provider("okp")
    bad = counting_provider("badp")
    bad.fail_first, bad.status = 10**6, 400  # every call fails, and 400 is not retried: error spans
    config = ll.configure(datakit="embedded")
    res = ll.Sweep(
        prompts=["What is rain?", "Name a cloud", "你好"],
        models=["okp/tiny", "badp/tiny"],
        temperature=[0.0, 0.7],
        max_tokens=6,
        repeats=2,
    ).run(display=False, concurrency=4)
    assert (res.df["status"] == "error").sum() == 12 and (res.df["status"] == "ok").sum() == 12
    flush()
    assert drain(config)["pending"] == 0

    local = _by_span(ll.spans(sweep_id=res.sweep_id, source="local"))
    embedded = _by_span(ll.spans(sweep_id=res.sweep_id, source="datakit"))
    assert (
        len(local) == 24
        and (local["cost_usd"] > 0).sum() == 12
        and local["sweep_id"].notna().all()
        and local["call_id"].notna().all()
    )
    assert local["repeat"].notna().all() and local["prompt_id"].notna().all()
    assert (local.loc[local["status"] == "error", "error"].str.len() > 0).all()
    pd.testing.assert_frame_equal(local, embedded)

    upstream = ensure_embedded(config)
    for clean in (True, False):
        ll.configure(datakit=shapes(upstream, clean).url)
        real = _by_span(ll.spans(sweep_id=res.sweep_id, source="datakit"))
        pd.testing.assert_frame_equal(local, real, obj=f"clean_message={clean}")


def test_other_apps_read_the_same_from_the_embedded_collector_and_a_real_datakit(shapes):
    config = ll.configure(datakit="embedded")
    url = ensure_embedded(config)
    _emit(url, "new-app", NEW_GEN)
    _emit(url, "legacy-app", LEGACY, error=True)
    embedded = _by_span(ll.spans(source="datakit"))
    assert len(embedded) == 2
    for clean in (True, False):
        ll.configure(datakit=shapes(url, clean).url)
        real = _by_span(ll.spans(source="datakit"))
        pd.testing.assert_frame_equal(embedded, real, obj=f"clean_message={clean}")
    legacy = real.set_index("service").loc["legacy-app"]
    assert legacy["status"] == "error" and "boom" in legacy["error"] and legacy["workflow"] == "ask_workflow"


def test_a_span_datakit_stored_twice_is_one_row():
    """DataKit does not de-duplicate: a batch whose answer was lost and was re-sent is stored twice."""
    from llmlab.readback.datakit_query import point_to_row
    from llmlab.readback.frames import rows_to_frame

    point = {
        "time": 1,
        "trace_id": "ab" * 16,
        "span_id": "cd" * 8,
        "parent_id": "0",
        "service": "kimi_app",
        "status": "ok",
        "resource": "openai.chat",
        "start": 1_700_000_000_000_000,
        "duration": 250_000,
        "message": "",
        "gen_ai_request_model": "moonshot-v1-8k",
        "gen_ai_system": "OpenAI",
        "llm_request_type": "chat",
    }
    other = {**point, "span_id": "ef" * 8}
    df = rows_to_frame([point_to_row(p) for p in (point, other, point)])
    assert sorted(df["span_id"]) == ["cd" * 8, "ef" * 8]


def test_trace_tree_reads_the_same_from_a_real_datakit(shapes):
    from llmlab.readback.traces import span_tree, trace_spans

    config = ll.configure(datakit="embedded")
    url = ensure_embedded(config)
    _emit(url, "legacy-app", LEGACY, error=True)
    trace_id = ll.spans(source="datakit")["trace_id"].iloc[0]
    embedded = trace_spans(trace_id)
    ll.configure(datakit=shapes(url, True).url)
    real = trace_spans(trace_id)
    cols = [
        "trace_id",
        "span_id",
        "parent_id",
        "name",
        "service",
        "start_time",
        "end_time",
        "duration_ms",
        "status",
        "error",
    ]
    pd.testing.assert_frame_equal(embedded[cols], real[cols], check_dtype=False)
    tree = [(depth, row["name"]) for depth, row in span_tree(real)]
    assert tree == [(0, "ask_workflow.workflow"), (1, "openai.chat")]
    chat = real.set_index("name").loc["openai.chat"]
    assert chat["error"] == "boom: upstream 500" and chat["attributes"]["gen_ai_request_model"] == "moonshot-v1-8k"


def test_since_until_select_the_same_calls_from_every_source(shapes):
    config = ll.configure(datakit="embedded")
    res = ll.Sweep(prompts=[f"window {i}" for i in range(8)], temperature=0.0, max_tokens=4).run(
        display=False, concurrency=1
    )
    flush()
    assert drain(config)["pending"] == 0
    starts = ll.spans(sweep_id=res.sweep_id, source="local")["start_time"].sort_values().tolist()
    # bounds inside a millisecond, between two µs ticks: DQL's ms range alone would let extra spans in
    since, until = starts[2] + pd.Timedelta(nanoseconds=1), starts[6] + pd.Timedelta(nanoseconds=500)
    local = ll.spans(source="local", since=since, until=until)
    embedded = ll.spans(source="datakit", since=since, until=until)
    assert sorted(local["start_time"]) == starts[3:7]
    pd.testing.assert_frame_equal(_by_span(local), _by_span(embedded))
    ll.configure(datakit=shapes(ensure_embedded(config), True).url)
    pd.testing.assert_frame_equal(_by_span(local), _by_span(ll.spans(source="datakit", since=since, until=until)))


def test_limit_picks_the_same_calls_from_every_source():
    config = ll.configure(datakit="embedded")
    res = ll.Sweep(prompts=[f"limit {i}" for i in range(12)], temperature=0.0, max_tokens=3).run(
        display=False, concurrency=12
    )
    flush()
    assert drain(config)["pending"] == 0
    for limit in (1, 5, 11, 12, 20):
        local = ll.spans(sweep_id=res.sweep_id, source="local", limit=limit)
        embedded = ll.spans(sweep_id=res.sweep_id, source="datakit", limit=limit)
        assert len(local) == min(limit, 12)
        pd.testing.assert_frame_equal(_by_span(local), _by_span(embedded), obj=f"limit={limit}")


def test_limit_cuts_by_start_then_span_id_when_starts_share_a_millisecond():
    """DQL orders by the millisecond only: the cut at `limit` must not depend on how DataKit orders
    the points of one millisecond."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    config = ll.configure(datakit="embedded")
    url = ensure_embedded(config)
    provider = TracerProvider(resource=Resource.create({"service.name": "same-ms"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=url + "/otel/v1/traces")))
    tracer = provider.get_tracer("t")
    base = (pd.Timestamp.now(tz="UTC").floor("1ms")).value
    for offset_us in (0, 0, 0, 100, 100, 900, 1500):  # five spans in the first millisecond
        span = tracer.start_span("openai.chat", attributes=NEW_GEN, start_time=base + offset_us * 1000)
        span.end(end_time=base + offset_us * 1000 + 10**8)
    provider.shutdown()
    full = ll.spans(source="datakit", service="same-ms").sort_values(["start_time", "span_id"]).reset_index(drop=True)
    assert len(full) == 7
    for limit in range(1, 8):
        got = ll.spans(source="datakit", service="same-ms", limit=limit)
        assert sorted(got["span_id"]) == sorted(full["span_id"][:limit]), limit
