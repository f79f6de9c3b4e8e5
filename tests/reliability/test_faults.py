"""A sweep under provider faults: 429s, 5xx, slow first bytes, cut streams; rate limits."""

from __future__ import annotations

import time

import pytest

import llmlab as ll
from llmlab.events import EventBus
from llmlab.localmodel import count_tokens, create_app, get_model
from llmlab.run.retry import RetryPolicy
from llmlab.store import get_store
from llmlab.testing import request_key_for_call
from tests.reliability.conftest import FAST


def _grid(n_prompts: int, **kw) -> ll.Sweep:
    prompts = [f"Tell me about rainbows and rain, question {i}" for i in range(n_prompts)]
    return ll.Sweep(
        prompts=prompts,
        models=["fault/tiny"],
        temperature=[0.0, 0.7],
        top_p=[1.0, 0.9],
        repeats=2,
        seed=5,
        max_tokens=16,
        **kw,
    )


def test_sweep_of_200_calls_under_429_5xx_and_cut_streams_ends_all_ok(fault):
    sweep = _grid(25)
    assert len(sweep.calls) == 200
    fault.faults.rate_429, fault.faults.rate_5xx, fault.faults.rate_cut, fault.faults.seed = 0.30, 0.10, 0.05, 11
    bus = EventBus()
    retries: dict[str, int] = {}
    bus.subscribe(lambda e: e.kind == "retry" and retries.__setitem__(e.call_id, retries.get(e.call_id, 0) + 1))

    res = sweep.run(display=False, concurrency=16, retry=RetryPolicy(**FAST), bus=bus)

    df = res.df
    stats = fault.stats()
    # the faults really happened, in about the asked shares
    attempts = stats["requests"]
    assert attempts > 300
    assert (
        0.2 < stats["outcomes"]["429"] / attempts < 0.4
        and stats["outcomes"]["5xx"] > 20
        and stats["outcomes"]["cut"] > 8
    )
    # every cell ok, once
    assert len(df) == 200 and (df["status"] == "ok").all() and df["call_id"].is_unique
    rows = get_store().read("SELECT call_id, status FROM calls WHERE sweep_id=?", (res.sweep_id,))
    assert len(rows) == 200 and {r[1] for r in rows} == {"ok"} and len({r[0] for r in rows}) == 200
    # retries counted per call: exactly what the server saw, and what the events said
    for call in sweep.calls:
        row = df.loc[df["call_id"] == call.call_id].iloc[0]
        sent = stats["by_key"][request_key_for_call(call)]
        assert row["attempts"] == sent and row["retries"] == sent - 1 == retries.get(call.call_id, 0)
    # partial streams were never recorded as complete outputs: each completion is the model's full
    # answer (sampling is seeded, so the model run directly gives the same text)
    for call in sweep.calls:
        row = df.loc[df["call_id"] == call.call_id].iloc[0]
        gen = get_model("tiny").generate(
            list(call.messages), call.temperature, call.top_p, call.max_tokens, None, call.seed
        )
        assert row["completion"] == "".join(gen) and row["finish_reason"] == gen.finish_reason
        assert row["output_tokens"] == count_tokens(row["completion"]) and not row["tokens_estimated"]
    assert res.stopped is None


def test_slow_first_byte_past_the_timeout_is_retried(fault):
    fault.faults.rate_slow, fault.faults.slow_s, fault.faults.seed = 0.5, 5.0, 2
    ll.provider("fault", base_url=fault.base_url, api_key_env=None, timeout=1.0)
    res = _grid(2).run(display=False, concurrency=8, retry=RetryPolicy(**FAST))
    assert (res.df["status"] == "ok").all()
    assert fault.stats()["outcomes"]["slow"] >= 2 and (res.df["retries"] > 0).any()
    # latency is the successful attempt only: a timed-out attempt takes at least the 1 s timeout, and that time is
    # waiting (queue_ms), not latency (a success takes ~20 ms; the bound leaves room for a busy machine)
    retried = res.df[res.df["retries"] > 0]
    assert (retried["queue_ms"] >= 950 * retried["retries"]).all()
    assert (res.df["latency_ms"] < 1000).all()


def test_a_call_that_keeps_failing_becomes_an_error_row_without_a_partial_completion(fault):
    fault.faults.rate_cut = 1.0  # every stream is cut
    bus = EventBus()
    tokens: list[str] = []
    bus.subscribe(lambda e: e.kind == "token" and tokens.append(e.data["text"]))
    res = ll.Sweep(prompts=["What is a rainbow?"], models=["fault/tiny"], temperature=0.0, max_tokens=16).run(
        display=False, retry=RetryPolicy(max_attempts=3, **FAST), bus=bus
    )
    row = res.df.iloc[0]
    assert row["status"] == "error" and "StreamCut" in row["error"] and row["attempts"] == 3
    assert row["completion"] is None or row["completion"] != row["completion"]  # None/NA, never the partial text
    assert tokens  # partial text was streamed live, and was discarded
    assert not get_store().read("SELECT 1 FROM cache")  # nothing cached: a re-run sends it again


def test_rpm_limit_spaces_requests_and_waiting_is_not_latency(fault):
    ll.provider("fault", base_url=fault.base_url, api_key_env=None, rpm=600)  # 10/s, bursts of 10
    sweep = ll.Sweep(prompts=[f"rain {i}" for i in range(30)], models=["fault/tiny"], temperature=0.0, max_tokens=4)
    start = time.monotonic()
    res = sweep.run(display=False, concurrency=30)
    elapsed = time.monotonic() - start
    assert (res.df["status"] == "ok").all()
    times = sorted(fault.stats()["times"])
    # never more than a burst plus one second's worth in any one second
    assert (
        max(sum(1 for t in times if t0 <= t < t0 + 1.0) for t0 in times) <= 24
    )  # 10 + 10, and some slack for arrival jitter
    assert elapsed >= 1.5  # (30 - 10 burst) / 10 per second, at the least
    # the rate-limit wait is queueing, not latency
    assert res.df["queue_ms"].max() > 1000 and res.df["latency_ms"].max() < res.df["queue_ms"].max()


def test_tpm_limit_uses_tokens_estimated_before_the_call(fault):
    # each call is estimated before it is sent at its prompt tokens + max_tokens (100) > 100;
    # 12000 TPM = 200 per second (also the burst): 8 calls need > 800 tokens, i.e. > 3 s
    ll.provider("fault", base_url=fault.base_url, api_key_env=None, tpm=12000)
    sweep = ll.Sweep(prompts=[f"rain {i}" for i in range(8)], models=["fault/tiny"], temperature=0.0, max_tokens=100)
    start = time.monotonic()
    res = sweep.run(display=False, concurrency=8)
    assert (res.df["status"] == "ok").all()
    assert time.monotonic() - start >= 2.9


def test_concurrency_adapts_down_after_429s(fault):
    # the server allows 2 requests in flight and answers 429 beyond that, like a real concurrency limit
    fault.faults.max_concurrent, fault.faults.retry_after_s = 2, 0.02
    fault.app.inner = create_app(delay_ms=2.0)  # calls that take a few ms, so they overlap
    bus = EventBus()
    done: list = []
    bus.subscribe(lambda e: e.kind == "sweep_finished" and done.append(e.data))
    sweep = ll.Sweep(
        prompts=[f"rain and sun {i}" for i in range(60)], models=["fault/tiny"], temperature=0.0, max_tokens=8
    )
    res = sweep.run(display=False, concurrency=16, bus=bus, retry=RetryPolicy(**FAST))
    assert (res.df["status"] == "ok").all()
    limits = done[0]["limits"]["fault/tiny"]
    # adapted down: a smaller window, or a paced rate that keeps fewer requests in flight (Little's law)
    assert limits["cuts"] >= 1 and (limits["window"] < 6 or limits["rate"] is not None)
    # without adapting, every round of 16 would get 14 rejections (hundreds in all); adapting keeps it low
    assert done[0]["rate_limited"] == fault.stats()["outcomes"]["429"] < 60


def _span_s(times: list[float]) -> float:
    return max(times) - min(times) if times else 0.0


def test_re_registering_a_provider_replaces_its_limits_between_runs(fault):
    from llmlab.plan.providers import get_provider

    def sweep(tag):
        return ll.Sweep(
            prompts=[f"{tag} rain {i}" for i in range(6)],
            models=["fault/tiny"],
            temperature=0.0,
            max_tokens=4,
        )

    ll.provider("fault", base_url=fault.base_url, api_key_env=None, rpm=120, tpm=50_000)  # 2 requests/s, burst 1
    assert sweep("a").run(display=False, concurrency=1).df["status"].eq("ok").all()
    limited = _span_s(fault.stats()["times"])
    assert limited >= 1.8  # 6 requests at 2/s after a burst of 2
    # the same cell re-run without the limits: they are gone, not silently kept
    ll.provider("fault", base_url=fault.base_url, api_key_env=None)
    assert get_provider("fault").rpm is None and get_provider("fault").tpm is None
    fault.app.reset()
    assert sweep("b").run(display=False, concurrency=1).df["status"].eq("ok").all()
    assert _span_s(fault.stats()["times"]) < limited


def test_a_running_sweep_picks_up_a_re_registered_rate_limit(fault):
    ll.provider("fault", base_url=fault.base_url, api_key_env=None, rpm=60_000)
    bus = EventBus()
    started: list[str] = []

    def on_event(e) -> None:
        # the call's slot is free before its row is written, so the next request may already be on its way
        # when "finished" comes: the change is made as the 2nd request goes out (its pace already taken)
        if e.kind == "started":
            started.append(e.call_id)
            if len(started) == 2:  # mid-run, as from another notebook cell while arun() goes on
                ll.provider("fault", base_url=fault.base_url, api_key_env=None, rpm=120)

    bus.subscribe(on_event)
    sweep = ll.Sweep(prompts=[f"sun {i}" for i in range(8)], models=["fault/tiny"], temperature=0.0, max_tokens=4)
    res = sweep.run(display=False, concurrency=1, bus=bus)
    assert (res.df["status"] == "ok").all()
    after = sorted(fault.stats()["times"])[2:]  # the 6 requests sent after the change
    assert len(after) == 6 and _span_s(after) >= 1.8  # 2/s after a burst of 2, not the old 1000/s


@pytest.mark.parametrize("as_date", [False, True], ids=["seconds", "http-date"])
def test_retry_after_is_waited_for_whatever_its_form(fault, as_date):
    # every request is rate-limited once, with a 2 s hint; the policy's own backoff is ~10 ms, so
    # the gap between the two attempts shows whether the hint was honoured
    fault.faults.rate_429, fault.faults.max_faults_per_request = 1.0, 1
    fault.faults.retry_after_s, fault.faults.retry_after_date = 2.0, as_date
    res = ll.Sweep(prompts=["rain"], models=["fault/tiny"], temperature=0.0, max_tokens=4).run(
        display=False, retry=RetryPolicy(**FAST)
    )
    assert res.df["status"].tolist() == ["ok"] and res.df["retries"].tolist() == [1]
    first, second = sorted(fault.stats()["times"])
    assert second - first >= 1.0  # an HTTP-date has whole seconds: at least 1 s of the 2 s remain
    assert res.df["latency_ms"].iloc[0] < res.df["queue_ms"].iloc[0]  # the wait is not latency


def test_an_exhausted_quota_is_an_error_at_once_not_twenty_retries(fault):
    # OpenAI answers 429 "insufficient_quota" when the account is out of credit: retrying cannot help
    fault.faults.quota_exhausted = True
    res = ll.Sweep(prompts=["rain", "sun"], models=["fault/tiny"], temperature=0.0, max_tokens=4).run(
        display=False, retry=RetryPolicy(**FAST)
    )
    assert res.df["status"].tolist() == ["error", "error"] and res.df["attempts"].tolist() == [1, 1]
    assert res.df["error"].str.contains("HTTP 429: You exceeded your current quota").all()
    assert fault.stats()["requests"] == 2


def test_parameters_the_openai_client_does_not_know_are_sent_in_the_body(fault):
    # vLLM, Ollama, Qwen take top_k and the like; the openai client only passes them as extra_body
    sweep = ll.Sweep(
        prompts=["What is rain?"],
        models=["fault/tiny"],
        temperature=0.0,
        max_tokens=4,
        params={"top_k": [5, 20], "presence_penalty": [0.5]},
    )
    res = sweep.run(display=False)
    assert (res.df["status"] == "ok").all() and res.df["top_k"].tolist() == [5, 20]
    sent = fault.stats()["by_key"]  # the server saw top_k at the top level of each body
    assert sorted(sent) == sorted(request_key_for_call(c) for c in sweep.calls)
    assert all(c.request_kwargs()["extra_body"] == {"top_k": c.params["top_k"]} for c in sweep.calls)
