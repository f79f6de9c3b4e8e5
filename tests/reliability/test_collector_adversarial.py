"""An adversarial pass over the collector's OTLP and query endpoints (issue #16): inputs beyond the listed items,
each run against ``llmlab collector`` in its own process with a concurrent ``/v1/ping``. None may be a 500, a hang or a traceback;
the expected answer is DataKit's (400 for a body it cannot take, 200 for one it stores)."""

from __future__ import annotations

import json
import time

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tests.reliability.hostile import PB, Spawned, assert_responsive, pinging, span_request

J = {"Content-Type": "application/json"}
_ids = iter(range(1000, 10**6))


def _span(mutate) -> bytes:
    """A one-span request of service ``adv`` with fresh ids, changed by ``mutate(span)``."""
    n = next(_ids)
    m = ExportTraceServiceRequest.FromString(
        span_request("adv", trace_id=n.to_bytes(16, "big"), span_id=n.to_bytes(8, "big"))
    )
    mutate(m.resource_spans[0].scope_spans[0].spans[0])
    return m.SerializeToString()


def _nested_any(depth: int) -> AnyValue:
    v = AnyValue(string_value="leaf")
    for _ in range(depth):
        w = AnyValue()
        w.kvlist_value.values.add(key="k").value.CopyFrom(v)
        v = w
    return v


def _deep_json(depth: int) -> bytes:
    inner = '{"kvlistValue": {"values": [{"key": "k", "value": ' * depth + '{"stringValue": "x"}' + "}]}}" * depth
    span = f'{{"traceId": "{"01" * 16}", "spanId": "{"02" * 8}", "attributes": [{{"key": "d", "value": {inner}}}]}}'
    return ('{"resourceSpans": [{"scopeSpans": [{"spans": [' + span + "]}]}]}").encode()


def _json_span(**span) -> bytes:
    span = {"traceId": "0a" * 16, "spanId": "0b" * 8, "name": "j", **span}
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()


#: OTLP inputs → expected status
OTLP_CASES = {
    "text/plain content type": (span_request("a"), {"Content-Type": "text/plain"}, 400),
    "no content type": (span_request("a"), {"Content-Type": ""}, 400),
    "Content-Encoding br": (span_request("a"), {**PB, "Content-Encoding": "br"}, 400),
    "gzip declared, plain body": (span_request("a"), {**PB, "Content-Encoding": "gzip"}, 400),
    "truncated protobuf": (span_request("a", n=3)[:-7], PB, 400),
    "random bytes as protobuf": (bytes(range(256)) * 64, PB, 400),
    "JSON with NUL characters in names": (
        _json_span(name="n\u0000").replace(
            b'"scopeSpans"',
            b'"resource": {"attributes": [{"key": "service.name",'
            b' "value": {"stringValue": "a\\u0000b"}}]}, "scopeSpans"',
        ),
        J,
        200,
    ),
    "raw NUL byte in a JSON body": (b'{"resourceSpans": [\x00]}', J, 400),
    "invalid UTF-8 in a JSON body": (b'{"resourceSpans": [{"x": "\xff\xfe"}]}', J, 400),
    "JSON body is a list": (b"[]", J, 400),
    "JSON resourceSpans is a string": (b'{"resourceSpans": "x"}', J, 400),
    "JSON traceId not hex": (_json_span(traceId="zz"), J, 400),
    "JSON traceId of 1 MB of hex": (_json_span(traceId="ab" * 500_000), J, 200),
    "JSON kvlist 5000 deep": (_deep_json(5000), J, 400),
    "protobuf kvlist AnyValue 200 deep": (
        _span(lambda s: s.attributes.add(key="d").value.CopyFrom(_nested_any(200))),
        PB,
        400,
    ),
    "10 MB attribute value (a customer tag)": (
        _span(lambda s: s.attributes.add(key="gen_ai.prompt.1.content", value=AnyValue(string_value="x" * 10_000_000))),
        PB,
        200,
    ),
    "500,000 attributes on one span": (
        _span(
            lambda s: s.attributes.extend(KeyValue(key=f"k{i}", value=AnyValue(int_value=i)) for i in range(500_000))
        ),
        PB,
        200,
    ),
    "end before start (negative duration)": (_span(lambda s: setattr(s, "end_time_unix_nano", 1)), PB, 200),
    "end at 2^64-1 (huge duration)": (
        _span(lambda s: (setattr(s, "start_time_unix_nano", 0), setattr(s, "end_time_unix_nano", 2**64 - 1))),
        PB,
        200,
    ),
}


@pytest.fixture(scope="module")
def col(tmp_path_factory):
    running = Spawned(tmp_path_factory.mktemp("adv"))
    running.otlp("traces", span_request("svc", n=5))
    yield running
    running.stop()


@pytest.mark.parametrize("case", list(OTLP_CASES))
def test_hostile_otlp_bodies(col, case):
    body, headers, expected = OTLP_CASES[case]
    with pinging(col.url) as pings:
        t0 = time.monotonic()
        r = col.otlp("traces", body, headers)
        elapsed = time.monotonic() - t0
    assert r.status_code == expected, r.text[:300]
    assert elapsed < 10, elapsed
    assert_responsive(pings)


def test_what_the_hostile_bodies_stored_reads_back(col):
    for case in ("10 MB attribute value (a customer tag)", "500,000 attributes on one span"):
        body, headers, _ = OTLP_CASES[case]
        col.otlp("traces", body, headers)
    with pinging(col.url) as pings:
        r = col.dql("T::adv LIMIT 100")
    assert r.status_code == 200, r.text[:300]
    assert_responsive(pings)
    points = r.json()["content"][0]
    assert points["total_hits"] >= 4
    cols = points["series"][0]["columns"]
    durations = [v[cols.index("duration")] for v in points["series"][0]["values"]]
    assert min(durations) >= 0  # end before start is a 0 duration, not a negative one


def _q(query: str, **extra) -> bytes:
    return json.dumps({"queries": [{"query": query, **extra}]}).encode()


#: query bodies → expected status (200 when DataKit would answer; 400 with a reason otherwise)
QUERY_CASES = {
    "unicode identifier T::服务": (_q("T::服务"), 400),
    "unicode column {标签 = 'x'}": (_q("T::re(`.*`) {标签 = 'x'}"), 400),
    "backticked unicode column": (_q("T::re(`.*`) {`标签` = 'x'}"), 200),
    "unterminated backtick": (_q("T::re(`abc)"), 400),
    "unterminated string": (_q("T::re(`.*`) {a = 'x}"), 400),
    "SQL injection in a value": (_q('T::re(`.*`) {service = "x\' OR 1=1 --"}'), 200),
    "SQL injection in a column": (_q('T::re(`.*`) {`a") OR 1=1 --` = 1}'), 400),
    "SQL injection in ORDER BY": (_q("T::svc ORDER BY `time; DROP TABLE spans`"), 200),
    "a statement after the query": (_q("T::re(`.*`) LIMIT 1; DROP TABLE spans"), 400),
    "lone surrogate in a filter value": (b'{"queries": [{"query": "T::re(`.*`) {service = \'\\ud800\'}"}]}', 400),
    "lone surrogate in a regex": (b'{"queries": [{"query": "T::re(`\\ud800`)"}]}', 400),
    "offset negative": (_q("T::re(`.*`)", offset=-1), 400),
    "limit a string": (_q("T::re(`.*`)", limit="10"), 400),
    "limit 1.5": (_q("T::re(`.*`)", limit=1.5), 400),
    "time_range of strings": (_q("T::re(`.*`)", time_range=["a", "b"]), 400),
    "queries not a list": (b'{"queries": {"query": "T::svc"}}', 400),
    "queries empty": (b'{"queries": []}', 400),
    "query a number": (b'{"queries": [{"query": 5}]}', 400),
    "10,000 queries": (json.dumps({"queries": [{"query": "T::svc"}] * 10_000}).encode(), 400),
    "body not JSON": (b"T::svc", 400),
    "empty body": (b"", 400),
    "64k of whitespace in a query": (_q("T::svc" + " " * 65_000), 200),
    "three-part time range": (_q("T::re(`.*`) [1h:2h:3h]"), 400),
    "regex of 1 MB": (_q("T::re(`" + "a" * 1_000_000 + "`)"), 400),
    "ORDER BY 10,000 columns": (_q("T::re(`.*`) ORDER BY " + ",".join(f"c{i}" for i in range(10_000))), 400),
    "a column list of 10,000": (_q("T::re(`.*`):(" + ",".join(f"c{i}" for i in range(10_000)) + ")"), 200),
}


@pytest.mark.parametrize("case", list(QUERY_CASES))
def test_hostile_query_bodies(col, case):
    body, expected = QUERY_CASES[case]
    with pinging(col.url) as pings:
        r = col.query(content=body)
    assert r.status_code == expected, r.text[:300]
    if expected == 400:
        assert r.json()["error_code"].startswith("query.") and r.json()["message"], r.text[:300]
    assert_responsive(pings)
    assert col.dql("T::svc").json()["content"][0]["total_hits"] == 5  # nothing was dropped
