"""Record and replay model responses at the HTTP transport seam (cassettes).

A regression notebook should not need a model, a key or money to run in CI. So a sweep can run
with ``cache="record", cassette=path`` once against a real provider — every request/response
pair is written to a JSON *cassette* — and afterwards with ``cache="replay", cassette=path``,
which answers every request from the cassette and never opens a socket.

The seam is the ``openai`` client's own HTTP stack (httpx2 in openai 3.x): :class:`CassetteTransport`
is an ``httpx2.AsyncBaseTransport`` given to the client built by
:func:`llmlab.plan.providers.make_client`, so everything above it (the openai client and its
SSE parser, OpenLLMetry, the runner's TTFT/usage/cost logic) runs exactly as it does live.

Keys. An interaction is keyed by a canonical hash of what decides the answer: the provider name,
the method, the path below the provider's base URL, the JSON body with its keys sorted and the
volatile fields (:data:`VOLATILE_FIELDS`) dropped, plus the sweep's repeat index (identical
requests of different repeats are different draws). Hosts and ports are not part of the key, so
a cassette recorded against the local model server on one port replays anywhere.

What is stored: per interaction the request (provider, method, path, body) for humans reading a
diff, and the response status, content type and body — a streamed (SSE) body as its list of
events. Request headers are never stored (no ``Authorization``, no key, no cookie), nor any
response header other than the content type. Bodies are redacted like every other text llmlab
keeps (a 401 that quotes the key stores ``***``), and a cassette whose bytes would still hold a
configured secret is refused rather than written. Transient failures (408/409/425/429/5xx) are not
recorded: the retried attempt that succeeds is.

Re-recording. The first recording to a path in a process starts the file afresh, so a re-recorded
notebook's cassette holds exactly the requests it sends now (a removed prompt does not linger, and
the diff shows it); later recordings to the same path in that process add to it, so several sweeps
of one notebook can share a cassette.

A request missing from a cassette in replay mode raises :class:`~llmlab.errors.ReplayMissError`
naming the call (model, prompt snippet, call_id) — it never falls through to the network.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import dataclasses
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2

from llmlab.errors import ConfigError, ReplayMissError, contains_secret, redact

__all__ = [
    "CASSETTE_VERSION",
    "MODES",
    "VOLATILE_FIELDS",
    "CallInfo",
    "Cassette",
    "CassetteTransport",
    "call_scope",
    "request_key",
]

CASSETTE_VERSION = 1
MODES = ("record", "replay")
#: Body fields that do not change the answer and may differ between runs (end-user ids, tags).
VOLATILE_FIELDS = frozenset({"user", "metadata", "request_id"})
_TRANSIENT = frozenset({408, 409, 425, 429})
_recorded_paths: set[Path] = set()  # cassettes this process has recorded to (see "Re-recording")
_recorded_lock = threading.Lock()
_KEPT_RESPONSE_HEADERS = ("content-type", "content-encoding")


@dataclasses.dataclass(frozen=True)
class CallInfo:
    """Which sweep call a request belongs to (set by the runner around each attempt)."""

    call_id: str
    model: str
    prompt: str
    repeat: int = 0


_current_call: contextvars.ContextVar[CallInfo | None] = contextvars.ContextVar("llmlab_cassette_call", default=None)


@contextlib.contextmanager
def call_scope(info: CallInfo) -> Iterator[None]:
    """Tag the requests sent inside this block with ``info`` (the openai client awaits its
    transport in the caller's task, so the context variable is visible there)."""
    token = _current_call.set(info)
    try:
        yield
    finally:
        _current_call.reset(token)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _body_for_key(body: bytes) -> Any:
    if not body:
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return {"sha256": hashlib.sha256(body).hexdigest()}
    if isinstance(parsed, dict):
        parsed = {k: v for k, v in parsed.items() if k not in VOLATILE_FIELDS}
    return parsed


def request_key(provider: str, method: str, path: str, body: bytes, repeat: int = 0) -> str:
    """The canonical key of one request (see the module docstring).

    Args:
        provider: registry name of the provider (``"local"``, ``"openai"``, ...).
        method: HTTP method.
        path: the URL path below the provider's base URL, e.g. ``"/chat/completions"``.
        body: the raw request body (JSON is parsed, keys sorted, volatile fields dropped).
        repeat: the sweep's repeat index of the call.

    Returns:
        24 hex digits.
    """
    material = {"provider": provider, "method": method.upper(), "path": path, "body": _body_for_key(body)}
    if repeat:
        material["repeat"] = repeat
    return hashlib.sha256(_canonical(material).encode("utf-8")).hexdigest()[:24]


def _prompt_snippet(body: Any, limit: int = 60) -> str:
    text = ""
    if isinstance(body, dict) and isinstance(body.get("messages"), list):
        users = [m for m in body["messages"] if isinstance(m, dict) and m.get("role") == "user"] or body["messages"]
        content = users[-1].get("content", "") if users and isinstance(users[-1], dict) else ""
        text = content if isinstance(content, str) else _canonical(content)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Cassette:
    """A cassette file: interactions keyed by :func:`request_key`, loaded and saved as JSON.

    Thread-safe. Saving writes a temporary file and renames it, so a crash never leaves a
    half-written cassette; keys are sorted so a re-recording diffs cleanly.
    """

    def __init__(self, path: str | os.PathLike[str], mode: str) -> None:
        if mode not in MODES:
            raise ConfigError(f"cassette mode={mode!r}: expected one of {', '.join(MODES)}")
        self.path = Path(path)
        self.mode = mode
        self.interactions: dict[str, dict[str, Any]] = {}
        self.hits = 0
        self.misses: list[ReplayMissError] = []
        self.recorded = 0
        self._lock = threading.Lock()
        fresh = False
        if mode == "record":
            with _recorded_lock:
                resolved = self.path.resolve()
                fresh = resolved not in _recorded_paths
                _recorded_paths.add(resolved)
        if self.path.exists() and not fresh:
            self._load()
        elif mode == "replay":
            raise ConfigError(
                f"cassette={str(self.path)!r}: file not found; record it first with cache='record' "
                f"(replay never sends a request)"
            )

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cassette={str(self.path)!r}: not a readable cassette ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("interactions"), dict):
            raise ConfigError(f"cassette={str(self.path)!r}: not a cassette (no 'interactions' mapping)")
        if data.get("version") != CASSETTE_VERSION:
            raise ConfigError(
                f"cassette={str(self.path)!r}: version {data.get('version')!r} is not supported "
                f"(expected {CASSETTE_VERSION}); re-record it with cache='record'"
            )
        self.interactions = dict(data["interactions"])

    def __len__(self) -> int:
        return len(self.interactions)

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self.interactions.get(key)

    def put(self, key: str, interaction: dict[str, Any]) -> None:
        with self._lock:
            self.interactions[key] = interaction
            self.recorded += 1

    def save(self) -> None:
        """Write the cassette (record mode only; replay never modifies the file)."""
        if self.mode != "record":
            return
        with self._lock:
            data = {"version": CASSETTE_VERSION, "interactions": dict(sorted(self.interactions.items()))}
            text = json.dumps(data, indent=1, ensure_ascii=False, sort_keys=False) + "\n"
        if contains_secret(text):  # the last check on the bytes that would be committed
            raise ConfigError(
                f"cassette={str(self.path)!r}: not written, it would contain a configured API key or token "
                f"(a recorded body quoted it in a form redaction could not mask)"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".cassette-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would make a committed cassette unreadable to others
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def miss(self, provider: str, method: str, path: str, body: bytes, key: str) -> ReplayMissError:
        """The error for a request the cassette does not hold (also remembered in ``misses``)."""
        info = _current_call.get()
        parsed = _body_for_key(body)
        model = info.model if info else f"{provider}/{parsed.get('model') if isinstance(parsed, dict) else '?'}"
        prompt = _prompt_snippet(parsed) if parsed is not None else ""
        call = f"call_id={info.call_id} " if info else ""
        repeat = f" repeat={info.repeat}" if info and info.repeat else ""
        err = ReplayMissError(
            f"not in cassette {str(self.path)!r}: {call}model={model} prompt={prompt!r}{repeat} "
            f"({method} {path}, key {key}); replay never calls the network — re-record with cache='record'"
        )
        err.call_id = info.call_id if info else None  # type: ignore[attr-defined]
        err.model = model  # type: ignore[attr-defined]
        err.prompt = prompt  # type: ignore[attr-defined]
        err.key = key  # type: ignore[attr-defined]
        with self._lock:
            self.misses.append(err)
        return err


class _ReplayStream(httpx2.AsyncByteStream):
    """A recorded body, yielded in its recorded pieces (one SSE event per chunk)."""

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self._pieces:
            yield piece


class _RecordingStream(httpx2.AsyncByteStream):
    """Passes a live body through untouched (so TTFT is real while recording) and records it
    once it has been read to the end."""

    def __init__(self, inner: httpx2.AsyncByteStream, on_complete: Any) -> None:
        self._inner = inner
        self._on_complete = on_complete
        self._chunks: list[bytes] = []
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._chunks.append(chunk)
            yield chunk
        self._done = True

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            if self._done:  # a stream cut midway is not recorded: its retry will be
                self._on_complete(b"".join(self._chunks))


def _split_sse(text: str) -> list[str]:
    return [event for event in text.replace("\r\n", "\n").split("\n\n") if event.strip()]


class CassetteTransport(httpx2.AsyncBaseTransport):
    """An ``httpx2.AsyncBaseTransport`` that records to or replays from a :class:`Cassette`.

    Args:
        cassette: the cassette (its ``mode`` decides what happens).
        provider: the provider name, part of every key.
        base_url: the provider's base URL; its path is stripped from request paths in keys.
        inner: the transport that really sends (record mode); default ``httpx2.AsyncHTTPTransport()``
            (recording is not throughput-bound: the plain httpx2 transport keeps it library-only).
            Replay mode never uses or builds one.
    """

    def __init__(
        self, cassette: Cassette, *, provider: str, base_url: str = "", inner: httpx2.AsyncBaseTransport | None = None
    ) -> None:
        self.cassette = cassette
        self.provider = provider
        self._base_path = httpx2.URL(base_url).path.rstrip("/") if base_url else ""
        self._inner = inner if cassette.mode == "record" else None
        if cassette.mode == "record" and self._inner is None:
            self._inner = (
                httpx2.AsyncHTTPTransport(trust_env=False) if provider == "local" else httpx2.AsyncHTTPTransport()
            )

    def _path(self, request: httpx2.Request) -> str:
        path = request.url.path
        if self._base_path and path.startswith(self._base_path):
            path = path[len(self._base_path) :] or "/"
        return path

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        path = self._path(request)
        info = _current_call.get()
        key = request_key(self.provider, request.method, path, body, info.repeat if info else 0)
        if self.cassette.mode == "replay":
            entry = self.cassette.get(key)
            if entry is None:
                raise self.cassette.miss(self.provider, request.method, path, body, key)
            self.cassette.hits += 1
            return self._replay(entry, request)
        return await self._record(request, path, body, key)

    def _replay(self, entry: dict[str, Any], request: httpx2.Request) -> httpx2.Response:
        response = entry["response"]
        headers = [(k, v) for k, v in response.get("headers", {}).items()]
        if "events" in response:
            pieces = [(event + "\n\n").encode("utf-8") for event in response["events"]]
        elif "body_b64" in response:
            pieces = [base64.b64decode(response["body_b64"])]
        else:
            pieces = [response.get("body", "").encode("utf-8")]
        return httpx2.Response(response["status"], headers=headers, stream=_ReplayStream(pieces), request=request)

    async def _record(self, request: httpx2.Request, path: str, body: bytes, key: str) -> httpx2.Response:
        assert self._inner is not None
        # an uncompressed answer keeps the cassette readable text (SSE events, JSON)
        request.headers["Accept-Encoding"] = "identity"
        live = await self._inner.handle_async_request(request)
        status = live.status_code
        if status in _TRANSIENT or status >= 500:
            return live
        kept = {k: live.headers[k] for k in _KEPT_RESPONSE_HEADERS if k in live.headers}
        info = _current_call.get()
        parsed = _body_for_key(body)

        def on_complete(raw: bytes) -> None:
            response: dict[str, Any] = {"status": status, "headers": kept}
            try:
                if "content-encoding" in kept:
                    raise UnicodeDecodeError("utf-8", b"", 0, 1, "encoded body")
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                response["body_b64"] = base64.b64encode(raw).decode("ascii")
            else:
                # a provider may quote the key in an error body: the cassette is a file users commit
                text = redact(text)
                if kept.get("content-type", "").startswith("text/event-stream"):
                    response["events"] = _split_sse(text)
                else:
                    response["body"] = text
            request_info: dict[str, Any] = {
                "provider": self.provider,
                "method": request.method,
                "path": path,
                "body": parsed,
            }
            if info is not None:
                request_info.update({"call_id": info.call_id, "repeat": info.repeat})
            self.cassette.put(key, {"request": request_info, "response": response})

        return httpx2.Response(
            status,
            headers=live.headers,
            stream=_RecordingStream(live.stream, on_complete),  # type: ignore[arg-type]
            extensions=live.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        if self._inner is not None:
            await self._inner.aclose()
        self.cassette.save()
