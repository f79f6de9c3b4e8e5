"""Does a misbehaving DataKit slow a sweep down? `python bench/bench_export_faults.py [--calls 200] [--rounds 3]`

One process runs the same sweep (``local/tiny`` through a FaultServer without faults, cache off,
concurrency 16) against DataKit in five states, interleaved round by round, shuffled, so that machine noise
hits every state alike: healthy (the embedded collector, the baseline), down (nothing listens),
flapping (every other export request 503), slow (every export request hangs until the round
ends), and answer-losing (stored, then 502, so batches are re-sent). Also with export off.
Prints the median wall time per state and its ratio to healthy; the promise is ≤ 1.10×. After
each round every span is replayed and checked to be stored at the collector exactly once.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backlog", type=int, default=0, help="only time `llmlab replay` of N spooled spans")
    args = parser.parse_args()
    if args.backlog:
        replay_backlog(args.backlog)
        return

    import llmlab as ll
    from llmlab.testing import FaultServer
    from llmlab.tracing import flush
    from llmlab.tracing.export import drain
    from tests.reliability.collector_faults import GatedCollector, free_port

    tmp = Path(tempfile.mkdtemp(prefix="llmlab-bench-export-"))
    fault = FaultServer().start()
    ll.provider("fault", base_url=fault.base_url, api_key_env=None)
    prompts = [f"Tell me about the weather, question {i}" for i in range(args.calls // 4)]
    sweep = ll.Sweep(prompts=prompts, models=["fault/tiny"], temperature=[0.0, 0.7], top_p=[1.0, 0.9], max_tokens=24)
    states = ["healthy", "off", "down", "flapping", "slow", "losing"]
    times: dict[str, list[float]] = {s: [] for s in states}
    ll.configure(home=tmp / "warm", datakit=None)
    sweep.run(display=False, cache=False, concurrency=16)  # warm-up: imports, tracing set-up, model load
    order = random.Random(7)
    for rnd in range(args.rounds):
        for state in order.sample(states, len(states)):  # no state always runs first or last
            collector = None
            if state == "off":
                datakit = None
            elif state == "down":
                datakit = f"http://127.0.0.1:{free_port()}"
            else:
                collector = GatedCollector(tmp / f"{state}-{rnd}" / "collector.db")
                collector.mode = {"flapping": "flap", "losing": "lose"}.get(state, "ok")
                if state == "slow":
                    collector.open.clear()
                datakit = collector.url
            config = ll.configure(home=tmp / f"{state}-{rnd}", datakit=datakit)
            start = time.perf_counter()
            res = sweep.run(display=False, cache=False, concurrency=16)
            times[state].append(time.perf_counter() - start)
            assert (res.df["status"] == "ok").all()
            flush()
            if collector is not None:
                collector.open.set()
                for _ in range(50):
                    if drain(config)["pending"] == 0:
                        break
                keys = {tuple(r) for r in ll.store.get_store(config.home).read("SELECT trace_id, span_id FROM spans")}
                stored = collector.stored_keys()
                assert len(stored) == len(set(stored)) == len(keys), (state, len(stored), len(keys))
                ll.configure(home=tmp / "idle", datakit=None)  # stop this round's exporter before its collector
                collector.stop()
    fault.stop()
    base = statistics.median(times["healthy"])
    print(
        f"{args.calls} calls per sweep, {args.rounds} rounds, medians (every span delivered exactly once after replay)"
    )
    print(f"{'DataKit':<10} {'wall s':>8} {'vs healthy':>11}")
    for state in states:
        med = statistics.median(times[state])
        print(f"{state:<10} {med:8.2f} {med / base:10.2f}x")


def replay_backlog(n: int) -> None:
    """Spool ``n`` spans (real OTLP bytes, 20 attributes each) as after a long outage, then time
    ``drain`` (what ``llmlab replay`` runs) into the embedded collector; check each is stored once."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    import llmlab as ll
    from llmlab.collector import background, create_app
    from llmlab.store import get_store
    from llmlab.tracing.export import drain

    tmp = Path(tempfile.mkdtemp(prefix="llmlab-bench-replay-"))
    config = ll.configure(home=tmp / "home", datakit=None)
    store = get_store(config.home)
    t0 = 1_790_000_000_000_000_000
    rows = []
    for i in range(n):
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="llmlab")))
        span = rs.scope_spans.add().spans.add()
        span.trace_id, span.span_id = i.to_bytes(16, "big"), (i + 1).to_bytes(8, "big")
        span.name, span.start_time_unix_nano, span.end_time_unix_nano = "openai.chat", t0 + i, t0 + i + 10**9
        for k in range(20):
            span.attributes.append(KeyValue(key=f"gen_ai.attr_{k}", value=AnyValue(string_value=f"value {k} of {i}")))
        rows.append((span.trace_id.hex(), span.span_id.hex(), req.SerializeToString(), t0 + i))

    def insert(db):
        db.executemany(
            "INSERT INTO spans (trace_id, span_id, name, service, start_ns, end_ns, is_llm, row_json,"
            " attrs_json, otlp, export_state) VALUES (?, ?, 'openai.chat', 'llmlab', ?, ?, 0, '{}', '{}', ?, 0)",
            [(t, s_, start, start + 10**9, otlp) for t, s_, otlp, start in rows],
        )

    store.write(insert)
    collector = create_app(tmp / "collector.db")
    server = background(collector).start()
    target = ll.configure(home=tmp / "home", datakit=server.url)
    ll.configure(home=tmp / "idle", datakit=None)  # replay by hand only, as `llmlab replay` does
    start = time.perf_counter()
    result = drain(target, deadline_s=None)
    took = time.perf_counter() - start
    stored = collector.state.collector.stats["spans_stored"]
    server.stop()
    assert result["pending"] == 0 and stored == n, (result, stored)
    print(f"replayed {n:,} spooled spans in {took:.1f}s: {n / took:,.0f} spans/s, each stored once")


if __name__ == "__main__":
    main()
