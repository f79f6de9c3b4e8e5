"""M:: metrics query: what the SQL pushdown of a metric-name filter saves.

Simulates one hour of an OpenLLMetry app exporting every 5 s (cumulative: every series is sent
again at every export): 720 exports × the 10 series the OpenAI instrumentation keeps for one
model, stored through the collector's own ingest code. Times ``ll.metrics(name)`` (the name
filter is pushed down to SQL) against ``ll.metrics()`` + filtering in pandas (the baseline, as a
reader without the pushdown would have to do), both over HTTP to the embedded collector.

    python bench/bench_metrics_query.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

import llmlab as ll
from llmlab.collector import background, create_app
from llmlab.collector.ingest import metric_rows

EXPORTS, STEP_NS = 720, 5_000_000_000
TOKEN_BOUNDS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]
SECOND_BOUNDS = [0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000]


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _request(i: int, t0: int) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend([_kv("service.name", "bench_app"), _kv("telemetry.sdk.language", "python")])
    sm = rm.scope_metrics.add()
    t = t0 + i * STEP_NS
    common = [_kv("gen_ai.response.model", "tiny"), _kv("gen_ai.operation.name", "chat")]
    for name, unit, bounds, extra in [
        ("gen_ai.client.token.usage", "token", TOKEN_BOUNDS, [_kv("gen_ai.token.type", "input")]),
        ("gen_ai.client.token.usage", "token", TOKEN_BOUNDS, [_kv("gen_ai.token.type", "output")]),
        ("gen_ai.client.operation.duration", "s", SECOND_BOUNDS, []),
        ("gen_ai.client.operation.duration", "s", SECOND_BOUNDS, [_kv("error.type", "APIError")]),
        ("gen_ai.server.time_to_first_token", "s", SECOND_BOUNDS, []),
        ("llm.chat_completions.streaming_time_to_generate", "s", SECOND_BOUNDS, []),
    ]:
        m = sm.metrics.add(name=name, unit=unit)
        m.histogram.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
        dp = m.histogram.data_points.add(time_unix_nano=t, start_time_unix_nano=t0, count=i + 1, sum=3.0 * (i + 1))
        dp.attributes.extend(common + extra)
        dp.explicit_bounds.extend(bounds)
        dp.bucket_counts.extend([0, i + 1] + [0] * (len(bounds) - 1))
    for name, unit, extra in [
        ("gen_ai.client.generation.choices", "choice", []),
        ("gen_ai.client.generation.choices", "choice", [_kv("gen_ai.response.finish_reason", "stop")]),
        ("llm.openai.chat_completions.exceptions", "time", [_kv("error.type", "APIError")]),
        ("gen_ai.client.generation.choices", "choice", [_kv("gen_ai.response.finish_reason", "length")]),
    ]:
        m = sm.metrics.add(name=name, unit=unit)
        m.sum.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
        m.sum.is_monotonic = True
        dp = m.sum.data_points.add(time_unix_nano=t, start_time_unix_nano=t0, as_int=i + 1)
        dp.attributes.extend(common + extra)
    return req


def _best(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Path(tmp) / "collector.db")
        t0 = time.time_ns() - EXPORTS * STEP_NS
        rows = [r for i in range(EXPORTS) for r in metric_rows(_request(i, t0))]
        app.state.storage.insert_metrics(rows)
        server = background(app).start()
        try:
            ll.configure(home=tmp, datakit=server.url)
            name = "gen_ai.client.token.usage"
            pushed = _best(lambda: ll.metrics(name))
            full = ll.metrics()
            baseline = _best(lambda: ll.metrics()[lambda d: d["name"] == name])
            assert len(ll.metrics(name)) == len(full[full["name"] == name]) == 2 * EXPORTS
        finally:
            server.stop()
    print(f"{len(rows)} stored data points ({EXPORTS} exports x {len(rows) // EXPORTS} series)")
    print(f"ll.metrics({name!r}), name pushed down to SQL: {pushed * 1000:.0f} ms")
    print(f"ll.metrics() then filter in pandas (baseline):         {baseline * 1000:.0f} ms")
    print(f"ratio pushdown / baseline: {pushed / baseline:.2f}")


if __name__ == "__main__":
    main()
