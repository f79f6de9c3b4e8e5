"""ll.configure(otlp_endpoint=...) exports the same spans to a plain OTLP/HTTP collector —
here a third-party receiver from PyPI (``oteltap``, a Rust OTLP/HTTP receiver) — alongside or
instead of DataKit, with the outbox's guarantees: every span exactly once, also after an outage
and ``llmlab replay``."""

from __future__ import annotations

import asyncio
import collections
import os
import socket
import subprocess
import sys
import threading
import time

import oteltap  # a dev dependency: the test fails, never skips, when it is missing
import pytest

import llmlab as ll
from llmlab.config import ConfigError
from llmlab.store import get_store
from llmlab.tracing import flush
from llmlab.tracing.export import drain
from tests.datakit.test_export import SWEEP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Tap:
    """oteltap's receiver on ``port`` in a thread of its own, counting spans by id."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.seen: collections.Counter[str] = collections.Counter()
        self.names: dict[str, str] = {}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(20), "oteltap did not start"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        settings = oteltap.OtelTapHttpProtobufReceiverSettings(http_port=self.port)
        self._receiver = oteltap.OtelTapHttpProtobufReceiver(settings)
        await self._receiver.start()
        stream = self._receiver.stream_traces()
        self._ready.set()
        async for span in stream:
            self.seen[span.span_id.hex()] += 1
            self.names[span.span_id.hex()] = span.name

    def stop(self) -> None:
        fut = asyncio.run_coroutine_threadsafe(self._receiver.stop(), self._loop)
        fut.result(20)
        self._thread.join(20)

    def wait_for(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seen) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # and nothing more arrives


def _span_ids(cfg: ll.Config) -> set[str]:
    return {r[0] for r in get_store(cfg.home).read("SELECT span_id FROM spans")}


def test_configure_validates_the_endpoint(monkeypatch):
    cfg = ll.configure(otlp_endpoint="http://localhost:4318/v1/traces/", otlp_headers={"x-api-key": "k"})
    assert cfg.otlp_endpoint == "http://localhost:4318" and cfg.otlp_headers == {"x-api-key": "k"}
    monkeypatch.setenv("LLMLAB_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("LLMLAB_OTLP_HEADERS", "authorization=Bearer%20t")
    cfg = ll.configure()
    assert cfg.otlp_endpoint == "http://collector:4318" and cfg.otlp_headers == {"authorization": "Bearer t"}
    with pytest.raises(ConfigError, match="otlp_endpoint"):
        ll.configure(otlp_endpoint="collector:4318")


def test_alongside_datakit_every_span_reaches_both_once():
    port = _free_port()
    tap = Tap(port)
    try:
        cfg = ll.configure(datakit="embedded", otlp_endpoint=f"http://127.0.0.1:{port}")
        res = ll.Sweep(**SWEEP).run(display=False)
        flush()
        assert drain(cfg)["pending"] == 0
        ids = _span_ids(cfg)
        tap.wait_for(len(ids))
        assert set(tap.seen) == ids and set(tap.seen.values()) == {1}
        assert len(ll.spans(sweep_id=res.sweep_id, source="datakit")) == len(res.df) == 4
    finally:
        tap.stop()


def test_instead_of_datakit_after_an_outage_and_llmlab_replay_every_span_arrives_once(home):
    port = _free_port()
    cfg = ll.configure(datakit=None, otlp_endpoint=f"http://127.0.0.1:{port}")  # receiver not up yet
    res = ll.Sweep(**SWEEP).run(display=False)
    flush()
    failed = drain(cfg, deadline_s=5)
    assert failed["sent"] == 0 and failed["pending"] >= 4 and failed["error"]
    ids = _span_ids(cfg)
    assert get_store(cfg.home).pending_count("otlp_state") == len(ids)
    tap = Tap(port)
    try:
        env = {
            **os.environ,
            "LLMLAB_HOME": str(home),
            "LLMLAB_DATAKIT_URL": "none",
            "LLMLAB_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        }
        out = subprocess.run(
            [sys.executable, "-m", "llmlab", "replay"], capture_output=True, text=True, env=env, timeout=120
        )
        assert out.returncode == 0, out.stderr
        assert "0 pending" in out.stdout
        tap.wait_for(len(ids))
        assert set(tap.seen) == ids and set(tap.seen.values()) == {1}, tap.seen
        assert sum(1 for n in tap.names.values() if n == "openai.chat") == len(res.df)
        assert drain(cfg) == {"sent": 0, "pending": 0, "error": None}
    finally:
        tap.stop()
