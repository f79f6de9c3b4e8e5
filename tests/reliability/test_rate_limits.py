"""Rate limits that converge and isolate: a provider enforcing a token bucket (429 + Retry-After).

The figures asserted are ratios of the ideal time (calls / allowed rate), with a margin: how close
a sweep comes to a provider's real capacity, with and without ``rpm``, and whether a second
provider in the same sweep waits behind the limited one.
"""

from __future__ import annotations

import json
import time

import pytest

import llmlab as ll
from llmlab.events import EventBus
from llmlab.testing import FaultServer

CALLS, RPS = 100, 10.0


async def _echo_app(scope, receive, send) -> None:
    """A cheap OpenAI-compatible stream (4 tokens + usage): the limits, not a model, decide the time."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    chunks = [
        {"choices": [{"index": 0, "delta": {"content": f" w{i}"}, "finish_reason": "length" if i == 3 else None}]}
        for i in range(4)
    ]
    chunks.append({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}})
    for chunk in chunks:
        data = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "tiny", **chunk}
        await send({"type": "http.response.body", "body": f"data: {json.dumps(data)}\n\n".encode(), "more_body": True})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


@pytest.fixture
def other():
    """A second, unlimited provider ``quick`` (the embedded models, no faults)."""
    from llmlab.plan import providers

    server = FaultServer(inner=_echo_app).start()
    ll.provider("quick", base_url=server.base_url, api_key_env=None, timeout=10.0)
    yield server
    server.stop()
    providers._registry.pop("quick", None)


def _sweep_against_bucket(fault, other, rpm: float | None):
    fault.app.inner = _echo_app
    fault.faults.bucket_rps = RPS
    ll.provider("fault", base_url=fault.base_url, api_key_env=None, timeout=10.0, rpm=rpm)
    bus = EventBus()
    done: list = []
    at: dict[str, float] = {}

    def on_event(e) -> None:
        if e.kind in ("sweep_started", "sweep_finished"):
            at[e.kind] = time.monotonic()
        if e.kind == "sweep_finished":
            done.append(e.data)

    bus.subscribe(on_event)
    sweep = ll.Sweep(
        prompts=[f"rain {i}" for i in range(CALLS)], models=["fault/tiny", "quick/tiny"], temperature=0.0, max_tokens=4
    )
    # every call of the unlimited provider may be in flight at once: any wait it shows is the other one's doing
    res = sweep.run(display=False, concurrency=CALLS, cache=False, bus=bus)
    # the sweep's own time (from its start to its end; not the one-off tracing set-up of a first run)
    return res.df, at["sweep_finished"] - at["sweep_started"], done[0]


def test_without_rpm_429s_converge_on_the_capacity_and_fail_no_call(fault, other):
    df, elapsed, summary = _sweep_against_bucket(fault, other, rpm=None)
    assert (df["status"] == "ok").all(), df["error"].unique()
    assert fault.stats()["outcomes"].get("429", 0) > 0, fault.stats()["outcomes"]  # the limit was really hit and found
    assert elapsed <= 1.25 * CALLS / RPS, summary["limits"]
    # the learnt rate is the provider's capacity, give or take
    assert 0.6 * RPS <= summary["limits"]["fault/tiny"]["rate"] <= 1.5 * RPS
    # the unlimited provider in the same sweep did not wait behind the limited one
    quick = df.loc[df["provider"] == "quick", "queue_ms"]
    assert len(quick) == CALLS and quick.quantile(0.95) < 1000


def test_with_rpm_at_the_true_limit_the_sweep_runs_at_that_rate(fault, other):
    df, elapsed, summary = _sweep_against_bucket(fault, other, rpm=RPS * 60)
    assert (df["status"] == "ok").all(), df["error"].unique()
    assert elapsed <= 1.15 * CALLS / RPS, summary["limits"]
    quick = df.loc[df["provider"] == "quick", "queue_ms"]
    assert quick.quantile(0.95) < 1000


def test_a_bucket_fault_server_answers_429_with_the_time_to_the_next_token():
    import httpx

    with FaultServer(bucket_rps=0.5, bucket_burst=2.0) as fs:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        codes = [httpx.post(fs.base_url + "/chat/completions", json=body).status_code for _ in range(3)]
        assert codes[:2] == [200, 200] and codes[2] == 429
        r = httpx.post(fs.base_url + "/chat/completions", json=body)
        assert r.status_code == 429 and 0 < int(r.headers["retry-after-ms"]) <= 2000
