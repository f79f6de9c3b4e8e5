"""How alike two texts are, 0..1, offline (no embeddings, nothing downloaded): the one home of the measures.

``ll.evals.similarity`` scores completions against references with :data:`METHODS`, ``ll.expect(baseline=…)``
holds completions close to a stored baseline with the same methods, ``ll.diff`` shows :func:`word_ratio` of two
sweeps' outputs, and ``ll.charts.diversity`` measures repeats apart with :func:`jaccard`. Words are those of
:func:`llmlab.text.tokenize` (a run of letters and digits, or one CJK character) after
:func:`llmlab.text.normalize_text`, so case, width and surrounding punctuation never count as a difference;
:func:`word_ratio` alone reads the texts as they are, since it describes the word diff a reader sees.
Two empty texts are identical (1.0); one empty text against a non-empty one scores 0.0.
"""

from __future__ import annotations

import difflib
import math
from collections import Counter
from collections.abc import Callable, Mapping

from llmlab.errors import ValidationError
from llmlab.text import normalize_text, tokenize

__all__ = ["METHODS", "char_ratio", "cosine", "jaccard", "measure", "token_f1", "word_ratio", "word_set", "words"]


def words(text: str) -> list[str]:
    """The normalised word tokens the measures count (case-folded, NFKC; each CJK character a word)."""
    return tokenize(normalize_text(text), words=True)


def token_f1(a: str, b: str) -> float:
    """SQuAD-style token F1: the harmonic mean of the shared words' share of each text, regardless of order."""
    ta, tb = words(a), words(b)
    if not ta and not tb:
        return 1.0
    if not ta or not tb:
        return 0.0
    common = sum((Counter(ta) & Counter(tb)).values())
    if not common:
        return 0.0
    precision, recall = common / len(ta), common / len(tb)
    return 2 * precision * recall / (precision + recall)


def cosine(a: str, b: str) -> float:
    """Cosine similarity of the two texts' word-count vectors."""
    ca, cb = Counter(words(a)), Counter(words(b))
    if not ca and not cb:
        return 1.0
    if not ca or not cb:
        return 0.0
    dot = sum(ca[t] * cb[t] for t in ca)
    return dot / math.sqrt(sum(v * v for v in ca.values()) * sum(v * v for v in cb.values()))


def char_ratio(a: str, b: str) -> float:
    """``difflib.SequenceMatcher(...).ratio()`` of the normalised strings: character level, order-sensitive."""
    return difflib.SequenceMatcher(None, normalize_text(a), normalize_text(b), autojunk=False).ratio()


def word_ratio(a: str | None, b: str | None) -> float:
    """Share of the tokens (words, spaces, punctuation, as written) the two texts have in common, in order.

    None counts as empty. No junk heuristic, so repeated words in long outputs are still matched.
    """
    ta, tb = tokenize(a), tokenize(b)
    if not ta and not tb:
        return 1.0
    return difflib.SequenceMatcher(None, ta, tb, autojunk=False).ratio()


def word_set(text: str | None) -> frozenset[str]:
    """The distinct normalised words of ``text`` (empty for None), for :func:`jaccard`."""
    return frozenset(words(text)) if isinstance(text, str) else frozenset()


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """Jaccard similarity of two word sets (see :func:`word_set`): shared words over all words."""
    union = a | b
    return 1.0 if not union else len(a & b) / len(union)


#: The measures a caller names (``method=`` of ``ll.evals.similarity``, ``similarity=`` of ``ll.expect``).
METHODS: Mapping[str, Callable[[str, str], float]] = {"f1": token_f1, "cosine": cosine, "difflib": char_ratio}


def measure(method: str, field: str = "method") -> Callable[[str, str], float]:
    """The measure named ``method`` in :data:`METHODS`.

    Raises:
        ValidationError: naming ``field`` (the caller's parameter) when there is no such measure.
    """
    if method not in METHODS:
        raise ValidationError(field, method, f"expected one of {sorted(METHODS)}")
    return METHODS[method]
