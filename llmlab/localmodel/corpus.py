"""The local models' training text: original English paragraphs in ``data/corpus/*.txt`` (one topic per
paragraph, paragraphs separated by blank lines), parsed into token streams, and the word statistics that
prompt conditioning matches a prompt's content words against (normalized content words, IDF).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from llmlab.localmodel.tokenizer import tokenize
from llmlab.paths import DATA_DIR

__all__ = ["CORPUS_DIR", "STOPWORDS", "Corpus", "Paragraph", "content_words", "normalize_word"]

CORPUS_DIR = DATA_DIR / "corpus"

STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "then",
        "else",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "into",
        "onto",
        "about",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "do",
        "does",
        "did",
        "doing",
        "have",
        "has",
        "had",
        "having",
        "it",
        "its",
        "it's",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "all",
        "any",
        "both",
        "each",
        "few",
        "more",
        "most",
        "other",
        "some",
        "such",
        "no",
        "nor",
        "not",
        "only",
        "own",
        "same",
        "so",
        "than",
        "too",
        "very",
        "can",
        "will",
        "just",
        "should",
        "would",
        "could",
        "may",
        "might",
        "must",
        "shall",
        "i",
        "me",
        "my",
        "we",
        "our",
        "you",
        "your",
        "he",
        "him",
        "his",
        "she",
        "her",
        "they",
        "them",
        "their",
        "us",
        "also",
        "explain",
        "describe",
        "tell",
        "please",
        "write",
        "give",
        "summarize",
        "summary",
        "short",
        "brief",
        "briefly",
        "simple",
        "simply",
        "words",
        "word",
        "sentence",
        "sentences",
        "paragraph",
        "answer",
        "question",
        "what's",
        "whats",
        "is",
        "it",
        "one",
        "two",
        "like",
        "use",
        "used",
        "using",
        "make",
        "makes",
        "made",
        "get",
        "gets",
        "much",
        "many",
        "way",
        "ways",
        "thing",
        "things",
        "something",
        "someone",
        "let",
        "know",
        "following",
        "text",
        "about",
    ]
)


def normalize_word(word: str) -> str:
    """Normalize a word for topic matching: lowercase, strip possessive and simple plurals."""
    w = word.lower().replace("’", "'")
    if w.endswith("'s"):
        w = w[:-2]
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif len(w) > 4 and w.endswith(("ches", "shes", "sses", "xes")):
        w = w[:-2]
    elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    return w


def content_words(tokens: Iterable[str]) -> list[str]:
    """The normalized content words of ``tokens`` (no stopwords, punctuation or words of two letters)."""
    out = []
    for tok in tokens:
        if tok[0].isalpha():
            w = normalize_word(tok)
            if w not in STOPWORDS and len(w) > 2:
                out.append(w)
    return out


@dataclass
class Paragraph:
    """One corpus paragraph, tokenized, with what prompt matching needs of it."""

    tokens: list[str]  # the paragraph's tokens, without <s>/</s>
    sentence_starts: list[int]  # index in tokens of each sentence's first token
    sentence_words: list[frozenset[str]]  # normalized content words of each sentence
    words: frozenset[str]  # normalized content words of the paragraph
    tf: dict[str, int]  # normalized content word -> count in the paragraph


class Corpus:
    """The parsed corpus shared by all models (paragraphs, IDF)."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.paragraphs: list[Paragraph] = []
        for text in texts:
            for block in re.split(r"\n\s*\n", text):
                block = " ".join(block.split())
                if not block or block.startswith("#"):
                    continue
                toks = tokenize(block)
                starts = [0]
                for i, tok in enumerate(toks[:-1]):
                    if tok in (".", "!", "?"):
                        starts.append(i + 1)
                bounds = starts + [len(toks)]
                sent_words = [frozenset(content_words(toks[bounds[j] : bounds[j + 1]])) for j in range(len(starts))]
                tf: dict[str, int] = {}
                for w in content_words(toks):
                    tf[w] = tf.get(w, 0) + 1
                self.paragraphs.append(Paragraph(toks, starts, sent_words, frozenset(tf), tf))
        if not self.paragraphs:
            raise RuntimeError(f"the local model corpus in {CORPUS_DIR} is empty")
        df: dict[str, int] = {}
        for para in self.paragraphs:
            for w in para.words:
                df[w] = df.get(w, 0) + 1
        n = len(self.paragraphs)
        self.idf = {w: math.log((n + 1) / (c + 0.5)) for w, c in df.items()}
