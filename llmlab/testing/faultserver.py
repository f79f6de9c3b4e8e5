"""A fault-injecting OpenAI-compatible server for tests (yours and llmlab's).

It wraps the embedded model server (:func:`llmlab.localmodel.create_app`) and answers a chosen
share of chat-completion requests badly: 429 with ``Retry-After``, 500/502/503, a first byte
slower than the client's timeout, or a stream cut mid-way (cleanly ended without a finish, torn
inside an SSE event, or aborted at the socket). Which request fails is decided from a seeded
hash of the request body and of how often that body was seen, so a run is reproducible and the
retries of one call get fresh decisions. Every request is counted per *request key* (a hash of
the body without the stream options, see :func:`request_key`), which is how tests assert "no
call was sent twice" or "only the unfinished calls were re-sent", also across processes via
``GET /_faults/stats``.

Example:
    >>> from llmlab.testing import FaultServer
    >>> with FaultServer(rate_429=0.3, rate_5xx=0.1, rate_cut=0.05, seed=1) as fs:   # doctest: +SKIP
    ...     ll.provider("fault", base_url=fs.base_url)
    ...     res = ll.Sweep(prompts=[...], models=["fault/tiny"]).run()
    ...     fs.stats()["outcomes"]
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import email.utils
import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Mapping
from typing import Any

from llmlab.testing.asgi import read_body, replaying

__all__ = ["FaultApp", "FaultProcess", "FaultServer", "Faults", "echo_app", "request_key", "request_key_for_call"]

_VOLATILE = ("stream", "stream_options")


def request_key(body: Mapping[str, Any]) -> str:
    """Stable key of a chat-completion request body (stream options ignored)."""
    clean = {k: v for k, v in body.items() if k not in _VOLATILE}
    text = json.dumps(clean, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def request_key_for_call(call: Any) -> str:
    """The :func:`request_key` a :class:`llmlab.plan.grid.Call` produces when it is sent."""
    kwargs = call.request_kwargs()
    kwargs.update(kwargs.pop("extra_body", None) or {})  # the openai client sends these at the top level
    return request_key(json.loads(json.dumps(kwargs)))


def echo_app(tokens: int = 4, delay_ms: float = 0.0) -> Any:
    """A cheap OpenAI-compatible chat app: every request is answered with ``tokens`` streamed words
    (`` w0 w1 …``, at most the request's ``max_tokens``) and a usage chunk; no model behind it, so a
    test measures the client and the faults, not a model's CPU. ``delay_ms`` is slept before each
    word (a provider's latency without its CPU). Non-chat paths answer 404."""

    def event(data: dict[str, Any]) -> bytes:
        body = {"id": "echo", "object": "chat.completion.chunk", "created": 0, "model": "echo", **data}
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        raw = await read_body(receive)
        if not scope["path"].endswith("/chat/completions"):
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        try:
            body = json.loads(raw)
            n = max(1, min(tokens, int(body.get("max_tokens") or tokens)))
        except (ValueError, TypeError, AttributeError):
            n = tokens
        chunks = [
            event(
                {
                    "choices": [
                        {"index": 0, "delta": {"content": f" w{i}"}, "finish_reason": "length" if i == n - 1 else None}
                    ]
                }
            )
            for i in range(n)
        ]
        usage = {"prompt_tokens": 3, "completion_tokens": n, "total_tokens": 3 + n}
        chunks.append(event({"choices": [], "usage": usage}))
        chunks.append(b"data: [DONE]\n\n")
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        if delay_ms > 0:
            for i, data in enumerate(chunks):
                if i < n:
                    await asyncio.sleep(delay_ms / 1000.0)
                await send({"type": "http.response.body", "body": data, "more_body": i < len(chunks) - 1})
            return
        await send({"type": "http.response.body", "body": b"".join(chunks)})

    return app


@dataclasses.dataclass
class Faults:
    """What share of chat-completion requests fail, and how.

    Attributes:
        rate_429: share answered 429 with ``Retry-After`` / ``retry-after-ms``.
        rate_5xx: share answered 500, 502 or 503.
        rate_slow: share whose first byte comes after ``slow_s`` (past the client's timeout).
        rate_cut: share whose stream is cut after a few events.
        retry_after_s: the Retry-After hint of a 429 (None: no header).
        retry_after_date: send the hint only as an HTTP-date ``Retry-After`` (as some gateways do)
            instead of ``retry-after-ms`` plus seconds.
        slow_s: delay of a slow first byte.
        seed: decisions are a function of (seed, request key, attempt number).
        max_faults_per_request: after this many faults a request key is always answered (None: no cap).
        max_concurrent: answer 429 when more chat requests than this are in flight (a real limit).
        echo_auth: put the caller's ``Authorization`` header in error bodies (a careless provider).
        echo_auth_slice: quote only ``key[start:end]`` of it in error bodies (providers that show part of a key).
        quota_exhausted: answer every chat request 429 ``insufficient_quota``, as OpenAI does when
            the account is out of credit (waiting does not help).
        invalid_key: answer every chat request 401 ``invalid_api_key``, as OpenAI does for a wrong key.
        delay_ms: per-token delay of the wrapped model server.
        bucket_rps: enforce a token-bucket rate limit of this many chat requests per second, as
            providers do: a request finding the bucket empty is answered 429 with the time until
            the next token as ``retry-after-ms`` (and ``Retry-After`` in whole seconds). None: no limit.
        bucket_burst: the bucket's size (default: one second's worth, ``bucket_rps``).
    """

    rate_429: float = 0.0
    rate_5xx: float = 0.0
    rate_slow: float = 0.0
    rate_cut: float = 0.0
    retry_after_s: float | None = 0.02
    retry_after_date: bool = False
    slow_s: float = 2.0
    seed: int = 0
    max_faults_per_request: int | None = None
    max_concurrent: int | None = None
    echo_auth: bool = False
    echo_auth_slice: tuple[int, int] | None = None
    quota_exhausted: bool = False
    invalid_key: bool = False
    delay_ms: float = 0.0
    bucket_rps: float | None = None
    bucket_burst: float | None = None

    def __post_init__(self) -> None:
        for name in ("rate_429", "rate_5xx", "rate_slow", "rate_cut"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value!r}: must be a share in [0, 1]")
        if self.rate_429 + self.rate_5xx + self.rate_slow + self.rate_cut > 1.0 + 1e-9:
            raise ValueError("the fault shares add up to more than 1")


class _Cut(Exception):
    """Raised inside the app to make the server drop the connection mid-stream."""


class _DropCut(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, _Cut)


class FaultApp:
    """The ASGI app: faults in front of an OpenAI-compatible app; counters for assertions."""

    def __init__(self, faults: Faults | None = None, inner: Any = None) -> None:
        if inner is None:
            from llmlab.localmodel import create_app

            inner = create_app(delay_ms=(faults or Faults()).delay_ms)
        self.faults = faults or Faults()
        self.inner = inner
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget every count."""
        with self._lock:
            self.requests = 0
            self.by_key: collections.Counter[str] = collections.Counter()
            self.faults_by_key: collections.Counter[str] = collections.Counter()
            self.completed: collections.Counter[str] = collections.Counter()
            self.outcomes: collections.Counter[str] = collections.Counter()
            self.in_flight = 0
            self.max_in_flight = 0
            self.times: list[float] = []
            self.auth_seen: set[str] = set()
            self._tokens: float | None = None
            self._refilled = time.monotonic()

    def stats(self) -> dict[str, Any]:
        """Counters as plain data (also served at ``GET /_faults/stats``)."""
        with self._lock:
            return {
                "requests": self.requests,
                "by_key": dict(self.by_key),
                "completed": dict(self.completed),
                "outcomes": dict(self.outcomes),
                "max_in_flight": self.max_in_flight,
                "times": list(self.times),
            }

    def _decide(self, key: str, attempt: int) -> str:
        f = self.faults
        if f.quota_exhausted:
            return "quota"
        if f.invalid_key:
            return "401"
        if f.max_faults_per_request is not None and self.faults_by_key[key] >= f.max_faults_per_request:
            return "ok"
        u = random.Random(f"{f.seed}:{key}:{attempt}").random()
        for kind, share in (("429", f.rate_429), ("5xx", f.rate_5xx), ("slow", f.rate_slow), ("cut", f.rate_cut)):
            if u < share:
                return kind
            u -= share
        return "ok"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        path = scope["path"]
        if path.startswith("/_faults/"):
            await self._control(scope, receive, send)
            return
        if not path.endswith("/chat/completions"):
            await self.inner(scope, receive, send)
            return
        raw = await read_body(receive)
        try:
            body = json.loads(raw)
            key = request_key(body) if isinstance(body, dict) else hashlib.sha256(raw).hexdigest()[:20]
        except ValueError:
            key = hashlib.sha256(raw).hexdigest()[:20]
        auth = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        with self._lock:
            self.requests += 1
            self.by_key[key] += 1
            attempt = self.by_key[key]
            self.times.append(time.time())
            self.auth_seen.add(auth)
            kind = self._decide(key, attempt)
            if self.faults.max_concurrent is not None and self.in_flight >= self.faults.max_concurrent:
                kind = "429"
            wait_s = self._take_token() if kind == "ok" else None
            if wait_s is not None:
                kind = "429"
            if kind != "ok":
                self.faults_by_key[key] += 1
            self.outcomes[kind] += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self._answer(kind, key, attempt, auth, raw, scope, receive, send, wait_s)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _take_token(self) -> float | None:
        """Take a token of the bucket (under the lock); None if one was there, else seconds until the next."""
        rps = self.faults.bucket_rps
        if rps is None:
            return None
        size = self.faults.bucket_burst or rps
        now = time.monotonic()
        tokens = size if self._tokens is None else min(size, self._tokens + (now - self._refilled) * rps)
        self._refilled = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return None
        self._tokens = tokens
        return (1.0 - tokens) / rps

    async def _answer(
        self,
        kind: str,
        key: str,
        attempt: int,
        auth: str,
        raw: bytes,
        scope: dict[str, Any],
        receive: Any,
        send: Any,
        wait_s: float | None = None,
    ) -> None:
        f = self.faults
        rng = random.Random(f"{f.seed}:{key}:{attempt}:how")
        if kind == "401":
            await self._error(
                send, 401, "Incorrect API key provided.", "invalid_request_error", auth, code="invalid_api_key"
            )
            return
        if kind == "quota":
            await self._error(
                send,
                429,
                "You exceeded your current quota, please check your plan and billing details.",
                "insufficient_quota",
                auth,
                code="insufficient_quota",
            )
            return
        if kind == "429" and wait_s is not None:  # the token bucket is empty: say when the next token comes
            headers = [
                (b"retry-after-ms", str(max(1, round(wait_s * 1000))).encode()),
                (b"retry-after", str(max(1, round(wait_s))).encode()),
            ]
            await self._error(send, 429, "Rate limit reached, please slow down", "rate_limit_error", auth, headers)
            return
        if kind == "429":
            headers = []
            if f.retry_after_s is not None and f.retry_after_date:
                when = email.utils.formatdate(time.time() + f.retry_after_s, usegmt=True)
                headers = [(b"retry-after", when.encode())]
            elif f.retry_after_s is not None:
                headers = [
                    (b"retry-after-ms", str(int(f.retry_after_s * 1000)).encode()),
                    (b"retry-after", str(max(1, round(f.retry_after_s))).encode()),
                ]
            await self._error(send, 429, "Rate limit reached, please slow down", "rate_limit_error", auth, headers)
            return
        if kind == "5xx":
            status = rng.choice((500, 502, 503))
            await self._error(send, status, f"The server had an error ({status})", "server_error", auth)
            return
        if kind == "slow" and await self._client_left(receive, f.slow_s):
            return  # the client timed out and went away during the slow first byte
        replay = replaying(raw, receive)
        if kind != "cut":
            tracker = _Tracker(send)
            await self.inner(scope, replay, tracker.send)
            if tracker.complete:
                with self._lock:
                    self.completed[key] += 1
            return
        await self.inner(scope, replay, _Cutter(send, rng).send)

    async def _client_left(self, receive: Any, delay: float) -> bool:
        try:
            message = await asyncio.wait_for(receive(), timeout=delay)
        except asyncio.TimeoutError:
            return False
        return message.get("type") == "http.disconnect"

    async def _error(
        self,
        send: Any,
        status: int,
        message: str,
        err_type: str,
        auth: str,
        headers: list[tuple[bytes, bytes]] | None = None,
        code: str | None = None,
    ) -> None:
        if (self.faults.echo_auth or self.faults.echo_auth_slice) and auth:
            key = auth.split(" ", 1)[-1]  # like providers that quote the key back ("Incorrect API key: …")
            if self.faults.echo_auth_slice:
                key = key[slice(*self.faults.echo_auth_slice)]
            message = f"{message} (your API key {key} was used)"
        payload = json.dumps({"error": {"message": message, "type": err_type, "param": None, "code": code}}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), *(headers or [])],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _control(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        if scope["path"] == "/_faults/reset" and scope["method"] == "POST":
            self.reset()
        payload = json.dumps(self.stats()).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})


class _Tracker:
    """Forwards a response and notes whether it was sent to its end with a finish."""

    def __init__(self, send: Any) -> None:
        self._send = send
        self.status = 0
        self.complete = False

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self._send(message)
        if message["type"] == "http.response.body" and not message.get("more_body") and self.status == 200:
            self.complete = True


class _Cutter:
    """Forwards the first few SSE events of a stream, then cuts it in one of three ways."""

    def __init__(self, send: Any, rng: random.Random) -> None:
        self._send = send
        self.keep = rng.randint(1, 3)  # events before the cut (the first is the role-only delta)
        self.mode = rng.choice(("clean", "torn", "abort"))
        self.buffer = b""
        self.done = False

    async def send(self, message: dict[str, Any]) -> None:
        if self.done:
            return
        if message["type"] == "http.response.start":
            await self._send(message)
            return
        self.buffer += message.get("body", b"")
        events = self.buffer.split(b"\n\n")
        if len(events) - 1 <= self.keep and message.get("more_body"):
            return  # wait for more events
        head = b"".join(e + b"\n\n" for e in events[: self.keep])
        if self.mode == "torn" and len(events) > self.keep:
            nxt = events[self.keep]
            head += nxt[: max(1, len(nxt) // 2)]  # half an event, no terminator
        self.done = True
        if self.mode == "abort":
            await self._send({"type": "http.response.body", "body": head, "more_body": True})
            raise _Cut("fault injection: connection dropped mid-stream")
        await self._send({"type": "http.response.body", "body": head, "more_body": False})


class FaultServer:
    """:class:`FaultApp` served on 127.0.0.1 in a background thread.

    Args:
        faults: a :class:`Faults`; or pass its fields as keyword arguments.
        inner: the OpenAI-compatible ASGI app to wrap (default: the embedded models).
        port: TCP port (0: a free one).

    Attributes:
        app: the :class:`FaultApp` (its counters: ``requests``, ``by_key``, ``completed``, ``outcomes``).
    """

    def __init__(self, faults: Faults | None = None, *, inner: Any = None, port: int = 0, **fields: Any) -> None:
        self.app = FaultApp(faults or Faults(**fields), inner)
        self.port = port
        self._server: Any = None

    @property
    def faults(self) -> Faults:
        return self.app.faults

    def start(self) -> FaultServer:
        """Start serving; returns self."""
        from llmlab.serving import BackgroundServer

        logging.getLogger("uvicorn.error").addFilter(_DropCut())
        self._server = BackgroundServer(self.app, port=self.port, name="llmlab-faultserver").start()
        return self

    @property
    def url(self) -> str:
        """Base URL without ``/v1``."""
        return str(self._server.url)

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (``…/v1``) to give ``ll.provider``."""
        return self.url + "/v1"

    def stats(self) -> dict[str, Any]:
        return self.app.stats()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class FaultProcess:
    """A fault server in its own Python process (``python -m llmlab.testing.faultserver``), so serving
    costs the caller's process no CPU: what a test or benchmark of the client measures is the client.

    Args:
        echo_tokens: wrap :func:`echo_app` answering this many tokens (None: the embedded models).
        fields: :class:`Faults` fields (numbers and flags), e.g. ``bucket_rps=20``.

    ``stats()`` and ``reset()`` go over HTTP (``/_faults/stats``, ``/_faults/reset``).
    """

    def __init__(self, *, echo_tokens: int | None = None, **fields: Any) -> None:
        Faults(**fields)  # a typo or a bad share fails here, not in the child
        self.args = ["--port", "0"] + (["--echo-tokens", str(echo_tokens)] if echo_tokens else [])
        for name, value in fields.items():
            flag = "--" + name.replace("_", "-")
            if value is True:
                self.args.append(flag)
            elif value not in (None, False):
                self.args += [flag, str(value)]
        self.url = ""
        self._proc: Any = None

    def start(self, timeout: float = 30.0) -> FaultProcess:
        """Start the process and wait for the URL it prints; returns self."""
        import subprocess
        import sys

        self._proc = subprocess.Popen(
            [sys.executable, "-m", "llmlab.testing.faultserver", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        found: list[str] = []
        reader = threading.Thread(target=lambda: found.append(self._proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        line = found[0] if found else ""
        if " on http" not in line:
            self.stop()
            raise RuntimeError(f"the fault server process did not start: {line!r}")
        self.url = line.split(" on ", 1)[1].split()[0].removesuffix("/v1")
        return self

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (``…/v1``) to give ``ll.provider``."""
        return self.url + "/v1"

    def stats(self) -> dict[str, Any]:
        import httpx

        return dict(httpx.get(self.url + "/_faults/stats", timeout=10.0).json())

    def reset(self) -> None:
        """Forget every count (and refill the token bucket)."""
        import httpx

        httpx.post(self.url + "/_faults/reset", timeout=10.0).raise_for_status()

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except Exception:
                self._proc.kill()
                self._proc.wait(10)
            self._proc.stdout.close()
            self._proc = None

    def __enter__(self) -> FaultProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """``python -m llmlab.testing.faultserver --port 8001 --rate-429 0.3 …`` (foreground).

    ``--port 0`` binds a free port; the first line printed names the URL either way. ``--echo-tokens N``
    wraps a cheap echo app (:func:`echo_app`) instead of the embedded models.
    """
    import argparse
    import signal

    from llmlab.serving import BackgroundServer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--echo-tokens", type=int, default=None, help="answer N echoed tokens, no model")
    for field in dataclasses.fields(Faults):
        flag = "--" + field.name.replace("_", "-")
        if field.type == "bool":
            parser.add_argument(flag, action="store_true")
        else:
            parser.add_argument(flag, type=float, default=None)
    ns = vars(parser.parse_args(argv))
    host, port, echo = ns.pop("host"), ns.pop("port"), ns.pop("echo_tokens")
    fields: dict[str, Any] = {
        k: (int(v) if k in ("seed", "max_faults_per_request", "max_concurrent") and v is not None else v)
        for k, v in ns.items()
        if v not in (None, False)
    }
    app = FaultApp(Faults(**fields), inner=echo_app(echo, fields.get("delay_ms", 0.0)) if echo else None)
    logging.getLogger("uvicorn.error").addFilter(_DropCut())
    server = BackgroundServer(app, host=host, port=port, name="llmlab-faultserver").start()
    print(f"llmlab fault server on {server.url}/v1 ({app.faults})", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5) and server.running:
        pass
    server.stop()


if __name__ == "__main__":
    main()
