"""SIGKILL half-way through a sweep; the re-run sends only what had not finished."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import llmlab as ll
from llmlab.localmodel import create_app
from llmlab.testing import request_key_for_call
from tests.reliability.sweeper import build

SCRIPT = Path(__file__).with_name("sweeper.py")
ROOT = Path(__file__).resolve().parents[2]


def sweeper(home: Path, base_url: str, **kw) -> subprocess.Popen:
    args = [sys.executable, str(SCRIPT), "--home", str(home), "--base-url", base_url]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))


def finished_calls(home: Path) -> set[str]:
    db = home / "llmlab.db"
    if not db.exists():
        return set()
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return {r[0] for r in con.execute("SELECT call_id FROM calls WHERE status='ok'")}
    except sqlite3.OperationalError:  # not migrated yet
        return set()


def test_sigkill_half_way_then_rerun_sends_only_the_unfinished_calls(fault, home):
    n = 40
    fault.app.inner = create_app(
        delay_ms=8.0
    )  # ~200 ms per call: the sweep takes ~2 s, so the kill lands well before the end
    proc = sweeper(home, fault.base_url, n=n, concurrency=4)
    deadline = time.monotonic() + 60
    done: set[str] = set()
    while len(done) < n // 2:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the sweep did not get half-way"
        time.sleep(0.02)
        done = finished_calls(home)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    done = finished_calls(home)  # what the killed process had made durable
    assert n // 2 <= len(done) < n
    sweep = build(n, "resume", 24)
    keys = {c.call_id: request_key_for_call(c) for c in sweep.calls}
    before = dict(fault.stats()["by_key"])
    assert all(before.get(keys[c]) == 1 for c in done)  # no faults: each finished call was sent once

    # the same sweep again, in a new process, against the same server
    fault.app.reset()
    proc = sweeper(home, fault.base_url, n=n, concurrency=4)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"sweep_id": result["sweep_id"], "ok": n, "rows": n, "cached": len(done)}
    resent = fault.stats()["by_key"]
    # only the unfinished calls were sent, each once; nothing that had finished was paid for twice
    assert set(resent) == {keys[c] for c in keys if c not in done}
    assert set(resent.values()) == {1}
    assert finished_calls(home) == set(keys)
    # the re-run's result is complete and its rows are in the store
    ll.configure(home=home, datakit=None)
    from llmlab.store import get_store

    rows = get_store().call_rows(result["sweep_id"])
    assert len(rows) == n and {r["status"] for r in rows} == {"ok"}


def test_two_processes_running_the_same_sweep_at_once_pay_for_each_call_once(fault, home):
    n = 24
    fault.app.inner = create_app(delay_ms=4.0)  # ~100 ms per call: the two runs overlap all the way
    procs = [sweeper(home, fault.base_url, n=n, concurrency=4, tag="twin") for _ in range(2)]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    # both end with the complete result ...
    assert [(o["ok"], o["rows"]) for o in outs] == [(n, n), (n, n)]
    # ... and each call was sent once: what one process sent, the other waited for and read from the store
    sent = fault.stats()["by_key"]
    sweep = build(n, "twin", 24)
    assert sorted(sent) == sorted(request_key_for_call(c) for c in sweep.calls) and set(sent.values()) == {1}
    assert sum(o["cached"] for o in outs) == n
    with sqlite3.connect(home / "llmlab.db") as con:
        assert con.execute("SELECT count(*) FROM call_claims").fetchone()[0] == 0  # nothing left claimed


async def test_the_same_sweep_twice_at_once_in_one_kernel_pays_once(fault):
    fault.app.inner = create_app(delay_ms=2.0)
    sweep = build(12, "kernel-twin", 16)
    first, second = await asyncio.gather(
        sweep.arun(display=False, concurrency=4), sweep.arun(display=False, concurrency=4)
    )
    assert (first.df["status"] == "ok").all() and (second.df["status"] == "ok").all()
    assert first.df["completion"].tolist() == second.df["completion"].tolist()
    assert set(fault.stats()["by_key"].values()) == {1} and len(fault.stats()["by_key"]) == 12
    assert int(first.df["cached"].sum() + second.df["cached"].sum()) == 12


def test_stale_claims_are_taken_over_whoever_left_them(fault, home):
    """Claims left by a sweep that is gone — in a process that died, even one whose pid is now ours
    (reused), or in this process — do not hold up a new run: it sends those calls itself."""
    import os
    import socket

    from llmlab.store import get_store
    from llmlab.store.database import _PROCESS

    sweep = build(3, "stale", 8)
    ids = [c.call_id for c in sweep.calls]
    store = get_store()
    stale = [
        (ids[0], "sw-dead", f"{socket.gethostname()}/deadbeef0000", os.getpid()),  # our pid, reused
        (ids[1], "sw-dead", f"{socket.gethostname()}/deadbeef0001", 2**22 + 7),  # no such process
        (ids[2], "sw-gone", _PROCESS, os.getpid()),
    ]  # this process, a sweep no longer running
    store.write(
        lambda db: db.executemany(
            "INSERT INTO call_claims (call_id, owner, host, pid, claimed_at) VALUES (?,?,?,?, '2026-01-01T00:00:00+00:00')",
            stale,
        )
    )
    res = sweep.run(display=False)
    assert (res.df["status"] == "ok").all() and not res.df["cached"].any()
    assert set(fault.stats()["by_key"].values()) == {1} and len(fault.stats()["by_key"]) == 3
    assert store.read("SELECT count(*) FROM call_claims") == [(0,)]
