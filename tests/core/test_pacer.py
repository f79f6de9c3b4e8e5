"""The adaptive pacer's decisions on a simulated clock: which 429s show a limit, and which cuts are undone."""

from __future__ import annotations

import pytest

from llmlab.run import limits
from llmlab.run.limits import Pacer, Window


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(limits.time, "monotonic", lambda: now[0])
    return now


def _answers(pacer: Pacer, clock, seconds: float, per_s: int, rejected_every: int | None) -> None:
    """``per_s`` answers a second for ``seconds``; every ``rejected_every``-th one a 429 (sent just before)."""
    for i in range(int(seconds * per_s)):
        clock[0] += 1.0 / per_s
        if rejected_every and i % rejected_every == rejected_every - 1:
            pacer.on_rate_limited(clock[0] - 0.01, retry_after=None)
        else:
            pacer.on_accepted(clock[0] - 0.01)


def test_a_small_share_of_429s_is_noise_not_a_limit(clock):
    pacer = Pacer(Window(32))
    _answers(pacer, clock, seconds=10, per_s=40, rejected_every=10)  # 10 % of answers, whatever the rate
    assert pacer.rate is None and pacer.cuts == 0 and pacer.window.size == 32


def test_a_limit_is_cut_to_the_accepted_rate_and_the_cut_is_kept_when_429s_stop(clock):
    pacer = Pacer(Window(32))
    _answers(pacer, clock, seconds=1, per_s=20, rejected_every=None)
    _answers(pacer, clock, seconds=0.5, per_s=40, rejected_every=2)  # sending past the capacity: half rejected
    assert pacer.cuts == 1 and pacer.rate == pytest.approx(limits.BACKOFF * 20, rel=0.2)
    assert pacer.window.size == 16  # the first sign of a limit halves the calls in flight too
    _answers(pacer, clock, seconds=2, per_s=19, rejected_every=None)  # at the cut rate all are accepted
    assert pacer.undone == 0 and pacer.rate is not None


def test_a_cut_after_which_429s_keep_coming_is_undone_and_their_share_learnt(clock):
    pacer = Pacer(Window(32))
    _answers(pacer, clock, seconds=1, per_s=60, rejected_every=3)  # a third rejected, whatever the rate
    assert pacer.cuts == 1 and pacer.rate is not None
    _answers(pacer, clock, seconds=2, per_s=30, rejected_every=3)  # ... also at the lower rate
    assert pacer.undone == 1 and pacer.rate is None  # back to unpaced
    assert pacer.noise(clock[0]) == pytest.approx(1 / 3, abs=0.1)
    _answers(pacer, clock, seconds=5, per_s=60, rejected_every=3)
    assert pacer.cuts == 1  # the same share is noise now


def test_a_limit_of_a_few_a_minute_halves_the_rate_it_cannot_measure(clock):
    pacer = Pacer()
    pacer.rate = 4.0
    _answers(pacer, clock, seconds=3, per_s=4, rejected_every=1)  # nothing accepted at all
    assert pacer.rate == pytest.approx(2.0, abs=0.01)
