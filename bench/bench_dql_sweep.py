"""``ll.spans(sweep_id=…)`` over DQL in a busy workspace: points read vs the sweep's points.

A DataKit 1.84 stand-in (``llmlab.collector.standin``) whose ``customer_tags`` list llmlab's call
attributes (docs/datakit.md) holds one real 1,000-call sweep (embedded model, traced, exported
over OTLP) and N unrelated spans (default 1,000,000, written straight into its storage, spread
over the sweep's time window — the worst case for a window scan). Reports the points the
stand-in returned to ``ll.spans(sweep_id=…)`` against the sweep's own points (target ≤ 2×), the
queries it took, and the time.

    python bench/bench_dql_sweep.py [--unrelated 1000000] [--calls 1000]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path


def _fill_unrelated(storage, n: int, start_ms: int, end_ms: int) -> None:
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    from llmlab.collector.storage import SpanGroup

    rng = random.Random(7)
    pb = Span(name="GET /api/orders", kind=Span.SPAN_KIND_SERVER).SerializeToString()
    chunk = 100_000
    for base in range(0, n, chunk):
        rows = []
        for i in range(base, min(n, base + chunk)):
            t = rng.randint(start_ms, end_ms)
            rows.append(
                [None, f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(64):016x}", "0", f"shop-{i % 7}", "ok",
                 "server", "GET /api/orders", t * 1000, 12_000, t, None, pb, t]
            )  # fmt: skip
        storage.insert_spans([SpanGroup(f"bench-{base}", rows[0][5], "{}", "{}", rows)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--unrelated", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="llmlab-bench-dql-"))
    os.environ["LLMLAB_HOME"] = str(tmp / "home")

    import pandas as pd

    import llmlab as ll
    from llmlab.collector import DEFAULT_CUSTOMER_TAGS, background
    from llmlab.collector.standin import create_standin_app
    from llmlab.schema import SWEEP_CUSTOMER_TAGS
    from llmlab.store import get_store
    from llmlab.tracing import flush
    from llmlab.tracing.export import drain

    app = create_standin_app(tmp / "standin.db", customer_tags=DEFAULT_CUSTOMER_TAGS + SWEEP_CUSTOMER_TAGS)
    server = background(app).start()
    try:
        config = ll.configure(datakit=server.url)
        t0 = time.perf_counter()
        res = ll.Sweep(
            prompts=[f"Question number {i}?" for i in range(args.calls // 2)], temperature=[0.0, 0.7], max_tokens=2
        ).run(display=False, concurrency=16)
        flush()
        assert drain(config, deadline_s=None)["pending"] == 0
        print(f"sweep: {len(res.df)} calls in {time.perf_counter() - t0:.1f}s")
        record = get_store(config.home).sweep_record(res.sweep_id)
        lo = pd.Timestamp(record["created_at"]).value // 1_000_000 - 50_000
        hi = pd.Timestamp(record["finished_at"]).value // 1_000_000 + 50_000
        t0 = time.perf_counter()
        _fill_unrelated(app.state.storage, args.unrelated, lo, hi)
        print(f"unrelated: {args.unrelated:,} spans inserted in {time.perf_counter() - t0:.1f}s")
        sweep_points = (
            app.state.storage.reader()
            .execute("SELECT count(*) FROM spans WHERE json_extract(tags, '$.llmlab_sweep_id') = ?", (res.sweep_id,))
            .fetchone()[0]
        )
        state = app.state.standin
        state.points_returned, state.queries[:] = 0, []
        t0 = time.perf_counter()
        df = ll.spans(sweep_id=res.sweep_id, source="datakit")
        took = time.perf_counter() - t0
        assert len(df) == len(res.df), (len(df), len(res.df))
        ratio = state.points_returned / sweep_points
        print(
            f"ll.spans(sweep_id=...): {len(df)} rows in {took:.2f}s, {len(state.queries)} queries, "
            f"{state.points_returned:,} points read for the sweep's {sweep_points:,} points "
            f"in a workspace of {sweep_points + args.unrelated:,}: {ratio:.2f}x (target <= 2x)"
        )
        assert ratio <= 2.0
    finally:
        server.stop()


if __name__ == "__main__":
    main()
