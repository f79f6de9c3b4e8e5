"""OTLP metrics of every kind, exported by the real OpenTelemetry SDK over OTLP/HTTP to the
embedded collector, read back with DQL ``M::otel_service`` (DataKit's point shape) and with
``ll.metrics()`` (tidy rows), against values worked out by hand."""

from __future__ import annotations

import httpx
import pandas as pd
import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import (
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)
from opentelemetry.sdk.resources import Resource

import llmlab as ll
from llmlab.collector import background, create_app
from llmlab.errors import ConfigError


@pytest.fixture
def collector(tmp_path):
    server = background(create_app(tmp_path / "collector.db")).start()
    yield server.url
    server.stop()


def _provider(url: str, service: str, temporality: dict | None = None) -> MeterProvider:
    exporter = OTLPMetricExporter(endpoint=url + "/otel/v1/metrics", preferred_temporality=temporality)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)  # exports on flush only
    views = [
        View(instrument_name="test.latency", aggregation=ExplicitBucketHistogramAggregation([0.1, 0.5, 1.0])),
        View(instrument_name="test.size", aggregation=ExponentialBucketHistogramAggregation()),
    ]
    return MeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": service}),
        views=views,
        shutdown_on_exit=False,
    )


@pytest.fixture
def exported(collector):
    """Two cumulative exports (a flush, then the shutdown's last export) of service 'svc' and two delta exports of service 'svc-delta'."""
    provider = _provider(collector, "svc")
    meter = provider.get_meter("tests")
    requests = meter.create_counter("test.requests", unit="1")
    latency = meter.create_histogram("test.latency", unit="s")
    size = meter.create_histogram("test.size", unit="By")
    inflight = meter.create_up_down_counter("test.inflight")
    queue = iter([5, 7])
    meter.create_observable_gauge("test.queue", callbacks=[lambda _opts: [Observation(next(queue), {"q": "main"})]])
    for _ in range(3):
        requests.add(1, {"route": "/a"})
    requests.add(2, {"route": "/b"})
    for v in (0.05, 0.3, 0.3, 2.0):
        latency.record(v, {"model": "tiny"})
    for v in (1, 2, 4):
        size.record(v)
    inflight.add(3)
    inflight.add(-1)
    assert provider.force_flush()
    requests.add(2, {"route": "/a"})
    latency.record(0.7, {"model": "tiny"})
    provider.shutdown()  # the second (and last) export

    delta = _provider(collector, "svc-delta", {Counter: AggregationTemporality.DELTA})
    calls = delta.get_meter("tests").create_counter("test.calls")
    calls.add(4)
    assert delta.force_flush()
    calls.add(1)
    delta.shutdown()
    ll.configure(datakit=collector)
    return collector


def _query(url: str, q: str) -> tuple[list[dict], int]:
    r = httpx.post(url + "/v1/query/raw", json={"queries": [{"query": q}]})
    assert r.status_code == 200, r.text
    content = r.json()["content"][0]
    points = [dict(zip(s["columns"], v)) for s in content.get("series", []) for v in s["values"]]
    return points, content["total_hits"]


def test_histogram_points_have_datakit_shape(exported):
    points, total = _query(
        exported, "M::otel_service {service_name = 'svc', `test.latency_count` >= 0} ORDER BY time ASC"
    )
    assert total == 2 and len(points) == 2
    first = points[0]
    assert first["test.latency_count"] == 4 and first["test.latency_sum"] == pytest.approx(2.65)
    assert first["test.latency_min"] == 0.05 and first["test.latency_max"] == 2.0
    assert first["unit"] == "s" and first["model"] == "tiny" and first["service_name"] == "svc"
    # as DataKit: the scope's name is a tag, the SDK's telemetry.sdk.* resource attributes are dropped
    assert first["scope_name"] == "tests" and not any(k.startswith("telemetry_sdk") for k in first)
    assert _query(exported, "M::otel_service {scope_name = re('^tes'), `test.latency_count` >= 0}")[1] == 2
    buckets, _ = _query(
        exported, "M::otel_service {service_name = 'svc', `test.latency_bucket` >= 0} ORDER BY time ASC"
    )
    # Prometheus-style cumulative bucket counts with an `le` tag, as DataKit writes them
    assert [(b["le"], b["test.latency_bucket"]) for b in buckets[:4]] == [("0.1", 1), ("0.5", 3), ("1", 3), ("+Inf", 4)]
    assert [(b["le"], b["test.latency_bucket"]) for b in buckets[4:]] == [("0.1", 1), ("0.5", 3), ("1", 4), ("+Inf", 5)]


def test_sums_and_gauges_have_datakit_shape(exported):
    points, _ = _query(
        exported, "M::otel_service:(`test.requests`, `route`, `__temporality`) {`test.requests` > 0} ORDER BY time ASC"
    )
    assert [(p["route"], p["test.requests"], p["__temporality"]) for p in points] == [
        ("/a", 3, "cumulative"),
        ("/b", 2, "cumulative"),
        ("/a", 5, "cumulative"),
        ("/b", 2, "cumulative"),
    ]
    assert list(points[0]) == ["time", "test.requests", "route", "__temporality"]
    gauges, _ = _query(exported, "M::otel_service {`test.queue` >= 0} ORDER BY time ASC")
    assert [g["test.queue"] for g in gauges] == [5, 7] and "__temporality" not in gauges[0]


def test_query_edges(exported):
    everything, total = _query(exported, "M::otel_service LIMIT 1000")
    assert total == len(everything) > 10
    assert _query(exported, "M::cpu") == ([], 0)  # a measurement the collector does not have
    assert _query(exported, "M::re(`otel.*`) LIMIT 1")[1] == total
    page, t2 = _query(exported, "M::otel_service ORDER BY time ASC LIMIT 3 OFFSET 2")
    assert t2 == total and len(page) == 3
    r = httpx.post(exported + "/v1/query/raw", json={"queries": [{"query": "M::otel_service ORDER BY route"}]})
    assert r.status_code == 400 and "order by time" in r.json()["message"]


def test_ll_metrics_tidy_rows(exported):
    m = ll.metrics(service="svc")
    assert set(m["name"]) == {"test.requests", "test.latency", "test.size", "test.inflight", "test.queue"}
    kinds = dict(zip(m["name"], m["kind"]))
    assert kinds == {
        "test.requests": "sum",
        "test.latency": "histogram",
        "test.size": "exponential_histogram",
        "test.inflight": "sum",
        "test.queue": "gauge",
    }

    lat = m[m["name"] == "test.latency"].reset_index(drop=True)
    assert lat["bucket_bounds"][0] == [0.1, 0.5, 1.0, float("inf")]
    assert lat["bucket_counts"].tolist() == [[1, 2, 0, 1], [1, 2, 1, 1]]
    assert lat["count"].tolist() == [4, 5] and lat["count_delta"].tolist() == [4, 1]
    assert lat["sum_delta"].tolist() == pytest.approx([2.65, 0.7])
    assert lat["temporality"].tolist() == ["cumulative", "cumulative"]

    req = m[m["name"] == "test.requests"]
    assert req.groupby("route")["value_delta"].sum().to_dict() == {"/a": 5, "/b": 2}
    assert req[req["route"] == "/a"]["value_delta"].tolist() == [3, 2]

    size = m[m["name"] == "test.size"].iloc[0]
    assert (size["count"], size["sum"], size["avg"]) == (3, 7, pytest.approx(7 / 3))
    inflight = m[m["name"] == "test.inflight"]
    assert inflight["value"].tolist() == [2, 2]
    queue = m[m["name"] == "test.queue"]
    assert queue["value"].tolist() == [5, 7] and queue["value_delta"].isna().all()


def test_ll_metrics_delta_temporality_and_filters(exported):
    d = ll.metrics("test.calls", service="svc-delta")
    assert d["temporality"].tolist() == ["delta", "delta"]
    assert d["value"].tolist() == [4, 1] and d["value_delta"].tolist() == [4, 1]
    assert ll.metrics("test.calls", service="svc").empty
    both = ll.metrics(["test.calls", "test.queue"])
    assert set(both["name"]) == {"test.calls", "test.queue"}
    assert len(ll.metrics(until="2000-01-01")) == 0


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"source": "local"}, "not kept in the local store"),
        ({"name": 5}, "name=5"),
        ({"name": "a`b"}, "valid"),
        ({"service": ""}, "service="),
        ({"limit": 0}, "limit=0"),
        ({"since": "yesterday-ish"}, "since="),
    ],
)
def test_ll_metrics_bad_input_names_it(kwargs, needle):
    ll.configure(datakit="http://127.0.0.1:9")  # nothing is sent before the arguments are checked
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        ll.metrics(**kwargs)


def test_paging_is_consistent_and_sees_new_data(exported, tmp_path):
    q = "M::otel_service {service_name = 'svc'} ORDER BY time ASC"
    everything, total = _query(exported, q + " LIMIT 1000")
    pages = []
    for offset in range(0, total, 7):
        page, t = _query(exported, f"{q} LIMIT 7 OFFSET {offset}")
        assert t == total
        pages += page
    present = lambda ps: [{k: v for k, v in p.items() if v is not None} for p in ps]  # noqa: E731 (columns are per page)
    assert present(pages) == present(everything)
    provider = _provider(exported, "svc")
    provider.get_meter("tests").create_counter("test.late").add(1)
    provider.shutdown()
    after, total_after = _query(exported, q + " LIMIT 1000")
    assert total_after == total + 1 and after[-1]["test.late"] == 1


def test_otlp_json_gzip_metrics_are_read_back(collector):
    import gzip
    import json

    from google.protobuf import json_format
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="json-svc")))
    m = rm.scope_metrics.add().metrics.add(name="gen_ai.client.token.usage", unit="token")
    m.histogram.aggregation_temporality = 2
    dp = m.histogram.data_points.add(time_unix_nano=1_700_000_000_000_000_000, count=3, sum=40.0, min=4.0, max=20.0)
    dp.explicit_bounds.extend([16.0])
    dp.bucket_counts.extend([2, 1])
    dp.attributes.append(KeyValue(key="gen_ai.token.type", value=AnyValue(string_value="output")))
    body = gzip.compress(json.dumps(json_format.MessageToDict(req)).encode())
    r = httpx.post(
        collector + "/otel/v1/metrics",
        content=body,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert r.status_code == 200 and r.json() == {}
    bad = httpx.post(collector + "/otel/v1/metrics", content=body, headers={"Content-Type": "text/plain"})
    assert bad.status_code == 400
    ll.configure(datakit=collector)
    row = ll.metrics(service="json-svc", since=1_699_999_999).iloc[0]
    assert (row["name"], row["kind"], row["count"], row["sum"], row["min"], row["max"]) == (
        "gen_ai.client.token.usage",
        "histogram",
        3,
        40.0,
        4.0,
        20.0,
    )
    assert row["bucket_bounds"] == [16.0, float("inf")] and row["bucket_counts"] == [2, 1]
    assert row["gen_ai_token_type"] == "output" and row["time"] == pd.Timestamp(1_700_000_000_000, unit="ms", tz="UTC")
