"""Helpers of the hostile-input tests: a running collector and a pinger that proves it stays responsive."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from llmlab.collector import background, create_app
from tests.reliability.collector_faults import free_port

PB = {"Content-Type": "application/x-protobuf"}
#: the longest a /v1/ping may take while a hostile request is being processed: a stall used to last the whole
#: request (seconds to hours for the inputs here); 2.5 s leaves room for a loaded 2-core CI machine
PING_BOUND_S = 2.5


class _Client:
    url: str

    def query(self, body: Any = None, *, content: bytes | None = None, timeout: float = 30) -> httpx.Response:
        if content is not None:
            return httpx.post(self.url + "/v1/query/raw", content=content, timeout=timeout)
        return httpx.post(self.url + "/v1/query/raw", json=body, timeout=timeout)

    def dql(self, query: str, **extra: Any) -> httpx.Response:
        return self.query({"queries": [{"query": query, **extra}]})

    def otlp(self, kind: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.post(f"{self.url}/otel/v1/{kind}", content=body, headers=headers or PB, timeout=60)


class Running(_Client):
    """A collector on 127.0.0.1 (real HTTP) with its app, in this process."""

    def __init__(self, db: Path, **kw: Any) -> None:
        self.app = create_app(db, **kw)
        self.server = background(self.app).start()
        self.url = str(self.server.url)

    def stop(self) -> None:
        self.server.stop()
        self.app.state.storage.close()


class Spawned(_Client):
    """``llmlab collector`` in a process of its own, as a user runs it: pings then measure the collector, not the
    test's own client threads competing with it for the GIL."""

    def __init__(self, home: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "llmlab", "collector", "--port", str(port), "--home", str(home)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "/v1/ping", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"llmlab collector did not start: {self.proc.stderr.read()[-2000:]!r}")  # type: ignore[union-attr]
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@contextmanager
def pinging(url: str) -> Iterator[list[float]]:
    """Ping ``url`` every 50 ms while the block runs; yields the list of ping durations (s), filled at exit.

    A ping that fails or takes longer than 5 s is recorded as 99 s.
    """
    durations: list[float] = []
    stop = threading.Event()

    def loop() -> None:
        with httpx.Client(timeout=5) as client:
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    ok = client.get(url + "/v1/ping").status_code == 200
                except httpx.HTTPError:
                    ok = False
                durations.append(time.monotonic() - t0 if ok else 99.0)
                stop.wait(0.05)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not durations and time.monotonic() < deadline:  # one ping answered before the hostile request
            time.sleep(0.02)
        yield durations
    finally:
        stop.set()
        thread.join(10)


def assert_responsive(durations: list[float]) -> None:
    assert durations, "no ping was answered"
    assert max(durations) < PING_BOUND_S, f"/v1/ping took up to {max(durations):.2f} s: {sorted(durations)[-5:]}"


def span_request(service: str, n: int = 1, trace_id: bytes | None = None, span_id: bytes | None = None) -> bytes:
    """An OTLP trace request of ``n`` spans of ``service`` (ids given, or distinct ones)."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=service)))
    ss = rs.scope_spans.add()
    now = time.time_ns()
    for i in range(n):
        sp = ss.spans.add(name=f"op{i}", start_time_unix_nano=now, end_time_unix_nano=now + 1000)
        sp.trace_id = trace_id if trace_id is not None else (i + 1).to_bytes(16, "big")
        sp.span_id = span_id if span_id is not None else (i + 1).to_bytes(8, "big")
    return req.SerializeToString()
