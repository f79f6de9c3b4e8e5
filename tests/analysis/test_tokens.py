"""Offline token estimates against known BPE figures (cl100k/o200k), within tolerance."""

from __future__ import annotations

import pytest

from llmlab.tokens import estimate_messages_tokens, estimate_tokens

PARAGRAPH = (
    "Large language models are trained on vast amounts of text and learn to predict the next token in a "
    "sequence. When data scientists tune prompts, they often vary the temperature, the nucleus sampling "
    "threshold, and the maximum number of tokens, and they compare the outputs side by side. Latency matters "
    "as much as quality: a model that answers in two seconds may be preferable to one that takes ten, even if "
    "the slower one is slightly more accurate. Cost, finally, depends on the number of input and output "
    "tokens, which is why a reliable estimate is useful whenever the provider does not report usage."
)


@pytest.mark.parametrize(
    "text, expected, tol",
    [
        ("Hello world", 2, 0),
        ("Hello, world!", 4, 0),
        ("The quick brown fox jumps over the lazy dog.", 10, 1),
        ("1234567", 3, 0),  # digits go in groups of three
        ("你好，世界", 5, 1),  # CJK ~1 token per character
        ("", 0, 0),
    ],
)
def test_known_figures(text, expected, tol):
    assert abs(estimate_tokens(text) - expected) <= tol


def test_paragraph_within_25_percent_of_words_times_1_33():
    words = len(PARAGRAPH.split())
    assert words > 90
    assert abs(estimate_tokens(PARAGRAPH) - words * 1.33) <= 0.25 * words * 1.33


def test_monotone_and_robust():
    assert estimate_tokens(None) == 0
    assert estimate_tokens(" ") >= 1
    assert estimate_tokens("a" * 400) > estimate_tokens("a" * 40)
    assert estimate_tokens("😀") >= 1 and estimate_tokens("Привет мир") >= 2
    chinese = "机器学习是人工智能的一个分支" * 10
    assert abs(estimate_tokens(chinese) - len(chinese)) <= 0.3 * len(chinese)
    assert estimate_tokens(chinese, model="gpt-4o") <= estimate_tokens(chinese)


def test_messages_overhead():
    # OpenAI reports 8 prompt tokens for a single user "Hello": 3 (message) + 1 (role) + 1 + 3 (priming)
    assert estimate_messages_tokens([{"role": "user", "content": "Hello"}]) == 8
    assert estimate_messages_tokens("Hello world") == 9
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello", "name": "bob"}]
    assert estimate_messages_tokens(msgs) == 3 + (3 + 1 + estimate_tokens("You are terse.")) + (3 + 1 + 1 + 1 + 1)
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hello world"}]}]
    assert estimate_messages_tokens(parts) == 3 + 3 + 1 + 2
