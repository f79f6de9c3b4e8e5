"""Rate limits per provider+model: a concurrency window, a request pacer that adapts to 429s, and a TPM bucket.

Every provider+model (a *key*, ``call.qualified_model``) has its own queue, so one key's limits,
429s or Retry-After pauses never delay another key's calls. Per key:

* :class:`Window` — how many calls are in flight (at most the sweep's ``concurrency``); AIMD:
  a 429 halves it at most once per round trip, each accepted request grows it by 1/window.
* :class:`Pacer` — when the next request may be sent. With ``rpm`` it spaces requests at that
  rate. Without ``rpm`` it sends freely until the first 429; from then on it paces at an adaptive
  rate: a 429 (at most one per round trip and per half second) sets the rate just under the rate
  the provider has been *accepting* over the last second (its real capacity under a token
  bucket; once paced, by at most 15 % per cut, so random rejections cannot spiral it down), and each
  accepted request raises it a little, faster the longer no 429 came (5 %/s, doubling every quiet
  second), so the rate converges to the capacity within seconds and recovers as fast when the
  capacity grows. A Retry-After hint pauses the whole key until then. With ``rpm`` the adaptive
  rate never exceeds it.
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

__all__ = ["InFlightCap", "Limits", "LoopLag", "Pacer", "Window", "accepted_by"]

#: the adaptive rate never goes below this (requests per second)
MIN_RATE = 0.2
#: after a 429 the rate is set to this share of the accepted rate
BACKOFF = 0.95
#: relative growth per second of the rate right after a cut; doubles every quiet second
GROWTH = 0.05
#: a paced rate is cut to no less than this share of itself at a time
MAX_CUT = 0.85
#: the accepted rate is measured over this many seconds
OBSERVE_S = 1.0
#: at most one cut per this many seconds (the accepted rate needs that long to show the last one)
CUT_EVERY_S = 0.5


class Window:
    """AIMD concurrency window of one provider+model.

    Starts at the sweep's concurrency. A 429 halves the window, at most once per round trip (a
    429 answering a request sent before the last cut does not cut again, so one burst of
    rejections counts once); each accepted request grows it by 1/window, back up to the ceiling.
    ``accepted`` counts requests the provider accepted: the runner's progress measure.
    """

    def __init__(self, ceiling: int) -> None:
        self.ceiling = float(ceiling)
        self.size = float(ceiling)
        self.in_flight = 0
        self.rate_limited = 0
        self.accepted = 0
        self.cuts = 0
        self._cut_at = 0.0
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
    until the first 429.
    """

    def __init__(self) -> None:
        self.cap: float | None = None
        self.rate: float | None = None
        self.paused_until = 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()
        self._accepted: collections.deque[float] = collections.deque()
        self._cut_at = -CUT_EVERY_S

    @property
    def effective(self) -> float | None:
        """The rate requests are spaced at now (None: unpaced)."""
        if self.rate is None:
            return self.cap
        return self.rate if self.cap is None else min(self.rate, self.cap)

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
        while self._accepted and self._accepted[0] < now - OBSERVE_S:
            self._accepted.popleft()
        return len(self._accepted) / OBSERVE_S

    def on_accepted(self) -> None:
        now = time.monotonic()
        self._accepted.append(now)
        if self.rate is not None:
            quiet = min(5.0, now - self._cut_at)
            self.rate += GROWTH * 2.0**quiet  # per accepted request: ~GROWTH·2^quiet of the rate per second
            if self.cap is not None and self.rate > self.cap:
                self.rate = self.cap

    def on_rate_limited(self, sent_at: float, retry_after: float | None) -> None:
        now = time.monotonic()
        if retry_after:
            self.paused_until = max(self.paused_until, now + min(retry_after, 60.0))
        if sent_at < self._cut_at or now - self._cut_at < CUT_EVERY_S:
            return  # answers a request sent before the last cut, or the last cut is too recent to show
        accepted = self.observed(now)
        current = self.effective
        if current is None:
            if not accepted:
                return  # nothing accepted yet to measure: Retry-After and the window hold back meanwhile
            target = BACKOFF * accepted
        else:
            # down to what the provider accepts, but by at most 1 - MAX_CUT at a time: a provider that
            # rejects a share of requests whatever the rate (not a capacity limit) cannot spiral the rate down
            target = min(current, max(BACKOFF * accepted, MAX_CUT * current))
        self.rate = max(MIN_RATE, target)
        self._cut_at = now


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
        """Per provider+model: window size, adaptive rate (req/s, None: never limited), 429s and cuts."""
        out: dict[str, Any] = {}
        for key, w in self.windows.items():
            pacer = self.pacers.get(key)
            rate = pacer.effective if pacer is not None else None
            out[key] = {
                "window": round(w.size, 2),
                "rate": None if rate is None else round(rate, 2),
                "rate_limited": w.rate_limited,
                "cuts": w.cuts,
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


def accepted_by(window: Window, pacer: Pacer) -> None:
    """The provider accepted a request (answered 200): progress for its window and its pacer."""
    window.on_accepted()
    pacer.on_accepted()
