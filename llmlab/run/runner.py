"""Send a sweep's calls: asyncio, a concurrency limit, rate limits, retries, cache, budget.

Each call is one asyncio task that streams its response (with ``include_usage``) through the
real ``openai`` client, so TTFT and tokens/s are measured. Transient failures (429 honouring
Retry-After, 5xx, timeouts, connection resets, streams cut before their end) are retried by
tenacity; a call that fails for good becomes a ``status="error"`` row. Every finished call is
persisted (row + cache entry) before it is reported, so a crash never loses it and a re-run
never pays for it twice. The runner renders nothing: it publishes events on an EventBus.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import email.utils
import json
import logging
import random
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pandas as pd
from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from llmlab import schema
from llmlab.config import get_config
from llmlab.errors import ReplayMissError, redact
from llmlab.events import Event, EventBus
from llmlab.plan.providers import get_provider, make_client
from llmlab.run.cassette import CallInfo, call_scope
from llmlab.store import get_store
from llmlab.sweep import Call, Sweep
from llmlab.tracing import call_context, ensure_tracing
from llmlab.tracing.setup import schema_attrs_for_call

if TYPE_CHECKING:
    from llmlab.results import SweepResult

log = logging.getLogger("llmlab.runner")


class StreamCut(Exception):
    """The stream ended before a finish_reason: the partial output is discarded and retried."""


def is_transient(exc: BaseException) -> bool:
    """Whether a failed attempt is worth retrying."""
    if isinstance(exc, (StreamCut, openai.APIConnectionError, openai.APITimeoutError, httpx.TransportError)):
        return True
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code == 429 and getattr(exc, "code", None) == "insufficient_quota":
            return False  # out of credit, not "too many requests": waiting will not help
        return exc.status_code in (408, 409, 425, 429) or exc.status_code >= 500
    return False


def retry_after_seconds(exc: BaseException | None) -> float | None:
    """The server's Retry-After hint in seconds, if any: ``retry-after-ms``, or ``Retry-After``
    as seconds or as an HTTP-date (RFC 9110; some gateways send that form)."""
    response = getattr(exc, "response", None)
    if response is None:
        return None
    headers = response.headers
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


def is_rate_limited(exc: BaseException | None) -> bool:
    """Whether a failed attempt was the provider saying "too many requests" (HTTP 429)."""
    return isinstance(exc, openai.APIStatusError) and exc.status_code == 429


@dataclasses.dataclass
class RetryPolicy:
    """How failed attempts are retried: exponential backoff with jitter, capped; Retry-After wins.

    A 429 means "not yet", not "broken": rate-limited attempts are counted apart, up to
    ``max_rate_limited`` of them, and neither use up ``max_attempts`` (the other transient
    failures: 5xx, timeouts, cut streams) nor lengthen the backoff of those.
    """

    max_attempts: int = 6
    initial_s: float = 0.25
    max_s: float = 20.0
    max_rate_limited: int = 20

    def delay(self, exc: BaseException | None, failures: int) -> float:
        """Seconds to wait after a failed attempt; ``failures`` counts the non-429 ones so far."""
        hinted = retry_after_seconds(exc)
        if hinted is not None:
            return min(hinted, 60.0)
        backoff = min(self.max_s, self.initial_s * (2 ** max(0, failures - 1)))
        return backoff * (0.5 + random.random() / 2)

    def wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return self.delay(exc, state.attempt_number)


@dataclasses.dataclass
class RunOptions:
    concurrency: int = 8
    budget_usd: float | None = None
    cache: bool | str = True
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    http_client: httpx.AsyncClient | None = None
    sweep_id: str | None = None
    cassette: Any = None  # path of the cassette for cache="record"/"replay"

    @property
    def cassette_mode(self) -> str | None:
        return self.cache if self.cache in ("record", "replay") else None


class RunHandle:
    """Control of a running sweep: ``cancel()`` stops dispatching and cancels in-flight calls."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def cancel(self) -> None:
        self.cancelled.set()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._cancel_tasks)

    def _cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()


class _Window:
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


class _Limits:
    """Per provider+model limits: the provider's RPM and TPM (tokens estimated before the call,
    prompt + max_tokens) on aiolimiter buckets, and an AIMD window that adapts down after 429s.
    Time spent here is queueing, never latency: the runner starts the latency clock after it."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.windows: dict[str, _Window] = {}
        # key -> (the per-minute rate it was built for, its bucket)
        self._buckets: dict[tuple[str, str], tuple[float, AsyncLimiter]] = {}

    def window(self, call: Call) -> _Window:
        key = call.qualified_model
        win = self.windows.get(key)
        if win is None:
            win = self.windows[key] = _Window(self.concurrency)
        return win

    def _bucket(self, kind: str, key: str, per_minute: float) -> AsyncLimiter:
        """The bucket for ``per_minute``, rebuilt when the provider was re-registered with another rate."""
        found = self._buckets.get((kind, key))
        if found is None or found[0] != per_minute:
            found = self._buckets[(kind, key)] = (per_minute, _per_second_bucket(per_minute))
        return found[1]

    async def acquire(self, call: Call, est_tokens: int) -> _Window:
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


#: sweeps running in this process now (their claims are live; any other claim made here is stale)
_ACTIVE_SWEEPS: set[str] = set()


class _ClaimWaiter:
    """Waits for calls that another sweep (in this process or another one) claimed and is sending.

    One poller reads the cache for all of them a few times a second; a call that is answered
    is served from the cache, and a call whose claim went away without an answer (it failed
    there, was skipped, or its process died) is claimed here and sent by this sweep.
    """

    interval_s = 0.2

    def __init__(self, store: Any, owner: str, call_ids: set[str]) -> None:
        self.store = store
        self.owner = owner
        self._ids = set(call_ids)
        self._futures: dict[str, asyncio.Future[dict[str, Any] | None]] = {}
        self._poller: asyncio.Task[None] | None = None

    def __contains__(self, call_id: str) -> bool:
        return call_id in self._ids

    async def wait(self, call_id: str) -> dict[str, Any] | None:
        """The cached answer of ``call_id``, or None once it is this sweep's to send."""
        fut = self._futures.setdefault(call_id, asyncio.get_running_loop().create_future())
        if self._poller is None:
            self._poller = asyncio.ensure_future(self._poll())
        return await fut

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            waiting = [cid for cid, fut in self._futures.items() if not fut.done()]
            if not waiting:
                continue
            try:
                hits = await asyncio.to_thread(self.store.cached_responses, waiting)
                rest = [cid for cid in waiting if cid not in hits]
                still_elsewhere = (
                    await asyncio.to_thread(self.store.claim_calls, rest, self.owner, set(_ACTIVE_SWEEPS))
                    if rest
                    else set()
                )
            except Exception:  # e.g. the store briefly locked by another process: ask again next round
                log.warning("could not check calls claimed by another sweep; retrying", exc_info=True)
                continue
            for cid in waiting:
                fut = self._futures[cid]
                if fut.done():
                    continue
                if cid in hits:
                    fut.set_result(hits[cid])
                elif cid not in still_elsewhere:
                    fut.set_result(None)

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)


def _base_row(call: Call, sweep_id: str) -> dict[str, Any]:
    return {
        "sweep_id": sweep_id,
        "call_id": call.call_id,
        "trace_id": None,
        "span_id": None,
        "service": None,
        "start_time": None,
        "end_time": None,
        "latency_ms": None,
        "ttft_ms": None,
        "tokens_per_s": None,
        "provider": call.provider,
        "model": call.qualified_model,
        "response_model": None,
        "temperature": call.temperature,
        "top_p": call.top_p,
        "max_tokens": call.max_tokens,
        "seed": call.seed,
        "repeat": call.repeat,
        "prompt_id": call.prompt_id,
        "prompt": call.prompt,
        "completion": None,
        "finish_reason": None,
        "input_tokens": None,
        "output_tokens": None,
        "total_tokens": None,
        "tokens_estimated": False,
        "cost_usd": None,
        "status": "ok",
        "error": "",
        "cached": False,
        "queue_ms": None,
        "attempts": 0,
        "retries": 0,
        "itl_ms": None,
        "params": json.dumps(call.params, sort_keys=True) if call.params else "",
        **{k: v for k, v in call.params.items() if k not in schema.CANONICAL_COLUMNS},
        **{
            k if k not in schema.CANONICAL_COLUMNS else f"data.{k}": v
            for k, v in call.data.items()
            if k not in ("prompt_id", "id", "messages")
        },
    }


class SweepRunner:
    """Runs one sweep's calls; see the module docstring."""

    def __init__(self, sweep: Sweep, options: RunOptions, bus: EventBus, handle: RunHandle) -> None:
        self.sweep = sweep
        self.options = options
        self.bus = bus
        self.handle = handle
        self.config = get_config()
        self.store = get_store(self.config.home)
        self.sweep_id = options.sweep_id or f"sw-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.rows: dict[str, dict[str, Any]] = {}
        self.skipped: list[tuple[Call, str]] = []
        self.stopped: str | None = None
        self.spent_usd = 0.0
        self._reserved_usd = 0.0
        self._limits = _Limits(options.concurrency)
        self._clients: dict[str, Any] = {}
        self._seq = 0
        self._prices: dict[str, Any] | None = None
        self._reservations: dict[str, float] = {}
        self._cassette: Any = None
        self.replay_misses: list[ReplayMissError] = []
        self._claims = _ClaimWaiter(self.store, self.sweep_id, set())

    def _emit(self, kind: str, call_id: str | None = None, **data: Any) -> None:
        self.bus.publish(Event(kind, self.sweep_id, call_id, data))

    def _client(self, call: Call) -> Any:
        client = self._clients.get(call.provider)
        if client is None:
            prov = get_provider(call.provider)
            http_client = self.options.http_client
            if self._cassette is not None:
                prov, http_client = self._cassette_client(prov)
            client = self._clients[call.provider] = make_client(
                prov, http_client, max_connections=max(100, self.options.concurrency * 2)
            )
        return client

    def _cassette_client(self, prov: Any) -> tuple[Any, httpx.AsyncClient]:
        """An http client whose transport records to / replays from the cassette. Replay needs
        no key and no server: the provider is swapped for a key-less one whose URL is never
        dialled (for ``local`` this also keeps the model server from starting)."""
        from llmlab.run.cassette import CassetteTransport

        if self.options.cassette_mode == "replay":
            base_url = prov.base_url if prov.base_url and not prov.is_local else "http://replay.invalid/v1"
            name = prov.name
            prov = dataclasses.replace(
                prov, name=f"{name}-replay", base_url=base_url, api_key_env=None, base_url_env=None
            )
            transport = CassetteTransport(self._cassette, provider=name, base_url=base_url)
        else:
            base_url = prov.resolve_base_url()
            transport = CassetteTransport(self._cassette, provider=prov.name, base_url=base_url)
        return prov, httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(prov.timeout, connect=10.0))

    def _cost(self, model: str, tokens_in: int | None, tokens_out: int | None) -> float | None:
        from llmlab.pricing import cost_for, load_prices

        if self._prices is None:
            self._prices = load_prices()
        if tokens_in is None or tokens_out is None:
            return None
        return cost_for(model, tokens_in, tokens_out, self._prices)

    def preflight(self) -> None:
        """Everything that can fail before sending: keys of every provider used, the budget,
        the cassette (replay needs no key: it never sends)."""
        cache, cassette = self.options.cache, self.options.cassette
        if not isinstance(cache, bool) and cache not in ("record", "replay"):
            from llmlab.errors import ValidationError

            raise ValidationError("cache", cache, "expected True, False, 'record' or 'replay'")
        if self.options.cassette_mode is not None:
            from llmlab.errors import ValidationError
            from llmlab.run.cassette import Cassette

            if cassette is None:
                raise ValidationError("cassette", cassette, f"cache={cache!r} needs cassette=<path of a .json file>")
            self._cassette = Cassette(cassette, cache)  # replay: ConfigError if the file is missing
        elif cassette is not None:
            from llmlab.errors import ValidationError

            raise ValidationError("cassette", str(cassette), "a cassette is used only with cache='record' or 'replay'")
        if self.options.cassette_mode != "replay":
            for prov in sorted({c.provider for c in self.sweep.calls}):
                get_provider(prov).api_key()  # raises ConfigError naming the env var
        budget = self.options.budget_usd
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget < 0):
            from llmlab.errors import ValidationError

            raise ValidationError("budget_usd", budget, "must be a non-negative number of US dollars")
        conc = self.options.concurrency
        if isinstance(conc, bool) or not isinstance(conc, int) or conc <= 0:
            from llmlab.errors import ValidationError

            raise ValidationError("concurrency", conc, "must be a positive integer")
        if budget is not None:
            # a reply without a length bound has no worst-case cost: the budget could be passed
            unbounded = next((c for c in self.sweep.calls if c.max_output_tokens is None), None)
            if unbounded is not None:
                from llmlab.errors import ValidationError

                raise ValidationError(
                    "budget_usd",
                    budget,
                    "max_tokens=None leaves the length, and so the cost, of a "
                    "reply unbounded; set max_tokens to use a budget",
                )
            # a model without a price would make the budget silently unenforceable
            unpriced = sorted(
                {c.qualified_model for c in self.sweep.calls if self._cost(c.qualified_model, 1, 1) is None}
            )
            if unpriced:
                from llmlab.errors import ValidationError

                raise ValidationError(
                    "budget_usd",
                    budget,
                    f"model {unpriced[0]!r} has no price, so spend cannot be "
                    f"estimated; add it to {self.config.home / 'prices.json'}",
                )

    async def run(self) -> None:
        """Send the sweep's calls and record the outcome (see the module docstring)."""
        _ACTIVE_SWEEPS.add(self.sweep_id)
        try:
            await self._run()
        finally:
            _ACTIVE_SWEEPS.discard(self.sweep_id)

    async def _run(self) -> None:
        calls = self.sweep.calls
        self.handle._loop = asyncio.get_running_loop()
        ensure_tracing(self.config)
        info = {"calls": len(calls), "concurrency": self.options.concurrency, "budget_usd": self.options.budget_usd}
        spec = self.sweep.spec()
        if not self.config.trace_content:
            spec["prompts"] = spec["template"] = spec["system"] = None  # prompt text stays out of the store
        from llmlab.run.provenance import experiment_context, finish_experiment, start_experiment

        started = time.monotonic()  # experiment history: wall time, source/git/versions, totals
        start_experiment(self.store, self.sweep_id, self.sweep.name, spec, {**info, **experiment_context(self.sweep)})
        # record/replay bypass the response cache: a recording must send, a replay must answer from its cassette
        cached = self.store.cached_responses([c.call_id for c in calls]) if self.options.cache is True else {}
        if self.options.cache is True:  # calls another sweep is sending right now are awaited, not paid twice
            todo = [c.call_id for c in calls if c.call_id not in cached]
            elsewhere = self.store.claim_calls(todo, self.sweep_id, _ACTIVE_SWEEPS) if todo else set()
            self._claims = _ClaimWaiter(self.store, self.sweep_id, elsewhere)
        self._emit(
            "sweep_started",
            total=len(calls),
            budget_usd=self.options.budget_usd,
            calls=[(c.call_id, c.prompt_id, c.prompt_index) for c in calls],
        )
        sem = asyncio.Semaphore(self.options.concurrency)
        tasks = []
        for call in calls:
            self._emit("queued", call.call_id)
        for index, call in enumerate(calls):
            hit = cached.get(call.call_id)
            if hit is not None:
                self._finish_cached(call, hit, index)
                continue
            task = asyncio.ensure_future(self._run_call(call, index, sem))
            self.handle._tasks.add(task)
            task.add_done_callback(self.handle._tasks.discard)
            tasks.append(task)
        interrupted = False
        try:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        except asyncio.CancelledError:
            # the sweep itself was cancelled (a cancelled arun() task, Ctrl-C under asyncio.run):
            # stop as cancel() does and record what finished, then let the cancellation go on
            interrupted = True
            self.handle.cancelled.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._claims.close()
        self.store.release_claims(self.sweep_id)  # calls that failed or were skipped: free for another sweep
        for client in self._clients.values():
            await client.close()
        if self._cassette is not None:
            self._cassette.save()
        if self.handle.cancelled.is_set() and self.stopped is None:
            self.stopped = "cancelled"
        self.store.flush()
        ok = sum(1 for r in self.rows.values() if r["status"] == "ok")
        counts = {
            "ok": ok,
            "error": len(self.rows) - ok,
            "skipped": len(self.skipped),
            "spent_usd": round(self.spent_usd, 6),
            "stopped": self.stopped,
            "rate_limited": sum(w.rate_limited for w in self._limits.windows.values()),
            "limits": self._limits.summary(),
        }
        finish_experiment(
            self.store,
            self.sweep_id,
            "replay-miss" if self.replay_misses else self.stopped or "finished",
            counts,
            list(self.rows.values()),
            self.skipped,
            time.monotonic() - started,
        )
        self._emit("sweep_finished", **counts)
        if interrupted:
            raise asyncio.CancelledError
        if self.replay_misses:
            raise _combined_miss(self.replay_misses, len(calls))

    def _finish_cached(self, call: Call, hit: dict[str, Any], index: int) -> None:
        row = _base_row(call, self.sweep_id)
        row.update({k: v for k, v in hit.items() if k in row or k in schema.EXTRA_COLUMNS})
        row.update(
            {
                "sweep_id": self.sweep_id,
                "cached": True,
                "status": "ok",
                "error": "",
                "cost_usd": 0.0,
                "queue_ms": 0.0,
                "attempts": 0,
                "retries": 0,
            }
        )
        self.rows[call.call_id] = row
        stored = _for_store(row, call, self.config.trace_content)
        self.store.put_call(self.sweep_id, index, stored, None)
        self._emit("cached", call.call_id, row=row)

    def _budget_allows(self, call: Call) -> bool:
        budget = self.options.budget_usd
        if budget is None:
            return True
        if self.stopped == "budget":
            return False  # once the budget is reached, nothing more is dispatched
        from llmlab.plan.estimate import estimate_call_tokens

        est = self._cost(call.qualified_model, *estimate_call_tokens(call)) or 0.0  # replies bounded: see preflight
        if self.spent_usd + self._reserved_usd + est > budget + 1e-12:
            return False
        self._reserved_usd += est
        self._reservations[call.call_id] = est
        return True

    async def _run_call(self, call: Call, index: int, sem: asyncio.Semaphore) -> None:
        queued_at = time.perf_counter()
        row = _base_row(call, self.sweep_id)
        try:
            if call.call_id in self._claims:  # another sweep is sending it: wait for its answer
                hit = await self._claims.wait(call.call_id)
                if hit is not None:
                    self._finish_cached(call, hit, index)
                    return
            await sem.acquire()
        except asyncio.CancelledError:  # cancelled while still waiting for a slot: never sent
            self.skipped.append((call, "cancelled"))
            self._emit("skipped", call.call_id, reason="cancelled")
            return
        try:
            await self._run_call_in_slot(call, index, row, queued_at)
        finally:
            sem.release()

    async def _run_call_in_slot(self, call: Call, index: int, row: dict[str, Any], queued_at: float) -> None:
        if self.handle.cancelled.is_set():
            self.skipped.append((call, "cancelled"))
            self._emit("skipped", call.call_id, reason="cancelled")
            return
        if not self._budget_allows(call):
            self.stopped = "budget"
            self.skipped.append((call, "budget"))
            self._emit("skipped", call.call_id, reason=f"budget_usd={self.options.budget_usd} would be exceeded")
            return
        try:
            await self._attempts(call, row, queued_at)
        except ReplayMissError as exc:  # not a failed call: the cassette is incomplete
            self._reserved_usd -= self._reservations.pop(call.call_id, 0.0)
            self.replay_misses.append(exc)
            self.skipped.append((call, "replay-miss"))
            self._emit("skipped", call.call_id, reason="not in the cassette")
            return
        except asyncio.CancelledError:
            self._reserved_usd -= self._reservations.pop(call.call_id, 0.0)
            self.skipped.append((call, "cancelled"))
            self._emit("cancelled", call.call_id)
            return
        self._reserved_usd -= self._reservations.pop(call.call_id, 0.0)
        if row["cost_usd"] is not None:
            self.spent_usd += row["cost_usd"]
        self.rows[call.call_id] = row
        stored = _for_store(row, call, self.config.trace_content)
        entry = None if row["status"] != "ok" else {k: stored[k] for k in _CACHE_FIELDS}
        # durable before reported: a crash after this point never re-sends the call
        try:  # shielded: a cancel here must not cancel the write of a call already paid for
            await asyncio.shield(asyncio.wrap_future(self.store.put_call(self.sweep_id, index, stored, entry)))
        except asyncio.CancelledError:
            pass  # the write still lands (run() flushes the store before it returns)
        self._emit("finished" if row["status"] == "ok" else "failed", call.call_id, row=row)

    async def _attempts(self, call: Call, row: dict[str, Any], queued_at: float) -> None:
        from llmlab.plan.estimate import estimate_call_tokens

        est_tokens = sum(estimate_call_tokens(call))  # what a TPM limit is charged before the call
        policy = self.options.retry
        attempt = 0
        failures = {"rate_limited": 0, "other": 0}

        def stop(state: RetryCallState) -> bool:
            return failures["other"] >= policy.max_attempts or failures["rate_limited"] >= policy.max_rate_limited

        def wait(state: RetryCallState) -> float:
            return policy.delay(state.outcome.exception() if state.outcome else None, failures["other"])

        retrying = AsyncRetrying(
            stop=stop,
            wait=wait,
            retry=retry_if_exception(is_transient),
            reraise=True,
            before_sleep=lambda st: self._emit(
                "retry",
                call.call_id,
                attempt=st.attempt_number,
                error=redact(str(st.outcome.exception()) if st.outcome else ""),
                wait_s=st.next_action.sleep if st.next_action else 0.0,
            ),
        )
        try:
            async for attempt_state in retrying:
                with attempt_state:
                    attempt = attempt_state.retry_state.attempt_number
                    window = await self._limits.acquire(call, est_tokens)
                    row["attempts"] = attempt
                    row["retries"] = attempt - 1
                    sent_at = time.monotonic()
                    try:
                        await self._one_attempt(call, row, queued_at, attempt)
                    except Exception as exc:
                        limited = is_rate_limited(exc)
                        failures["rate_limited" if limited else "other"] += 1
                        if limited:
                            window.on_rate_limited(sent_at)
                        raise
                    else:
                        window.on_success()
                    finally:
                        window.release()
        except (asyncio.CancelledError, ReplayMissError):
            raise
        except Exception as exc:
            row.update(
                {
                    "status": "error",
                    "error": _describe(exc),
                    "completion": None,
                    "finish_reason": None,
                    "attempts": attempt,
                    "retries": max(0, attempt - 1),
                }
            )
            if row.get("end_time") is None:
                row["end_time"] = pd.Timestamp.now(tz="UTC").isoformat()

    async def _one_attempt(self, call: Call, row: dict[str, Any], queued_at: float, attempt: int) -> None:
        client = self._client(call)
        self._emit("started", call.call_id, attempt=attempt)
        sent_at = time.perf_counter()
        queue_ms = (sent_at - queued_at) * 1000.0
        attrs = schema_attrs_for_call(
            sweep_id=self.sweep_id,
            call_id=call.call_id,
            prompt_id=call.prompt_id,
            repeat=call.repeat,
            seed=call.seed,
            provider=call.provider,
            attempts=attempt,
            queue_ms=round(queue_ms, 3),
            params=json.dumps(call.params, sort_keys=True) if call.params else None,
        )
        start_wall = time.time_ns()
        parts: list[str] = []
        ttft_ms = None
        finish = None
        usage = None
        response_model = None
        with (
            call_context(attrs) as ctrace,
            call_scope(CallInfo(call.call_id, call.qualified_model, call.prompt, call.repeat)),
        ):
            stream = await client.chat.completions.create(
                **call.request_kwargs(), stream=True, stream_options={"include_usage": True}
            )
            try:
                async for chunk in stream:
                    if chunk.model:
                        response_model = chunk.model
                    if chunk.usage is not None:
                        usage = chunk.usage
                    for choice in chunk.choices or ():
                        delta = choice.delta.content if choice.delta is not None else None
                        if delta:
                            if ttft_ms is None:
                                ttft_ms = (time.perf_counter() - sent_at) * 1000.0
                                ctrace.set(schema.A_TTFT_MS, round(ttft_ms, 3))
                            parts.append(delta)
                            self._emit("token", call.call_id, text=delta)
                        if choice.finish_reason:
                            finish = choice.finish_reason
            except (httpx.TransportError, openai.APIError) as exc:
                raise StreamCut(f"stream interrupted after {len(parts)} chunks: {type(exc).__name__}") from exc
            if finish is None:
                raise StreamCut(f"stream ended after {len(parts)} chunks without a finish_reason")
            end = time.perf_counter()
            trace_id, span_id = ctrace.ids()
        completion = "".join(parts)
        latency_ms = (end - sent_at) * 1000.0
        estimated = usage is None
        if usage is not None:
            tokens_in, tokens_out = usage.prompt_tokens, usage.completion_tokens
            total = usage.total_tokens
        else:
            from llmlab.tokens import estimate_messages_tokens, estimate_tokens

            tokens_in = estimate_messages_tokens(list(call.messages))
            tokens_out = estimate_tokens(completion)
            total = tokens_in + tokens_out
        gen_ms = latency_ms - (ttft_ms or 0.0)
        row.update(
            {
                "trace_id": trace_id,
                "span_id": span_id,
                "service": self.config.app_name,
                "start_time": pd.Timestamp(start_wall, unit="ns", tz="UTC").isoformat(),
                "end_time": pd.Timestamp(start_wall + int(latency_ms * 1e6), unit="ns", tz="UTC").isoformat(),
                "latency_ms": latency_ms,
                "ttft_ms": ttft_ms,
                "tokens_per_s": (tokens_out / (gen_ms / 1000.0)) if tokens_out and gen_ms > 0 else None,
                "response_model": response_model,
                "completion": completion,
                "finish_reason": finish,
                "input_tokens": tokens_in,
                "output_tokens": tokens_out,
                "total_tokens": total,
                "tokens_estimated": estimated,
                "cost_usd": self._cost(call.qualified_model, tokens_in, tokens_out),
                "status": "ok",
                "error": "",
                "queue_ms": queue_ms,
                "itl_ms": (gen_ms / (tokens_out - 1)) if tokens_out and tokens_out > 1 else None,
            }
        )


def _for_store(row: dict[str, Any], call: Call, trace_content: bool) -> dict[str, Any]:
    """The row as stored: without trace_content, no prompt, completion or prompt-row values
    (template variables are prompt text too)."""
    if trace_content:
        return row
    data_keys = {k if k not in schema.CANONICAL_COLUMNS else f"data.{k}" for k in call.data}
    return {**row, "prompt": None, "completion": None, **{k: None for k in data_keys if k in row}}


_CACHE_FIELDS = (
    "completion",
    "finish_reason",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "tokens_estimated",
    "response_model",
    "latency_ms",
    "ttft_ms",
    "tokens_per_s",
    "itl_ms",
    "trace_id",
    "span_id",
    "start_time",
    "end_time",
    "service",
    "cost_usd",
)


def _combined_miss(misses: list[ReplayMissError], total: int) -> ReplayMissError:
    """One error naming every call the cassette lacked (the first few in full)."""
    lines = [str(m) for m in misses[:5]]
    more = f"\n  ... and {len(misses) - 5} more" if len(misses) > 5 else ""
    err = ReplayMissError(f"{len(misses)} of {total} calls are not in the cassette:\n  " + "\n  ".join(lines) + more)
    err.misses = misses  # type: ignore[attr-defined]
    err.call_ids = [getattr(m, "call_id", None) for m in misses]  # type: ignore[attr-defined]
    return err


def _describe(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        body = exc.body.get("message") if isinstance(exc.body, dict) else None
        return redact(f"HTTP {exc.status_code}: {body if isinstance(body, str) and body else exc.message}")
    return redact(f"{type(exc).__name__}: {exc}")


# --- entry points -----------------------------------------------------------------------------


def _default_display() -> bool:
    """On in a Jupyter kernel (the grid) and when stderr is a terminal (the bar); off when piped or logged."""
    from llmlab.view.display import in_notebook

    if in_notebook():
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


async def run_async(
    sweep: Sweep,
    concurrency: int = 8,
    display: bool | None = None,
    budget_usd: float | None = None,
    cache: bool | str = True,
    *,
    http_client: httpx.AsyncClient | None = None,
    retry: RetryPolicy | None = None,
    bus: EventBus | None = None,
    handle: RunHandle | None = None,
    sweep_id: str | None = None,
    cassette: Any = None,
) -> SweepResult:
    """Run ``sweep`` on the current event loop (``await sweep.arun()``).

    ``cache``: True reuses stored responses, False always sends, ``"record"`` sends and writes
    every response to ``cassette`` (a .json path), ``"replay"`` answers every call from
    ``cassette`` without a model, a key or any request (a call it lacks raises ReplayMissError).
    """
    from llmlab.results import SweepResult
    from llmlab.view.display import attach_display

    options = RunOptions(
        concurrency=concurrency,
        budget_usd=budget_usd,
        cache=cache,
        retry=retry or RetryPolicy(),
        http_client=http_client,
        sweep_id=sweep_id,
        cassette=cassette,
    )
    bus = bus or EventBus()
    handle = handle or RunHandle()
    runner = SweepRunner(sweep, options, bus, handle)
    runner.preflight()
    detach = attach_display(bus, handle, sweep, _default_display() if display is None else display, budget_usd)
    try:
        await runner.run()
    finally:
        detach()
    rows = [runner.rows[c.call_id] for c in sweep.calls if c.call_id in runner.rows]
    return SweepResult.from_rows(runner.sweep_id, rows, sweep=sweep, skipped=runner.skipped, stopped=runner.stopped)


def run_sync(sweep: Sweep, **kwargs: Any) -> SweepResult:
    """Run ``sweep`` to completion from synchronous code, also when a loop already runs here
    (a Jupyter kernel): then the sweep runs on a fresh loop in a worker thread while this
    thread waits.

    An interrupt (Ctrl-C, the kernel's stop button) stops the sweep the way ``cancel()`` does:
    nothing more is sent, calls in flight are cancelled, finished calls are kept, and the
    partial result is returned with ``stopped == "cancelled"`` (a second Ctrl-C in a script
    raises KeyboardInterrupt at once).
    """
    handle = kwargs.get("handle") or RunHandle()
    kwargs["handle"] = handle
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        with _cancel_on_first_sigint(handle):
            return asyncio.run(run_async(sweep, **kwargs))
    result: dict[str, Any] = {}
    # an Event, not Thread.join(): a join interrupted by KeyboardInterrupt may return at once when
    # called again (CPython < 3.13), before the sweep has stopped
    done = threading.Event()

    def target() -> None:
        try:
            result["value"] = asyncio.run(run_async(sweep, **kwargs))
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name="llmlab-sweep", daemon=True).start()
    try:
        done.wait()
    except KeyboardInterrupt:  # the kernel's interrupt button: stop the sweep, keep what finished
        handle.cancel()
        done.wait()
    if "error" in result:
        raise result["error"]
    return result["value"]


@contextlib.contextmanager
def _cancel_on_first_sigint(handle: RunHandle) -> Iterator[None]:
    """In a script's main thread, make the first SIGINT cancel the sweep (keeping what finished)
    instead of unwinding it; the next one raises KeyboardInterrupt as usual. Elsewhere (another
    thread, a handler the user installed) signals are left alone."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return

    def on_sigint(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        handle.cancel()

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


__all__ = ["RetryPolicy", "RunHandle", "SweepRunner", "is_transient", "run_async", "run_sync"]
