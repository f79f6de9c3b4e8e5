"""Small text helpers shared by every stage: one snipper, one missing-value test, one tokenizer, one list coercion.

They sit on the ground floor so that analysis, view, history and the command line read a cell, cut a
snippet and split words the same way. :func:`tokenize` is the single word splitter behind the token
estimate (:mod:`llmlab.tokens`), the word diff and the similarity measures: each CJK ideograph, kana or
hangul syllable is a token of its own (those scripts put no spaces between words), a run of letters and
digits is a word, a run of whitespace is one token and every other character (punctuation, symbols, ``_``)
is one token, so joining the tokens gives the text back exactly. The local model's own tokenizer
(``llmlab.localmodel``) is a different thing: it is the model's vocabulary, not a way to read text.
"""

from __future__ import annotations

import math
import numbers
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from llmlab.errors import ValidationError

__all__ = ["CJK", "as_list", "is_finite_number", "is_na", "normalize_text", "pieces", "snip", "tokenize"]

#: CJK ideographs (with radicals and extension B+), kana, bopomofo, hangul and half-width katakana,
#: as the body of a regex character class.
CJK = (
    r"\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u3130-\u318f\u31a0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    r"\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f\U00020000-\U0002ebef"
)
# One alternative per kind of piece; the group name is the kind (see pieces()).
_PIECE = re.compile(
    rf"(?P<cjk>[{CJK}])|(?P<word>[^\W_{CJK}]+)|(?P<space>\s+)|(?P<other>.)",
    re.UNICODE | re.DOTALL,
)
_WORD_KINDS = frozenset({"cjk", "word"})
# Characters normalize_text() strips from both ends: whitespace, quotes and sentence punctuation (ASCII and CJK).
_TRAILING = " \t\n.!?;:,。！？；：，\"'“”‘’`"


def pieces(text: str | None) -> Iterator[tuple[str, str]]:
    """The pieces of ``text`` in order, each as ``(kind, piece)``.

    Kinds: ``"cjk"`` (one CJK character), ``"word"`` (a run of letters and digits), ``"space"`` (a run of
    whitespace) and ``"other"`` (one character of anything else). None counts as empty text.
    """
    for m in _PIECE.finditer(text or ""):
        yield m.lastgroup or "other", m.group()


def tokenize(text: str | None, *, words: bool = False) -> list[str]:
    """Split ``text`` into tokens (see the module docstring); ``"".join(tokenize(text)) == text``.

    Args:
        text: the text; None counts as empty.
        words: keep only the word tokens (runs of letters and digits, and single CJK characters), the ones
            similarity measures count; whitespace and punctuation are dropped.

    Example:
        >>> tokenize("Hi, 世界")
        ['Hi', ',', ' ', '世', '界']
        >>> tokenize("Hi, 世界", words=True)
        ['Hi', '世', '界']
    """
    if words:
        return [piece for kind, piece in pieces(text) if kind in _WORD_KINDS]
    return [m.group() for m in _PIECE.finditer(text or "")]


def normalize_text(text: str) -> str:
    """Text as compared by ``exact_match`` and the similarity measures: case and width differences removed.

    Unicode NFKC, case-folded, whitespace collapsed to single spaces, and surrounding whitespace, quotes and
    sentence punctuation (ASCII and CJK full-width) stripped: ``' "Paris." '`` → ``paris``.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = " ".join(text.split())
    return text.strip(_TRAILING)


def is_na(value: Any) -> bool:
    """Whether ``value`` is missing: None, NaN (any float kind), ``pd.NA`` or ``NaT``.

    Stored rows carry pandas' missing values, so a cell read from a frame may be any of these; a list,
    dict or other container is never missing.
    """
    if value is None:
        return True
    if isinstance(value, float):
        return value != value  # NaN is the only float unequal to itself
    if isinstance(value, (str, bytes, int)):
        return False  # the common cases, answered without asking pandas
    import pandas as pd  # the ground floor's small modules load pandas only when a cell needs it

    return bool(pd.api.types.is_scalar(value) and pd.isna(value))


def is_finite_number(value: Any) -> bool:
    """Whether ``value`` is a real number (int or float, numpy's too; not a bool) that a float can hold:
    NaN, ±inf and ints too large for a float are not.

    Every numeric setting (temperature, budget, rate limits, ``params`` values) must pass this: NaN compares
    false with everything, so a NaN budget or limit would never be enforced.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    try:
        return math.isfinite(float(value))
    except (OverflowError, ValueError, TypeError):
        return False


def snip(text: Any, width: int = 80) -> str:
    """``text`` on one line and at most ``width`` characters: whitespace runs become one space, and a longer
    text is cut with ``…`` as its last character. A missing value gives ``""``; any other value its ``str``."""
    if not isinstance(text, str):
        text = "" if is_na(text) else str(text)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def as_list(value: Any, name: str | None = None, *, none_is_value: bool = False) -> list[Any]:
    """``value`` as a list: a list, tuple or other iterable is listed; a string, a mapping or any single value
    becomes a one-item list.

    Args:
        value: one value or several.
        name: the parameter's name; when given, an empty list raises
            :class:`~llmlab.errors.ValidationError` naming it (a grid axis needs at least one value).
        none_is_value: None is one value (``[None]``, e.g. "no max_tokens") rather than nothing (``[]``,
            e.g. "group by nothing").
    """
    if value is None:
        return [None] if none_is_value else []
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        return [value]
    out = list(value)
    if not out and name is not None:
        raise ValidationError(name, value, "empty list; give at least one value")
    return out
