"""Ingest throughput of the embedded collector: `python bench/bench_collector.py`.

Real OTLP bytes: spans made by the OTel SDK (an OpenLLMetry-like `openai.chat` span with gen_ai
attributes and ~5 `gen_ai.content.completion.chunk` events), encoded 512 per
ExportTraceServiceRequest by the exporter's own `encode_spans`. Sender processes POST them over
real HTTP (httpx, keep-alive) to a BackgroundServer collector in this process; every span has a
unique id, and the stored count is checked against the sent count (zero loss).

Baselines in the same setup: the bare protobuf decode rate of the same batches, and the HTTP
round-trip rate of a trivial endpoint (GET /v1/ping) with the same senders.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BATCH = 512


def make_batches(n_batches: int, seed: int) -> list[bytes]:
    import random

    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    rnd = random.Random(seed)
    exporter = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": "llmlab-bench"}))
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = tp.get_tracer("opentelemetry.instrumentation.openai.v1", "0.62.4")
    batches = []
    for _ in range(n_batches):
        exporter.clear()
        for i in range(BATCH):
            with tracer.start_as_current_span("openai.chat", kind=SpanKind.CLIENT) as span:
                t = rnd.choice([0.0, 0.7, 1.0])
                span.set_attributes(
                    {
                        "llm.request.type": "chat",
                        "gen_ai.system": "openai",
                        "gen_ai.provider.name": "openai",
                        "gen_ai.request.model": "gpt-4o-mini",
                        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                        "gen_ai.request.temperature": t,
                        "gen_ai.request.top_p": 1.0,
                        "gen_ai.request.max_tokens": 64,
                        "gen_ai.openai.api_base": "http://127.0.0.1:8000/v1",
                        "llm.is_streaming": True,
                        "gen_ai.prompt.0.role": "user",
                        "gen_ai.prompt.0.content": f"Summarize the following text in one sentence: item {i} " * 3,
                        "gen_ai.completion.0.role": "assistant",
                        "gen_ai.completion.0.content": "A short summary of the text, " * 4,
                        "gen_ai.completion.0.finish_reason": "stop",
                        "gen_ai.usage.prompt_tokens": 42,
                        "gen_ai.usage.completion_tokens": 24,
                        "llm.usage.total_tokens": 66,
                        "traceloop.workflow.name": "bench",
                        "traceloop.association.properties.sweep_id": "sw-bench",
                        "traceloop.association.properties.call_id": f"c{i:06d}",
                    }
                )
                for k in range(5):
                    span.add_event("gen_ai.content.completion.chunk", {"chunk.index": k})
        batches.append(encode_spans(exporter.get_finished_spans()).SerializeToString())
    tp.shutdown()
    return batches


def _sender(
    url: str,
    path: str,
    batches: list[bytes],
    repeat_get: int,
    out: mp.Queue[tuple[int, float, float]],
    barrier: mp.synchronize.Barrier,
) -> None:
    import httpx

    headers = {"Content-Type": "application/x-protobuf"}
    with httpx.Client(timeout=60) as client:
        client.get(url + "/v1/ping")  # connect and warm up before the clock starts
        barrier.wait()
        t0 = time.perf_counter()
        ok = 0
        if repeat_get:
            for _ in range(repeat_get):
                ok += client.get(url + "/v1/ping").status_code == 200
        else:
            for body in batches:
                r = client.post(url + path, content=body, headers=headers)
                ok += r.status_code == 200
        out.put((ok, t0, time.perf_counter()))


def _run_senders(url: str, per_sender: list[list[bytes]], repeat_get: int = 0) -> tuple[int, float]:
    ctx = mp.get_context("fork")
    q: mp.Queue[tuple[int, float, float]] = ctx.Queue()
    barrier = ctx.Barrier(len(per_sender))
    procs = [ctx.Process(target=_sender, args=(url, "/otel/v1/traces", b, repeat_get, q, barrier)) for b in per_sender]
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    # wall clock from the common start (barrier) to the last sender's last response
    elapsed = max(r[2] for r in results) - min(r[1] for r in results)
    return sum(r[0] for r in results), elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=80, help="batches of 512 spans (default 80 = 40,960 spans)")
    ap.add_argument("--senders", type=int, default=2)
    args = ap.parse_args()

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from llmlab.collector import background, create_app

    t0 = time.perf_counter()
    template = make_batches(4, seed=1)
    # unique ids per batch: re-encode the template batches with fresh ids (cheap, keeps real SDK bytes)
    batches: list[bytes] = []
    import random

    rnd = random.Random(7)
    for i in range(args.batches):
        req = ExportTraceServiceRequest()
        req.ParseFromString(template[i % len(template)])
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    span.trace_id = rnd.randbytes(16)
                    span.span_id = rnd.randbytes(8)
        batches.append(req.SerializeToString())
    n_spans = args.batches * BATCH
    print(
        f"generated {n_spans} spans in {len(batches)} batches ({sum(map(len, batches)) / len(batches) / 1024:.0f} KiB/batch)"
        f" in {time.perf_counter() - t0:.1f}s",
        flush=True,
    )

    # baseline 1: bare protobuf decode of the same batches
    t0 = time.perf_counter()
    for body in batches:
        ExportTraceServiceRequest().ParseFromString(body)
    decode_rate = n_spans / (time.perf_counter() - t0)

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(os.path.join(tmp, "collector.db"))
        srv = background(app).start()
        try:
            per_sender = [batches[i :: args.senders] for i in range(args.senders)]
            cpu0 = time.process_time()  # this process = the collector (senders are other processes)
            ok, elapsed = _run_senders(srv.url, per_sender)
            server_cpu = time.process_time() - cpu0
            stored = app.state.storage.count("spans")
            ingest_rate = n_spans / elapsed
            # baseline 2: trivial endpoint round trips with the same senders
            n_get = 400
            ok_get, el_get = _run_senders(srv.url, [[] for _ in range(args.senders)], repeat_get=n_get)
            rtt_rate = ok_get / el_get
            # query back: the newest 1000 points with message
            from llmlab.collector import dql

            t0 = time.perf_counter()
            res = dql.run_request(
                app.state.storage, {"queries": [{"query": "T::re(`.*`):(`trace_id`,`message`) LIMIT 1000"}]}
            )
            q_elapsed = time.perf_counter() - t0
        finally:
            srv.stop()

    loss = n_spans - stored
    rows = [
        ("spans sent", f"{n_spans}"),
        ("requests accepted", f"{ok}/{len(batches)}"),
        ("spans stored", f"{stored} (loss {loss})"),
        ("ingest, spans/s (OTLP protobuf over HTTP)", f"{ingest_rate:,.0f}"),
        ("collector CPU per span, µs (all threads)", f"{server_cpu / n_spans * 1e6:.1f}"),
        ("  = spans/s per fully used core", f"{n_spans / server_cpu:,.0f}"),
        ("  baseline: bare protobuf decode, spans/s", f"{decode_rate:,.0f}"),
        ("  ingest / decode", f"{ingest_rate / decode_rate:.2f}"),
        ("  baseline: trivial GET round trips/s", f"{rtt_rate:,.0f}"),
        ("  ingest requests/s / trivial round trips/s", f"{ingest_rate / BATCH / rtt_rate:.3f}"),
        ("query 1000 points with message, s", f"{q_elapsed:.3f} ({res[0]['total_hits']} hits)"),
        ("target", "≥ 20,000 spans/s, zero loss"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\nembedded collector ingest ({args.senders} senders, {os.cpu_count()} CPUs)")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    if loss or ok != len(batches):
        sys.exit("LOSS: not every span was stored")


if __name__ == "__main__":
    main()
