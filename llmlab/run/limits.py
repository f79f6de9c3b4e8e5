"""Rate limits per provider+model: RPM/TPM token buckets and an AIMD concurrency window that backs off after 429s.

Time spent waiting here is queueing, never latency: the runner starts its latency clock after
:meth:`Limits.acquire` returns.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import TYPE_CHECKING, Any

from aiolimiter import AsyncLimiter

from llmlab.plan.providers import get_provider

if TYPE_CHECKING:
    from llmlab.plan.grid import Call

__all__ = ["Limits", "Window"]


class Window:
    """AIMD concurrency window of one provider+model, and the share of its RPM/TPM in use.

    Starts at the sweep's concurrency. A 429 halves the window and the rate share, at most once
    per round trip (a 429 answering a request sent before the last cut does not cut again, so
    one burst of rejections counts once); each success grows the window by 1/window and the
    rate share by 5 %, back up to the configured limits.
    """

    def __init__(self, ceiling: int) -> None:
        self.ceiling = float(ceiling)
        self.size = float(ceiling)
        self.rate_share = 1.0
        self.in_flight = 0
        self.rate_limited = 0
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
            self.rate_share = max(0.05, self.rate_share / 2)
            self._cut_at = time.monotonic()
            self.cuts += 1

    def on_success(self) -> None:
        self.size = min(self.ceiling, self.size + 1.0 / self.size)
        self.rate_share = min(1.0, self.rate_share * 1.05)
        self._wake()


def _per_second_bucket(per_minute: float) -> AsyncLimiter:
    # aiolimiter's bucket holds max_rate units; a whole minute's worth would allow a burst of the
    # full RPM at once, which providers enforcing per-second windows reject: hold one second's worth
    burst = max(1.0, per_minute / 60.0)
    return AsyncLimiter(burst, burst * 60.0 / per_minute)


async def _take(limiter: AsyncLimiter, amount: float) -> None:
    """Acquire ``amount`` units, in pieces when it exceeds the bucket (a long prompt under a TPM limit)."""
    while amount > 1e-9:
        piece = min(amount, limiter.max_rate)
        await limiter.acquire(piece)
        amount -= piece


class Limits:
    """Per provider+model limits: the provider's RPM and TPM (tokens estimated before the call,
    prompt + max_tokens) on aiolimiter buckets, and an AIMD window that adapts down after 429s.
    Time spent here is queueing, never latency: the runner starts the latency clock after it."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.windows: dict[str, Window] = {}
        # key -> (the per-minute rate it was built for, its bucket)
        self._buckets: dict[tuple[str, str], tuple[float, AsyncLimiter]] = {}

    def window(self, call: Call) -> Window:
        key = call.qualified_model
        win = self.windows.get(key)
        if win is None:
            win = self.windows[key] = Window(self.concurrency)
        return win

    def _bucket(self, kind: str, key: str, per_minute: float) -> AsyncLimiter:
        """The bucket for ``per_minute``, rebuilt when the provider was re-registered with another rate."""
        found = self._buckets.get((kind, key))
        if found is None or found[0] != per_minute:
            found = self._buckets[(kind, key)] = (per_minute, _per_second_bucket(per_minute))
        return found[1]

    async def acquire(self, call: Call, est_tokens: int) -> Window:
        """Wait for a slot and for rate capacity; the caller must ``release()`` the returned window."""
        prov = get_provider(call.provider)  # looked up per request: a re-registered provider's limits apply at once
        key = call.qualified_model
        win = self.window(call)
        await win.acquire()
        try:
            # a lower rate share makes each request take more of the bucket: the rate adapts down
            if prov.rpm:
                await _take(self._bucket("rpm", key, prov.rpm), 1.0 / win.rate_share)
            if prov.tpm:
                await _take(self._bucket("tpm", key, prov.tpm), min(float(est_tokens), prov.tpm) / win.rate_share)
        except BaseException:
            win.release()
            raise
        return win

    def summary(self) -> dict[str, Any]:
        return {
            key: {
                "window": round(w.size, 2),
                "rate_share": round(w.rate_share, 3),
                "rate_limited": w.rate_limited,
                "cuts": w.cuts,
            }
            for key, w in self.windows.items()
        }
