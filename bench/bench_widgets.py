"""Benchmark: the live grid's front-end message rate and kernel CPU cost on a 200-cell sweep.

A 200-call sweep on the embedded model (no per-token delay: tokens arrive as fast as the server
sends them) runs in this process, alternately with ``display=False`` (the baseline) and with a
:class:`llmlab.view.widgets.SweepGrid` subscribed to the runner's events. Every message a widget sends
to the front end goes through ``Widget._send``; the benchmark counts them and JSON-encodes each,
as the kernel's comm would. Reported: front-end messages per second, token events per message,
and process CPU seconds with the grid / without it (same run, same machine).

    python bench/bench_widgets.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import llmlab as ll
from llmlab.events import EventBus
from llmlab.run.runner import RunHandle
from llmlab.sweep import run_sync
from llmlab.view.widgets import SweepGrid


def _sweep() -> ll.Sweep:
    prompts = [f"Tell me something about topic number {i}." for i in range(50)]
    return ll.Sweep(prompts=prompts, models=["local/tiny"], temperature=[0.0, 0.5, 1.0, 1.5], max_tokens=64, seed=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    os.environ["LLMLAB_LOCAL_DELAY_MS"] = "0"
    ll.configure(home=tempfile.mkdtemp(prefix="llmlab-bench-widgets-"), datakit=None)

    from ipywidgets import Widget

    sent: list[float] = []
    original = Widget._send

    def counting(self, msg, buffers=None):  # what the kernel's comm does: encode and send
        sent.append(time.monotonic())
        json.dumps(msg)
        return original(self, msg, buffers)

    Widget._send = counting  # type: ignore[method-assign]

    sweep = _sweep()
    assert len(sweep.calls) == 200
    run_sync(sweep, display=False, cache=False)  # warm up: model server, tracing, imports

    results: dict[str, list[dict[str, float]]] = {"baseline": [], "grid": []}
    for _ in range(args.rounds):
        for mode in ("baseline", "grid"):
            bus, handle = EventBus(), RunHandle()
            tokens = [0]
            bus.subscribe(lambda e: tokens.__setitem__(0, tokens[0] + (e.kind == "token")))  # noqa: B023 (the bus is per iteration)
            grid = None
            if mode == "grid":
                grid = SweepGrid(sweep, handle=handle, page_size=50)
                bus.subscribe(grid.on_event)
            sent.clear()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            res = run_sync(sweep, display=False, cache=False, bus=bus, handle=handle, concurrency=args.concurrency)
            if grid is not None:
                grid.close_feed()
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            assert (res.df["status"] == "ok").all() and len(res.df) == 200
            worst = max((sum(1 for t in sent if s <= t < s + 1.0) for s in sent), default=0)
            results[mode].append(
                {"cpu_s": cpu, "wall_s": wall, "messages": len(sent), "tokens": tokens[0], "worst_1s": worst}
            )

    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[mode])

    print(
        f"200-call sweep, local/tiny, max_tokens=64, no token delay, concurrency={args.concurrency}, "
        f"{args.rounds} rounds each (medians)"
    )
    for mode in ("baseline", "grid"):
        print(
            f"  {mode:8s}: wall {med(mode, 'wall_s'):.2f} s, CPU {med(mode, 'cpu_s'):.2f} s, "
            f"token events {med(mode, 'tokens'):.0f}, front-end messages {med(mode, 'messages'):.0f}"
        )
    g_wall, g_msgs = med("grid", "wall_s"), med("grid", "messages")
    print(f"  token events/s (grid run): {med('grid', 'tokens') / g_wall:.0f}")
    print(
        f"  front-end messages/s: {g_msgs / g_wall:.1f} average, {max(r['worst_1s'] for r in results['grid'])} "
        f"in the busiest 1 s window (bound: 30)"
    )
    print(f"  token events per front-end message: {med('grid', 'tokens') / max(1, g_msgs):.0f}x")
    print(f"  kernel CPU with grid / without: {med('grid', 'cpu_s') / med('baseline', 'cpu_s'):.2f}x")
    print(f"  wall time with grid / without: {g_wall / med('baseline', 'wall_s'):.2f}x")


if __name__ == "__main__":
    main()
