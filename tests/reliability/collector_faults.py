"""A DataKit stand-in that misbehaves on purpose: the embedded collector behind a gate that can
be shut (slow: requests wait), flap (every other request 503), or lose answers (store, then 502,
so the exporter sends the batch again). Bodies are captured for the secrets test."""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
from typing import Any

from llmlab.collector import background, create_app
from llmlab.testing.asgi import read_body, replaying


class GatedCollector:
    def __init__(self, db_path: Any, port: int = 0) -> None:
        self.inner = create_app(db_path)
        self.mode = "ok"  # ok | flap | lose
        self.open = threading.Event()
        self.open.set()
        self.waiting = 0
        self.requests = 0
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.server = background(self, port=port).start()

    @property
    def url(self) -> str:
        return str(self.server.url)

    @property
    def stats(self) -> dict[str, int]:
        return self.inner.state.collector.stats

    def stored_keys(self) -> list[tuple[str, str]]:
        return [tuple(r) for r in self.inner.state.storage._writer.execute("SELECT trace_id, span_id FROM spans")]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/otel/"):
            await self.inner(scope, receive, send)
            return
        body = await read_body(receive)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.requests += 1
        n = self.requests
        self.headers.append(headers)
        self.bodies.append(gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body)
        self.waiting += 1
        try:
            while not self.open.is_set():  # slow DataKit: hold the request
                await asyncio.sleep(0.01)
        finally:
            self.waiting -= 1
        if self.mode == "flap" and n % 2 == 1:
            await _answer(send, 503, b'{"message":"flapping"}')
            return
        replay = replaying(body, receive)
        if self.mode == "lose" and n % 2 == 1:  # stored, but the answer is lost: a re-send follows
            await self.inner(scope, replay, _discard)
            await _answer(send, 502, b'{"message":"bad gateway"}')
            return
        await self.inner(scope, replay, send)

    def stop(self) -> None:
        self.open.set()
        self.server.stop()


async def _discard(message: dict[str, Any]) -> None:
    return None


async def _answer(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
