"""``ll.spans()`` read-back from the local store at scale.

Fills a fresh store with N synthetic LLM spans (realistic values, 16 models × settings, short
prompt/completion text), then times ``ll.spans(source="local")`` against a baseline measured
in the same run: ``pandas.read_sql`` of the same columns (a plain row-wise read). Reports
spans/s (target ≥ 250,000 at 1,000,000 spans) and memory per span excluding the text columns
(target < 1 KiB).

    python bench/bench_spans.py [--spans 1000000]
"""

from __future__ import annotations

import argparse
import gc
import random
import tempfile
import time


def fill(store, n: int) -> None:
    from llmlab.store.database import SPAN_RECORD_COLUMNS

    rng = random.Random(1)
    models = [f"local/m{i}" for i in range(16)]
    t0 = 1_790_000_000_000_000_000
    batch = []
    for i in range(n):
        lat = rng.uniform(50, 3000)
        rec = {
            "trace_id": f"{rng.getrandbits(128):032x}",
            "span_id": f"{rng.getrandbits(64):016x}",
            "parent_id": None,
            "name": "openai.chat",
            "service": "llmlab",
            "sweep_id": f"sw-bench-{i // 10000:04d}",
            "call_id": f"{rng.getrandbits(80):020x}",
            "start_ns": t0 + i * 1_000_000,
            "end_ns": t0 + i * 1_000_000 + int(lat * 1e6),
            "is_llm": 1,
            "row_json": "{}",
            "attrs_json": "{}",
            "otlp": b"",
            "export_state": None,
            "latency_ms": lat,
            "ttft_ms": lat / 5,
            "tokens_per_s": 80.0,
            "provider": "local",
            "model": models[i % 16],
            "response_model": models[i % 16].split("/")[1],
            "temperature": (0.0, 0.7, 1.0)[i % 3],
            "top_p": (1.0, 0.9)[i % 2],
            "max_tokens": 64,
            "seed": i % 5,
            "repeat": i % 3,
            "prompt_id": f"p-{i % 500:010d}",
            "prompt": f"Explain topic {i % 500}.",
            "completion": "A short answer.",
            "finish_reason": "length",
            "input_tokens": 12,
            "output_tokens": 64,
            "total_tokens": 76,
            "tokens_estimated": 0,
            "status": "ok",
            "error": "",
            "queue_ms": 1.5,
            "attempts": 1,
            "itl_ms": 10.0,
            "workflow": None,
            "params": "",
        }
        batch.append(tuple(rec.get(c) for c in SPAN_RECORD_COLUMNS))
        if len(batch) == 50_000:
            store.put_spans(batch).result()
            batch = []
    if batch:
        store.put_spans(batch).result()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=1_000_000)
    args = parser.parse_args()
    import pandas as pd

    import llmlab as ll
    from llmlab.store import get_store
    from llmlab.store.migrations import SPAN_VALUE_COLUMNS

    cfg = ll.configure(home=tempfile.mkdtemp(prefix="llmlab-bench-spans-"), datakit=None)
    store = get_store()
    t = time.perf_counter()
    fill(store, args.spans)
    print(f"filled {args.spans:,} spans in {time.perf_counter() - t:.1f}s")
    gc.collect()
    t = time.perf_counter()
    ll.spans(source="local", limit=10)  # the first read also writes the Parquet segments
    first_s = time.perf_counter() - t

    gc.collect()
    t = time.perf_counter()
    df = ll.spans(source="local")
    llmlab_s = time.perf_counter() - t
    assert len(df) == args.spans, len(df)
    text = df["prompt"].memory_usage(deep=True, index=False) + df["completion"].memory_usage(deep=True, index=False)
    per_span = (df.memory_usage(deep=True, index=False).sum() - text) / len(df)

    import sqlite3

    cols = ", ".join(
        ["trace_id", "span_id", "sweep_id", "call_id", "service", "start_ns", "end_ns"]
        + [f'"{c}"' for c, _ in SPAN_VALUE_COLUMNS]
    )
    con = sqlite3.connect(cfg.db_path)
    gc.collect()
    t = time.perf_counter()
    base = pd.read_sql(f"SELECT {cols} FROM spans WHERE is_llm = 1 ORDER BY start_ns", con)
    base_s = time.perf_counter() - t
    assert len(base) == args.spans

    print(f"ll.spans(source='local'): {args.spans / llmlab_s:,.0f} spans/s ({llmlab_s:.2f}s), canonical + priced frame")
    print(
        f"baseline pandas.read_sql of the same columns: {args.spans / base_s:,.0f} spans/s ({base_s:.2f}s), raw rows only"
    )
    print(f"first read after writing (builds the columnar segments once): {first_s:.2f}s")
    print(f"speed ratio llmlab/baseline = {base_s / llmlab_s:.2f}; target >= 250,000 spans/s")
    print(f"memory per span excluding prompt/completion text: {per_span:.0f} bytes (target < 1024)")


if __name__ == "__main__":
    main()
