"""DQL subset over HTTP (/v1/query/raw) against a known set of points."""

from __future__ import annotations

import time

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from llmlab.collector import background, create_app
from llmlab.collector.dql import parse
from llmlab.errors import QueryError

NOW_MS = int(time.time() * 1000)
BASE_MS = NOW_MS - 10 * 60_000  # ten minutes ago
KIND = {"client": Span.SPAN_KIND_CLIENT, "server": Span.SPAN_KIND_SERVER, "internal": Span.SPAN_KIND_INTERNAL}
# (service, status, kind, name, model, temperature); span i starts at BASE_MS + i s, lasts (i+1) ms
POINTS = [
    ("a", "ok", "client", "openai.chat", "m1", 0.0),
    ("a", "error", "client", "openai.chat", "m2", 0.7),
    ("b", "ok", "server", "handler", "m1", 1.0),
    ("b", "ok", "internal", "wf", None, None),
    ("c-svc", "error", "client", "openai.chat", "m3", 0.7),
    ("a", "ok", "client", "openai.chat", "m2", 1.0),
]


def _kv(key, value):
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _request() -> bytes:
    req = ExportTraceServiceRequest()
    for i, (service, status, kind, name, model, temp) in enumerate(POINTS):
        rs = req.resource_spans.add()
        rs.resource.attributes.append(_kv("service.name", service))
        span = rs.scope_spans.add().spans.add()
        span.trace_id = bytes([i + 1]) * 16
        span.span_id = bytes([i + 1]) * 8
        span.name = name
        span.kind = KIND[kind]
        span.start_time_unix_nano = (BASE_MS + i * 1000) * 1_000_000
        span.end_time_unix_nano = span.start_time_unix_nano + (i + 1) * 1_000_000
        if status == "error":
            span.status.code = Status.STATUS_CODE_ERROR
        if model:
            span.attributes.append(_kv("gen_ai.request.model", model))
            span.attributes.append(_kv("gen_ai.request.temperature", temp))
    return req.SerializeToString()


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    app = create_app(tmp_path_factory.mktemp("dql") / "collector.db")
    srv = background(app).start()
    r = httpx.post(srv.url + "/otel/v1/traces", content=_request(), headers={"Content-Type": "application/x-protobuf"})
    assert r.status_code == 200
    yield srv.url
    srv.stop()
    app.state.storage.close()


def query(url, q, **extra):
    r = httpx.post(url + "/v1/query/raw", json={"queries": [{"query": q, **extra}]})
    assert r.status_code == 200, r.text
    c = r.json()["content"][0]
    rows = [dict(zip(c["series"][0]["columns"], v)) for v in c["series"][0]["values"]] if c["series"] else []
    return rows, c["total_hits"]


def idx(url, q, **extra):
    """Indexes (into POINTS) of the returned points, in result order."""
    rows, _ = query(url, q, **extra)
    return [int(r["span_id"][:2], 16) - 1 for r in rows]


def bad(url, q, **extra):
    r = httpx.post(url + "/v1/query/raw", json={"queries": [{"query": q, **extra}]})
    assert r.status_code == 400, (q, r.text)
    body = r.json()
    assert body["error_code"] and body["message"]
    return body["message"]


def test_default_order_is_time_desc_and_columns(url):
    rows, total = query(url, "T::re(`.*`)")
    assert total == 6
    assert [int(r["span_id"][:2], 16) - 1 for r in rows] == [5, 4, 3, 2, 1, 0]
    assert list(rows[0])[:13] == [
        "time",
        "trace_id",
        "span_id",
        "parent_id",
        "service",
        "status",
        "span_kind",
        "source",
        "resource",
        "operation",
        "start",
        "duration",
        "message",
    ]
    assert rows[0]["time"] == BASE_MS + 5000 and rows[0]["start"] == (BASE_MS + 5000) * 1000
    assert rows[0]["duration"] == 6000  # µs
    assert rows[0]["parent_id"] == "0"
    assert rows[0]["gen_ai_request_model"] == "m2"
    assert rows[2]["gen_ai_request_model"] is None


def test_sources(url):
    assert sorted(idx(url, "T::a")) == [0, 1, 5]
    assert sorted(idx(url, "T::opentelemetry")) == list(range(6))
    assert sorted(idx(url, "T::re(`^b$`)")) == [2, 3]
    assert sorted(idx(url, "T::`c-svc`")) == [4]
    assert sorted(idx(url, "T::a, b")) == [0, 1, 2, 3, 5]
    assert idx(url, "T::nope") == []


def test_column_list(url):
    rows, _ = query(url, "T::a:(`span_id`, duration, gen_ai_request_temperature) LIMIT 1")
    assert list(rows[0]) == ["time", "span_id", "duration", "gen_ai_request_temperature"]
    assert rows[0]["gen_ai_request_temperature"] == "1.0"
    rows, _ = query(url, "T::a:(*) LIMIT 1")
    assert "message" in rows[0]


@pytest.mark.parametrize(
    "flt,expected",
    [
        ("status = 'error'", [1, 4]),
        ('status == "error"', [1, 4]),
        ("status != 'error'", [0, 2, 3, 5]),
        ("status <> 'error'", [0, 2, 3, 5]),
        ("duration > 3000", [3, 4, 5]),
        ("duration >= 3000", [2, 3, 4, 5]),
        ("duration < 3000", [0, 1]),
        ("duration <= 3000", [0, 1, 2]),
        ("duration = '2000'", [1]),
        ("span_kind = 'client'", [0, 1, 4, 5]),
        ("resource = 'openai.chat'", [0, 1, 4, 5]),
        ("operation = 'wf'", [3]),
        ("source = 'opentelemetry'", [0, 1, 2, 3, 4, 5]),
        ("gen_ai_request_model = 'm2'", [1, 5]),
        ("gen_ai_request_model != 'm2'", [0, 2, 4]),  # a missing tag matches neither = nor !=
        ("gen_ai_request_temperature = 0.7", [1, 4]),
        ("gen_ai_request_temperature > 0.5", [1, 2, 4, 5]),
        ("gen_ai_request_temperature = '0.7'", [1, 4]),
        ("`gen_ai_request_model` IN ['m1', 'm3']", [0, 2, 4]),
        ("gen_ai_request_model IN ('m1')", [0, 2]),
        ("gen_ai_request_model NOT IN ['m1', 'm3']", [1, 5]),
        ("service IN []", []),
        ("status = 'ok' AND service = 'a'", [0, 5]),
        ("status = 'ok' and service = 'a' OR service = 'c-svc'", [0, 4, 5]),  # AND binds tighter
        ("service = 'c-svc' OR status = 'ok' AND service = 'a'", [0, 4, 5]),
        ("(service = 'c-svc' OR status = 'ok') AND service = 'a'", [0, 5]),
        ("service = 'c-svc' OR status = 'ok', service = 'a'", [0, 5]),  # comma = AND, lowest precedence
        ("service = 'a' && duration > 1000 || span_kind = 'server'", [1, 2, 5]),
        ("trace_id = '02020202020202020202020202020202'", [1]),
        ("parent_id = '0'", [0, 1, 2, 3, 4, 5]),
        ("llm_is_streaming = true", []),
        ("no_such_tag = 'x'", []),
        ("resource = re('^openai\\.')", [0, 1, 4, 5]),  # the regex and wildcard forms users write in Guance
        ("service = re('svc')", [4]),
        ("resource != re('openai')", [2, 3]),
        ("gen_ai_request_model != re('m[12]')", [4]),  # a missing tag matches neither = nor != re()
        ("service = wildcard('c-*')", [4]),
        ("resource = wildcard('openai.cha?')", [0, 1, 4, 5]),
        ("resource = wildcard('openai')", []),  # wildcard matches the whole value
        ("service != wildcard('?')", [4]),
        ("source = re('^open')", [0, 1, 2, 3, 4, 5]),
        ("status = 'ok' AND resource = re('chat$')", [0, 5]),
    ],
)
def test_filters(url, flt, expected):
    assert sorted(idx(url, f"T::re(`.*`) {{ {flt} }}")) == expected


def test_time_ranges(url):
    assert len(idx(url, "T::re(`.*`) [1h]")) == 6
    assert len(idx(url, "T::re(`.*`) [30m]")) == 6
    assert len(idx(url, "T::re(`.*`) [7d]")) == 6
    assert idx(url, "T::re(`.*`) [5m]") == []
    assert sorted(idx(url, f"T::re(`.*`) [{BASE_MS + 1000}:{BASE_MS + 3000}]")) == [1, 2, 3]
    assert sorted(idx(url, f"T::re(`.*`) [{BASE_MS + 4000}:]")) == [4, 5]
    assert sorted(idx(url, "T::re(`.*`)", time_range=[BASE_MS, BASE_MS + 1000])) == [0, 1]
    # query range and request range intersect
    assert sorted(idx(url, f"T::re(`.*`) [{BASE_MS + 1000}:]", time_range=[BASE_MS, BASE_MS + 2000])) == [1, 2]
    assert idx(url, "T::re(`.*`) [2h:1h]") == []


def test_order_limit_offset_total_hits(url):
    assert idx(url, "T::re(`.*`) ORDER BY time ASC") == [0, 1, 2, 3, 4, 5]
    assert idx(url, "T::re(`.*`) ORDER BY time") == [5, 4, 3, 2, 1, 0]
    assert idx(url, "T::re(`.*`) ORDER BY time DESC LIMIT 2") == [5, 4]
    assert idx(url, "T::re(`.*`) ORDER BY duration asc LIMIT 2 OFFSET 1") == [1, 2]
    assert idx(url, "T::re(`.*`) ORDER BY service ASC, time DESC LIMIT 3") == [5, 1, 0]
    rows, total = query(url, "T::re(`.*`) {status='ok'} LIMIT 1 OFFSET 1")
    assert total == 4 and len(rows) == 1
    rows, total = query(url, "T::re(`.*`)", limit=2, offset=3)
    assert total == 6 and [int(r["span_id"][:2], 16) - 1 for r in rows] == [2, 1]
    rows, total = query(url, "T::re(`.*`) LIMIT 1", limit=5)  # the query's LIMIT wins
    assert len(rows) == 1
    rows, total = query(url, "T::re(`.*`) OFFSET 10")
    assert rows == [] and total == 6


def test_several_queries_one_request(url):
    r = httpx.post(url + "/v1/query/raw", json={"queries": [{"query": "T::a"}, {"query": "T::b"}]})
    assert [c["total_hits"] for c in r.json()["content"]] == [3, 2]


@pytest.mark.parametrize(
    "q,reason",
    [
        ("L::re(`.*`)", "namespace"),
        ("O::host", "namespace"),  # M:: (metrics) is supported: tests/seed/test_metrics_query.py
        ("T::re(`.*`):(count(`trace_id`))", "function"),
        ("T::re(`.*`) BY service", "BY"),
        ("T::re(`.*`) LIMIT 1 SLIMIT 1", "SLIMIT"),
        ("T::re(`.*`) {message = 'x'}", "message"),
        ("T::re(`.*`) {duration = 'abc'}", "numeric"),
        ("T::re(`.*`) {duration = true}", "numeric"),
        ("T::re(`.*`) {status > true}", "boolean"),
        ("T::re(`.*`) {status =~ 'x'}", "unexpected"),
        ("T::re(`.*`) {status = }", "unexpected"),
        ("T::re(`.*`) {status = 'ok'", "ends too early"),
        ("T::re(`(`)", "regular expression"),
        ("T::re(`.*`) [1y]", "unexpected"),
        ("SELECT * FROM spans", "unexpected"),
        ("", "empty"),
        ("T::re(`.*`) LIMIT -1", "unexpected"),
        ("T::re(`.*`) ORDER BY message", "message"),
        ("T::re(`.*`) {resource > re('a')}", "= or !="),
        ("T::re(`.*`) {resource = re('(')}", "regular expression"),
        ("T::re(`.*`) {resource = match('a')}", "unexpected"),
    ],
)
def test_malformed_or_unsupported_is_400(url, q, reason):
    assert reason.lower() in bad(url, q).lower()


def test_bad_request_bodies(url):
    for body in ({}, {"queries": []}, {"queries": [{"q": 1}]}, [1]):
        r = httpx.post(url + "/v1/query/raw", json=body)
        assert r.status_code == 400 and r.json()["message"]
    r = httpx.post(url + "/v1/query/raw", content=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert "time_range" in bad(url, "T::a", time_range="yesterday")
    assert "limit" in bad(url, "T::a", limit=-3)


def test_values_are_parametrized_not_formatted(url):
    # a quote-laden value is just a value
    assert idx(url, "T::re(`.*`) {service = \"a' OR '1'='1\"}") == []
    assert "invalid column name" in bad(url, "T::re(`.*`) {`we\"ird` = 'x'}")


def test_parse_is_pure():
    q = parse("T::re(`.*`):(`trace_id`) {a = 1} [1h] ORDER BY time ASC LIMIT 3 OFFSET 2", now_ms=10_000_000)
    assert q.columns == ["trace_id"] and q.limit == 3 and q.offset == 2
    assert q.time_range == (10_000_000 - 3_600_000, 10_000_000)
    assert q.order == [("time", False)]
    with pytest.raises(QueryError):
        parse("T::a LIMIT")
