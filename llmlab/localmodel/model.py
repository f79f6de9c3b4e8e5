"""A small, real statistical language model for the embedded model server.

Why a real model: sweeps over temperature, top_p and seed are the whole point of llmlab, so
the offline model must react to them the way a hosted LLM does (greedy and repeatable at
temperature 0, more diverse as temperature rises, nucleus truncation, seeded sampling), and
its answers must depend on the prompt, or charts and evaluators built on it would be
meaningless.

How it works:

* **Corpus.** Original English paragraphs in ``data/corpus/*.txt`` (one topic per paragraph,
  paragraphs separated by blank lines); see :mod:`llmlab.localmodel.corpus`.
* **Tokenizer.** Deterministic regex: numbers, words (with inner apostrophes) and single
  punctuation marks; see :mod:`llmlab.localmodel.tokenizer`. :func:`count_tokens`
  counts these tokens.
* **Language model.** A word-level n-gram model with Witten-Bell interpolation down to
  unigrams. Each paragraph is a stream ``<s>… text …</s>``; generating ``</s>`` after a
  sentence end is the natural end of an answer (``finish_reason="stop"``). The next-token
  distribution of a context is computed on first use, truncated to the ``top_k`` most
  likely tokens, sorted, and memoized, so sampling a token is a dict lookup plus a short
  loop.
* **Prompt conditioning.** The prompt's content words are matched (IDF-weighted) against the
  paragraphs. The answer starts with the opening words of the best-matching sentence of the
  best-matching paragraph (sampled among good matches when temperature > 0), and at every
  step the content words of the top matching paragraphs get a log-probability bonus
  (``topic_boost``), which keeps the text on topic.
* **Sampling.** logits = log p (+ topic bonus); temperature 0 is greedy (arg max, ties by
  token order); otherwise softmax(logits / T), then top_p nucleus truncation, then one draw
  from ``random.Random(seed)`` (fresh entropy when no seed is given).

Models: ``tiny`` is a bigram model (order 2, 24 candidates per context, weak topic bonus,
1x delay); ``small`` is a 4-gram model (order 4, 64 candidates, stronger topic bonus, 2x
delay). They differ visibly: ``tiny`` wanders and repeats itself, ``small`` writes fluent
corpus-like sentences.
"""

from __future__ import annotations

import math
import random
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

from llmlab.localmodel.corpus import CORPUS_DIR, STOPWORDS, Corpus, content_words, normalize_word
from llmlab.localmodel.tokenizer import (
    BOS,
    EOS,
    MESSAGE_OVERHEAD_TOKENS,
    REPLY_PRIMING_TOKENS,
    count_prompt_tokens,
    count_tokens,
    detokenize,
    token_piece,
    tokenize,
)
from llmlab.tokens import message_text  # one reading of message content, shared with the estimates

__all__ = [
    "MESSAGE_OVERHEAD_TOKENS",
    "MODELS",
    "REPLY_PRIMING_TOKENS",
    "Generation",
    "NGramModel",
    "count_prompt_tokens",
    "count_tokens",
    "detokenize",
    "get_model",
    "message_text",
    "resolve_model_name",
    "tokenize",
]

# --- the corpus, parsed once per process (models are built on first use) ------------------

_corpus_lock = threading.Lock()
_corpus: Corpus | None = None


def _load_corpus() -> Corpus:
    global _corpus
    with _corpus_lock:
        if _corpus is None:
            files = sorted(Path(CORPUS_DIR).glob("*.txt"))
            _corpus = Corpus([f.read_text(encoding="utf-8") for f in files])
        return _corpus


# --- the model ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """Settings of one local model."""

    name: str
    order: int  # n-gram order (2 = bigram)
    top_k: int  # candidates kept per context
    topic_boost: float  # log-probability bonus of on-topic content words
    seed_tokens: int  # opening tokens of the matched sentence that start the answer
    backoff_weight: float  # Witten-Bell weight of the lower orders (1.0 = classic; lower = more faithful)
    delay_factor: float  # multiple of LLMLAB_LOCAL_DELAY_MS / delay_ms applied per token
    description: str


SPECS: dict[str, ModelSpec] = {
    "tiny": ModelSpec(
        "tiny",
        order=2,
        top_k=24,
        topic_boost=0.7,
        seed_tokens=2,
        backoff_weight=1.0,
        delay_factor=1.0,
        description="bigram model, 24 candidates per step, fast",
    ),
    "small": ModelSpec(
        "small",
        order=4,
        top_k=64,
        topic_boost=1.2,
        seed_tokens=3,
        backoff_weight=0.35,
        delay_factor=2.0,
        description="4-gram model with Witten-Bell interpolation, 64 candidates per step",
    ),
}
#: Names of the local models (llmlab exposes them as ``local/<name>``).
MODELS: tuple[str, ...] = tuple(SPECS)


def resolve_model_name(name: str) -> str | None:
    """``"tiny"``, ``"local/tiny"`` → ``"tiny"``; None for an unknown model."""
    if not isinstance(name, str):
        return None
    base = name[len("local/") :] if name.startswith("local/") else name
    return base if base in SPECS else None


_Dist = tuple[tuple[int, ...], tuple[float, ...]]  # token ids sorted by probability (desc), their log-probs


class Generation:
    """An iterator over the text pieces of one completion; ``finish_reason`` is set once it is exhausted.

    Each piece is one token with its leading space (the first has none), except that the
    piece just before a stop sequence may be cut short. ``len(pieces)`` is the completion's
    token count.
    """

    def __init__(self, it: Iterator[str]) -> None:
        self._it = it
        self.finish_reason: str | None = None
        self.pieces: list[str] = []

    def __iter__(self) -> Generation:
        return self

    def __next__(self) -> str:
        piece = next(self._it)
        self.pieces.append(piece)
        return piece

    @property
    def text(self) -> str:
        return "".join(self.pieces)


class NGramModel:
    """A word n-gram language model with Witten-Bell interpolation (see the module docstring)."""

    def __init__(self, spec: ModelSpec, corpus: Corpus) -> None:
        self.spec = spec
        self.name = spec.name
        self.order = spec.order
        self.corpus = corpus
        self.vocab: list[str] = [BOS, EOS]
        self.ids: dict[str, int] = {BOS: 0, EOS: 1}
        self.bos_id, self.eos_id = 0, 1
        # counts[k][context tuple of length k] -> {token id: count}, k = 0 .. order-1
        self.counts: list[dict[tuple[int, ...], dict[int, int]]] = [{} for _ in range(spec.order)]
        self.para_ids: list[list[int]] = []
        for para in corpus.paragraphs:
            ids = [self._id(t) for t in para.tokens] + [self.eos_id]
            self.para_ids.append(ids)
            padded = [self.bos_id] * (spec.order - 1) + ids
            for i in range(spec.order - 1, len(padded)):
                tok = padded[i]
                for k in range(spec.order):
                    ctx = tuple(padded[i - k : i])
                    table = self.counts[k].setdefault(ctx, {})
                    table[tok] = table.get(tok, 0) + 1
        self.totals = [{ctx: sum(t.values()) for ctx, t in level.items()} for level in self.counts]
        self.norm_of = [normalize_word(t) for t in self.vocab]
        self.content_ids = frozenset(
            i for i, t in enumerate(self.vocab) if t[0].isalpha() and self.norm_of[i] not in STOPWORDS and len(t) > 2
        )
        unigram = self.counts[0][()]
        self._frequent = sorted(unigram, key=lambda t: (-unigram[t], t))[: spec.top_k]
        self._cache: dict[tuple[int, ...], _Dist] = {}
        self._cache_lock = threading.Lock()

    def _id(self, tok: str) -> int:
        i = self.ids.get(tok)
        if i is None:
            i = self.ids[tok] = len(self.vocab)
            self.vocab.append(tok)
        return i

    # -- probabilities --------------------------------------------------------------------------

    def _prob(self, tok: int, ctx: tuple[int, ...]) -> float:
        """Witten-Bell interpolated P(tok | ctx), recursing down to the unigram."""
        k = len(ctx)
        table = self.counts[k].get(ctx)
        lower = self._prob(tok, ctx[1:]) if k else 1.0 / len(self.vocab)
        if not table:
            return lower
        total = self.totals[k][ctx]
        types = len(table) * self.spec.backoff_weight
        return (table.get(tok, 0) + types * lower) / (total + types)

    def distribution(self, context: Sequence[int]) -> _Dist:
        """The (memoized) truncated next-token distribution after ``context`` (token ids)."""
        ctx = tuple(context[-(self.order - 1) :]) if self.order > 1 else ()
        if len(ctx) < self.order - 1:
            ctx = (self.bos_id,) * (self.order - 1 - len(ctx)) + ctx
        dist = self._cache.get(ctx)
        if dist is not None:
            return dist
        cands: set[int] = set()
        for k in range(len(ctx), 0, -1):
            table = self.counts[k].get(ctx[len(ctx) - k :])
            if table:
                cands.update(table)
                if len(cands) >= self.spec.top_k:
                    break
        if len(cands) < self.spec.top_k:
            cands.update(self._frequent)
        cands.discard(self.bos_id)
        scored = sorted(((self._prob(t, ctx), t) for t in cands), key=lambda pt: (-pt[0], pt[1]))[: self.spec.top_k]
        mass = sum(p for p, _ in scored)
        dist = (tuple(t for _, t in scored), tuple(math.log(p / mass) for p, _ in scored))
        with self._cache_lock:
            if len(self._cache) > 500_000:
                self._cache.clear()
            self._cache[ctx] = dist
        return dist

    def next_distribution(
        self, context: Sequence[str], temperature: float = 1.0, topic: frozenset[int] | None = None
    ) -> list[tuple[str, float]]:
        """The distribution sampling draws the next token from, as ``[(token, prob)]`` sorted by prob.

        Args:
            context: previous tokens (strings; ``"<s>"`` pads the start).
            temperature: > 0; the logits are divided by it.
            topic: token ids that get the topic bonus (see :meth:`topic_of`), or None.

        Returns:
            Tokens (``"</s>"`` is the end of text) with probabilities summing to 1, before top_p.
        """
        ids = [self.ids.get(t, self.bos_id) for t in context]
        toks, lps = self.distribution(ids)
        logits = self._logits(toks, lps, topic)
        order = sorted(range(len(toks)), key=lambda i: -logits[i])
        m = logits[order[0]]
        weights = [math.exp((logits[i] - m) / temperature) for i in order]
        z = sum(weights)
        return [(self.vocab[toks[i]], w / z) for i, w in zip(order, weights)]

    def _logits(self, toks: tuple[int, ...], lps: tuple[float, ...], topic: frozenset[int] | None) -> list[float]:
        if not topic:
            return list(lps)
        b = self.spec.topic_boost
        return [lp + b if t in topic else lp for t, lp in zip(toks, lps)]

    # -- prompt conditioning -------------------------------------------------------------------

    def _prompt_weights(self, messages: Sequence[dict[str, Any]]) -> dict[str, float]:
        """Normalized content words of the prompt → weight (last user message 1.0, others 0.3)."""
        last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=len(messages) - 1)
        weights: dict[str, float] = {}
        for i, msg in enumerate(messages):
            w = 1.0 if i == last_user else 0.3
            for word in content_words(tokenize(message_text(msg.get("content")))):
                weights[word] = max(weights.get(word, 0.0), w)
        return weights

    def _rank_paragraphs(self, weights: dict[str, float]) -> list[tuple[float, int]]:
        idf = self.corpus.idf
        scored = []
        for i, para in enumerate(self.corpus.paragraphs):
            # a word counts more when the paragraph is about it: in its opening sentence, repeated
            first = para.sentence_words[0]
            s = sum(
                idf.get(w, 0.0) * wt * (1.0 + (w in first)) * (1.0 + 0.25 * min(para.tf[w] - 1, 3))
                for w, wt in weights.items()
                if w in para.words
            )
            if s > 0:
                scored.append((s, i))
        scored.sort(key=lambda si: (-si[0], si[1]))
        return scored

    def topic_of(self, messages: Sequence[dict[str, Any]]) -> frozenset[int]:
        """Token ids of the content words of the paragraphs best matching the prompt (the topic bonus)."""
        ranked = self._rank_paragraphs(self._prompt_weights(messages))
        return self._topic_ids(ranked)

    def _topic_ids(self, ranked: list[tuple[float, int]]) -> frozenset[int]:
        if not ranked:
            return frozenset()
        best = ranked[0][0]
        ids: set[int] = set()
        for s, i in ranked[:3]:
            if s >= 0.5 * best:
                ids.update(t for t in self.para_ids[i] if t in self.content_ids)
        return frozenset(ids)

    @staticmethod
    def _pick(scores: list[float], temperature: float, rng: random.Random) -> int:
        """Index of the best score at temperature 0, else a softmax(score / T) draw."""
        if temperature <= 0 or len(scores) == 1:
            return max(range(len(scores)), key=lambda i: (scores[i], -i))
        m = max(scores)
        weights = [math.exp((s - m) / temperature) for s in scores]
        return rng.choices(range(len(scores)), weights=weights)[0]

    def _opening(
        self, weights: dict[str, float], ranked: list[tuple[float, int]], temperature: float, rng: random.Random
    ) -> tuple[list[int], list[int]]:
        """(context ids, forced opening ids) that start the answer."""
        if not ranked:
            return [self.bos_id] * (self.order - 1), []
        top = ranked[:5]
        pi = top[self._pick([s for s, _ in top], temperature, rng)][1]
        para = self.corpus.paragraphs[pi]
        idf = self.corpus.idf
        sent_scores = [sum(idf.get(w, 0.0) * wt for w, wt in weights.items() if w in sw) for sw in para.sentence_words]
        # a mild preference for the paragraph's opening sentence, which introduces the topic
        sent_scores = [s + (0.5 if j == 0 else 0.0) for j, s in enumerate(sent_scores)]
        sj = self._pick(sent_scores, temperature, rng)
        start = para.sentence_starts[sj]
        ids = self.para_ids[pi]
        n = max(1, min(self.spec.seed_tokens, len(ids) - 1 - start))
        padded = [self.bos_id] * (self.order - 1) + ids[:start]
        return padded, ids[start : start + n]

    # -- generation ------------------------------------------------------------------------------

    def generate(
        self,
        messages: Sequence[dict[str, Any]],
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_tokens: int = 256,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
    ) -> Generation:
        """Generate a completion for chat ``messages``.

        Args:
            messages: OpenAI-style chat messages (``role``, ``content``).
            temperature: 0 = greedy and deterministic; otherwise softmax(logits / temperature).
            top_p: nucleus mass in (0, 1]; the smallest set of most likely tokens reaching it is kept.
            max_tokens: maximum number of tokens (pieces) to generate.
            stop: a string or list of strings; the output ends before the first one (``"stop"``).
            seed: makes sampling reproducible; None draws fresh randomness.

        Returns:
            A :class:`Generation`: iterate it for text pieces, then read ``finish_reason``
            (``"stop"`` at a natural end or a stop sequence, ``"length"`` at ``max_tokens``).
        """
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        stops = [s for s in stops if s]
        gen = Generation(iter(()))
        gen._it = self._run(gen, messages, float(temperature), float(top_p), int(max_tokens), stops, seed)
        return gen

    def _tokens(
        self, messages: Sequence[dict[str, Any]], temperature: float, top_p: float, rng: random.Random
    ) -> Iterator[int]:
        """Endless token ids of the answer (ends with EOS)."""
        weights = self._prompt_weights(messages)
        ranked = self._rank_paragraphs(weights)
        topic = self._topic_ids(ranked)
        context, opening = self._opening(weights, ranked, temperature, rng)
        for tok in opening:
            context.append(tok)
            yield tok
        keep = self.order - 1
        eos = self.eos_id
        dist_of = self.distribution
        exp = math.exp
        random_ = rng.random
        inv_t = 1.0 / temperature if temperature > 0 else 0.0
        while True:
            toks, lps = dist_of(context[-keep:] if keep else ())
            logits = self._logits(toks, lps, topic)
            if temperature <= 0:
                tok = toks[max(range(len(logits)), key=logits.__getitem__)]  # first maximum: stable ties
            else:
                m = max(logits)
                ws = [exp((lt - m) * inv_t) for lt in logits]
                if top_p < 1.0:
                    # nucleus: the most likely tokens (stable order) until their mass reaches top_p
                    order = sorted(range(len(ws)), key=ws.__getitem__, reverse=True)
                    cum = list(accumulate(ws[i] for i in order))
                    cut = bisect_left(cum, top_p * cum[-1] - 1e-12) + 1
                    i = bisect_right(cum, random_() * cum[cut - 1], 0, cut - 1)
                    tok = toks[order[i]]
                else:
                    cum = list(accumulate(ws))
                    tok = toks[bisect_right(cum, random_() * cum[-1], 0, len(cum) - 1)]
            yield tok
            if tok == eos:
                return
            context.append(tok)
            if len(context) > 64:
                del context[: -keep or None]

    def _run(
        self,
        gen: Generation,
        messages: Sequence[dict[str, Any]],
        temperature: float,
        top_p: float,
        max_tokens: int,
        stops: list[str],
        seed: int | None,
    ) -> Iterator[str]:
        rng = random.Random(seed) if seed is not None else random.Random()
        vocab = self.vocab
        prev: str | None = None
        produced = 0
        pending: list[str] = []  # pieces held back because they may begin a stop sequence
        max_stop = max((len(s) for s in stops), default=0)
        for tok in self._tokens(messages, temperature, top_p, rng):
            if tok == self.eos_id:
                break
            word = vocab[tok]
            piece = token_piece(word, prev)
            prev = word
            produced += 1  # noqa: SIM113 (counts only tokens that reach the caller)
            if not stops:
                yield piece
            else:
                pending.append(piece)
                text = "".join(pending)
                hits = [i for i in (text.find(s) for s in stops) if i >= 0]
                if hits:
                    cut = min(hits)
                    for p in pending:
                        if cut <= 0:
                            break
                        yield p[:cut]
                        cut -= len(p)
                    gen.finish_reason = "stop"
                    return
                # hold back the shortest tail that could still grow into a stop sequence
                hold = 0
                for k in range(min(len(text), max_stop - 1), 0, -1):
                    tail = text[-k:]
                    if any(s.startswith(tail) for s in stops):
                        hold = k
                        break
                while pending and len(text) - len(pending[0]) >= hold:
                    text = text[len(pending[0]) :]
                    yield pending.pop(0)
            if produced >= max_tokens:
                yield from pending
                gen.finish_reason = "length"
                return
        yield from pending
        gen.finish_reason = "stop"


_models: dict[str, NGramModel] = {}
_models_lock = threading.Lock()


def get_model(name: str) -> NGramModel:
    """The local model ``name`` (``"tiny"``, ``"small"``, or ``"local/…"``), built on first use and cached.

    Raises:
        KeyError: unknown model name.
    """
    base = resolve_model_name(name)
    if base is None:
        raise KeyError(f"unknown local model {name!r}; available: {', '.join(MODELS)}")
    model = _models.get(base)
    if model is None:
        corpus = _load_corpus()
        with _models_lock:
            model = _models.get(base)
            if model is None:
                model = _models[base] = NGramModel(SPECS[base], corpus)
    return model
