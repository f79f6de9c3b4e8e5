"""Rate limits that converge and isolate (issue 14, point 5), at the issue's size.

A provider enforcing a token bucket of 20 requests/s (429 + Retry-After, the time to the next
token) gets 400 calls at concurrency 32, in the same sweep as a second, unlimited provider:

* without ``rpm`` the sweep finishes within 1.25× the ideal time (calls / allowed rate), with
  ``rpm`` equal to the true limit within 1.15×, and no call ends as an error row;
* the second provider does not wait behind the limited one.

Both servers run in their own processes (:class:`FaultProcess`), answering 4 echoed tokens with
no model behind them, so the test process spends its CPU on llmlab's client only. That client
CPU is still the second provider's own queueing: 400 streamed calls through 32 slots on a
2-core machine take 1.5 – 4 s on their own, so its p95 ``queue_ms`` is 1.4 – 3.6 s with no
limited provider at all (measured while writing this test). "Does not wait behind the limited
provider" is therefore asserted as what the limited provider adds to that p95: the same 400
calls are run on their own in the same test, just before and just after (the mean of the two is
the baseline: the machine's load drifts), and the sweep with both providers may add at most 1 s
to their p95 ``queue_ms`` (the issue's bound; it measured 15.5 s before).
"""

from __future__ import annotations

import time

import pytest

import llmlab as ll
from llmlab.events import EventBus
from llmlab.testing import FaultProcess, FaultServer

CALLS, RPS, CONCURRENCY = 400, 20.0, 32
IDEAL_S = CALLS / RPS


@pytest.fixture(scope="module")
def quick_server():
    """The second, unlimited provider's server (its own process, for the whole module)."""
    with FaultProcess(echo_tokens=4) as server:
        yield server


@pytest.fixture
def quick(quick_server):
    """Provider ``quick`` on that server; a short sweep first, so no measured sweep pays the one-off set-up."""
    from llmlab.plan import providers

    ll.provider("quick", base_url=quick_server.base_url, api_key_env=None, timeout=10.0)
    _sweep([f"warm {i}" for i in range(CONCURRENCY)], ["quick/tiny"])
    yield quick_server
    providers._registry.pop("quick", None)


@pytest.fixture
def limited():
    """A fresh token bucket of RPS requests/s (burst: one second's worth) behind provider ``limited``."""
    from llmlab.plan import providers

    with FaultProcess(echo_tokens=4, bucket_rps=RPS) as server:
        yield server
    providers._registry.pop("limited", None)


def _sweep(prompts: list[str], models: list[str]):
    """Run one sweep; returns its frame, its own time (start to end, not a first run's set-up) and summary."""
    bus = EventBus()
    at: dict[str, float] = {}
    done: list = []

    def on_event(e) -> None:
        if e.kind in ("sweep_started", "sweep_finished"):
            at[e.kind] = time.monotonic()
        if e.kind == "sweep_finished":
            done.append(e.data)

    bus.subscribe(on_event)
    sweep = ll.Sweep(prompts=prompts, models=models, temperature=0.0, max_tokens=4)
    res = sweep.run(display=False, concurrency=CONCURRENCY, cache=False, bus=bus)
    return res.df, at["sweep_finished"] - at["sweep_started"], done[0]


def _quick_p95(df) -> float:
    queue = df.loc[df["provider"] == "quick", "queue_ms"]
    assert len(queue) == CALLS
    return float(queue.quantile(0.95))


def _against_the_bucket(limited, rpm: float | None) -> tuple:
    """The quick provider's 400 calls alone, with the limited provider's 400 in the same sweep, alone again."""
    before = _quick_p95(_sweep([f"before {i}" for i in range(CALLS)], ["quick/tiny"])[0])
    ll.provider("limited", base_url=limited.base_url, api_key_env=None, timeout=10.0, rpm=rpm)
    df, elapsed, summary = _sweep([f"rain {i}" for i in range(CALLS)], ["limited/tiny", "quick/tiny"])
    outcomes = limited.stats()["outcomes"]
    after = _quick_p95(_sweep([f"after {i}" for i in range(CALLS)], ["quick/tiny"])[0])
    p95, alone = _quick_p95(df), (before + after) / 2
    print(
        f"\n[rpm={rpm}] elapsed {elapsed:.2f} s = {elapsed / IDEAL_S:.3f} x ideal ({IDEAL_S:.0f} s); "
        f"error rows {int((df['status'] != 'ok').sum())}; server {outcomes}; quick p95 queue_ms {p95:.0f} "
        f"(alone {before:.0f} before, {after:.0f} after: +{p95 - alone:.0f}); limits {summary['limits']}"
    )
    return df, elapsed, summary, outcomes, p95 - alone


def test_without_rpm_429s_converge_on_the_capacity_and_fail_no_call(quick, limited):
    df, elapsed, summary, outcomes, added_p95 = _against_the_bucket(limited, rpm=None)
    assert (df["status"] == "ok").all(), df["error"].unique()
    assert outcomes.get("429", 0) > 0, outcomes  # the limit was really hit, and found
    assert elapsed <= 1.25 * IDEAL_S, (elapsed, summary["limits"])
    # the rate it learnt did not spiral below the capacity, and it did not hammer the provider either
    assert summary["limits"]["limited/tiny"]["rate"] >= 0.6 * RPS, summary["limits"]
    assert outcomes["429"] < CALLS / 2, outcomes
    # the unlimited provider in the same sweep did not wait behind the limited one
    assert added_p95 < 1000, added_p95


def test_with_rpm_at_the_true_limit_the_sweep_runs_at_that_rate(quick, limited):
    df, elapsed, summary, outcomes, added_p95 = _against_the_bucket(limited, rpm=RPS * 60)
    assert (df["status"] == "ok").all(), df["error"].unique()
    assert elapsed <= 1.15 * IDEAL_S, (elapsed, summary["limits"])
    assert added_p95 < 1000, added_p95


def test_random_429s_are_not_a_limit_the_rate_does_not_spiral_down():
    # no capacity limit, but 30 % of requests answered 429 whatever the rate (load shedding, a flaky
    # gateway): cutting the rate on each would crawl (minutes for 200 calls; the unhindered sweep takes
    # a couple of seconds). Cuts are checked and undone when 429s keep coming at the lower rate.
    from llmlab.plan import providers

    with FaultProcess(echo_tokens=4, rate_429=0.3, retry_after_s=0.02, seed=3) as server:
        ll.provider("flaky", base_url=server.base_url, api_key_env=None, timeout=10.0)
        try:
            df, elapsed, summary = _sweep([f"rain {i}" for i in range(200)], ["flaky/tiny"])
        finally:
            providers._registry.pop("flaky", None)
        outcomes = server.stats()["outcomes"]
    print(f"\n[30 % random 429s] 200 calls in {elapsed:.2f} s; server {outcomes}; limits {summary['limits']}")
    assert (df["status"] == "ok").all(), df["error"].unique()
    assert outcomes["429"] > 40, outcomes
    assert elapsed < 15.0, (elapsed, summary["limits"])


def test_a_bucket_fault_server_answers_429_with_the_time_to_the_next_token():
    import httpx

    with FaultServer(bucket_rps=0.5, bucket_burst=2.0) as fs:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        codes = [httpx.post(fs.base_url + "/chat/completions", json=body).status_code for _ in range(3)]
        assert codes[:2] == [200, 200] and codes[2] == 429
        r = httpx.post(fs.base_url + "/chat/completions", json=body)
        assert r.status_code == 429 and 0 < int(r.headers["retry-after-ms"]) <= 2000
