"""ll.metrics() against DataKit 1.84's metric point shape (no __temporality, 0 for unset min/max)."""

from __future__ import annotations

import pandas as pd
import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

import llmlab as ll
from llmlab.readback.metrics import points_to_frame


def _export(url: str) -> None:
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=url + "/otel/v1/metrics"), export_interval_millis=3_600_000
    )
    provider = MeterProvider(
        metric_readers=[reader], resource=Resource.create({"service.name": "智能助手"}), shutdown_on_exit=False
    )
    meter = provider.get_meter("opentelemetry.instrumentation.openai")
    choices = meter.create_counter("gen_ai.client.generation.choices", unit="choice")
    tokens = meter.create_histogram("gen_ai.client.token.usage", unit="token")
    choices.add(2, {"gen_ai.response.finish_reason": "stop"})
    tokens.record(10, {"gen_ai.token.type": "input"})
    assert provider.force_flush()
    choices.add(3, {"gen_ai.response.finish_reason": "stop"})
    provider.shutdown()


def test_openllmetry_sums_are_sums_without_the_temporality_tag(collector_url):
    _export(collector_url)
    m = ll.metrics("gen_ai.client.generation.choices", service="智能助手")
    assert list(m["kind"]) == ["sum", "sum"]
    assert list(m["value"]) == [2.0, 5.0] and list(m["value_delta"]) == [2.0, 3.0]
    h = ll.metrics("gen_ai.client.token.usage", service="智能助手")
    assert set(h["kind"]) == {"histogram"} and h["sum"].iloc[0] == 10.0


def test_unset_histogram_min_max_written_as_zero_read_as_na():
    df = points_to_frame([{"time": 1, "h_count": 2, "h_sum": 3.5, "h_min": 0.0, "h_max": 0.0, "unit": "s"}])
    assert pd.isna(df.loc[0, "min"]) and pd.isna(df.loc[0, "max"])
    zeros = points_to_frame([{"time": 1, "h_count": 2, "h_sum": 0.0, "h_min": 0.0, "h_max": 0.0}])
    assert zeros.loc[0, "min"] == pytest.approx(0.0)
