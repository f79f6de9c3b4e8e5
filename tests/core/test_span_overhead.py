"""Per-call tracing work: no exception path inside OpenLLMetry, span encoding off the event loop,
and each span's bytes stored once (chunk events folded, attributes not copied into JSON)."""

from __future__ import annotations

import threading

import llmlab as ll
from llmlab import schema
from llmlab.store import get_store
from llmlab.store.spanbytes import span_attributes, unpack
from llmlab.tracing import ensure_tracing, flush
from llmlab.tracing import export as export_mod


def _sweep(n: int = 3):
    return ll.Sweep(prompts=[f"What is rain, {i}?" for i in range(n)], models=["local/tiny"], max_tokens=8)


def test_usage_without_details_raises_nothing_inside_openllmetry(monkeypatch):
    # the embedded model, like vLLM, sends a usage chunk without prompt_tokens_details
    from opentelemetry.instrumentation.openai.shared.config import Config

    ensure_tracing()
    seen: list[Exception] = []
    monkeypatch.setattr(Config, "exception_logger", seen.append)
    res = _sweep().run(display=False, cache=False)
    assert (res.df["status"] == "ok").all()
    assert seen == []
    flush()
    for row in res.df.itertuples():
        attrs = span_attributes(
            *get_store().read("SELECT attrs_json, otlp FROM spans WHERE span_id=?", (row.span_id,))[0]
        )
        # the attribute OpenLLMetry set last before it raised is there, as for an OpenAI answer
        assert attrs["gen_ai.usage.cache_read.input_tokens"] == 0
        assert attrs["gen_ai.usage.output_tokens"] == row.output_tokens
        assert "gen_ai.output.messages" in attrs


def test_spans_are_encoded_on_the_store_writer_not_the_event_loop(monkeypatch):
    threads: list[str] = []
    real = export_mod.span_record

    def spy(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(export_mod, "span_record", spy)
    res = _sweep(4).run(display=False, cache=False)
    flush()
    assert len(threads) == len(res.df) and set(threads) == {"llmlab-store-writer"}
    assert get_store().read("SELECT count(*) FROM spans WHERE sweep_id=? AND is_llm=1", (res.sweep_id,))[0][0] == len(
        res.df
    )


def test_a_span_that_cannot_be_encoded_is_skipped_and_the_sweep_goes_on(monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("cannot encode")

    monkeypatch.setattr(export_mod, "span_record", broken)
    res = _sweep(2).run(display=False, cache=False)
    flush()
    assert (res.df["status"] == "ok").all()
    assert get_store().read("SELECT count(*) FROM spans WHERE sweep_id=?", (res.sweep_id,))[0][0] == 0


def test_a_span_is_stored_once_with_its_chunk_events_folded():
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    res = _sweep(2).run(display=False, cache=False)
    flush()
    for row in res.df.itertuples():
        attrs_json, otlp = get_store().read("SELECT attrs_json, otlp FROM spans WHERE span_id=?", (row.span_id,))[0]
        assert attrs_json == "{}"  # no second copy of the attributes
        assert unpack(otlp) != otlp  # stored packed
        span = ExportTraceServiceRequest.FromString(unpack(otlp)).resource_spans[0].scope_spans[0].spans[0]
        chunks = [e for e in span.events if e.name == schema.CHUNK_EVENT]
        assert len(chunks) == 1  # one event, at the first token, counting them all
        counts = {kv.key: kv.value.int_value for kv in chunks[0].attributes}
        assert counts[export_mod.CHUNKS_ATTR] >= row.output_tokens >= 2
    spans = ll.spans(sweep_id=res.sweep_id, source="local")
    assert (spans["ttft_ms"] > 0).all() and spans["itl_ms"].notna().all()
    trace = ll.trace(res.df["trace_id"].iloc[0]) if hasattr(ll, "trace") else None
    if trace is not None:
        assert trace["attributes"].iloc[0]["llmlab.call_id"] in set(res.df["call_id"])


def test_plain_span_bytes_of_older_rows_still_read():
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from llmlab.store.spanbytes import pack

    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.name = "openai.chat"
    kv = span.attributes.add()
    kv.key, kv.value.string_value = "llmlab.call_id", "c1"
    plain = request.SerializeToString()
    assert unpack(plain) == plain and unpack(pack(plain)) == plain and unpack(None) == b""
    assert span_attributes("{}", plain) == span_attributes("{}", pack(plain)) == {"llmlab.call_id": "c1"}
    assert span_attributes('{"a": 1}', b"") == {"a": 1}  # imported without bytes: the JSON copy
