"""The collector's OTLP/HTTP surface, exercised with the real OTel SDK exporter over real HTTP."""

from __future__ import annotations

import gzip
import json
import multiprocessing as mp
import time

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from llmlab.collector import background, create_app, ensure_embedded, stop_embedded
from llmlab.collector.storage import Storage

PB = {"Content-Type": "application/x-protobuf"}


@pytest.fixture
def collector(tmp_path):
    app = create_app(tmp_path / "collector.db")
    srv = background(app).start()
    yield srv
    srv.stop()
    app.state.storage.close()


def dql(url: str, query: str, **extra) -> httpx.Response:
    return httpx.post(url + "/v1/query/raw", json={"queries": [{"query": query, **extra}], "token": "t"})


def rows(url: str, query: str, **extra) -> list[dict]:
    r = dql(url, query, **extra)
    assert r.status_code == 200, r.text
    content = r.json()["content"][0]
    if not content["series"]:
        return []
    s = content["series"][0]
    assert s["name"] == "opentelemetry"
    return [dict(zip(s["columns"], v)) for v in s["values"]]


def llm_spans(provider: TracerProvider, error: bool = False) -> None:
    tracer = provider.get_tracer("opentelemetry.instrumentation.openai.v1", "0.62.4")
    with tracer.start_as_current_span("demo.workflow") as wf:
        wf.set_attribute("traceloop.workflow.name", "demo")
        with tracer.start_as_current_span("openai.chat", kind=SpanKind.CLIENT) as span:
            span.set_attributes(
                {
                    "llm.request.type": "chat",
                    "gen_ai.system": "openai",
                    "gen_ai.request.model": "tiny",
                    "gen_ai.request.temperature": 0.7,
                    "gen_ai.prompt.0.content": "hello",
                    "gen_ai.completion.0.content": "world",
                    "gen_ai.usage.input_tokens": 3,
                    "traceloop.association.properties.sweep_id": "sw1",
                    "llmlab.call_id": "c1",
                    "llm.is_streaming": True,
                }
            )
            time.sleep(0.002)
            span.add_event("gen_ai.content.completion.chunk")
            span.add_event("gen_ai.content.completion.chunk")
            if error:
                span.set_status(Status(StatusCode.ERROR, "boom"))


def provider_to(url: str, service: str = "llmlab", **kw) -> TracerProvider:
    tp = TracerProvider(resource=Resource.create({"service.name": service}))
    tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=url + "/otel/v1/traces", **kw)))
    return tp


@pytest.mark.parametrize("compression", [None, Compression.Gzip])
def test_sdk_exporter_roundtrip(collector, compression):
    t0_us = time.time_ns() // 1000
    tp = provider_to(collector.url, compression=compression) if compression else provider_to(collector.url)
    llm_spans(tp)
    tp.shutdown()
    got = rows(
        collector.url,
        "T::re(`.*`):(`trace_id`,`span_id`,`parent_id`,`resource`,`start`,`duration`,`message`,"
        "`service`,`status`,`span_kind`,`source`,`operation`,`gen_ai_system`,`gen_ai_request_model`) [1h]",
    )
    assert len(got) == 2
    chat = next(r for r in got if r["resource"] == "openai.chat")
    wf = next(r for r in got if r["resource"] == "demo.workflow")
    assert next(iter(got[0])) == "time"
    assert chat["service"] == "llmlab" and chat["status"] == "ok" and chat["span_kind"] == "client"
    assert chat["source"] == "opentelemetry" and chat["operation"] == "openai.chat"
    assert wf["span_kind"] == "internal" and wf["parent_id"] == "0"
    assert chat["parent_id"] == wf["span_id"] and chat["trace_id"] == wf["trace_id"]
    assert len(chat["trace_id"]) == 32 and len(chat["span_id"]) == 16
    # µs: start close to now, duration ≥ the 2 ms sleep and below a second
    assert abs(chat["start"] - t0_us) < 60_000_000
    assert 2_000 <= chat["duration"] < 1_000_000
    assert chat["time"] == chat["start"] // 1000
    assert chat["gen_ai_system"] == "openai" and chat["gen_ai_request_model"] == "tiny"
    msg = json.loads(chat["message"])
    attrs = {a["key"]: a["value"] for a in msg["attributes"]}
    assert attrs["gen_ai.request.temperature"] == {"doubleValue": 0.7}
    assert attrs["traceloop.association.properties.sweep_id"] == {"stringValue": "sw1"}
    assert attrs["llmlab.call_id"] == {"stringValue": "c1"}
    assert [e["name"] for e in msg["events"]] == ["gen_ai.content.completion.chunk"] * 2
    first_event_ns = int(msg["events"][0]["timeUnixNano"])
    assert first_event_ns >= int(msg["startTimeUnixNano"])
    assert msg["traceId"] == chat["trace_id"] and msg["spanId"] == chat["span_id"]
    assert msg["parentSpanId"] == wf["span_id"]
    assert msg["kind"] == "SPAN_KIND_CLIENT"
    res = {a["key"]: a["value"] for a in msg["resource"]["attributes"]}
    assert res["service.name"] == {"stringValue": "llmlab"}
    assert msg["scope"]["name"] == "opentelemetry.instrumentation.openai.v1"


def test_all_columns_include_customer_tags(collector):
    tp = provider_to(collector.url)
    llm_spans(tp, error=True)
    tp.shutdown()
    got = rows(collector.url, "T::llmlab {resource = 'openai.chat'}")
    assert len(got) == 1
    row = got[0]
    assert row["status"] == "error"
    for col in (
        "gen_ai_system",
        "gen_ai_request_model",
        "llm_request_type",
        "llm_is_streaming",
        "gen_ai_completion_0_content",
        "gen_ai_request_temperature",
    ):
        assert col in row
    assert row["llm_is_streaming"] == "true"
    assert row["gen_ai_request_temperature"] == "0.7"
    assert "gen_ai_prompt_0_content" not in row  # not in the seed's customer_tags (prompt.1 is)
    assert "message" in row


def _request_bytes(n: int = 3, service: str = "svc") -> bytes:
    exporter = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": service}))
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = tp.get_tracer("t")
    for i in range(n):
        with tracer.start_as_current_span(f"op{i}"):
            pass
    return encode_spans(exporter.get_finished_spans()).SerializeToString()


def _otlp_json(body: bytes) -> bytes:
    """OTLP/JSON per the spec: camelCase, hex ids."""
    from google.protobuf import json_format

    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    data = json_format.MessageToDict(req)
    import base64

    for rs in data["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for sp in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in sp:
                        sp[key] = base64.b64decode(sp[key]).hex()
                sp["unknownField"] = 1  # ignored
    return json.dumps(data).encode()


def test_json_and_gzip_bodies(collector):
    url = collector.url + "/otel/v1/traces"
    body = _request_bytes(2, "json-svc")
    r = httpx.post(url, content=_otlp_json(body), headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json() == {}
    assert r.headers["content-type"].startswith("application/json")
    r = httpx.post(url, content=gzip.compress(_request_bytes(3, "gz-svc")), headers={**PB, "Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-type"] == "application/x-protobuf"
    r = httpx.post(
        url,
        content=gzip.compress(_otlp_json(_request_bytes(1, "gzjson"))),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert r.status_code == 200
    got = rows(collector.url, "T::json-svc:(trace_id, span_id)")
    assert len(got) == 2 and all(len(g["trace_id"]) == 32 for g in got)
    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    ids = {s.span_id.hex() for s in req.resource_spans[0].scope_spans[0].spans}
    assert {g["span_id"] for g in got} == ids
    assert len(rows(collector.url, "T::`gz-svc`")) == 3
    assert len(rows(collector.url, "T::gzjson")) == 1


@pytest.mark.parametrize(
    "headers,content",
    [
        ({"Content-Type": "text/plain"}, b"x"),
        ({}, b"x"),
        (PB, b"\xff\xff\xff garbage"),
        ({"Content-Type": "application/json"}, b"{not json"),
        ({"Content-Type": "application/json"}, b"[1, 2]"),
        (
            {"Content-Type": "application/json"},
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
        ),
        ({**PB, "Content-Encoding": "gzip"}, b"not gzip at all"),
        ({**PB, "Content-Encoding": "br"}, b"x"),
    ],
)
def test_bad_requests_are_400(collector, headers, content):
    r = httpx.post(collector.url + "/otel/v1/traces", content=content, headers=headers)
    assert r.status_code == 400, r.text
    assert r.json()["message"]
    assert httpx.get(collector.url + "/v1/ping").status_code == 200  # still serving


def test_oversize_body_is_413(collector):
    big = b"\x00" * (16 * 1024 * 1024 + 1)
    r = httpx.post(collector.url + "/otel/v1/traces", content=big, headers=PB, timeout=30)
    assert r.status_code == 413


def test_oversize_streamed_body_without_length_is_413(collector):
    def chunks():
        for _ in range(17):
            yield b"\x00" * (1024 * 1024)

    r = httpx.post(collector.url + "/otel/v1/traces", content=chunks(), headers=PB, timeout=30)
    assert r.status_code == 413


def test_gzip_bomb_is_413_without_inflating_it_all(collector):
    import tracemalloc

    from llmlab.collector.server import MAX_BODY_BYTES, _TooLarge, inflate

    bomb = gzip.compress(b"\x00" * (20 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 100_000
    r = httpx.post(
        collector.url + "/otel/v1/traces", content=bomb, headers={**PB, "Content-Encoding": "gzip"}, timeout=30
    )
    assert r.status_code == 413
    # the inflater stops at the limit: a 256 MiB bomb costs about the limit in memory, not 256 MiB
    big_bomb = gzip.compress(b"\x00" * (256 * 1024 * 1024), compresslevel=1)
    tracemalloc.start()
    try:
        with pytest.raises(_TooLarge):
            inflate(big_bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MAX_BODY_BYTES  # a quarter of what inflating it all would hold


def test_duplicate_delivery_stored_once(collector):
    body = _request_bytes(4, "dup")
    for _ in range(3):
        assert httpx.post(collector.url + "/otel/v1/traces", content=body, headers=PB).status_code == 200
    r = dql(collector.url, "T::dup")
    assert r.json()["content"][0]["total_hits"] == 4


def test_keeps_serving_while_a_client_sends_garbage(collector):
    import threading

    stop = threading.Event()

    def garbage():
        with httpx.Client() as c:
            while not stop.is_set():
                c.post(collector.url + "/otel/v1/traces", content=b"\x0a\xff" * 5000, headers=PB)

    threads = [threading.Thread(target=garbage) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        body = _request_bytes(5, "good")
        for _ in range(5):
            r = httpx.post(collector.url + "/otel/v1/traces", content=body, headers=PB, timeout=60)
            assert r.status_code == 200
            assert httpx.get(collector.url + "/v1/ping", timeout=60).status_code == 200
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert dql(collector.url, "T::good").json()["content"][0]["total_hits"] == 5


def test_ping(collector):
    r = httpx.get(collector.url + "/v1/ping")
    assert r.status_code == 200
    content = r.json()["content"]
    assert content["version"].startswith("llmlab-")
    assert content["uptime"].endswith("s") and float(content["uptime"][:-1]) >= 0


def _metrics_request() -> ExportMetricsServiceRequest:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="msvc")))
    sm = rm.scope_metrics.add()
    m = sm.metrics.add(name="gen_ai.client.token.usage", unit="{token}")
    dp = m.histogram.data_points.add(count=2, sum=30.0, time_unix_nano=10**18)
    dp.bucket_counts.extend([1, 1])
    dp.explicit_bounds.append(10.0)
    dp.attributes.append(KeyValue(key="gen_ai.token.type", value=AnyValue(string_value="input")))
    g = sm.metrics.add(name="queue.size")
    g.gauge.data_points.add(as_int=7, time_unix_nano=10**18)
    s = sm.metrics.add(name="calls")
    s.sum.data_points.add(as_double=3.5, time_unix_nano=10**18)
    s.sum.is_monotonic = True
    return req


def _logs_request() -> ExportLogsServiceRequest:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="lsvc")))
    rec = rl.scope_logs.add().log_records.add(time_unix_nano=10**18, severity_number=9, severity_text="INFO")
    rec.body.string_value = "hello log"
    rec.trace_id = b"\x01" * 16
    return req


def test_metrics_and_logs_endpoints(collector, tmp_path):
    url = collector.url
    r = httpx.post(url + "/otel/v1/metrics", content=_metrics_request().SerializeToString(), headers=PB)
    assert r.status_code == 200 and r.content == b""
    r = httpx.post(url + "/otel/v1/logs", content=_logs_request().SerializeToString(), headers=PB)
    assert r.status_code == 200
    from google.protobuf import json_format

    r = httpx.post(
        url + "/otel/v1/logs",
        content=json.dumps(json_format.MessageToDict(_logs_request())).replace("AQEBAQEBAQEBAQEBAQEBAQ==", "01" * 16),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 200 and r.json() == {}
    for path in ("/otel/v1/metrics", "/otel/v1/logs"):
        assert httpx.post(url + path, content=b"\xff\xfe garbage", headers=PB).status_code == 400
        assert httpx.post(url + path, content=b"x", headers={"Content-Type": "text/plain"}).status_code == 400
    db = Storage(tmp_path / "collector.db").reader()
    metrics = db.execute("SELECT name, type, value, data, service, attributes FROM metrics ORDER BY name").fetchall()
    assert [(m[0], m[1]) for m in metrics] == [
        ("calls", "sum"),
        ("gen_ai.client.token.usage", "histogram"),
        ("queue.size", "gauge"),
    ]
    assert metrics[2][2] == 7.0 and metrics[0][2] == 3.5
    hist = json.loads(metrics[1][3])
    assert hist["count"] == 2 and hist["bucket_counts"] == [1, 1] and hist["explicit_bounds"] == [10.0]
    assert metrics[1][4] == "msvc" and json.loads(metrics[1][5]) == {"gen_ai.token.type": "input"}
    logs = db.execute("SELECT service, body, severity_text, trace_id FROM logs").fetchall()
    assert logs == [("lsvc", '"hello log"', "INFO", "01" * 16)] * 2


def _writer_proc(db_path: str, service: str, n: int) -> None:
    from llmlab.collector.ingest import decode, span_groups
    from llmlab.collector.storage import Storage as S

    st = S(db_path)
    for _ in range(n):
        st.insert_spans(span_groups(decode("traces", _request_bytes(5, service), False)))
    st.close()


def test_two_processes_share_one_database(tmp_path):
    db_path = str(tmp_path / "shared" / "collector.db")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer_proc, args=(db_path, f"p{i}", 20)) for i in range(2)]
    for p in procs:
        p.start()
    # a collector in this process writes into the same file meanwhile
    app = create_app(db_path)
    srv = background(app).start()
    try:
        for _ in range(10):
            r = httpx.post(srv.url + "/otel/v1/traces", content=_request_bytes(3, "http"), headers=PB)
            assert r.status_code == 200
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        assert dql(srv.url, "T::p0").json()["content"][0]["total_hits"] == 100
        assert dql(srv.url, "T::p1").json()["content"][0]["total_hits"] == 100
        assert dql(srv.url, "T::http").json()["content"][0]["total_hits"] == 30
        assert app.state.storage.migrations() == [1, 2]
    finally:
        srv.stop()
        app.state.storage.close()


def test_ensure_embedded(tmp_path):
    from llmlab.config import configure

    try:
        cfg = configure(home=tmp_path / "h1", datakit="embedded")
        url = ensure_embedded(cfg)
        assert url.startswith("http://127.0.0.1:")
        assert ensure_embedded(cfg) == url
        assert httpx.get(url + "/v1/ping").status_code == 200
        assert (tmp_path / "h1" / "collector.db").exists()
        url2 = ensure_embedded(configure(home=tmp_path / "h2", datakit="embedded"))
        assert url2 != url
        assert (tmp_path / "h2" / "collector.db").exists()
        assert httpx.get(url2 + "/v1/ping").status_code == 200
    finally:
        stop_embedded()


def test_message_conversion_matches_protojson():
    """span_to_dict is a fast MessageToDict; ids differ only in being hex instead of base64."""
    import base64
    import math

    from google.protobuf import json_format
    from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

    from llmlab.collector.ingest import span_to_dict

    exporter = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": "x"}))
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = tp.get_tracer("t")
    with tracer.start_as_current_span("root") as root:
        root_ctx = root.get_span_context()
    from opentelemetry.trace import Link

    with tracer.start_as_current_span("s", kind=SpanKind.PRODUCER, links=[Link(root_ctx, {"l": 1})]) as span:
        span.set_attributes(
            {
                "s": "",
                "i": -5,
                "d": math.nan,
                "inf": math.inf,
                "b": False,
                "arr": [1.5, 2.0],
                "sarr": ["a", "b"],
                "z": 0.0,
            }
        )
        span.add_event("ev", {"k": "v"})
        span.add_event("bare")
        span.set_status(Status(StatusCode.ERROR, "bad"))
    req = encode_spans(exporter.get_finished_spans())
    spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    extra = PbSpan(name="k", trace_id=b"\x01" * 16)
    extra.attributes.add(key="kv").value.kvlist_value.values.add(key="in").value.bytes_value = b"\x00\xff"
    extra.attributes.add(key="empty").value.array_value.SetInParent()
    extra.attributes.add(key="unset")
    spans.append(extra)
    for sp in spans:
        expected = json_format.MessageToDict(sp)
        for obj in [expected, *expected.get("links", [])]:
            for key in ("traceId", "spanId", "parentSpanId"):
                if key in obj:
                    obj[key] = base64.b64decode(obj[key]).hex()
        assert span_to_dict(sp) == expected
