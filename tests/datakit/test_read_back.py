"""ll.spans(): both OpenLLMetry attribute generations, DataKit's underscore columns, paging, CLI export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pandas as pd
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

import llmlab as ll
from llmlab.readback import datakit_query

NEW_GEN = {
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.request.temperature": 0.3,
    "gen_ai.request.top_p": 0.9,
    "gen_ai.request.max_tokens": 128,
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.input.messages": json.dumps(
        [
            {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
            {"role": "user", "parts": [{"type": "text", "content": "What is DataKit?"}]},
        ]
    ),
    "gen_ai.output.messages": json.dumps(
        [{"role": "assistant", "parts": [{"type": "text", "content": "A collector."}], "finish_reason": "stop"}]
    ),
    "gen_ai.usage.input_tokens": 21,
    "gen_ai.usage.output_tokens": 4,
    "gen_ai.usage.total_tokens": 25,
    "traceloop.workflow.name": "ask_workflow",
    "traceloop.association.properties.user_id": "u-42",
}
LEGACY = {
    "gen_ai.system": "OpenAI",
    "llm.request.type": "chat",
    "gen_ai.request.model": "moonshot-v1-8k",
    "gen_ai.request.temperature": 0.3,
    "gen_ai.prompt.0.role": "system",
    "gen_ai.prompt.0.content": "helper",
    "gen_ai.prompt.1.role": "user",
    "gen_ai.prompt.1.content": "你好，DataKit",
    "gen_ai.completion.0.role": "assistant",
    "gen_ai.completion.0.content": "您好",
    "gen_ai.completion.0.finish_reason": "stop",
    "gen_ai.usage.prompt_tokens": 30,
    "gen_ai.usage.completion_tokens": 7,
    "llm.usage.total_tokens": 37,
    "traceloop.workflow.name": "ask_workflow",
    "llm.is_streaming": True,
}


def _emit(url: str, service: str, attrs: dict, *, error: bool = False, chunks: int = 3) -> None:
    """A span from 'another app' via the real OTel SDK and OTLP/HTTP exporter."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=url + "/otel/v1/traces")))
    tracer = provider.get_tracer("test-app")
    start = time.time_ns()
    with tracer.start_as_current_span("ask_workflow.workflow"):
        span = tracer.start_span("openai.chat", kind=SpanKind.CLIENT, attributes=attrs, start_time=start)
        for i in range(chunks):
            span.add_event("gen_ai.content.completion.chunk", timestamp=start + (i + 1) * 50_000_000)
        if error:  # as the OpenAI instrumentation does: an exception event and the status
            span.record_exception(RuntimeError("boom: upstream 500"))
            span.set_status(Status(StatusCode.ERROR, "boom: upstream 500"))
        span.end(end_time=start + 400_000_000)
    provider.shutdown()


def test_both_attribute_generations_fill_the_canonical_columns(collector_url):
    _emit(collector_url, "new-app", NEW_GEN)
    _emit(collector_url, "legacy-app", LEGACY, error=True)
    df = ll.spans(source="datakit").set_index("service")
    assert set(df.index) == {"new-app", "legacy-app"}  # workflow spans are not LLM rows
    new, old = df.loc["new-app"], df.loc["legacy-app"]
    assert new["prompt"] == "What is DataKit?" and new["completion"] == "A collector."
    assert new["finish_reason"] == "stop" and new["model"] == "gpt-4o-mini"
    assert (new["input_tokens"], new["output_tokens"], new["total_tokens"]) == (21, 4, 25)
    assert new["temperature"] == pytest.approx(0.3) and new["top_p"] == pytest.approx(0.9) and new["max_tokens"] == 128
    assert new["workflow"] == "ask_workflow" and new["assoc.user_id"] == "u-42"
    assert new["latency_ms"] == pytest.approx(400.0) and new["ttft_ms"] == pytest.approx(50.0)
    assert new["cost_usd"] > 0  # dated response model priced via the table
    assert old["prompt"] == "你好，DataKit" and old["completion"] == "您好"
    assert (old["input_tokens"], old["output_tokens"], old["total_tokens"]) == (30, 7, 37)
    assert old["provider"] == "openai" and old["model"] == "moonshot-v1-8k"
    assert old["status"] == "error" and "boom" in old["error"]
    assert pd.isna(old["sweep_id"]) and pd.isna(old["repeat"])  # not an llmlab sweep: NA


def test_underscore_customer_tag_columns_are_read_when_message_lacks_them():
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
        "gen_ai_request_temperature": "0.3",
        "gen_ai_system": "OpenAI",
        "gen_ai_prompt_1_content": "hello",
        "gen_ai_completion_0_content": "hi there",
        "llm_request_type": "chat",
        "traceloop_workflow_name": "ask_workflow",
    }
    row = datakit_query.point_to_row(point)
    assert row["model"] == "moonshot-v1-8k" and row["temperature"] == 0.3
    assert row["prompt"] == "hello" and row["completion"] == "hi there" and row["workflow"] == "ask_workflow"
    assert row["latency_ms"] == 250.0 and row["parent_id"] is None


def test_dql_read_back_pages_through_large_results(collector_url, monkeypatch):
    for i in range(23):
        _emit(collector_url, "pager", {**NEW_GEN, "gen_ai.usage.output_tokens": i}, chunks=1)
    monkeypatch.setattr(datakit_query, "PAGE", 5)
    df = ll.spans(source="datakit", service="pager")
    assert sorted(df["output_tokens"].tolist()) == list(range(23))
    assert len(ll.spans(source="datakit", limit=7)) == 7


def test_spans_cli_writes_csv_parquet_jsonl(tmp_path):
    ll.configure(datakit=None)
    res = ll.Sweep(prompts=["What is a cloud?"], temperature=[0.0, 0.6], max_tokens=5).run(display=False)
    from llmlab.tracing import flush

    flush()
    env = {**os.environ, "LLMLAB_DATAKIT_URL": "none"}
    for ext in ("csv", "parquet", "jsonl"):
        out = tmp_path / f"spans.{ext}"
        proc = subprocess.run(
            [sys.executable, "-m", "llmlab", "spans", "--sweep", res.sweep_id, "--source", "local", "--out", str(out)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        back = {"csv": pd.read_csv, "parquet": pd.read_parquet, "jsonl": lambda p: pd.read_json(p, lines=True)}[ext](
            out
        )
        assert len(back) == 2 and set(back["call_id"]) == set(res.df["call_id"])
        assert "latency_ms" in back and "completion" in back
    bad = subprocess.run(
        [sys.executable, "-m", "llmlab", "spans", "--out", str(tmp_path / "x.xlsx")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 1 and bad.stderr.startswith("Error: --out=") and "Traceback" not in bad.stderr
