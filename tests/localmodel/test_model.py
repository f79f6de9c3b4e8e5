"""The local n-gram models: tokenizer, sampling semantics, prompt conditioning, stop/max_tokens."""

from __future__ import annotations

import random
import time

import pytest

from llmlab.localmodel import MODELS, count_prompt_tokens, count_tokens, detokenize, get_model, tokenize
from llmlab.localmodel import model as model_mod


def msgs(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def run(name: str, prompt: str, **kw):
    gen = get_model(name).generate(msgs(prompt), **kw)
    pieces = list(gen)
    return "".join(pieces), gen.finish_reason, pieces


# --- tokenizer -------------------------------------------------------------------------------


def test_tokenize_words_and_punctuation():
    assert tokenize("Cats sleep, don't they? Pi is 3.14!") == [
        "Cats",
        "sleep",
        ",",
        "don't",
        "they",
        "?",
        "Pi",
        "is",
        "3.14",
        "!",
    ]
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("") == 0


def test_detokenize_round_trips_plain_text():
    text = "The Sun (a star) is hot, and well-known: it shines."
    assert detokenize(tokenize(text)) == text


def test_prompt_tokens_include_per_message_overhead():
    one = [{"role": "user", "content": "Hello, world!"}]
    two = [{"role": "system", "content": "Be brief."}, *one]
    assert count_prompt_tokens(one) == 4 + 3 + 3
    assert count_prompt_tokens(two) == 4 + 3 + 3 + 3 + 3
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hello, world!"}]}]
    assert count_prompt_tokens(parts) == count_prompt_tokens(one)


def test_pieces_carry_leading_space_and_are_tokens():
    text, _, pieces = run("small", "What is a rainbow?", temperature=0, max_tokens=30)
    assert not pieces[0].startswith(" ")
    assert all(p.startswith(" ") or not p[0].isalpha() for p in pieces[1:])
    assert count_tokens(text) == len(pieces)


# --- build and cache -------------------------------------------------------------------------


def test_models_build_fast_and_are_cached(monkeypatch):
    monkeypatch.setattr(model_mod, "_models", {})
    monkeypatch.setattr(model_mod, "_corpus", None)
    t0 = time.perf_counter()
    for name in MODELS:
        get_model(name)
    assert time.perf_counter() - t0 < 5.0  # built on first use, with no download; typically ~0.3 s
    assert get_model("tiny") is get_model("local/tiny")
    with pytest.raises(KeyError):
        get_model("huge")


def test_corpus_size_is_real():
    corpus = model_mod._load_corpus()
    size = sum(f.stat().st_size for f in model_mod.CORPUS_DIR.glob("*.txt"))
    assert 30_000 <= size <= 80_000
    assert len(corpus.paragraphs) >= 60


# --- sampling --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_temperature_zero_is_greedy_and_deterministic(name):
    outs = {run(name, "Explain photosynthesis", temperature=0, max_tokens=40)[0] for _ in range(5)}
    assert len(outs) == 1
    # greedy: every step takes the arg max of the (topic-biased) distribution
    model = get_model(name)
    text, _, pieces = run(name, "Explain photosynthesis", temperature=0, max_tokens=40)
    toks = tokenize(text)
    topic = model.topic_of(msgs("Explain photosynthesis"))
    start = model.spec.seed_tokens  # the opening words come from the matched sentence
    for i in range(start, len(toks)):
        ctx = ["<s>"] * 3 + toks[:i]
        dist = model.next_distribution(ctx, temperature=1.0, topic=topic)
        assert dist[0][0] == toks[i]


@pytest.mark.parametrize("name", MODELS)
def test_seed_reproducible(name):
    a = run(name, "What is a rainbow?", temperature=1.0, max_tokens=30, seed=42)[0]
    b = run(name, "What is a rainbow?", temperature=1.0, max_tokens=30, seed=42)[0]
    assert a == b
    others = {run(name, "What is a rainbow?", temperature=1.0, max_tokens=30, seed=s)[0] for s in range(1, 9)}
    assert len(others) >= 4
    # No seed means fresh entropy per call. 16 draws give 8-16 distinct answers on the small model (200 trials
    # measured); 8 draws fell to 3 about once in a few hundred runs, which made this test flaky in CI.
    unseeded = {run(name, "What is a rainbow?", temperature=1.0, max_tokens=30)[0] for _ in range(16)}
    assert len(unseeded) >= 4


@pytest.mark.parametrize("name", MODELS)
def test_diversity_grows_with_temperature(name):
    def diversity(t: float) -> tuple[int, int]:
        outs = [run(name, "How do clouds form?", temperature=t, max_tokens=25, seed=s)[0] for s in range(30)]
        return len(set(outs)), len({tok for o in outs for tok in tokenize(o)})

    d0, d07, d15 = diversity(0.0), diversity(0.7), diversity(1.5)
    assert d0[0] == 1
    assert d0[1] < d07[1] < d15[1]
    assert d07[0] > 1


def _sample_next(model, ctx_tokens, topic, temperature, top_p, n, seed=0):
    """Draw ``n`` next tokens at a fixed context through the real sampler (Model._tokens)."""
    rng = random.Random(seed)
    ids = [model.ids[t] for t in ctx_tokens]
    seen = set()
    orig = model._opening
    try:
        model._opening = lambda *a, **k: (list(ids), [])
        model._topic_ids = lambda ranked: topic  # type: ignore[method-assign]
        for _ in range(n):
            tok = next(model._tokens(msgs("x"), temperature, top_p, rng))
            seen.add(model.vocab[tok])
    finally:
        model._opening = orig
        del model._topic_ids
    return seen


@pytest.mark.parametrize("name", MODELS)
def test_top_p_limits_sampling_to_the_nucleus(name):
    model = get_model(name)
    ctx = ["<s>", "<s>", "and", "the"][-(model.order - 1) :]
    dist = model.next_distribution(ctx, temperature=1.0)
    assert len(dist) >= 10 and abs(sum(p for _, p in dist) - 1) < 1e-9
    nucleus, acc = set(), 0.0
    for tok, p in dist:
        nucleus.add(tok)
        acc += p
        if acc >= 0.3:
            break
    narrow = _sample_next(model, ctx, frozenset(), 1.0, 0.3, 300)
    wide = _sample_next(model, ctx, frozenset(), 1.0, 1.0, 300)
    assert narrow <= nucleus
    assert len(nucleus) < len(dist)
    assert not wide <= nucleus  # without top_p the tail is reachable
    tiny_p = _sample_next(model, ctx, frozenset(), 1.0, 0.01, 50)
    assert tiny_p == {dist[0][0]}


def test_temperature_reshapes_the_distribution():
    model = get_model("small")
    ctx = ["<s>", "and", "the"]
    cold = dict(model.next_distribution(ctx, temperature=0.5))
    hot = dict(model.next_distribution(ctx, temperature=1.5))
    top = model.next_distribution(ctx, temperature=1.0)[0][0]
    assert cold[top] > hot[top]


# --- conditioning ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_prompt_conditions_output(name):
    a = run(name, "Explain photosynthesis", temperature=0, max_tokens=30)[0]
    b = run(name, "What is a rainbow?", temperature=0, max_tokens=30)[0]
    assert a != b
    assert "photosynthesis" in a.lower()
    assert "rainbow" in b.lower()


def test_small_stays_on_topic():
    cases = {
        "Explain photosynthesis": {"plant", "plants", "light", "sunlight", "leaves", "chlorophyll", "sugar"},
        "Why is the sky blue?": {"blue", "sunlight", "light", "scattered", "air", "sky"},
        "How does a language model use temperature?": {"temperature", "token", "tokens", "model", "probability"},
        "Summarize: the cat sat on the mat.": {"cat", "mat", "summary"},
    }
    for prompt, words in cases.items():
        text = run("small", prompt, temperature=0, max_tokens=40)[0].lower()
        assert len(words & set(tokenize(text))) >= 2, (prompt, text)


def test_unknown_topic_still_answers():
    text, reason, pieces = run("small", "zzqx blorf", temperature=0, max_tokens=10)
    assert pieces and reason in ("stop", "length")


# --- max_tokens, stop, natural end ------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_max_tokens_gives_length(name):
    text, reason, pieces = run(name, "Explain photosynthesis", temperature=0, max_tokens=7)
    assert len(pieces) == 7 and reason == "length"


def test_natural_end_is_stop_after_sentence():
    text, reason, pieces = run("small", "Summarize: the cat sat on the mat.", temperature=0, max_tokens=200)
    assert reason == "stop" and len(pieces) < 200
    assert text.rstrip()[-1] in ".!?"


@pytest.mark.parametrize("stop", [" green", ["xyz", "chlorophyll"], "ss b"])
def test_stop_sequence_cuts_before_it(stop):
    full = run("small", "Explain photosynthesis", temperature=0, max_tokens=60)[0]
    text, reason, pieces = run("small", "Explain photosynthesis", temperature=0, max_tokens=60, stop=stop)
    stops = [stop] if isinstance(stop, str) else stop
    cut = min(full.find(s) for s in stops if s in full)
    assert reason == "stop"
    assert text == full[:cut]
    assert not any(s in text for s in stops)
    assert all(pieces)


def test_stop_not_found_keeps_length():
    full = run("small", "Explain photosynthesis", temperature=0, max_tokens=15)
    held = run("small", "Explain photosynthesis", temperature=0, max_tokens=15, stop=["Photosynthesis was"])
    assert held[0] == full[0] and held[1] == "length" and len(held[2]) == 15


def test_stop_at_start_gives_empty_output():
    text, reason, pieces = run("small", "Explain photosynthesis", temperature=0, max_tokens=20, stop="Photo")
    assert text == "" and pieces == [] and reason == "stop"


# --- tiny vs small -----------------------------------------------------------------------------


def test_tiny_and_small_differ():
    assert get_model("tiny").order < get_model("small").order
    for prompt in ("Explain photosynthesis", "What is a rainbow?", "Why is the sky blue?"):
        a = run("tiny", prompt, temperature=0, max_tokens=30)[0]
        b = run("small", prompt, temperature=0, max_tokens=30)[0]
        assert a != b
    assert get_model("small").spec.delay_factor > get_model("tiny").spec.delay_factor
