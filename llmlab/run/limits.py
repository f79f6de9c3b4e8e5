"""Rate limits per provider+model: a concurrency window, a request pacer that adapts to 429s, and a TPM bucket.

Every provider+model (a *key*, ``call.qualified_model``) has its own queue, so one key's limits,
429s or Retry-After pauses never delay another key's calls. Per key:

* :class:`Pacer` — when the next request may be sent. With ``rpm`` it spaces requests at that
  rate. Without ``rpm`` it sends freely until 429s show a limit; from then on it paces at an
  adaptive rate: such a 429 (at most one cut per round trip and per half second) sets the rate
  just under the rate the provider has been *accepting* over the last second (its real capacity
  under a token bucket; halved instead when fewer than :data:`MEASURABLE` a second were accepted),
  and each accepted request raises it a little, faster the longer since the last cut (5 %/s,
  doubling every second, up to :data:`HEADROOM` × the rate requests are really answered at), so
  the rate converges to the capacity within seconds and recovers as fast when the capacity grows.
  A Retry-After hint pauses the whole key until then. With ``rpm`` the adaptive rate never exceeds it.
* Which 429s show a limit: a 429 cuts nothing while at most :data:`NOISE_SHARE` of the key's
  answers over the last :data:`SHARE_S` seconds were 429s (plus the key's learnt *noise*, below);
  the Retry-After hint is still honoured. A real limit, once passed, rejects a growing share of
  what is sent. A provider that rejects a share of requests whatever the rate (load shedding, a
  flaky gateway) is not saying "slower": every cut is checked on the answers to the first
  :data:`EVIDENCE` requests sent at the cut rate, and when more than :data:`NOISE_FLOOR` of them
  were still 429s (but no more than :data:`MAX_NOISE`: then the cut was merely not enough) the cut
  is undone and that share learnt as the key's noise (fading over :data:`NOISE_HALF_LIFE_S`), so
  random rejections cannot spiral the rate down to a fraction of the capacity.
* :class:`Window` — how many calls are in flight (at most the sweep's ``concurrency``). A 429
  showing a limit while the key is still unpaced halves it (at most once per round trip); once
  paced, 429s are the pacer's to answer: halving the calls in flight too would starve a slow
  provider, which needs rate × latency of them in flight. Each accepted request grows it by
  1/window, back up to the ceiling.
* a TPM bucket (aiolimiter) charged the tokens estimated before the call.

Time spent waiting here is queueing, never latency: the runner starts its latency clock after
:meth:`Limits.pace` returns. A 429 is not a failure while the key makes progress (see
:attr:`Window.accepted`, which the runner's retry budget for 429s is tied to).
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import TYPE_CHECKING, Any

from aiolimiter import AsyncLimiter

from llmlab.plan.estimate import estimate_call_tokens
from llmlab.plan.providers import get_provider

if TYPE_CHECKING:
    from llmlab.plan.grid import Call

__all__ = ["Answers", "InFlightCap", "Limits", "LoopLag", "Pacer", "Window", "accepted_by"]

#: the adaptive rate never goes below this (requests per second)
MIN_RATE = 0.2
#: after a 429 the rate is set to this share of the accepted rate
BACKOFF = 0.95
#: relative growth per second of the rate right after a cut; doubles every second since
GROWTH = 0.05
#: the accepted rate is measured over this many seconds
OBSERVE_S = 1.0
#: ... when at least this many were accepted in that time (fewer: a paced rate is halved instead)
MEASURABLE = 3
#: at most one cut per this many seconds (the accepted rate needs that long to show the last one)
CUT_EVERY_S = 0.5
#: a paced rate grows to at most this multiple of the rate requests are really answered at
HEADROOM = 1.5
#: a 429 cuts nothing while no more than this share (above the key's learnt noise) of its recent answers were 429s
NOISE_SHARE = 0.2
#: ... the recent answers being those of the last this many seconds
SHARE_S = 2.0
#: a cut is checked on the answers to the first this many requests sent from CUT_EVERY_S after it ...
EVIDENCE = 20
#: ... and undone (those 429s do not depend on the rate) when more than this share of them were 429s
NOISE_FLOOR = 0.15
#: the share of 429s is judged on at least this many answers (older ones are kept until there are more)
MIN_ANSWERS = 10
#: a share of 429s above this after a cut means the cut was not enough, never noise
MAX_NOISE = 0.5
#: the learnt share of 429s that cutting the rate did not remove halves every this many seconds
NOISE_HALF_LIFE_S = 30.0


class Answers:
    """One key's recent answers (accepted or 429): those of the last :data:`SHARE_S` seconds, or the
    last :data:`MIN_ANSWERS` if there were fewer; the share of 429s, and the rates of requests accepted and answered."""

    def __init__(self) -> None:
        self._log: collections.deque[tuple[float, bool]] = collections.deque()
        self._rejected = 0

    def add(self, now: float, rejected: bool) -> None:
        self._log.append((now, rejected))
        self._rejected += rejected
        while len(self._log) > MIN_ANSWERS and self._log[0][0] < now - SHARE_S:
            self._rejected -= self._log.popleft()[1]

    def share(self) -> float | None:
        """The share of 429s among the recent answers (None: fewer than :data:`MIN_ANSWERS` so far)."""
        return self._rejected / len(self._log) if len(self._log) >= MIN_ANSWERS else None

    def answered(self) -> float:
        """Requests answered per second over the last :data:`SHARE_S` seconds (about: a slow key keeps older ones)."""
        return len(self._log) / SHARE_S

    def accepted(self, now: float) -> float:
        """Requests accepted per second over the last :data:`OBSERVE_S` seconds."""
        count = 0
        for at, rejected in reversed(self._log):
            if at < now - OBSERVE_S:
                break
            count += not rejected
        return count / OBSERVE_S


class Window:
    """Concurrency window of one provider+model (see the module docstring).

    Starts at the sweep's concurrency. :meth:`cut` halves it, at most once per round trip (a 429
    answering a request sent before the last cut does not cut again, so one burst of rejections
    counts once); its key's :class:`Pacer` decides when (a window without one cuts on every 429).
    Each accepted request grows it by 1/window, back up to the ceiling. ``accepted`` counts
    requests the provider accepted: the runner's progress measure.
    """

    def __init__(self, ceiling: int) -> None:
        self.ceiling = float(ceiling)
        self.size = float(ceiling)
        self.in_flight = 0
        self.rate_limited = 0
        self.accepted = 0
        self.cuts = 0
        self._cut_at = 0.0
        self.pacer: Pacer | None = None
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def limit(self) -> int:
        return max(1, int(self.size))

    async def acquire(self) -> None:
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed over just as we were cancelled
            elif fut in self._waiters:
                self._waiters.remove(fut)
            raise

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_flight += 1  # handed over: the woken task owns the slot
                fut.set_result(None)

    def on_rate_limited(self, sent_at: float) -> None:
        self.rate_limited += 1
        if self.pacer is None:
            self.cut(sent_at)

    def cut(self, sent_at: float) -> None:
        """Halve the window, unless the 429 answers a request sent before the last cut."""
        if sent_at >= self._cut_at:
            self.size = max(1.0, self.size / 2)
            self._cut_at = time.monotonic()
            self.cuts += 1

    def on_accepted(self) -> None:
        self.accepted += 1
        self.size = min(self.ceiling, self.size + 1.0 / self.size)
        self._wake()


class InFlightCap(Window):
    """The sweep-wide cap on requests in flight, held back while the runner's own event loop is saturated.

    A loop that cannot keep up (more concurrent streams than one CPU parses, a CPU-heavy event
    subscriber) makes every call wait for it, and recorded latencies measure that wait instead of
    the model. While the loop's lag stays above the threshold, the cap is cut to 3/4 (at most once
    per :attr:`HOLD_S`, so each cut shows in the lag first); once the lag is below half the threshold
    it grows back by an eighth of the ceiling per step. The sweep's throughput stays what the CPU
    allows; fewer calls wait for the loop at a time.
    """

    HOLD_S = 0.25

    def __init__(self, ceiling: int) -> None:
        super().__init__(ceiling)
        self.lowest = int(ceiling)
        self.cuts_for_lag = 0
        self._changed_at = 0.0

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def on_lag(self, mean_ms: float, threshold_ms: float) -> None:
        """One sample of the loop's lag (the mean of the last few samples, in ms)."""
        now = time.monotonic()
        if now - self._changed_at < self.HOLD_S:
            return
        if mean_ms > threshold_ms and self.size > 1:
            self.size = max(1.0, float(int(self.size * 0.75)))
            self.lowest = min(self.lowest, self.limit)
            self.cuts_for_lag += 1
            self._changed_at = now
        elif mean_ms < threshold_ms / 2 and self.size < self.ceiling:
            self.size = min(self.ceiling, self.size + max(1.0, self.ceiling // 8))
            self._changed_at = now
            self._wake()

    def on_accepted(self) -> None:  # only the loop's lag moves this cap
        self.accepted += 1

    def summary(self) -> dict[str, int]:
        """The cap at the end, the lowest it went and how many times the loop's lag cut it."""
        return {"final": self.limit, "lowest": self.lowest, "cuts": self.cuts_for_lag}


class Pacer:
    """When the next request of one provider+model may be sent (see the module docstring).

    ``cap`` is the configured rate (``rpm / 60``) or None; ``rate`` is the adaptive rate, None
    until 429s show a limit; ``window`` is the key's :class:`Window`, halved by a limit found while
    unpaced. ``cuts`` counts cuts of the rate, ``undone`` those undone as noise.
    """

    def __init__(self, window: Window | None = None) -> None:
        self.cap: float | None = None
        self.rate: float | None = None
        self.window = window
        self.paused_until = 0.0
        self.cuts = 0
        self.undone = 0
        self._next = 0.0
        self._lock = asyncio.Lock()
        self._answers = Answers()
        self._cut_at = -CUT_EVERY_S
        self._noise = 0.0  # the learnt share of 429s that do not depend on the rate
        self._noise_at = 0.0
        # the cut being checked: the rate before it, and the answers to requests sent since [accepted, 429]
        self._check: tuple[float | None, list[int]] | None = None

    @property
    def effective(self) -> float | None:
        """The rate requests are spaced at now (None: unpaced)."""
        if self.rate is None:
            return self.cap
        return self.rate if self.cap is None else min(self.rate, self.cap)

    def noise(self, now: float) -> float:
        """The learnt share of 429s that cutting the rate did not remove (fading with time)."""
        return self._noise * 0.5 ** ((now - self._noise_at) / NOISE_HALF_LIFE_S)

    async def wait(self) -> None:
        """Wait for this request's turn (FIFO): after any Retry-After pause, one rate interval after the last.

        The interval counts from when the last request really went out, give or take half an
        interval: a busy event loop that wakes the waiters late never sends a catch-up burst.
        """
        async with self._lock:
            while True:
                now = time.monotonic()
                rate = self.effective
                at = max(now, self.paused_until, self._next if rate else now)
                if at <= now:
                    break
                await asyncio.sleep(at - now)  # re-checked: a 429 meanwhile may have paused or slowed the key
            if rate:
                self._next = max(self._next, now - 0.5 / rate) + 1.0 / rate

    def observed(self, now: float) -> float:
        """Requests accepted per second over the last :data:`OBSERVE_S` seconds."""
        return self._answers.accepted(now)

    def _answered(self, now: float, sent_at: float, rejected: bool) -> None:
        """Count an answer towards the check of the last cut; once there are :data:`EVIDENCE`, check it."""
        # a request sent right after a cut may still find the provider's bucket drained by the rate before it
        if self._check is None or sent_at < self._cut_at + CUT_EVERY_S:
            return
        before, counts = self._check
        counts[rejected] += 1
        if sum(counts) < EVIDENCE:
            return
        self._check = None
        after = counts[True] / sum(counts)
        if NOISE_FLOOR < after <= MAX_NOISE:
            # 429s kept coming at the lower rate: they do not depend on it. (Most requests still rejected:
            # the cut was not enough, and the next 429 cuts again.)
            self._noise, self._noise_at = after, now
            self.rate = before
            self.undone += 1

    def on_accepted(self, sent_at: float = 0.0) -> None:
        now = time.monotonic()
        self._answers.add(now, False)
        self._answered(now, sent_at, False)
        if self.rate is not None:
            quiet = min(5.0, now - self._cut_at)
            # per accepted request: ~GROWTH·2^quiet of the rate per second, while the rate is what holds
            # requests back (at most HEADROOM × the rate requests are really answered at): a rate far above
            # what is sent, because the window or the sweep's own cap is what limits, would mean nothing
            ceiling = max(self.rate, HEADROOM * self._answers.answered())
            self.rate = min(self.rate + GROWTH * 2.0**quiet, ceiling)
            if self.cap is not None and self.rate > self.cap:
                self.rate = self.cap

    def on_rate_limited(self, sent_at: float, retry_after: float | None) -> None:
        now = time.monotonic()
        if retry_after:
            self.paused_until = max(self.paused_until, now + min(retry_after, 60.0))
        self._answers.add(now, True)
        self._answered(now, sent_at, True)
        share = self._answers.share()
        if share is None or share <= NOISE_SHARE + self.noise(now):
            return  # a few 429s among many accepted requests (or too few answers to tell): noise, not a limit
        if sent_at < self._cut_at or now - self._cut_at < CUT_EVERY_S:
            return  # answers a request sent before the last cut, or the last cut is too recent to show
        if self._check is not None:
            return  # the last cut is not checked yet: whether it helped decides what this 429 means
        accepted = self.observed(now)
        current = self.effective
        if current is None:
            if not accepted:
                return  # nothing accepted yet to measure: Retry-After and the window hold back meanwhile
            target = BACKOFF * accepted
            if self.window is not None:
                self.window.cut(sent_at)  # the first sign of a limit: fewer in flight at once, too
        elif accepted * OBSERVE_S >= MEASURABLE:
            target = min(current, BACKOFF * accepted)
        else:
            target = current / 2  # too few accepted in a second to measure a rate (a limit of a few a minute)
        before = self.rate
        self.rate = max(MIN_RATE, target)
        self._cut_at = now
        self.cuts += 1
        self._check = (before, [0, 0])


def _per_second_bucket(per_minute: float) -> AsyncLimiter:
    # aiolimiter's bucket holds max_rate units; a whole minute's worth would allow a burst of the
    # full TPM at once, which providers enforcing per-second windows reject: hold one second's worth
    burst = max(1.0, per_minute / 60.0)
    return AsyncLimiter(burst, burst * 60.0 / per_minute)


async def _take(limiter: AsyncLimiter, amount: float) -> None:
    """Acquire ``amount`` units, in pieces when it exceeds the bucket (a long prompt under a TPM limit)."""
    while amount > 1e-9:
        piece = min(amount, limiter.max_rate)
        await limiter.acquire(piece)
        amount -= piece


class Limits:
    """The windows, pacers and TPM buckets of one sweep, one set per provider+model."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.windows: dict[str, Window] = {}
        self.pacers: dict[str, Pacer] = {}
        # key -> (the per-minute rate it was built for, its bucket)
        self._buckets: dict[str, tuple[float, AsyncLimiter]] = {}

    def window(self, call: Call) -> Window:
        """The concurrency window of the call's provider+model; a runner task holds a slot of it per call."""
        key = call.qualified_model
        win = self.windows.get(key)
        if win is None:
            win = self.windows[key] = Window(self.concurrency)
            win.pacer = self.pacer(call)
            win.pacer.window = win
        return win

    def pacer(self, call: Call) -> Pacer:
        """The request pacer of the call's provider+model."""
        key = call.qualified_model
        found = self.pacers.get(key)
        if found is None:
            found = self.pacers[key] = Pacer()
        return found

    def _tpm_bucket(self, key: str, per_minute: float) -> AsyncLimiter:
        """The bucket for ``per_minute``, rebuilt when the provider was re-registered with another rate."""
        found = self._buckets.get(key)
        if found is None or found[0] != per_minute:
            found = self._buckets[key] = (per_minute, _per_second_bucket(per_minute))
        return found[1]

    async def pace(self, call: Call) -> Pacer:
        """Wait until the call may be sent (rate, Retry-After pause, TPM: charged the call's estimated
        tokens, worked out only for a provider with a TPM limit); returns its pacer."""
        prov = get_provider(call.provider)  # looked up per request: a re-registered provider's limits apply at once
        pacer = self.pacer(call)
        pacer.cap = prov.rpm / 60.0 if prov.rpm else None
        await pacer.wait()
        if prov.tpm:
            await _take(
                self._tpm_bucket(call.qualified_model, prov.tpm), min(float(sum(estimate_call_tokens(call))), prov.tpm)
            )
        return pacer

    def summary(self) -> dict[str, Any]:
        """Per provider+model: window size, adaptive rate (req/s, None: never limited), 429s, cuts of the
        window and of the rate, and cuts of the rate undone because the 429s did not depend on it."""
        out: dict[str, Any] = {}
        for key, w in self.windows.items():
            pacer = self.pacers.get(key)
            rate = pacer.effective if pacer is not None else None
            out[key] = {
                "window": round(w.size, 2),
                "rate": None if rate is None else round(rate, 2),
                "rate_limited": w.rate_limited,
                "cuts": w.cuts,
                "rate_cuts": 0 if pacer is None else pacer.cuts,
                "rate_cuts_undone": 0 if pacer is None else pacer.undone,
            }
        return out


class LoopLag:
    """Event-loop lag of a running sweep: how late a short sleep wakes up.

    A saturated loop (too many calls for one CPU, a slow subscriber) makes every recorded
    latency and TTFT include time spent waiting for the loop rather than the model. The runner
    samples the lag while it runs, reports its percentiles in the sweep summary, and says so once
    when the mean of its last ``sustained`` samples passes :attr:`threshold_ms` (lower ``concurrency``
    then, or move heavy work off the loop).
    """

    def __init__(self, interval_s: float = 0.05, threshold_ms: float = 100.0, sustained: int = 3) -> None:
        self.interval_s = interval_s
        self.sustained = sustained
        self.threshold_ms = threshold_ms
        self.samples_ms: list[float] = []
        self.warned = False

    async def watch(self, on_saturated: Any, on_sample: Any = None) -> None:
        """Sample until cancelled; call ``on_saturated(lag_ms)`` the first time the lag passes the threshold,
        and ``on_sample(mean_ms, threshold_ms)`` at every sample (the mean of the last few)."""
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(self.interval_s)
            lag_ms = max(0.0, (time.monotonic() - t0 - self.interval_s) * 1000.0)
            self.samples_ms.append(lag_ms)
            recent = self.samples_ms[-self.sustained :]
            # sustained (the mean of the last few samples), not a one-off hiccup (a first import, a GC pause)
            mean = sum(recent) / len(recent)
            if on_sample is not None:
                on_sample(mean, self.threshold_ms)
            # or one stall long enough that no hiccup explains it (the loop may not wake again before the end)
            sustained = len(recent) == self.sustained and mean > self.threshold_ms
            if (sustained or lag_ms > 5 * self.threshold_ms) and not self.warned:
                self.warned = True
                on_saturated(max(mean, lag_ms))

    def summary(self) -> dict[str, float | None]:
        """p50, p95 and max lag in ms (None before any sample)."""
        if not self.samples_ms:
            return {"p50": None, "p95": None, "max": None}
        data = sorted(self.samples_ms)
        return {
            "p50": round(data[len(data) // 2], 1),
            "p95": round(data[min(len(data) - 1, int(len(data) * 0.95))], 1),
            "max": round(data[-1], 1),
        }


def accepted_by(window: Window, pacer: Pacer, sent_at: float) -> None:
    """The provider accepted a request sent at ``sent_at`` (answered 200): progress for its window and its pacer."""
    window.on_accepted()
    pacer.on_accepted(sent_at)
