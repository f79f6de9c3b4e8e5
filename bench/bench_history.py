"""Experiment history costs, each against a baseline measured in the same run:

1. recording overhead per sweep: ``start_experiment``/``finish_experiment`` (git, source, versions,
   metadata columns) vs the bare ``store.start_sweep``/``finish_sweep`` they wrap, and as a share
   of a small live sweep's wall time;
2. ``ll.load(id)`` vs getting the same frame by re-running the sweep (live, and from the cache);
3. ``ll.sweeps()`` over a home with many experiments vs a bare ``SELECT`` of the same rows;
4. export + import of one sweep vs ``ll.load`` of it.

    python bench/bench_history.py [--calls 96] [--sweeps 1000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _median_time(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=96, help="calls in the benchmark sweep (multiple of 4)")
    parser.add_argument("--sweeps", type=int, default=1000, help="experiments in the home for the listing figure")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="llmlab-bench-history-"))
    os.environ["LLMLAB_HOME"] = str(tmp / "home")
    os.environ["LLMLAB_DATAKIT_URL"] = "none"
    os.environ["LLMLAB_LOCAL_DELAY_MS"] = "0"
    import llmlab as ll
    from llmlab import history
    from llmlab.run import provenance
    from llmlab.store import get_store

    store = get_store()
    prompts = [f"Explain item number {i} briefly." for i in range(args.calls // 4)]
    sweep = ll.Sweep(prompts=prompts, models=["local/tiny"], temperature=[0.0, 0.5, 0.8, 1.0], max_tokens=32, seed=1)
    sweep.run(display=False, cache=False)  # warm up: model server, tracing, imports

    # 1. recording overhead
    spec, info = sweep.spec(), {"calls": len(sweep.calls)}
    rows = [{"status": "ok", "cached": False, "input_tokens": 10, "output_tokens": 20, "cost_usd": 1e-6}] * len(
        sweep.calls
    )
    n = [0]

    def bare() -> None:
        n[0] += 1
        store.start_sweep(f"bare-{n[0]}", "b", spec, info)
        store.finish_sweep(f"bare-{n[0]}", "finished", {"ok": len(rows)})

    def recorded() -> None:
        n[0] += 1
        provenance.start_experiment(store, f"rec-{n[0]}", "r", spec, {**info, **provenance.experiment_context(sweep)})
        provenance.finish_experiment(store, f"rec-{n[0]}", "finished", {"ok": len(rows)}, rows, [], 1.0)

    t_bare = _median_time(bare, 30)
    t_rec = _median_time(recorded, 30)
    t_live = _median_time(lambda: sweep.run(display=False, cache=False), 3)
    print(
        f"recording: bare {t_bare * 1e3:.2f} ms, with history {t_rec * 1e3:.2f} ms ({t_rec / t_bare:.2f}x); "
        f"extra {((t_rec - t_bare) / t_live) * 100:.2f}% of a {len(sweep.calls)}-call live sweep ({t_live:.2f} s)"
    )

    # 2. load vs re-run
    res = sweep.run(display=False, cache=False)
    t_load = _median_time(lambda: ll.load(res.sweep_id), 10)
    t_cached = _median_time(lambda: sweep.run(display=False), 3)
    print(
        f"ll.load: {t_load * 1e3:.1f} ms; live re-run {t_live / t_load:.0f}x slower, cached re-run {t_cached / t_load:.1f}x slower"
    )

    # 3. listing many experiments
    existing = len(ll.sweeps())
    for i in range(max(0, args.sweeps - existing)):
        provenance.start_experiment(store, f"many-{i}", f"name-{i % 10}", spec, {"calls": 4})
    store.flush()
    t_list = _median_time(lambda: ll.sweeps(), 5)
    t_raw = _median_time(lambda: store.read("SELECT * FROM sweeps ORDER BY created_at DESC"), 5)
    t_tag = _median_time(lambda: ll.sweeps(name="name-3"), 5)
    print(
        f"ll.sweeps() over {len(ll.sweeps())} experiments: {t_list * 1e3:.1f} ms ({t_list / t_raw:.1f}x a bare SELECT "
        f"of {t_raw * 1e3:.1f} ms); filtered by name: {t_tag * 1e3:.1f} ms"
    )

    # 4. export + import
    out = tmp / "exp.json.gz"
    t_export = _median_time(lambda: history.export_sweep(res.sweep_id, out), 5)
    ll.configure(home=tmp / "home2", datakit=None)
    t_import = _median_time(lambda: history.import_sweep(out, replace=True), 5)
    print(
        f"export {t_export * 1e3:.1f} ms + import {t_import * 1e3:.1f} ms of a {len(res.df)}-call sweep "
        f"({out.stat().st_size / 1024:.0f} KiB gzip) = {(t_export + t_import) / t_load:.1f}x one ll.load"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
