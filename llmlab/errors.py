"""The llmlab exception tree.

Every error llmlab raises on purpose derives from :class:`LlmlabError`, so a notebook can
catch them all with one ``except``. The tree::

    LlmlabError
    ├── ConfigError        bad configure()/env var/provider/spec value, caught before anything is sent
    │   └── ValidationError  a bad Sweep argument or prompt file (names the field and the value)
    ├── ProviderError      a model endpoint failed for good (keeps call_id); becomes a status="error" row
    ├── BudgetError        the budget cannot cover even one call
    ├── ReplayMissError    a replayed sweep asked for a response its cassette does not hold
    ├── ExportError        traces could not be exported (spooled, never lost)
    ├── QueryError         a DQL query is malformed or unsupported
    ├── StoreError         the local database cannot be read or written
    └── CheckFailed        a regression check (res.check / ll.expect) did not hold (also an AssertionError)

Messages never contain API keys or auth headers: :func:`redact` is applied wherever text
from the outside (an HTTP error body, an exception string) is wrapped.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

__all__ = [
    "BudgetError",
    "CheckFailed",
    "ConfigError",
    "ExportError",
    "LlmlabError",
    "ProviderError",
    "QueryError",
    "ReplayMissError",
    "StoreError",
    "ValidationError",
    "contains_secret",
    "install_log_redaction",
    "redact",
    "register_secret",
]


class LlmlabError(Exception):
    """Base class of every error llmlab raises on purpose."""


class ConfigError(LlmlabError):
    """A configuration value (argument, env var, provider, spec) is wrong."""


class ValidationError(ConfigError, ValueError):
    """A sweep argument or prompt file is invalid; raised before any request is sent."""

    def __init__(self, field: str, value: object, problem: str) -> None:
        self.field = field
        self.value = value
        self.problem = problem
        try:
            shown = repr(value)
        except Exception:  # an int past the digit limit, a broken __repr__: name the type instead
            shown = f"<{type(value).__name__}>"
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(redact(f"{field}={shown}: {problem}"))


class ProviderError(LlmlabError):
    """A model endpoint failed for good; ``call_id`` names the call."""

    def __init__(self, message: str, call_id: str | None = None, status_code: int | None = None) -> None:
        self.call_id = call_id
        self.status_code = status_code
        super().__init__(redact(message))


class BudgetError(LlmlabError):
    """The budget cannot cover the sweep (raised only when nothing at all could run)."""


class ReplayMissError(LlmlabError):
    """A replayed sweep asked for a response its cassette does not hold."""


class ExportError(LlmlabError):
    """Spans could not be delivered to DataKit (they stay spooled)."""


class QueryError(LlmlabError, ValueError):
    """A DQL query is malformed or uses something the embedded collector does not support."""


class StoreError(LlmlabError):
    """The local store cannot be opened, migrated, read or written."""


class CheckFailed(LlmlabError, AssertionError):
    """A regression check did not hold; the message lists the offending calls."""


# --- secret redaction -------------------------------------------------------------------------

_SECRETS: set[str] = set()
_KEYLIKE = re.compile(r"(sk-[A-Za-z0-9_\-]{8,}|tkn_[A-Za-z0-9]{8,}|Bearer\s+[A-Za-z0-9_\-\.=]{8,})")
# credentials passed in a URL's query string (DataKit's ?token=tkn_…, ?api_key=…) or a key=value log line
_QUERY_SECRET = re.compile(r"(?i)\b((?:access_|api_?|x-api-)?(?:token|key|secret|password))=([^&\s'\"]{4,})")
#: A provider quoting part of a key ("sk-abc…xyz", key[8:20]) still leaks it: any run of this many characters of a
#: registered secret is masked, not only the whole secret.
PARTIAL_SECRET_CHARS = 8
_partial: re.Pattern[str] | None = None


def _looks_random(window: str) -> bool:
    """A window of a real key mixes character classes; "cassette" or "01234567" in a test key is a word, and
    masking every path or number that shares it would garble messages. A random base62 window is one class only
    about once in 500."""
    classes = (any(c.islower() for c in window), any(c.isupper() for c in window), any(c.isdigit() for c in window))
    return sum(classes) >= 2


def register_secret(value: str | None) -> None:
    """Remember a secret (an API key, a token) so that :func:`redact` masks it everywhere, whole or in part."""
    global _partial
    if value and len(value) >= 4 and value not in _SECRETS:
        _SECRETS.add(value)
        grams = sorted(
            gram
            for s in _SECRETS
            for i in range(len(s) - PARTIAL_SECRET_CHARS + 1)
            if _looks_random(gram := s[i : i + PARTIAL_SECRET_CHARS])
        )
        # a lookahead finds every (overlapping) start of a secret's 8-character window
        _partial = re.compile("(?=(" + "|".join(map(re.escape, grams)) + "))") if grams else None


def _mask_partial(text: str) -> str:
    if _partial is None:
        return text
    covered: list[tuple[int, int]] = []
    for m in _partial.finditer(text):
        start, end = m.start(), m.start() + PARTIAL_SECRET_CHARS
        if covered and start <= covered[-1][1]:
            covered[-1] = (covered[-1][0], max(covered[-1][1], end))
        else:
            covered.append((start, end))
    if not covered:
        return text
    out, pos = [], 0
    for start, end in covered:
        out += [text[pos:start], "***"]
        pos = end
    out.append(text[pos:])
    return "".join(out)


def contains_secret(text: str) -> bool:
    """True when ``text`` still holds a registered secret, whole or any run of 8+ of its characters."""
    if any(secret in text for secret in _SECRETS):
        return True
    return _partial is not None and _partial.search(text) is not None


def redact(text: str) -> str:
    """Mask registered secrets (whole, or any run of 8+ of their characters) and key-shaped strings in ``text``.

    Example:
        >>> register_secret("sk-test-0123456789abcdef")
        >>> redact("Incorrect API key provided: 0123456789ab****")
        'Incorrect API key provided: *******'
    """
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    text = _mask_partial(text)
    text = _QUERY_SECRET.sub(r"\1=***", text)
    return _KEYLIKE.sub("***", text)


def _redacting_record_factory(base: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is logging's to report, not ours
            return record
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return record

    factory.__llmlab_redacting__ = True  # type: ignore[attr-defined]
    return factory


def install_log_redaction() -> None:
    """Mask secrets in every log record of this process, whatever logger or handler writes it.

    A record factory rather than a handler filter: filters only see the handlers they are attached to, while
    third-party DEBUG loggers (httpcore writes response headers) reach whatever handlers the user installed.
    Idempotent; called when llmlab is imported.
    """
    current = logging.getLogRecordFactory()
    if not getattr(current, "__llmlab_redacting__", False):
        logging.setLogRecordFactory(_redacting_record_factory(current))
