"""Runner: streamed calls, canonical rows, spans that join, cache, retries, errors, event loops."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import llmlab as ll
from llmlab import schema
from llmlab.events import EventBus
from llmlab.localmodel import count_tokens, create_app
from llmlab.serving import BackgroundServer
from llmlab.store import get_store
from llmlab.store.spanbytes import span_attributes
from llmlab.tracing import flush


@pytest.fixture
def flaky(counting_provider):
    """Provider 'flaky': the embedded model behind a server that counts (and can fail) chat requests."""
    return counting_provider("flaky")


def _span_attrs(trace_id: str, span_id: str) -> dict:
    flush()
    rows = get_store().read("SELECT attrs_json, otlp FROM spans WHERE trace_id=? AND span_id=?", (trace_id, span_id))
    assert rows, "the call's span is not in the store"
    return span_attributes(*rows[0])


def test_streamed_sweep_gives_canonical_rows_and_joinable_spans():
    sweep = ll.Sweep(
        prompts=["What is a rainbow?", "Explain photosynthesis."],
        models=["local/tiny", "local/small"],
        temperature=[0.0, 0.9],
        max_tokens=12,
        seed=3,
    )
    res = sweep.run(display=False)
    df = res.df
    # res.df: settings, prompt and completion first, ids and timestamps last; every canonical column present
    assert list(df.columns[: len(schema.SWEEP_ORDER)]) == schema.SWEEP_ORDER
    assert set(schema.CANONICAL_COLUMNS + schema.SWEEP_COLUMNS) <= set(df.columns)
    assert len(df) == 8 and (df["status"] == "ok").all()
    assert df["call_id"].tolist() == [c.call_id for c in sweep.calls]
    assert (df["ttft_ms"] > 0).all() and (df["ttft_ms"] <= df["latency_ms"]).all()
    assert (df["tokens_per_s"] > 0).all()
    assert str(df["start_time"].dtype).startswith("datetime64") and str(df["start_time"].dt.tz) == "UTC"
    for row in df.itertuples():
        assert row.output_tokens == count_tokens(row.completion)  # usage matches what was streamed
        assert row.finish_reason in ("stop", "length")
        assert not row.tokens_estimated
        attrs = _span_attrs(row.trace_id, row.span_id)
        assert attrs["llmlab.call_id"] == row.call_id and attrs["llmlab.sweep_id"] == res.sweep_id
        assert attrs["llmlab.prompt_id"] == row.prompt_id and attrs["llmlab.repeat"] == row.repeat
        assert attrs["gen_ai.usage.output_tokens"] == row.output_tokens  # streamed usage reached the span
        assert attrs["gen_ai.request.temperature"] == row.temperature
        assert abs(attrs["llmlab.ttft_ms"] - row.ttft_ms) < 1.0
    spans = ll.spans(sweep_id=res.sweep_id, source="local")
    merged = df.merge(spans, on=["trace_id", "span_id"], suffixes=("", "_span"))
    assert len(merged) == 8
    assert (merged["model"] == merged["model_span"]).all()
    assert (merged["completion"] == merged["completion_span"]).all()
    assert (merged["output_tokens"] == merged["output_tokens_span"]).all()


def test_rerun_is_served_from_cache_and_sends_nothing(flaky):
    sweep = ll.Sweep(
        prompts=["What is a rainbow?"], models=["flaky/tiny"], temperature=[0.0, 0.5, 1.0], max_tokens=8, seed=1
    )
    first = sweep.run(display=False)
    assert flaky.requests == 3 and not first.df["cached"].any()
    second = sweep.run(display=False)
    assert flaky.requests == 3  # zero new requests
    assert second.df["cached"].all()
    assert second.df["completion"].tolist() == first.df["completion"].tolist()
    assert (second.df["cost_usd"] == 0).all()  # a cached response is not paid again
    third = sweep.run(display=False, cache=False)
    assert flaky.requests == 6 and not third.df["cached"].any()


def test_429_with_retry_after_is_retried_and_counted(flaky):
    flaky.fail_first = 2
    bus = EventBus()
    seen = []
    bus.subscribe(seen.append)
    res = ll.Sweep(prompts=["a rainbow", "the sun"], models=["flaky/tiny"], temperature=0.0, max_tokens=6).run(
        display=False, bus=bus
    )
    assert (res.df["status"] == "ok").all()
    assert res.df["attempts"].tolist() == [3, 3] and res.df["retries"].tolist() == [2, 2]
    assert sum(e.kind == "retry" for e in seen) == 4
    # waiting and failed attempts are kept out of latency
    assert (res.df["queue_ms"] > 0).all()
    kinds = [e.kind for e in seen if e.call_id == res.df["call_id"][0]]
    assert kinds[0] == "queued" and kinds[-1] == "finished" and "token" in kinds


def test_permanent_failure_becomes_an_error_row_and_the_sweep_goes_on(flaky):
    flaky.fail_first = 100
    flaky.status = 400
    res = ll.Sweep(prompts=["x"], models=["flaky/tiny"], temperature=[0.0, 0.5], max_tokens=4).run(display=False)
    assert (res.df["status"] == "error").all()
    assert res.df["error"].str.contains("HTTP 400").all()
    assert res.df["attempts"].tolist() == [1, 1]  # 400 is not retried
    # nothing cached: a later run tries again
    flaky.fail_first = 0
    again = ll.Sweep(prompts=["x"], models=["flaky/tiny"], temperature=[0.0, 0.5], max_tokens=4).run(display=False)
    assert (again.df["status"] == "ok").all() and not again.df["cached"].any()


async def test_run_works_inside_a_running_event_loop_and_arun_awaits():
    sweep = ll.Sweep(prompts=["What is rain?"], models=["local/tiny"], temperature=[0.0, 0.7], max_tokens=6)
    res = sweep.run(display=False)  # blocking call from inside a running loop (a Jupyter kernel)
    assert len(res.df) == 2 and (res.df["status"] == "ok").all()
    res2 = await sweep.arun(display=False, cache=False)
    assert len(res2.df) == 2 and not res2.df["cached"].any()
    assert asyncio.get_running_loop().is_running()


def test_reconfigure_in_the_same_process_takes_effect(tmp_path):
    ll.configure(home=tmp_path / "a", app_name="first-app", datakit=None)
    r1 = ll.Sweep(prompts=["hi"], temperature=0.0, max_tokens=4).run(display=False)
    ll.configure(home=tmp_path / "b", app_name="second-app", datakit=None)
    r2 = ll.Sweep(prompts=["hi"], temperature=0.0, max_tokens=4).run(display=False)
    assert not r2.df["cached"].any()  # new home: new cache
    flush()
    ll.configure(home=tmp_path / "a", app_name="first-app", datakit=None)
    assert ll.spans(sweep_id=r1.sweep_id, source="local")["service"].tolist() == ["first-app"]
    ll.configure(home=tmp_path / "b", datakit=None)
    assert ll.spans(sweep_id=r2.sweep_id, source="local")["service"].tolist() == ["second-app"]


def test_trace_content_false_keeps_text_out_of_spans_and_store(tmp_path):
    ll.configure(trace_content=False, datakit=None)
    res = ll.Sweep(prompts=["What is a rainbow? zebra-marker"], temperature=0.0, max_tokens=8).run(display=False)
    assert res.df["completion"].iloc[0]  # the user still sees it in memory
    flush()
    completion = res.df["completion"].iloc[0]
    raw = (ll.configure().home / "llmlab.db").read_bytes()
    for path in ll.configure().home.glob("llmlab.db*"):
        raw += path.read_bytes()
    assert b"zebra-marker" not in raw
    assert completion.encode() not in raw


def test_cancel_accounts_for_every_call(monkeypatch):
    """Cancelled mid-way: every planned call is either a row or in res.skipped, none lost."""
    from llmlab.run.runner import RunHandle

    monkeypatch.setenv("LLMLAB_LOCAL_DELAY_MS", "5")
    handle = RunHandle()
    bus = EventBus()
    bus.subscribe(lambda e: handle.cancel() if e.kind == "finished" else None)
    sweep = ll.Sweep(prompts=[f"question {i}" for i in range(10)], temperature=[0.0, 0.5], max_tokens=8)
    res = sweep.run(display=False, concurrency=2, bus=bus, handle=handle)
    assert res.stopped == "cancelled"
    assert 1 <= len(res.df) < len(sweep.calls)
    assert len(res.df) + len(res.skipped) == len(sweep.calls)
    assert set(res.df["call_id"]).isdisjoint(res.skipped["call_id"])
    again = sweep.run(display=False, concurrency=4)  # resumes: finished calls come from the cache
    assert again.df["cached"].sum() == (res.df["status"] == "ok").sum()


def test_tokens_are_estimated_offline_when_the_provider_sends_no_usage():
    from llmlab.tokens import estimate_messages_tokens, estimate_tokens
    from tests.core.faulty import NoUsageApp

    server = BackgroundServer(NoUsageApp(create_app(delay_ms=0))).start()
    try:
        ll.provider("nousage", base_url=server.url + "/v1", api_key_env=None)
        sweep = ll.Sweep(prompts=["What is a rainbow?"], models=["nousage/small"], temperature=0.0, max_tokens=12)
        row = sweep.run(display=False).df.iloc[0]
    finally:
        server.stop()
    assert row["status"] == "ok" and bool(row["tokens_estimated"]) is True
    assert row["output_tokens"] == estimate_tokens(row["completion"])
    assert row["input_tokens"] == estimate_messages_tokens(list(sweep.calls[0].messages))
    assert row["total_tokens"] == row["input_tokens"] + row["output_tokens"]


async def test_cancelling_the_arun_task_records_the_sweep_as_cancelled_and_keeps_what_finished(monkeypatch):
    monkeypatch.setenv("LLMLAB_LOCAL_DELAY_MS", "5")
    bus = EventBus()
    seen: dict = {"finished": 0}
    two_done = asyncio.Event()

    def on_event(e) -> None:
        if e.kind == "sweep_started":
            seen["sweep_id"] = e.sweep_id
        elif e.kind == "finished":
            seen["finished"] += 1
            if seen["finished"] == 2:
                two_done.set()
        elif e.kind == "sweep_finished":
            seen["stopped"] = e.data["stopped"]

    bus.subscribe(on_event)
    sweep = ll.Sweep(prompts=[f"question {i}" for i in range(10)], temperature=[0.0, 0.5], max_tokens=8)
    task = asyncio.ensure_future(sweep.arun(display=False, concurrency=2, bus=bus))
    await two_done.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen["stopped"] == "cancelled"  # the displays were told
    status, n_ok, n_skipped = get_store().read(
        "SELECT status, n_ok, n_skipped FROM sweeps WHERE sweep_id=?", (seen["sweep_id"],)
    )[0]
    assert status == "cancelled" and n_ok == seen["finished"] >= 2 and n_ok + n_skipped == 20
    again = await sweep.arun(display=False, concurrency=4)  # finished calls were kept: served from the cache
    assert int(again.df["cached"].sum()) == n_ok


def test_a_write_whose_waiter_gave_up_still_lands_and_the_store_writer_lives_on():
    """A cancelled sweep task cancels the store future it awaited; that must neither drop the write
    (the call was paid for) nor kill the writer thread (every later write would hang)."""
    import threading

    store = get_store()
    gate = threading.Event()
    store.submit(lambda db: gate.wait(30))  # holds the writer, so the next write is still queued
    fut = store.submit(lambda db: db.execute("CREATE TABLE gave_up (x)"))
    assert fut.cancel()
    gate.set()
    store.flush()  # would time out if the writer thread had died on the cancelled future
    assert store.read("SELECT count(*) FROM sqlite_master WHERE name='gave_up'") == [(1,)]
    assert store.write(lambda db: 42) == 42


def test_interrupting_a_blocking_run_inside_a_running_loop_keeps_what_finished(tmp_path):
    """The kernel's stop button during ``run()`` in a cell (a loop is running, so the sweep is on a
    worker thread): SIGINT stops the sweep and ``run()`` returns what finished."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "cell.py"
    script.write_text(
        "import asyncio, json, signal\n"
        "import llmlab as ll\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)  # as ipykernel has it\n"
        "sweep = ll.Sweep(prompts=[f'rain and sun {i}' for i in range(8)], models=['local/small'], temperature=[0.0, 0.9],\n"
        "                 max_tokens=40, seed=1)\n"
        "async def cell():\n"
        "    res = sweep.run(display=False, concurrency=2)  # blocking, inside the running loop\n"
        "    print(json.dumps({'stopped': res.stopped, 'rows': len(res.df), 'skipped': len(res.skipped)}), flush=True)\n"
        "asyncio.new_event_loop().run_until_complete(cell())  # a kernel's loop: no SIGINT handler of asyncio's\n"
    )
    home = tmp_path / "home"
    env = {
        **os.environ,
        "LLMLAB_HOME": str(home),
        "LLMLAB_LOCAL_DELAY_MS": "25",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no call finished"
        db = home / "llmlab.db"
        if db.exists():
            import sqlite3

            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
                    if con.execute("SELECT count(*) FROM calls").fetchone()[0] >= 2:
                        break
            except sqlite3.OperationalError:
                pass
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["stopped"] == "cancelled" and result["rows"] >= 2 and result["rows"] + result["skipped"] == 16


def test_connection_error_row_names_the_provider_and_its_url():
    from llmlab.run.retry import RetryPolicy

    ll.provider("downhost", base_url="http://127.0.0.1:9/v1", api_key_env=None)
    res = ll.Sweep(prompts=["hi"], models=["downhost/m"], temperature=[0.0], max_tokens=4).run(
        display=False, retry=RetryPolicy(max_attempts=1)
    )
    error = res.df["error"][0]
    assert res.df["status"][0] == "error"
    assert "provider 'downhost' at http://127.0.0.1:9/v1" in error, error


def test_provider_clients_use_openais_own_http_stack_and_accept_a_transport():
    """No legacy ``httpx.AsyncClient`` between llmlab and the model: the openai client's own
    httpx2-based stack carries every call, and an ``httpx2`` transport drives a whole sweep
    in-process through the real openai client (no socket)."""
    import httpx
    import httpx2

    from llmlab.plan.providers import get_provider, make_client

    client = make_client(get_provider("local"))
    assert isinstance(client._client, httpx2.AsyncClient) and not isinstance(client._client, httpx.AsyncClient)
    ll.provider("inproc", base_url="http://inproc.invalid/v1", api_key_env=None)
    app = create_app(delay_ms=0)
    sweep = ll.Sweep(prompts=["What is a rainbow?"], models=["inproc/tiny"], repeats=3, max_tokens=8)
    res = sweep.run(display=False, cache=False, transport=httpx2.ASGITransport(app=app))
    assert (res.df["status"] == "ok").all() and (res.df["output_tokens"] > 0).all()


def test_a_saturated_event_loop_is_measured_and_said_once():
    """A subscriber that blocks the loop makes latencies include loop waits: the sweep says so, once."""
    import time as _time

    bus = EventBus()
    events: list = []
    bus.subscribe(lambda e: e.kind == "token" and _time.sleep(0.15))  # a slow subscriber on the loop
    bus.subscribe(lambda e: e.kind in ("loop_saturated", "sweep_finished") and events.append(e))
    sweep = ll.Sweep(prompts=["What is a rainbow?", "Explain tides."], models=["local/tiny"], max_tokens=8)
    res = sweep.run(display=False, cache=False, bus=bus)
    assert (res.df["status"] == "ok").all()
    saturated = [e for e in events if e.kind == "loop_saturated"]
    assert len(saturated) == 1 and "lower concurrency" in saturated[0].data["hint"]
    assert events[-1].data["loop_lag_ms"]["max"] > 100


def test_a_cpu_heavy_subscriber_holds_concurrency_back_instead_of_inflating_latencies():
    """Real load on the loop (a subscriber burning CPU on every token): the sweep-wide in-flight cap
    comes down while the lag stays high, the sweep says so once, and every call still finishes."""
    import time as _time

    def burn(event) -> None:
        if event.kind == "token":
            end = _time.perf_counter() + 0.004
            while _time.perf_counter() < end:
                pass

    bus = EventBus()
    events: list = []
    bus.subscribe(burn)
    bus.subscribe(lambda e: e.kind in ("loop_saturated", "sweep_finished") and events.append(e))
    sweep = ll.Sweep(prompts=[f"Explain tides, part {i}." for i in range(24)], models=["local/tiny"], max_tokens=16)
    res = sweep.run(display=False, cache=False, bus=bus, concurrency=32)
    assert (res.df["status"] == "ok").all()
    assert len([e for e in events if e.kind == "loop_saturated"]) == 1
    cap = events[-1].data["in_flight_cap"]
    assert cap["cuts"] >= 1 and cap["lowest"] < 32


def test_the_in_flight_cap_follows_the_loop_lag():
    from llmlab.run.limits import InFlightCap

    cap = InFlightCap(16)
    cap.HOLD_S = 0.0
    for _ in range(3):
        cap.on_lag(300.0, 100.0)
    assert cap.limit < 16 and cap.lowest == cap.limit and cap.summary()["cuts"] == 3
    for _ in range(20):
        cap.on_lag(10.0, 100.0)
    assert cap.limit == 16 and cap.summary()["lowest"] < 16
    for _ in range(30):
        cap.on_lag(1000.0, 100.0)
    assert cap.limit == 1  # never below one call in flight

    async def fill() -> int:
        cap.size = 2.0
        entered = 0

        async def one() -> None:
            nonlocal entered
            async with cap:
                entered += 1
                await asyncio.sleep(0.01)

        tasks = [asyncio.ensure_future(one()) for _ in range(5)]
        await asyncio.sleep(0)
        first = cap.in_flight
        await asyncio.gather(*tasks)
        assert entered == 5
        return first

    assert asyncio.run(fill()) == 2


def test_a_large_sweep_holds_tasks_for_the_calls_in_flight_not_for_every_call():
    """Calls get their asyncio task when their provider+model has a free slot: a 10,000-call sweep
    does not hold 10,000 tasks (and their rows) from its start."""
    seen: list[int] = []
    bus = EventBus()
    bus.subscribe(lambda e: seen.append(len(asyncio.all_tasks())) if e.kind == "started" else None)
    sweep = ll.Sweep(prompts=[f"q {i}" for i in range(120)], models=["local/tiny", "local/small"], max_tokens=2)
    res = sweep.run(display=False, concurrency=3, cache=False, bus=bus)
    assert (res.df["status"] == "ok").all() and len(res.df) == len(sweep.calls) >= 240
    # per model its feeder and 3 calls in flight, calls whose row is being written (their slot is free
    # already), the sweep's own task and its loop-lag watcher: a few dozen at most, not one per call
    assert max(seen) <= 60 < len(sweep.calls), max(seen)


def test_the_garbage_collector_is_quiet_during_a_sweep_and_restored_after():
    import gc

    from llmlab.run.heap import SWEEP_THRESHOLDS

    before = gc.get_threshold()
    during: list[tuple] = []
    bus = EventBus()
    bus.subscribe(lambda e: during.append((gc.get_threshold(), gc.get_freeze_count())) if e.kind == "started" else None)
    res = ll.Sweep(prompts=["a", "b"], models=["local/tiny"], max_tokens=2).run(display=False, cache=False, bus=bus)
    assert (res.df["status"] == "ok").all()
    assert during and all(t == SWEEP_THRESHOLDS and frozen > 0 for t, frozen in during)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    gc.disable()
    try:  # a process that turned the collector off is left alone
        during.clear()
        ll.Sweep(prompts=["c"], models=["local/tiny"], max_tokens=2).run(display=False, cache=False, bus=bus)
        assert during and all(t == before and frozen == 0 for t, frozen in during)
    finally:
        gc.enable()
