"""Sweep throughput: llmlab (tracing + store on) vs a raw AsyncOpenAI + asyncio.gather loop.

Both send the same 2,000 streamed requests at concurrency 64 to the embedded model server with
no artificial delay, in the same process, alternating rounds; the figure is the throughput ratio
(target ≥ 0.8). The model server runs in a separate process so that neither side pays for it.

    python bench/bench_runner.py [--calls 2000] [--concurrency 64] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_model_server() -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "LLMLAB_LOCAL_DELAY_MS": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmlab", "serve-model", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(200):
        try:
            httpx.get(url + "/models", timeout=1.0)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("model server did not start")


def make_sweep(calls: int, ll):
    prompts = [f"Question {i}: explain how rain forms over the sea." for i in range(calls // 4)]
    return ll.Sweep(
        prompts=prompts, models=["bench/tiny"], temperature=[0.5, 1.0], top_p=[1.0, 0.9], max_tokens=32, seed=1
    )


async def raw_loop(sweep, url: str, concurrency: int) -> float:
    import openai

    client = openai.AsyncOpenAI(
        base_url=url,
        api_key="x",
        max_retries=0,
        http_client=httpx.AsyncClient(limits=httpx.Limits(max_connections=200)),
    )
    sem = asyncio.Semaphore(concurrency)

    async def one(call) -> None:
        async with sem:
            stream = await client.chat.completions.create(
                **call.request_kwargs(), stream=True, stream_options={"include_usage": True}
            )
            async for _ in stream:
                pass

    t0 = time.perf_counter()
    await asyncio.gather(*(one(c) for c in sweep.calls))
    elapsed = time.perf_counter() - t0
    await client.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import llmlab as ll

    proc, url = start_model_server()
    try:
        ll.provider("bench", base_url=url, api_key_env=None)
        # warm both paths first (imports, OpenLLMetry instrumentation, connection pools, model caches)
        ll.configure(home=tempfile.mkdtemp(prefix="llmlab-bench-"), datakit=None)
        warm = make_sweep(256, ll)
        asyncio.run(raw_loop(warm, url, args.concurrency))
        warm.run(concurrency=args.concurrency, display=False, cache=False)
        rows = []
        for r in range(args.rounds):
            ll.configure(home=tempfile.mkdtemp(prefix="llmlab-bench-"), datakit=None)
            sweep = make_sweep(args.calls, ll)
            raw_s = asyncio.run(raw_loop(sweep, url, args.concurrency))
            t0 = time.perf_counter()
            res = sweep.run(concurrency=args.concurrency, display=False, cache=False)
            ll_s = time.perf_counter() - t0
            assert (res.df["status"] == "ok").all(), res.df["error"].unique()
            rows.append((raw_s, ll_s))
            print(
                f"round {r + 1}: raw {len(sweep.calls) / raw_s:7.1f} calls/s   llmlab {len(sweep.calls) / ll_s:7.1f} calls/s"
                f"   ratio {raw_s / ll_s:.2f}"
            )
        ratios = sorted(raw / lab for raw, lab in rows)
        raw_best = min(r[0] for r in rows)
        ll_best = min(r[1] for r in rows)
        print(
            f"\n{args.calls} calls, concurrency {args.concurrency}: raw AsyncOpenAI {args.calls / raw_best:.1f} calls/s, "
            f"llmlab sweep (tracing + store) {args.calls / ll_best:.1f} calls/s (best rounds)"
        )
        print(
            f"throughput ratio llmlab/raw: median {ratios[len(ratios) // 2]:.2f} over {len(rows)} paired rounds, "
            f"best/best {raw_best / ll_best:.2f} (target >= 0.80)"
        )
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
