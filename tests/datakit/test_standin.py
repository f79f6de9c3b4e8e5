"""The DataKit 1.84 stand-in answers as DataKit does, and read-back copes with those answers
(issue #15: errors with HTTP 200, non-ASCII service names, list-valued customer tags, strict ingest)."""

from __future__ import annotations

import gzip
import json

import httpx
import pytest

import llmlab as ll
from llmlab.collector.standin import STANDIN_TOKEN
from llmlab.errors import QueryError
from llmlab.readback import datakit_query
from tests.datakit.conftest import start_standin
from tests.datakit.test_read_back import NEW_GEN, _emit


@pytest.fixture
def standin(tmp_path):
    made = []

    def make(**options):
        made.append(start_standin(tmp_path, **options))
        return made[-1]

    yield make
    for server in made:
        server.stop()
        server.app.state.storage.close()


def _otlp_json(service: str = "svc", extra: dict | None = None) -> bytes:
    span = {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "b7ad6b7169203331",
        "name": "openai.chat",
        "kind": 3,
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000000500000000",
        "attributes": [
            {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o-mini"}},
            {"key": "gen_ai.response.finish_reasons", "value": {"arrayValue": {"values": [{"stringValue": "stop"}]}}},
            {"key": "llmlab.raw", "value": {"bytesValue": "aGVsbG8="}},
        ],
        **(extra or {}),
    }
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                "scopeSpans": [{"scope": {"name": "t"}, "spans": [span]}],
            }
        ]
    }
    return json.dumps(body).encode()


def test_a_dql_error_answered_with_http_200_reaches_the_user_as_query_error(standin):
    server = standin()
    _emit(server.url, "app", NEW_GEN)
    ll.configure(datakit=server.url, datakit_token="tkn_not_this_workspace")
    with pytest.raises(QueryError, match="tokenNotFound"):
        ll.spans(source="datakit")
    # the raw answer really is HTTP 200 with a top-level error_code and no content
    r = httpx.post(server.url + "/v1/query/raw", json={"token": "x", "queries": [{"query": "T::re(`.*`)"}]})
    assert r.status_code == 200 and "content" not in r.json() and r.json()["error_code"]
    ll.configure(datakit=server.url, datakit_token=None)
    r = httpx.post(server.url + "/v1/query/raw", json={"queries": [{"query": "T::re(`.*`) {"}]})
    assert r.status_code == 200 and r.json()["error_code"] == "kodo.dqlError"
    with pytest.raises(QueryError, match="DQL error"):
        datakit_query.raw_query(ll.configure(datakit=server.url), "T::re(`.*`) {")


def test_the_query_api_is_refused_from_another_host_and_says_why(standin):
    server = standin(external=True)
    ll.configure(datakit=server.url)
    with pytest.raises(QueryError, match="disabled from external IP"):
        ll.spans(source="datakit")


def test_a_query_without_a_token_uses_the_dataways_and_fails_without_one(standin):
    ll.configure(datakit=standin().url)
    assert ll.spans(source="datakit").empty
    ll.configure(datakit=standin(token=None).url)
    with pytest.raises(QueryError, match="dataway token missing"):
        ll.spans(source="datakit")
    ll.configure(datakit=standin().url, datakit_token=STANDIN_TOKEN)
    assert ll.spans(source="datakit").empty


@pytest.mark.parametrize("backend", ["embedded", "standin"])
def test_non_ascii_service_names_match(backend, standin):
    if backend == "embedded":
        from llmlab.collector import ensure_embedded

        url = ensure_embedded(ll.configure(datakit="embedded"))
    else:
        url = standin().url
        ll.configure(datakit=url)
    _emit(url, "智能助手", NEW_GEN)
    _emit(url, "it's-app", NEW_GEN)
    assert list(ll.spans(source="datakit", service="智能助手")["service"]) == ["智能助手"]
    assert list(ll.spans(source="datakit", service="it's-app")["service"]) == ["it's-app"]
    assert datakit_query.dql_string("智能") == "'智能'"


def test_list_valued_customer_tags_and_bytes_values_are_read(standin):
    server = standin(customer_tags=["gen_ai.response.finish_reasons", "gen_ai.request.model"])
    r = httpx.post(server.url + "/otel/v1/traces", content=_otlp_json(), headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.content == b""
    ll.configure(datakit=server.url)
    raw = datakit_query.raw_query(ll.configure(datakit=server.url), "T::re(`.*`)", (0, 2**42))
    point = dict(zip(raw["series"][0]["columns"], raw["series"][0]["values"][0]))
    assert point["gen_ai_response_finish_reasons"] == '{"values":[{"stringValue":"stop"}]}'
    row = datakit_query.decode_point(point)
    assert row.attrs["gen_ai_response_finish_reasons"] == ("stop",)
    assert (
        datakit_query.decode_point(
            {"message": json.dumps({"attributes": [{"key": "b", "value": {"bytesValue": "aGVsbG8="}}]})}
        ).attrs["b"]
        == "hello"
    )
    df = ll.spans(source="datakit", since=0)
    assert df.loc[0, "finish_reason"] == "stop"


def test_ingest_is_as_strict_as_datakit(standin):
    url = standin().url + "/otel/v1/traces"
    ok = _otlp_json()
    for headers, body in [
        ({"Content-Type": "application/json; charset=utf-8"}, ok),
        ({"Content-Type": "text/plain"}, ok),
        ({"Content-Type": "application/json"}, _otlp_json(extra={"bogusField": 1})),
        ({"Content-Type": "application/x-protobuf"}, b"\xff\xff\xff"),
        ({"Content-Type": "application/json", "Content-Encoding": "gzip"}, b"not gzip"),
    ]:
        r = httpx.post(url, content=body, headers=headers)
        assert (r.status_code, r.content) == (400, b""), headers
    big = gzip.compress(_otlp_json(extra={"attributes": [{"key": "x", "value": {"stringValue": "y" * 20_000_000}}]}))
    r = httpx.post(url, content=big, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert r.status_code == 200  # no HTTP body limit (that 16 MiB is gRPC's)


def test_limit_zero_means_the_default(standin):
    server = standin()
    _emit(server.url, "app", NEW_GEN)
    r = httpx.post(server.url + "/v1/query/raw", json={"queries": [{"query": "T::re(`.*`)", "limit": 0}]})
    assert len(r.json()["content"][0]["series"][0]["values"]) == 2
