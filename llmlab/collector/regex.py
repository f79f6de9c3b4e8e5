"""Regular expressions of DQL queries, with DataKit's engine semantics: RE2, linear time.

DataKit evaluates ``re(`…`)`` with Go's ``regexp`` package (RE2 syntax, guaranteed linear time), so a
pattern such as ``^(a+)+$`` cannot make it backtrack for seconds. Python's ``re`` backtracks (2.7 s for a
27-character name, doubling per character) and holds the GIL meanwhile, stalling every other request of the
collector, ingest and ``/v1/ping`` included. Every pattern of the collector is compiled here, with the
``google-re2`` bindings (import name ``re2``): same syntax as DataKit (no backreferences, no lookaround),
same linear bound.
"""

from __future__ import annotations

import threading
from typing import Any

import re2

from llmlab.errors import QueryError

__all__ = ["MAX_PATTERN_CHARS", "compile_regex", "wildcard_regex"]

#: Longest accepted pattern; RE2's own program size limit (``max_mem``) bounds the rest.
MAX_PATTERN_CHARS = 4096

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print every bad pattern to stderr
_OPTIONS.max_mem = 8 << 20  # RE2's per-pattern memory budget: a{1000}{1000} is refused, not built

_CACHE: dict[str, Any] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 256


def compile_regex(pattern: str) -> Any:
    """``pattern`` compiled by RE2 (cached), with ``.search(text)`` as ``re``.

    Raises:
        QueryError: the pattern is not valid RE2 syntax, too long or too large; the message says why.
    """
    rx = _CACHE.get(pattern)
    if rx is not None:
        return rx
    if not isinstance(pattern, str):
        raise QueryError(f"a regular expression must be a string, got {type(pattern).__name__}")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise QueryError(f"regular expression of {len(pattern)} characters; at most {MAX_PATTERN_CHARS}")
    try:
        rx = re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise QueryError(f"invalid regular expression {pattern[:200]!r}: {reason} (RE2 syntax, as DataKit)") from None
    except (TypeError, ValueError) as exc:  # e.g. a lone surrogate cannot be UTF-8 encoded
        raise QueryError(f"invalid regular expression {pattern[:200]!r}: {exc}") from None
    with _CACHE_LOCK:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.clear()
        _CACHE[pattern] = rx
    return rx


def wildcard_regex(pattern: str) -> str:
    """DQL ``wildcard('a*b?')`` as an anchored RE2 pattern: ``*`` any run, ``?`` one character."""
    return "^" + "".join(".*" if c == "*" else "." if c == "?" else re2.escape(c) for c in pattern) + "$"
