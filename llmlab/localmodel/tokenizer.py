"""The local models' tokenizer: how their text is cut into tokens and put back together, and how a request's
``usage.prompt_tokens`` is counted.

Why its own tokenizer and not :mod:`llmlab.tokens`: this one *is* the models' vocabulary. The n-gram models are
trained on these tokens and emit one per step, so the token counts the local server reports are exact, not an
estimate; :mod:`llmlab.tokens` estimates counts for hosted models whose tokenizer llmlab does not have. The two
share only the reading of a message's content (:func:`llmlab.tokens.message_text`).

Deterministic regex: numbers, words (with inner apostrophes) and single punctuation marks. Each token is rendered
with its leading space (none before closing punctuation, none after an opening bracket or around hyphens).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from llmlab.tokens import message_text  # one reading of message content, shared with the estimates

__all__ = [
    "BOS",
    "EOS",
    "MESSAGE_OVERHEAD_TOKENS",
    "REPLY_PRIMING_TOKENS",
    "count_prompt_tokens",
    "count_tokens",
    "detokenize",
    "token_piece",
    "tokenize",
]

#: Tokens added per chat message to its content's tokens (role and separators, as OpenAI does).
MESSAGE_OVERHEAD_TOKENS = 3
#: Tokens added once per request for the assistant reply primer (as OpenAI does).
REPLY_PRIMING_TOKENS = 3

#: Start and end of a paragraph in the models' token streams; generating EOS ends an answer.
BOS = "<s>"
EOS = "</s>"

_TOKEN_RE = re.compile(r"\d+(?:[.,:]\d+)*|\w+(?:['’]\w+)*|[^\w\s]")
_NO_SPACE_BEFORE = frozenset(".,;:!?)]}%'’”-/")
_NO_SPACE_AFTER = frozenset("([{“-/$")


def tokenize(text: str) -> list[str]:
    """Split ``text`` into tokens: numbers, words (with inner apostrophes) and punctuation marks.

    Args:
        text: any string.

    Returns:
        The tokens, in order; whitespace is dropped.

    Example:
        >>> tokenize("Cats sleep, don't they?")
        ['Cats', 'sleep', ',', "don't", 'they', '?']
    """
    return _TOKEN_RE.findall(text)


def count_tokens(text: str) -> int:
    """Number of tokens of ``text`` under :func:`tokenize`.

    Example:
        >>> count_tokens("Hello, world!")
        4
    """
    return len(_TOKEN_RE.findall(text))


def token_piece(token: str, prev: str | None) -> str:
    """The text of ``token`` with its leading space, given the previous token (None at start)."""
    if prev is None or token in _NO_SPACE_BEFORE or prev in _NO_SPACE_AFTER:
        return token
    return " " + token


def detokenize(tokens: Iterable[str]) -> str:
    """Join tokens back into text (inverse of :func:`tokenize` for normally spaced text)."""
    out: list[str] = []
    prev: str | None = None
    for tok in tokens:
        out.append(token_piece(tok, prev))
        prev = tok
    return "".join(out)


def count_prompt_tokens(messages: Sequence[dict[str, Any]]) -> int:
    """``usage.prompt_tokens`` of a chat request.

    Every message counts its content's tokens plus :data:`MESSAGE_OVERHEAD_TOKENS` (plus one
    more if it has a ``name``); the request adds :data:`REPLY_PRIMING_TOKENS` once, like
    OpenAI's accounting.

    Example:
        >>> count_prompt_tokens([{"role": "user", "content": "Hello, world!"}])
        10
    """
    total = REPLY_PRIMING_TOKENS
    for msg in messages:
        total += MESSAGE_OVERHEAD_TOKENS + count_tokens(message_text(msg.get("content")))
        if msg.get("name"):
            total += 1
    return total
