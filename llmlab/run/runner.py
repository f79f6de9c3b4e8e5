"""Send a grid's calls: asyncio, a concurrency limit, rate limits, retries, cache, budget.

Each call is one asyncio task that streams its response (with ``include_usage``) through the
real ``openai`` client, so TTFT and tokens/s are measured. Transient failures (429 honouring
Retry-After, 5xx, timeouts, connection resets, streams cut before their end) are retried by
tenacity; a call that fails for good becomes a ``status="error"`` row. Every finished call is
persisted (row + cache entry) before it is reported, so a crash never loses it and a re-run
never pays for it twice. The runner renders nothing and builds no result: it publishes events
on an EventBus and returns a plain :class:`RunOutcome` (the ``Sweep`` facade wraps it in a
``SweepResult``). Retry decisions live in ``run/retry.py``, rate limits in ``run/limits.py``,
waiting for calls another sweep is sending in ``run/claims.py``, entry points in ``run/entry.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import threading
import time
import uuid
from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import httpx2
import openai
import pandas as pd
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from llmlab import schema
from llmlab.config import get_config
from llmlab.errors import ReplayMissError, ValidationError, redact
from llmlab.events import Event, EventBus
from llmlab.plan.estimate import estimate_call_tokens
from llmlab.plan.grid import Call, Grid
from llmlab.plan.providers import get_provider, make_client
from llmlab.run.cassette import CallInfo, Cassette, CassetteTransport, call_scope
from llmlab.run.claims import ACTIVE_SWEEPS, ClaimWaiter
from llmlab.run.handoff import Handoff
from llmlab.run.heap import quiet_gc
from llmlab.run.limits import InFlightCap, Limits, LoopLag, Window, accepted_by
from llmlab.run.retry import (
    RetryPolicy,
    StreamCut,
    describe_error,
    is_rate_limited,
    is_transient,
    release_retrying,
    retry_after_seconds,
)
from llmlab.run.rows import CACHE_FIELDS, ColumnRows, base_row, combined_miss, row_for_store
from llmlab.store import get_store
from llmlab.text import is_finite_number
from llmlab.tracing import call_context, ensure_tracing
from llmlab.tracing.export import warn_if_stuck
from llmlab.tracing.setup import schema_attrs_for_call

__all__ = ["RunHandle", "RunOptions", "RunOutcome", "SweepRunner"]

log = logging.getLogger("llmlab.run")


@dataclasses.dataclass
class RunOptions:
    """How one run sends its calls: concurrency, budget, cache mode, retry policy and transport.

    ``concurrency`` caps the requests in flight for the whole sweep, and each provider+model's own
    slots; a call waiting for its provider's pace or back-off holds no sweep-wide slot.
    ``transport`` (an ``httpx2.AsyncBaseTransport``) replaces the socket pool of every provider
    client (tests drive the real ``openai`` client through ``httpx2.MockTransport`` / ``ASGITransport``).
    """

    concurrency: int = 8
    budget_usd: float | None = None
    cache: bool | str = True
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    transport: httpx2.AsyncBaseTransport | None = None
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
        """Stop dispatching and cancel the calls in flight; safe from any thread (the loop is told threadsafe)."""
        self.cancelled.set()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._cancel_tasks)

    def _cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    """What a finished run hands back: plain rows and facts, no display and no result object.

    ``rows`` are in the grid's call order (calls that ran or came from the cache); ``skipped``
    pairs each call not sent with why (``"budget"``, ``"cancelled"``, ``"replay-miss"``);
    ``stopped`` is None when every call ran, else ``"budget"`` or ``"cancelled"``.
    """

    sweep_id: str
    rows: Sequence[dict[str, Any]]
    skipped: list[tuple[Call, str]]
    stopped: str | None

    @property
    def frame(self) -> pd.DataFrame:
        """The rows as the canonical call frame (``schema.frame``)."""
        return schema.frame(self.rows)


class SweepRunner:
    """Runs one grid's calls; see the module docstring."""

    def __init__(self, grid: Grid, options: RunOptions, bus: EventBus, handle: RunHandle) -> None:
        self.grid = grid
        self.options = options
        self.bus = bus
        self.handle = handle
        self.config = get_config()
        self.store = get_store(self.config.home)
        self.sweep_id = options.sweep_id or f"sw-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.rows = ColumnRows()  # finished rows, column by column (a big sweep holds them all until it returns)
        self._row_at = array("q", [-1]) * len(grid.calls)  # position in rows by grid index (-1: none yet)
        self.skipped: list[tuple[Call, str]] = []
        self.stopped: str | None = None
        self.spent_usd = 0.0
        self._reserved_usd = 0.0
        self._limits = Limits(options.concurrency)
        self._clients: dict[str, Any] = {}
        self._seq = 0
        self._prices: dict[str, Any] | None = None
        self._reservations: dict[str, float] = {}
        self._cassette: Any = None
        self.replay_misses: list[ReplayMissError] = []
        self._claims = ClaimWaiter(self.store, self.sweep_id, set())
        self._started: set[str] = set()  # fed calls whose task has begun and not ended (see _slot_task_done)

    def _emit(self, kind: str, call_id: str | None = None, **data: Any) -> None:
        self.bus.publish(Event(kind, self.sweep_id, call_id, data))

    def _client(self, call: Call) -> Any:
        client = self._clients.get(call.provider)
        if client is None:
            prov = get_provider(call.provider)
            transport = self.options.transport
            if self._cassette is not None:
                prov, transport = self._cassette_transport(prov)
            client = self._clients[call.provider] = make_client(
                prov, transport, max_connections=max(100, self.options.concurrency * 2)
            )
        return client

    def _cassette_transport(self, prov: Any) -> tuple[Any, CassetteTransport]:
        """A transport that records to / replays from the cassette. Replay needs
        no key and no server: the provider is swapped for a key-less one whose URL is never
        dialled (for ``local`` this also keeps the model server from starting)."""
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
        return prov, transport

    def _where(self, call: Call, exc: BaseException, text: str) -> str:
        """A connection failure names the provider and the URL it dialled (a typo'd base_url, a server down)."""
        if not isinstance(exc, (openai.APIConnectionError, httpx2.TransportError)):
            return text
        client = self._clients.get(call.provider)
        url = str(getattr(client, "base_url", "") or get_provider(call.provider).base_url or "")
        return redact(f"{text} (provider {call.provider!r} at {url.rstrip('/') or 'its default URL'})")

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
            raise ValidationError("cache", cache, "expected True, False, 'record' or 'replay'")
        if self.options.cassette_mode is not None:
            if cassette is None:
                raise ValidationError("cassette", cassette, f"cache={cache!r} needs cassette=<path of a .json file>")
            self._cassette = Cassette(cassette, str(cache))  # replay: ConfigError if the file is missing
        elif cassette is not None:
            raise ValidationError("cassette", str(cassette), "a cassette is used only with cache='record' or 'replay'")
        if self.options.cassette_mode != "replay":
            for prov in sorted({c.provider for c in self.grid.calls}):
                get_provider(prov).api_key()  # raises ConfigError naming the env var
        budget = self.options.budget_usd
        if budget is not None and (not is_finite_number(budget) or budget < 0):
            # NaN compares false with every spend, so a NaN budget would never stop anything
            raise ValidationError(
                "budget_usd", budget, "must be a non-negative number of US dollars (finite; None for no budget)"
            )
        conc = self.options.concurrency
        if isinstance(conc, bool) or not isinstance(conc, int) or conc <= 0:
            raise ValidationError("concurrency", conc, "must be a positive integer")
        if budget is not None:
            # a reply without a length bound has no worst-case cost: the budget could be passed
            unbounded = next((c for c in self.grid.calls if c.max_output_tokens is None), None)
            if unbounded is not None:
                raise ValidationError(
                    "budget_usd",
                    budget,
                    "max_tokens=None leaves the length, and so the cost, of a "
                    "reply unbounded; set max_tokens to use a budget",
                )
            # a model without a price would make the budget silently unenforceable
            unpriced = sorted(
                {c.qualified_model for c in self.grid.calls if self._cost(c.qualified_model, 1, 1) is None}
            )
            if unpriced:
                raise ValidationError(
                    "budget_usd",
                    budget,
                    f"model {unpriced[0]!r} has no price, so spend cannot be "
                    f"estimated; add it to {self.config.home / 'prices.json'}",
                )

    async def run(self) -> RunOutcome:
        """Send the grid's calls, record them in the store, and return the outcome (see the module docstring).

        Raises ReplayMissError when a replayed cassette lacked calls, and lets a cancellation of
        the run itself go on once what finished is recorded.
        """
        ACTIVE_SWEEPS.add(self.sweep_id)
        try:
            with quiet_gc():
                await self._run()
        finally:
            ACTIVE_SWEEPS.discard(self.sweep_id)
        return self.outcome()

    def outcome(self) -> RunOutcome:
        """The rows so far in call order, what was skipped, and why the run stopped early (if it did)."""
        self.rows = self.rows.in_grid_order(self._row_at)
        return RunOutcome(self.sweep_id, self.rows, list(self.skipped), self.stopped)

    async def _run(self) -> None:
        calls = self.grid.calls
        self.handle._loop = asyncio.get_running_loop()
        ensure_tracing(self.config)
        warn_if_stuck(self.config)
        info = {"calls": len(calls), "concurrency": self.options.concurrency, "budget_usd": self.options.budget_usd}
        spec = self.grid.spec()
        if not self.config.trace_content:
            spec["prompts"] = spec["template"] = spec["system"] = spec["messages"] = None  # text stays out
        from llmlab.run.provenance import (
            experiment_context,
            finish_experiment,
            record_prompt_versions,
            start_experiment,
        )

        started = time.monotonic()  # experiment history: wall time, source/git/versions, totals
        start_experiment(self.store, self.sweep_id, self.grid.name, spec, {**info, **experiment_context(self.grid)})
        record_prompt_versions(self.store, self.sweep_id, self.grid, self.config.trace_content)
        # record/replay bypass the response cache: a recording must send, a replay must answer from its cassette
        cached = self.store.cached_responses(list(calls.call_ids())) if self.options.cache is True else {}
        if self.options.cache is True:  # calls another sweep is sending right now are awaited, not paid twice
            todo = [cid for cid in calls.call_ids() if cid not in cached]
            elsewhere = self.store.claim_calls(todo, self.sweep_id, ACTIVE_SWEEPS) if todo else set()
            self._claims = ClaimWaiter(self.store, self.sweep_id, elsewhere)
        self._emit(
            "sweep_started",
            total=len(calls),
            budget_usd=self.options.budget_usd,
            calls=calls,  # the grid's Calls, made when a subscriber reads them
        )
        # lowered while the loop's lag stays high, so latencies keep measuring the model (see InFlightCap)
        self._in_flight = InFlightCap(self.options.concurrency)
        self._handoff = Handoff(asyncio.get_running_loop())
        # a call's slot is free before its row is written; this bounds the calls started but not yet
        # written, so a store that falls behind holds new calls back instead of queueing without end
        self._unwritten = asyncio.Semaphore(max(64, 2 * self.options.concurrency))
        for call_id in calls.call_ids():
            self._emit("queued", call_id)
        queued_at = time.perf_counter()
        per_window: dict[int, array[int]] = {}  # grid indices of the calls to send, per provider+model window
        tasks = []
        for index, call in enumerate(calls):
            hit = cached.get(call.call_id)
            if hit is not None:
                self._finish_cached(call, hit, index)
            elif call.call_id in self._claims:  # another sweep is sending it: wait for its answer, holding no slot
                tasks.append(self._spawn(self._run_claimed(call, index, queued_at)))
            else:
                per_window.setdefault(id(self._limits.window(call)), array("q")).append(index)
        # one feeder per provider+model starts a call's task only when the call gets a slot, so a
        # sweep of 10,000 calls holds as many tasks (and rows) as calls in flight, not 10,000
        tasks += [self._spawn(self._feed(batch, queued_at)) for batch in per_window.values()]
        interrupted = False
        lag = LoopLag()
        watcher = asyncio.ensure_future(lag.watch(self._loop_saturated, self._in_flight.on_lag))
        try:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        except asyncio.CancelledError:
            # the sweep itself was cancelled (a cancelled arun() task, Ctrl-C under asyncio.run):
            # stop as cancel() does and record what finished, then let the cancellation go on
            interrupted = True
            self.handle.cancelled.set()
            self.handle._cancel_tasks()
            await asyncio.gather(*tasks, return_exceptions=True)
        watcher.cancel()
        await self._claims.close()
        self.store.release_claims(self.sweep_id)  # calls that failed or were skipped: free for another sweep
        for client in self._clients.values():
            await client.close()
        if self._cassette is not None:
            self._cassette.save()
        if self.handle.cancelled.is_set() and self.stopped is None:
            self.stopped = "cancelled"
        self.store.flush()
        ok = self.rows.column("status").count("ok")
        counts = {
            "ok": ok,
            "error": len(self.rows) - ok,
            "skipped": len(self.skipped),
            "spent_usd": round(self.spent_usd, 6),
            "stopped": self.stopped,
            "rate_limited": sum(w.rate_limited for w in self._limits.windows.values()),
            "limits": self._limits.summary(),
            "loop_lag_ms": lag.summary(),
            "in_flight_cap": self._in_flight.summary(),
        }
        finish_experiment(
            self.store,
            self.sweep_id,
            "replay-miss" if self.replay_misses else self.stopped or "finished",
            counts,
            self.rows,
            self.skipped,
            time.monotonic() - started,
        )
        self._emit("sweep_finished", None, **counts)
        if interrupted:
            raise asyncio.CancelledError
        if self.replay_misses:
            raise combined_miss(self.replay_misses, len(calls))

    def _loop_saturated(self, lag_ms: float) -> None:
        """Said once per sweep (a ``loop_saturated`` event, and an INFO log line): latencies now
        include waiting for the event loop, not only the model."""
        hint = (
            f"the event loop is saturated (a {lag_ms:.0f} ms wake-up lag at concurrency {self.options.concurrency}); "
            "llmlab holds the number of calls in flight back while it lasts (the sweep summary's in_flight_cap), "
            "and latency_ms and ttft_ms may include that wait: lower concurrency= (or move work off the loop) "
            "for latency figures that measure the model"
        )
        log.info("sweep %s: %s", self.sweep_id, hint)
        self._emit("loop_saturated", lag_ms=round(lag_ms, 1), concurrency=self.options.concurrency, hint=hint)

    def _finish_cached(self, call: Call, hit: dict[str, Any], index: int) -> None:
        row = base_row(call, self.sweep_id)
        row.update({k: v for k, v in hit.items() if k in row or k in schema.EXTRA_COLUMNS})
        row.update(
            {
                "sweep_id": self.sweep_id,
                "cached": True,
                "status": "ok",
                "error": "",
                "spent_usd": 0.0,  # the hit keeps the original call's latency, tokens and cost_usd
                "queue_ms": 0.0,
                "attempts": 0,
                "retries": 0,
            }
        )
        self._row_at[index] = self.rows.append(row)
        stored = row_for_store(row, call, self.config.trace_content)
        self.store.put_call(self.sweep_id, index, stored, None)
        self._emit("cached", call.call_id, row=row)

    def _budget_allows(self, call: Call) -> bool:
        budget = self.options.budget_usd
        if budget is None:
            return True
        if self.stopped == "budget":
            return False  # once the budget is reached, nothing more is dispatched

        est = self._cost(call.qualified_model, *estimate_call_tokens(call)) or 0.0  # replies bounded: see preflight
        if self.spent_usd + self._reserved_usd + est > budget + 1e-12:
            return False
        self._reserved_usd += est
        self._reservations[call.call_id] = est
        return True

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        """A task the run's handle can cancel."""
        task = asyncio.ensure_future(coro)
        self.handle._tasks.add(task)
        task.add_done_callback(self.handle._tasks.discard)
        return task

    def _skip_cancelled(self, calls: Iterable[Call]) -> None:
        for call in calls:
            self.skipped.append((call, "cancelled"))
            self._emit("skipped", call.call_id, reason="cancelled")

    async def _feed(self, batch: array[int], queued_at: float) -> None:
        """Start the calls of one provider+model in order, each once its window has a free slot
        (a slot of its own provider+model: one provider's limits or 429s never hold up another's calls)."""
        calls = self.grid.calls
        window = self._limits.window(calls[batch[0]])
        running: set[asyncio.Task[Any]] = set()
        try:
            for n, index in enumerate(batch):
                call = calls[index]
                try:
                    await self._unwritten.acquire()
                    try:
                        await window.acquire()
                    except asyncio.CancelledError:
                        self._unwritten.release()
                        raise
                except asyncio.CancelledError:  # cancelled while waiting for a slot: never sent
                    self._skip_cancelled(calls[i] for i in batch[n:])
                    raise
                task = self._spawn(self._run_in_slot(call, index, window, queued_at))
                running.add(task)
                task.add_done_callback(running.discard)
                task.add_done_callback(functools.partial(self._slot_task_done, call, window))
        finally:
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    def _slot_task_done(self, call: Call, window: Window, task: asyncio.Task[Any]) -> None:
        """A fed call's task ended: its place among the unwritten calls is free. If it was cancelled before
        its first step (a cancel right after its slot was given), the slot is given back and the call is
        accounted for as skipped, as one cancelled while waiting is."""
        self._unwritten.release()
        began = call.call_id in self._started
        self._started.discard(call.call_id)
        if task.cancelled() and not began:
            window.release()
            self._skip_cancelled([call])

    async def _run_claimed(self, call: Call, index: int, queued_at: float) -> None:
        """A call another sweep is sending: wait for its answer; send it ourselves if that sweep did not."""
        window = self._limits.window(call)
        try:
            hit = await self._claims.wait(call.call_id)
            if hit is not None:
                self._finish_cached(call, hit, index)
                return
            await window.acquire()
        except asyncio.CancelledError:  # cancelled while still waiting: never sent
            self._skip_cancelled([call])
            return
        await self._run_in_slot(call, index, window, queued_at)

    async def _run_in_slot(self, call: Call, index: int, window: Window, queued_at: float) -> None:
        """Send a call holding its provider+model slot, then record it (the slot is free again by then)."""
        self._started.add(call.call_id)
        try:
            row = await self._send(call, queued_at)
        finally:
            window.release()
        if row is not None:
            await self._record(call, index, row)

    async def _send(self, call: Call, queued_at: float) -> dict[str, Any] | None:
        """The call's row once sent (ok or error); None if it was skipped (cancelled, budget, replay miss)."""
        if self.handle.cancelled.is_set():
            self._skip_cancelled([call])
            return None
        if not self._budget_allows(call):
            self.stopped = "budget"
            self.skipped.append((call, "budget"))
            self._emit("skipped", call.call_id, reason=f"budget_usd={self.options.budget_usd} would be exceeded")
            return None
        row = base_row(call, self.sweep_id)
        try:
            await self._attempts(call, row, queued_at)
        except ReplayMissError as exc:  # not a failed call: the cassette is incomplete
            self._reserved_usd -= self._reservations.pop(call.call_id, 0.0)
            self.replay_misses.append(exc)
            self.skipped.append((call, "replay-miss"))
            self._emit("skipped", call.call_id, reason="not in the cassette")
            return None
        except asyncio.CancelledError:
            self._reserved_usd -= self._reservations.pop(call.call_id, 0.0)
            self.skipped.append((call, "cancelled"))
            self._emit("cancelled", call.call_id)
            return None
        return row

    async def _record(self, call: Call, index: int, row: dict[str, Any]) -> None:
        """Account for a sent call's cost, persist it (row + cache entry), then report it."""
        self._reserved_usd -= self._reservations.pop(call.call_id, 0.0)
        row["spent_usd"] = row["cost_usd"]
        if row["cost_usd"] is not None:
            self.spent_usd += row["cost_usd"]
        self._row_at[index] = self.rows.append(row)
        stored = row_for_store(row, call, self.config.trace_content)
        entry = None if row["status"] != "ok" else {k: stored[k] for k in CACHE_FIELDS}
        # durable before reported: a crash after this point never re-sends the call
        written = self._handoff.wait(self.store.put_call(self.sweep_id, index, stored, entry))
        try:  # shielded: a cancel here must not cancel the write of a call already paid for
            await asyncio.shield(written)
        except asyncio.CancelledError:
            pass  # the write still lands (run() flushes the store before it returns)
        self._emit("finished" if row["status"] == "ok" else "failed", call.call_id, row=row)

    async def _attempts(self, call: Call, row: dict[str, Any], queued_at: float) -> None:

        policy = self.options.retry
        attempt = 0
        # 429s count against a call only while its provider+model makes no progress: a sweep
        # converging on the provider's capacity rejects some requests, and none of them fails
        failures = {"rate_limited": 0, "other": 0}
        window = self._limits.window(call)
        progress_seen = window.accepted

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
                    pacer = await self._limits.pace(call)
                    row["attempts"] = attempt
                    row["retries"] = attempt - 1
                    sent_at = time.monotonic()

                    try:
                        # the sweep-wide cap on requests in flight is taken only once the call's own
                        # provider lets it go, so a paced or backed-off provider holds none of its slots
                        async with self._in_flight:
                            await self._one_attempt(
                                call, row, queued_at, attempt, functools.partial(accepted_by, window, pacer, sent_at)
                            )
                    except Exception as exc:
                        if is_rate_limited(exc):
                            if window.accepted != progress_seen:
                                progress_seen, failures["rate_limited"] = window.accepted, 0
                            failures["rate_limited"] += 1
                            window.on_rate_limited(sent_at)
                            pacer.on_rate_limited(sent_at, retry_after_seconds(exc))
                        else:
                            failures["other"] += 1
                        raise
        except (asyncio.CancelledError, ReplayMissError):
            raise
        except Exception as exc:
            row.update(
                {
                    "status": "error",
                    "error": self._where(call, exc, describe_error(exc)),
                    "completion": None,
                    "finish_reason": None,
                    "attempts": attempt,
                    "retries": max(0, attempt - 1),
                }
            )
            if row.get("end_time") is None:
                row["end_time"] = pd.Timestamp.now(tz="UTC").isoformat()
        finally:
            release_retrying(retrying)

    async def _one_attempt(
        self, call: Call, row: dict[str, Any], queued_at: float, attempt: int, accepted: Callable[[], None]
    ) -> None:
        """One request; ``accepted`` is called once the provider has answered 200 (before the stream)."""
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
            **call.variant_columns,
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
            accepted()
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
            except (httpx2.TransportError, openai.APIError) as exc:
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
