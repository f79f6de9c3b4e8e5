"""Sweep throughput, honestly: llmlab vs a raw AsyncOpenAI loop vs the seed's stack, each in its own process.

Sides (each run in a fresh Python process, so nothing one side imports or instruments touches another):

* ``raw``    — ``openai.AsyncOpenAI()`` with its default HTTP client + ``asyncio.gather`` under a
  semaphore, no instrumentation: the baseline (the library's defaults).
* ``raw-strict`` — the same with ``_strict_response_validation=True`` (openai parses answers with pydantic's
  validator, as llmlab does, but refuses off-spec ones): a reference, not a goal.
* ``seed``   — the same loop after ``Traceloop.init`` (OpenLLMetry's defaults, batch export to the
  collector over OTLP/HTTP), as the seed's Flask app does: what users had before llmlab.
* ``llmlab`` — ``ll.Sweep(...).run()`` with tracing, the local store and export to the collector on.

Servers (separate processes): ``bench/fastserver.py`` answering 16 streamed tokens with no delay
("fast": measures client overhead) and with 0.2 s + 10 ms/token ("realistic"), and the embedded
collector (``llmlab collector``) that both the seed and llmlab export to. Each round runs every
side once, in turn; the figures are medians of per-round ratios (the machines are shared and noisy).

    python bench/bench_runner.py [--calls 1000] [--concurrency 64] [--rounds 3] [--big]   # --big: 10,000 calls
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOKENS = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str) -> None:
    import httpx

    for _ in range(400):
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


def _start(args: list[str], probe: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait(probe)
    return proc


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _prompts(calls: int) -> list[str]:
    return [f"Question {i}: explain how rain forms over the sea." for i in range(calls)]


async def _gather_loop(client, calls: int, concurrency: int) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def one(prompt: str) -> None:
        async with sem:
            stream = await client.chat.completions.create(
                model="tiny",
                messages=[{"role": "user", "content": prompt}],
                max_tokens=TOKENS,
                temperature=0.5,
                stream=True,
                stream_options={"include_usage": True},
            )
            async for _ in stream:
                pass

    await asyncio.gather(*(one(p) for p in _prompts(min(64, calls))))  # warm: connections, imports
    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(p) for p in _prompts(calls)))
    CPU_S.append(time.process_time() - c0)
    return time.perf_counter() - t0


CPU_S: list[float] = []  # process CPU (all threads) of the timed part


def _raw_loop(url: str, calls: int, concurrency: int, **client_options: object) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0, **client_options)  # type: ignore[arg-type]
    rss0 = _rss_mb()
    elapsed = asyncio.run(_gather_loop(client, calls, concurrency))
    return {"elapsed": elapsed, "rss_growth_mb": _rss_mb() - rss0, "cpu_s": CPU_S[-1]}


def side_raw(url: str, collector: str, calls: int, concurrency: int) -> dict:
    return _raw_loop(url, calls, concurrency)


def side_raw_strict(url: str, collector: str, calls: int, concurrency: int) -> dict:
    """The raw loop with openai's ``_strict_response_validation=True``: answers parsed by pydantic's validator
    (as llmlab parses them) instead of openai's default ``construct_type``, but refused when off-spec. Not a
    default, so not the baseline; it shows how much of llmlab's lead over raw is parsing."""
    return _raw_loop(url, calls, concurrency, _strict_response_validation=True)


def side_seed(url: str, collector: str, calls: int, concurrency: int) -> dict:
    import openai
    from traceloop.sdk import Traceloop

    os.environ["TRACELOOP_TELEMETRY"] = "false"
    Traceloop.init(app_name="seed-bench", api_endpoint=collector + "/otel", disable_batch=False)
    client = openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0)
    rss0 = _rss_mb()
    elapsed = asyncio.run(_gather_loop(client, calls, concurrency))
    t0 = time.perf_counter()
    Traceloop.flush() if hasattr(Traceloop, "flush") else None
    return {
        "elapsed": elapsed,
        "flush_s": time.perf_counter() - t0,
        "rss_growth_mb": _rss_mb() - rss0,
        "cpu_s": CPU_S[-1],
    }


def side_llmlab(url: str, collector: str, calls: int, concurrency: int) -> dict:
    import llmlab as ll

    ll.configure(home=tempfile.mkdtemp(prefix="llmlab-bench-"), datakit=collector)
    ll.provider("bench", base_url=url, api_key_env=None)

    def sweep(prompts: list[str]):
        return ll.Sweep(prompts=prompts, models=["bench/tiny"], temperature=0.5, max_tokens=TOKENS)

    sweep(_prompts(min(64, calls))).run(concurrency=concurrency, display=False, cache=False)  # warm
    rss0 = _rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    planned = sweep([f"{p} " for p in _prompts(calls)])  # the grid: every call planned, kept by the Sweep
    rss_grid = _rss_mb()
    res = planned.run(concurrency=concurrency, display=False, cache=False)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    df = res.df
    assert (df["status"] == "ok").all(), df["error"].unique()[:3]
    return {
        "elapsed": elapsed,
        "cpu_s": cpu,
        "rss_growth_mb": _rss_mb() - rss0,
        "rss_grid_mb": rss_grid - rss0,
        "p50_latency_ms": float(df["latency_ms"].median()),
    }


SIDES = {"raw": side_raw, "raw-strict": side_raw_strict, "seed": side_seed, "llmlab": side_llmlab}


def run_side(side: str, url: str, collector: str, calls: int, concurrency: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-W", "ignore", __file__, "--side", side, "--url", url, "--collector", collector]
        + ["--calls", str(calls), "--concurrency", str(concurrency)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{side} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _latency_fidelity(url: str, collector: str, calls: int = 200, concurrency: int = 8) -> None:
    """Issue #14 point 4: at the default concurrency, llmlab's p50 ``latency_ms`` against the server's own p50
    (``/stats``, measured inside the server from request to last byte). The server's figure also covers the
    side's 64 warm-up calls, which take it the same time: its time per call does not depend on the client."""
    import httpx

    base = url.removesuffix("/v1")
    p50s, served = [], []
    for _ in range(3):
        httpx.post(f"{base}/reset")
        p50s.append(run_side("llmlab", url, collector, calls, concurrency)["p50_latency_ms"])
        served.append(httpx.get(f"{base}/stats").json()["p50_ms"])
    ratios = [a / b for a, b in zip(p50s, served)]
    print(
        f"[realistic] latency at the default concurrency ({concurrency}), {calls} calls, 3 runs: llmlab p50 latency_ms "
        + ", ".join(f"{a:.0f}" for a in p50s)
        + " against the server's own p50 "
        + ", ".join(f"{b:.0f}" for b in served)
        + f" ms: {statistics.median(ratios):.3f}x (goal within 1.10x)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--big", action="store_true", help="10,000 calls")
    parser.add_argument("--servers", default="fast,realistic")
    parser.add_argument("--side", choices=sorted(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--collector", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(SIDES[args.side](args.url, args.collector, args.calls, args.concurrency)))
        return
    calls = 10_000 if args.big else args.calls
    procs = []
    try:
        port = _free_port()
        home = tempfile.mkdtemp(prefix="llmlab-bench-collector-")
        procs.append(
            _start(
                ["-m", "llmlab", "collector", "--port", str(port), "--home", home], f"http://127.0.0.1:{port}/v1/ping"
            )
        )
        collector = f"http://127.0.0.1:{port}"
        servers = {
            "fast": ["--first-ms", "0", "--per-token-ms", "0"],
            "realistic": ["--first-ms", "200", "--per-token-ms", "10"],
        }
        for name in args.servers.split(","):
            sport = _free_port()
            server = _start(
                [str(HERE / "fastserver.py"), "--port", str(sport), "--tokens", str(TOKENS), *servers[name]],
                f"http://127.0.0.1:{sport}/v1/models",
            )
            procs.append(server)
            url = f"http://127.0.0.1:{sport}/v1"
            results: dict[str, list[dict]] = {s: [] for s in SIDES}
            for r in range(args.rounds):
                for side in SIDES:
                    results[side].append(run_side(side, url, collector, calls, args.concurrency))
                cps = {s: calls / results[s][-1]["elapsed"] for s in SIDES}
                print(
                    f"[{name}] round {r + 1}: " + "  ".join(f"{s} {cps[s]:.0f}" for s in SIDES) + " calls/s", flush=True
                )
            ratio = {
                other: statistics.median(
                    results[other][i]["elapsed"] / results["llmlab"][i]["elapsed"] for i in range(args.rounds)
                )
                for other in SIDES
                if other != "llmlab"
            }
            med = {s: statistics.median(calls / x["elapsed"] for x in results[s]) for s in SIDES}
            mem = {s: statistics.median(x["rss_growth_mb"] for x in results[s]) * 1024 / calls for s in SIDES}
            grid_kb = statistics.median(x["rss_grid_mb"] for x in results["llmlab"]) * 1024 / calls
            cpu = {s: statistics.median(x["cpu_s"] for x in results[s]) * 1000 / calls for s in SIDES}
            print(
                f"[{name}] {calls} calls, concurrency {args.concurrency}, {args.rounds} rounds (medians): "
                f"raw {med['raw']:.0f}, raw-strict {med['raw-strict']:.0f}, seed stack {med['seed']:.0f}, "
                f"llmlab {med['llmlab']:.0f} calls/s; llmlab/raw {ratio['raw']:.2f} (goal >= 0.8), "
                f"llmlab/seed {ratio['seed']:.2f} (goal >= 1.0), llmlab/raw-strict {ratio['raw-strict']:.2f} (reference); "
                f"peak-RSS growth per call KB: "
                + ", ".join(f"{s} {mem[s]:.2f}" for s in SIDES)
                + f" (llmlab's grid, planned before the run: {grid_kb:.2f}); process CPU ms per call: "
                + ", ".join(f"{s} {cpu[s]:.2f}" for s in SIDES)
                + (
                    f"; llmlab p50 latency_ms {statistics.median(x['p50_latency_ms'] for x in results['llmlab']):.0f}"
                    if name == "realistic"
                    else ""
                ),
                flush=True,
            )
            if name == "realistic":
                _latency_fidelity(url, collector)
            server.terminate()
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
