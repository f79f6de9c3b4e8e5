"""Which failed attempts are retried and how long to wait: transient errors, 429s, Retry-After, backoff.

The runner drives the attempts (tenacity); this module only decides: is this error worth another
try, how long until it, and how is a failure that stays a failure described in its row.
"""

from __future__ import annotations

import dataclasses
import datetime
import email.utils
import random

import httpx2
import openai
from tenacity import AsyncRetrying, RetryCallState

from llmlab.errors import redact

__all__ = [
    "RetryPolicy",
    "StreamCut",
    "describe_error",
    "is_rate_limited",
    "is_transient",
    "release_retrying",
    "retry_after_seconds",
]


class StreamCut(Exception):
    """The stream ended before a finish_reason: the partial output is discarded and retried."""


def is_transient(exc: BaseException) -> bool:
    """Whether a failed attempt is worth retrying."""
    if isinstance(exc, (StreamCut, openai.APIConnectionError, openai.APITimeoutError, httpx2.TransportError)):
        return True
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code == 429 and getattr(exc, "code", None) == "insufficient_quota":
            return False  # out of credit, not "too many requests": waiting will not help
        return exc.status_code in (408, 409, 425, 429) or exc.status_code >= 500
    return False


def retry_after_seconds(exc: BaseException | None) -> float | None:
    """The server's Retry-After hint in seconds, if any: ``retry-after-ms``, or ``Retry-After``
    as seconds or as an HTTP-date (RFC 9110; some gateways send that form)."""
    response = getattr(exc, "response", None)
    if response is None:
        return None
    headers = response.headers
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


def is_rate_limited(exc: BaseException | None) -> bool:
    """Whether a failed attempt was the provider saying "too many requests" (HTTP 429)."""
    return isinstance(exc, openai.APIStatusError) and exc.status_code == 429


@dataclasses.dataclass
class RetryPolicy:
    """How failed attempts are retried: exponential backoff with jitter, capped; Retry-After wins.

    A 429 means "not yet", not "broken": rate-limited attempts are counted apart and neither use
    up ``max_attempts`` (the other transient failures: 5xx, timeouts, cut streams) nor lengthen
    the backoff of those. A call fails for 429s only after ``max_rate_limited`` of them in a row
    during which its provider+model accepted no request at all: while the sweep makes progress
    (the provider is accepting other calls), a rejected call waits for its turn instead.
    """

    max_attempts: int = 6
    initial_s: float = 0.25
    max_s: float = 20.0
    max_rate_limited: int = 20

    def delay(self, exc: BaseException | None, failures: int) -> float:
        """Seconds to wait after a failed attempt; ``failures`` counts the non-429 ones so far."""
        hinted = retry_after_seconds(exc)
        if hinted is not None:
            return min(hinted, 60.0)
        backoff = min(self.max_s, self.initial_s * (2 ** max(0, failures - 1)))
        return backoff * (0.5 + random.random() / 2)

    def wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return self.delay(exc, state.attempt_number)


def describe_error(exc: BaseException) -> str:
    """The ``error`` text of a call that failed for good: the HTTP status and the server's message, redacted."""
    if isinstance(exc, openai.APIStatusError):
        body = exc.body.get("message") if isinstance(exc.body, dict) else None
        return redact(f"HTTP {exc.status_code}: {body if isinstance(body, str) and body else exc.message}")
    refused = _refused_connection(exc)
    if refused is not None:  # the aiohttp client reports a refused connection as a timeout
        return redact(f"APIConnectionError: Connection error ({refused})")
    return redact(f"{type(exc).__name__}: {exc}")


def _refused_connection(exc: BaseException) -> str | None:
    """The message of a refused or failed TCP connect in ``exc``'s cause chain, if there is one."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        text = str(cause)
        if isinstance(cause, ConnectionRefusedError) or "Cannot connect to host" in text:
            return text
        cause = cause.__cause__ or cause.__context__
    return None


def release_retrying(retrying: AsyncRetrying) -> None:
    """Break the reference cycles a finished tenacity loop leaves (its call state points back at it,
    and so do the bound methods in its per-thread iteration state): without this every call's
    retry machinery, outcome future and lock stayed until a full garbage collection, ~5 KB per call
    of a sweep's peak memory growth."""
    vars(retrying).pop("_retry_state", None)
    retrying.iter_state.reset()
