"""Small ASGI wrappers around the embedded model: fail the first attempts of each request, or drop usage."""

from __future__ import annotations

import collections
import hashlib
import json
from typing import Any

from llmlab.testing.asgi import read_body, replaying


class FlakyApp:
    """Answers the first ``fail_first`` attempts of each distinct request with ``status``; counts requests."""

    def __init__(self, inner: Any, fail_first: int = 1, status: int = 429, retry_after: str | None = "0.01") -> None:
        self.inner = inner
        self.fail_first = fail_first
        self.status = status
        self.retry_after = retry_after
        self.seen: collections.Counter[str] = collections.Counter()
        self.requests = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/chat/completions"):
            await self.inner(scope, receive, send)
            return
        body = await read_body(receive)
        self.requests += 1
        key = hashlib.sha256(body).hexdigest()
        self.seen[key] += 1
        if self.seen[key] <= self.fail_first:
            payload = json.dumps(
                {"error": {"message": "slow down", "type": "rate_limit_error", "param": None, "code": None}}
            ).encode()
            headers = [(b"content-type", b"application/json")]
            if self.retry_after is not None:
                headers.append((b"retry-after", self.retry_after.encode()))
            await send({"type": "http.response.start", "status": self.status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
            return
        await self.inner(scope, replaying(body, receive), send)


class NoUsageApp:
    """Forwards to the embedded model but drops ``stream_options``: like a provider that never sends usage."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/chat/completions"):
            await self.inner(scope, receive, send)
            return
        payload = json.loads(await read_body(receive))
        payload.pop("stream_options", None)
        body = json.dumps(payload).encode()
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"] + [
            (b"content-length", str(len(body)).encode())
        ]
        await self.inner({**scope, "headers": headers}, replaying(body, receive), send)
