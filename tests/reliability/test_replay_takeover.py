"""A killed ``llmlab replay`` (issue #16 item 12): the next replay takes over its leases at once
(same host, process gone) and delivers each span once; a live holder is named while waited for."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import llmlab as ll
from llmlab.store import get_store
from llmlab.tracing import flush
from llmlab.tracing.export import LEASE_S, drain
from tests.reliability.collector_faults import GatedCollector, free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def collector(tmp_path):
    c = GatedCollector(tmp_path / "collector.db", port=free_port())
    yield c
    c.stop()


def _spool(tmp_path: Path, n: int) -> tuple[ll.Config, set[tuple[str, str]]]:
    """A home with ``n`` calls' spans spooled (DataKit was down for the sweep)."""
    config = ll.configure(home=tmp_path / "home", datakit=f"http://127.0.0.1:{free_port()}")
    ll.Sweep(prompts=[f"spool {i}" for i in range(n)], models=["fault/tiny"], temperature=0.0, max_tokens=6).run(
        display=False
    )
    flush()
    keys = {tuple(r) for r in get_store().read("SELECT trace_id, span_id FROM spans WHERE export_state = 0")}
    assert len(keys) >= n
    return config, keys


def _replay(home: Path, url: str) -> subprocess.Popen[str]:
    env = {**os.environ, "LLMLAB_DATAKIT_URL": url, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "llmlab", "replay", "--home", str(home)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(cond, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_a_replay_killed_mid_batch_does_not_stall_the_next_one(fault, tmp_path, collector):
    config, keys = _spool(tmp_path, 12)
    collector.open.clear()  # DataKit hangs: the first replay leases a batch and waits on it
    first = _replay(tmp_path / "home", collector.url)
    _wait_for(lambda: collector.waiting >= 1)
    leased = get_store().read("SELECT count(*) FROM spans WHERE export_state = 0 AND lease_until > ?", (time.time(),))
    assert leased[0][0] == len(keys)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    collector.open.set()

    second = _replay(tmp_path / "home", collector.url)
    start = time.monotonic()
    out, err = second.communicate(timeout=LEASE_S + 30)
    took = time.monotonic() - start
    assert second.returncode == 0, err
    assert took < 15, f"the second replay waited {took:.0f}s for a dead process's lease"
    assert "0 pending" in out
    flush()
    assert get_store().pending_count() == 0
    _wait_for(lambda: len(collector.stored_keys()) >= len(keys), timeout=10)
    stored = collector.stored_keys()
    assert len(stored) == len(set(stored)) and set(stored) == keys  # each span once


def test_a_live_lease_holder_is_named_while_waited_for(fault, tmp_path, collector):
    config, keys = _spool(tmp_path, 3)
    collector.open.clear()
    first = _replay(tmp_path / "home", collector.url)
    try:
        _wait_for(lambda: collector.waiting >= 1)
        messages: list[str] = []
        result = drain(config, deadline_s=1.0, on_wait=messages.append)
        assert result["sent"] == 0 and result["pending"] == len(keys)
        assert len(messages) == 1 and f":{first.pid} (host:pid)" in messages[0] and "leased until" in messages[0]
    finally:
        collector.open.set()
        out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert get_store().pending_count() == 0
