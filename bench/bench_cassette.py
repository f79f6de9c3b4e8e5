"""Record/replay cost, against the same sweep run live in the same process:

1. recording (``cache="record"``): the cassette transport tees every streamed body — its overhead
   over a live run;
2. replaying (``cache="replay"``): no model server, no network — its time as a share of live,
   with no per-token delay (llmlab's own overhead dominates) and with a realistic one.

Medians of ``--rounds`` rounds, live/record/replay interleaved so load drifts hit all three.

    python bench/bench_cassette.py [--calls-per-model 24] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls-per-model", type=int, default=24, help="prompts × temperatures per model")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import llmlab as ll
    from llmlab import localmodel

    work = Path(tempfile.mkdtemp(prefix="llmlab-bench-cassette-"))
    ll.configure(home=str(work / "home"), datakit=None)
    n_prompts = max(1, args.calls_per_model // 3)
    prompts = [f"Question {i}: what causes a rainbow?" for i in range(n_prompts)]
    print(
        f"{len(prompts) * 3 * 2} calls per run (local/tiny + local/small, 3 temperatures, max_tokens=32), "
        f"median of {args.rounds} rounds"
    )
    for delay in ("0", "5"):
        os.environ["LLMLAB_LOCAL_DELAY_MS"] = delay
        localmodel.stop_server()  # the server reads the delay when it starts
        sweep = ll.Sweep(
            prompts=prompts, models=["local/tiny", "local/small"], temperature=[0.0, 0.7, 1.0], max_tokens=32, seed=1
        )
        cassette = work / f"cassette-{delay}.json"
        sweep.run(display=False, cache=False)  # warm-up: server start, imports, tracing
        times: dict[str, list[float]] = {"live": [], "record": [], "replay": []}
        for _ in range(args.rounds):
            for mode, kwargs in (
                ("live", {"cache": False}),
                ("record", {"cache": "record", "cassette": cassette}),
                ("replay", {"cache": "replay", "cassette": cassette}),
            ):
                t0 = time.perf_counter()
                res = sweep.run(display=False, **kwargs)
                times[mode].append(time.perf_counter() - t0)
                assert (res.df["status"] == "ok").all()
        med = {k: statistics.median(v) for k, v in times.items()}
        size = cassette.stat().st_size / 1024
        print(
            f"delay {delay} ms/token: live {med['live']:.2f}s | record/live {med['record'] / med['live']:.2f}x | "
            f"replay/live {med['replay'] / med['live']:.2f}x | cassette {size:.0f} KiB "
            f"({size / len(sweep.calls):.1f} KiB/call)"
        )


if __name__ == "__main__":
    main()
