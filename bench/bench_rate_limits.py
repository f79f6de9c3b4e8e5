"""Rate limits that converge and isolate (issue 14, point 5): a token-bucket provider and a second one in one sweep.

A provider enforcing a token bucket of 20 requests/s (``FaultServer`` ``bucket_rps``: 429 with the
time to the next token as Retry-After) gets 400 calls at concurrency 32, in the same sweep as a
second, unlimited provider with 400 calls. Both answer 4 echoed tokens (``--echo-tokens``, no
model behind them) from their own processes (``python -m llmlab.testing.faultserver``), and each
case runs in a fresh Python process: a warm-up sweep, the second provider's 400 calls on their own
(its own queueing: 400 calls through 32 slots, client CPU), the sweep with both, and the second
provider's 400 calls on their own again (its "alone" figures are the mean of the two).

Cases (ideal time: 400 / 20 = 20 s):

* ``no-rpm``      — the provider registered without limits: 429s are all llmlab learns from;
* ``rpm``         — ``rpm=1200``, the true limit;
* ``new-user``    — as a new user would: ``rpm=--new-user-rpm`` (default 1200) on a provider that also
  answers ~10 % of requests 429 at random (``rate_429=0.1``, whatever the rate), against
* ``noisy-no-rpm`` — the same noisy provider without ``rpm`` (the issue measured new-user / this 4.5×);
* ``slow-no-rpm``  — not run by default: no ``rpm``, calls that take 1 s (4 tokens, 250 ms each), so 20/s
  needs 20 calls in flight (ideal: 20 s + the last call's 1 s).

Printed per case: elapsed / ideal, error rows, 429s the server sent, and the second provider's p50 / p95
``queue_ms`` in the sweep and on its own. Export is off (``datakit=None``): the client's CPU per call
is the runner's, not the exporter's.

    python bench/bench_rate_limits.py [--rounds 1] [--new-user-rpm 1200] [--cases no-rpm,rpm,new-user,noisy-no-rpm,slow-no-rpm]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

CALLS, RPS, CONCURRENCY = 400, 20.0, 32
IDEAL_S = CALLS / RPS

#: case -> (rpm for the limited provider, share of random 429s at its server, its delay per token in ms)
CASES: dict[str, tuple[float | None, float, float]] = {
    "no-rpm": (None, 0.0, 0.0),
    "rpm": (RPS * 60, 0.0, 0.0),
    "new-user": (1200.0, 0.1, 0.0),
    "noisy-no-rpm": (None, 0.1, 0.0),
    "slow-no-rpm": (None, 0.0, 250.0),
}
DEFAULT_CASES = "no-rpm,rpm,new-user,noisy-no-rpm"


def _sweep(ll, prompts: list[str], models: list[str]):
    from llmlab.events import EventBus

    bus = EventBus()
    at: dict[str, float] = {}
    done: list = []

    def on_event(e) -> None:
        if e.kind in ("sweep_started", "sweep_finished"):
            at[e.kind] = time.monotonic()
        if e.kind == "sweep_finished":
            done.append(e.data)

    bus.subscribe(on_event)
    res = ll.Sweep(prompts=prompts, models=models, temperature=0.0, max_tokens=4).run(
        display=False, concurrency=CONCURRENCY, cache=False, bus=bus
    )
    return res.df, at["sweep_finished"] - at["sweep_started"], done[0]


def side(limited_url: str, quick_url: str, rpm: float | None) -> dict:
    """One case in this (fresh) process: warm-up, the quick provider alone, then both in one sweep."""
    import llmlab as ll

    ll.configure(home=tempfile.mkdtemp(prefix="llmlab-bench-rl-"), datakit=None)
    ll.provider("quick", base_url=quick_url, api_key_env=None, timeout=10.0)
    ll.provider("limited", base_url=limited_url, api_key_env=None, timeout=10.0, rpm=rpm)
    _sweep(ll, [f"warm {i}" for i in range(CONCURRENCY)], ["quick/tiny"])
    before = _sweep(ll, [f"before {i}" for i in range(CALLS)], ["quick/tiny"])[0]["queue_ms"]
    df, elapsed, summary = _sweep(ll, [f"rain {i}" for i in range(CALLS)], ["limited/tiny", "quick/tiny"])
    after = _sweep(ll, [f"after {i}" for i in range(CALLS)], ["quick/tiny"])[0]["queue_ms"]
    quick = df.loc[df["provider"] == "quick", "queue_ms"]
    return {
        "elapsed_s": elapsed,
        "ratio": elapsed / IDEAL_S,
        "errors": int((df["status"] != "ok").sum()),
        "quick_p50_ms": float(quick.quantile(0.5)),
        "quick_p95_ms": float(quick.quantile(0.95)),
        "alone_p50_ms": float((before.quantile(0.5) + after.quantile(0.5)) / 2),
        "alone_p95_ms": float((before.quantile(0.95) + after.quantile(0.95)) / 2),
        "limits": summary["limits"].get("limited/tiny"),
    }


def run_case(name: str, rpm: float | None, rate_429: float, delay_ms: float, quick_url: str) -> dict:
    from llmlab.testing import FaultProcess

    faults: dict = {"rate_429": rate_429, "retry_after_s": 0.02, "seed": 7} if rate_429 else {}
    if delay_ms:
        faults["delay_ms"] = delay_ms
    with FaultProcess(echo_tokens=4, bucket_rps=RPS, **faults) as limited:  # a fresh bucket per case
        out = subprocess.run(
            [sys.executable, "-W", "ignore", __file__, "--side", limited.base_url, quick_url, str(rpm or 0)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if out.returncode != 0:
            raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result["server"] = limited.stats()["outcomes"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--new-user-rpm", type=float, default=1200.0)
    parser.add_argument("--cases", default=DEFAULT_CASES)
    parser.add_argument("--side", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        limited_url, quick_url, rpm = args.side
        print(json.dumps(side(limited_url, quick_url, float(rpm) or None)))
        return
    from llmlab.testing import FaultProcess

    cases = dict(CASES)
    cases["new-user"] = (args.new_user_rpm, *CASES["new-user"][1:])
    wanted = args.cases.split(",")
    results: dict[str, list[dict]] = {name: [] for name in wanted}
    with FaultProcess(echo_tokens=4) as quick:
        for r in range(args.rounds):
            for name in wanted:
                rpm, rate_429, delay_ms = cases[name]
                res = run_case(name, rpm, rate_429, delay_ms, quick.base_url)
                results[name].append(res)
                lim = res["limits"] or {}
                print(
                    f"round {r + 1} {name:13s} rpm={rpm!s:6s} random429={rate_429:.0%}: "
                    f"{res['elapsed_s']:6.2f} s = {res['ratio']:.3f} x ideal; error rows {res['errors']}; "
                    f"429s {res['server'].get('429', 0)}; second provider queue_ms p50/p95 "
                    f"{res['quick_p50_ms']:.0f}/{res['quick_p95_ms']:.0f} "
                    f"(alone {res['alone_p50_ms']:.0f}/{res['alone_p95_ms']:.0f}, "
                    f"+{res['quick_p95_ms'] - res['alone_p95_ms']:.0f} at p95); "
                    f"final rate {lim.get('rate')}, rate cuts {lim.get('rate_cuts')} "
                    f"({lim.get('rate_cuts_undone')} undone), window {lim.get('window')}",
                    flush=True,
                )
    print(f"\n{CALLS} calls at {RPS:.0f}/s, concurrency {CONCURRENCY}, {args.rounds} round(s) (medians):")
    med: dict[str, dict[str, float]] = {}
    for name in wanted:
        rows = results[name]
        med[name] = {
            k: statistics.median(x[k] for x in rows)
            for k in ("ratio", "errors", "quick_p50_ms", "quick_p95_ms", "alone_p95_ms")
        }
        med[name]["added_p95_ms"] = statistics.median(x["quick_p95_ms"] - x["alone_p95_ms"] for x in rows)
        med[name]["429"] = statistics.median(x["server"].get("429", 0) for x in rows)
        m = med[name]
        print(
            f"  {name:13s} elapsed/ideal {m['ratio']:.3f}; error rows {m['errors']:.0f}; 429s {m['429']:.0f}; "
            f"second provider queue_ms p50 {m['quick_p50_ms']:.0f}, p95 {m['quick_p95_ms']:.0f} "
            f"(alone p95 {m['alone_p95_ms']:.0f}: +{m['added_p95_ms']:.0f})"
        )
    goals = {"no-rpm": 1.25, "rpm": 1.15}
    for name, bound in goals.items():
        if name in med:
            print(f"  goal {name}: <= {bound} x ideal: {'met' if med[name]['ratio'] <= bound else 'NOT met'}")
    if "new-user" in med and "noisy-no-rpm" in med:
        ratio = statistics.median(
            a["elapsed_s"] / b["elapsed_s"] for a, b in zip(results["new-user"], results["noisy-no-rpm"])
        )
        print(f"  new user (rpm={args.new_user_rpm:.0f}, 10 % random 429s) / the same without rpm: {ratio:.2f}x")


if __name__ == "__main__":
    main()
