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
import dataclasses
import json
import logging
import random
import threading
import time
import uuid
from typing import Any, Callable

import httpx
import openai
import pandas as pd
from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from . import schema
from .config import get_config
from .errors import BudgetError, ReplayMissError, redact
from .events import Event, EventBus
from .providers import get_provider, make_client
from .store import get_store
from .sweep import Call, Sweep
from .tracing import call_context, ensure_tracing
from .tracing.setup import schema_attrs_for_call

log = logging.getLogger("llmlab.runner")


class StreamCut(Exception):
    """The stream ended before a finish_reason: the partial output is discarded and retried."""


def is_transient(exc: BaseException) -> bool:
    """Whether a failed attempt is worth retrying."""
    if isinstance(exc, (StreamCut, openai.APIConnectionError, openai.APITimeoutError, httpx.TransportError)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 425, 429) or exc.status_code >= 500
    return False


def retry_after_seconds(exc: BaseException | None) -> float | None:
    """The server's Retry-After (seconds or ms header), if any."""
    response = getattr(exc, "response", None)
    if response is None:
        return None
    headers = response.headers
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw:
            try:
                return max(0.0, float(raw) * scale)
            except ValueError:
                return None
    return None


@dataclasses.dataclass
class RetryPolicy:
    """How failed attempts are retried: exponential backoff with jitter, capped; Retry-After wins."""

    max_attempts: int = 6
    initial_s: float = 0.25
    max_s: float = 20.0

    def wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = retry_after_seconds(exc)
        if hinted is not None:
            return min(hinted, 60.0)
        backoff = min(self.max_s, self.initial_s * (2 ** (state.attempt_number - 1)))
        return backoff * (0.5 + random.random() / 2)


@dataclasses.dataclass
class RunOptions:
    concurrency: int = 8
    budget_usd: float | None = None
    cache: bool | str = True
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    http_client: httpx.AsyncClient | None = None
    sweep_id: str | None = None


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


class _Limits:
    """Per provider+model request and token rate limiters (aiolimiter leaky buckets)."""

    def __init__(self) -> None:
        self._rpm: dict[str, AsyncLimiter] = {}
        self._tpm: dict[str, AsyncLimiter] = {}

    async def acquire(self, call: Call, est_tokens: int) -> None:
        prov = get_provider(call.provider)
        key = call.qualified_model
        if prov.rpm:
            limiter = self._rpm.setdefault(key, AsyncLimiter(prov.rpm, 60.0))
            await limiter.acquire()
        if prov.tpm:
            limiter = self._tpm.setdefault(key, AsyncLimiter(prov.tpm, 60.0))
            await limiter.acquire(min(est_tokens, prov.tpm))


def _base_row(call: Call, sweep_id: str) -> dict[str, Any]:
    return {
        "sweep_id": sweep_id, "call_id": call.call_id, "trace_id": None, "span_id": None, "service": None,
        "start_time": None, "end_time": None, "latency_ms": None, "ttft_ms": None, "tokens_per_s": None,
        "provider": call.provider, "model": call.qualified_model, "response_model": None,
        "temperature": call.temperature, "top_p": call.top_p, "max_tokens": call.max_tokens, "seed": call.seed,
        "repeat": call.repeat, "prompt_id": call.prompt_id, "prompt": call.prompt, "completion": None,
        "finish_reason": None, "input_tokens": None, "output_tokens": None, "total_tokens": None,
        "tokens_estimated": False, "cost_usd": None, "status": "ok", "error": "", "cached": False,
        "queue_ms": None, "attempts": 0, "retries": 0, "itl_ms": None,
        "params": json.dumps(call.params, sort_keys=True) if call.params else "",
        **{k: v for k, v in call.params.items() if k not in schema.CANONICAL_COLUMNS},
        **{k if k not in schema.CANONICAL_COLUMNS else f"data.{k}": v for k, v in call.data.items()
           if k not in ("prompt_id", "id", "messages")},
    }  # fmt: skip


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
        self._limits = _Limits()
        self._clients: dict[str, Any] = {}
        self._seq = 0
        self._prices: dict[str, Any] | None = None
        self._reservations: dict[str, float] = {}

    def _emit(self, kind: str, call_id: str | None = None, **data: Any) -> None:
        self.bus.publish(Event(kind, self.sweep_id, call_id, data))

    def _client(self, call: Call) -> Any:
        client = self._clients.get(call.provider)
        if client is None:
            prov = get_provider(call.provider)
            client = self._clients[call.provider] = make_client(
                prov, self.options.http_client, max_connections=max(100, self.options.concurrency * 2)
            )
        return client

    def _cost(self, model: str, tokens_in: int | None, tokens_out: int | None) -> float | None:
        from .pricing import cost_for, load_prices

        if self._prices is None:
            self._prices = load_prices()
        if tokens_in is None or tokens_out is None:
            return None
        return cost_for(model, tokens_in, tokens_out, self._prices)

    def preflight(self) -> None:
        """Everything that can fail before sending: keys of every provider used, the budget."""
        for prov in sorted({c.provider for c in self.sweep.calls}):
            get_provider(prov).api_key()  # raises ConfigError naming the env var
        budget = self.options.budget_usd
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget < 0):
            from .errors import ValidationError

            raise ValidationError("budget_usd", budget, "must be a non-negative number of US dollars")
        conc = self.options.concurrency
        if isinstance(conc, bool) or not isinstance(conc, int) or conc <= 0:
            from .errors import ValidationError

            raise ValidationError("concurrency", conc, "must be a positive integer")

    async def run(self) -> None:
        calls = self.sweep.calls
        self.handle._loop = asyncio.get_running_loop()
        ensure_tracing(self.config)
        info = {"calls": len(calls), "concurrency": self.options.concurrency, "budget_usd": self.options.budget_usd}
        spec = self.sweep.spec()
        if not self.config.trace_content:
            spec["prompts"] = None  # prompt text stays out of the store
        self.store.start_sweep(self.sweep_id, self.sweep.name, spec, info)
        cached = self.store.cached_responses([c.call_id for c in calls]) if self.options.cache else {}
        self._emit("sweep_started", total=len(calls), budget_usd=self.options.budget_usd,
                   calls=[(c.call_id, c.prompt_id, c.prompt_index) for c in calls])  # fmt: skip
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
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for client in self._clients.values():
            await client.close()
        if self.handle.cancelled.is_set() and self.stopped is None:
            self.stopped = "cancelled"
        self.store.flush()
        ok = sum(1 for r in self.rows.values() if r["status"] == "ok")
        counts = {"ok": ok, "error": len(self.rows) - ok, "skipped": len(self.skipped),
                  "spent_usd": round(self.spent_usd, 6), "stopped": self.stopped}  # fmt: skip
        self.store.finish_sweep(self.sweep_id, self.stopped or "finished", counts)
        self._emit("sweep_finished", **counts)

    def _finish_cached(self, call: Call, hit: dict[str, Any], index: int) -> None:
        row = _base_row(call, self.sweep_id)
        row.update({k: v for k, v in hit.items() if k in row or k in schema.EXTRA_COLUMNS})
        row.update({"sweep_id": self.sweep_id, "cached": True, "status": "ok", "error": "", "cost_usd": 0.0,
                    "queue_ms": 0.0, "attempts": 0, "retries": 0})  # fmt: skip
        self.rows[call.call_id] = row
        stored = row if self.config.trace_content else {**row, "prompt": None, "completion": None}
        self.store.put_call(self.sweep_id, index, stored, None)
        self._emit("cached", call.call_id, row=row)

    def _budget_allows(self, call: Call) -> bool:
        budget = self.options.budget_usd
        if budget is None:
            return True
        from .tokens import estimate_messages_tokens

        est = self._cost(call.qualified_model, estimate_messages_tokens(list(call.messages)), call.max_tokens or 256)
        est = est or 0.0
        if self.spent_usd + self._reserved_usd + est > budget + 1e-12:
            return False
        self._reserved_usd += est
        self._reservations[call.call_id] = est
        return True

    async def _run_call(self, call: Call, index: int, sem: asyncio.Semaphore) -> None:
        queued_at = time.perf_counter()
        row = _base_row(call, self.sweep_id)
        async with sem:
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
            except asyncio.CancelledError:
                self._reserved_usd -= self._reservations.pop(call.call_id, 0.0)
                self.skipped.append((call, "cancelled"))
                self._emit("cancelled", call.call_id)
                return
            self._reserved_usd -= self._reservations.pop(call.call_id, 0.0)
            if row["cost_usd"] is not None:
                self.spent_usd += row["cost_usd"]
            self.rows[call.call_id] = row
            stored = row if self.config.trace_content else {**row, "prompt": None, "completion": None}
            entry = None if row["status"] != "ok" else {k: stored[k] for k in _CACHE_FIELDS}
            # durable before reported: a crash after this point never re-sends the call
            await asyncio.wrap_future(self.store.put_call(self.sweep_id, index, stored, entry))
            self._emit("finished" if row["status"] == "ok" else "failed", call.call_id, row=row)

    async def _attempts(self, call: Call, row: dict[str, Any], queued_at: float) -> None:
        from .tokens import estimate_messages_tokens

        est_in = estimate_messages_tokens(list(call.messages))
        policy = self.options.retry
        attempt = 0
        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.max_attempts),
            wait=policy.wait,
            retry=retry_if_exception(is_transient),
            reraise=True,
            before_sleep=lambda st: self._emit(
                "retry", call.call_id, attempt=st.attempt_number,
                error=redact(str(st.outcome.exception()) if st.outcome else ""),
                wait_s=st.next_action.sleep if st.next_action else 0.0,
            ),
        )  # fmt: skip
        try:
            async for attempt_state in retrying:
                with attempt_state:
                    attempt = attempt_state.retry_state.attempt_number
                    await self._limits.acquire(call, est_in + (call.max_tokens or 256))
                    row["attempts"] = attempt
                    row["retries"] = attempt - 1
                    await self._one_attempt(call, row, queued_at, attempt)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            row.update({"status": "error", "error": _describe(exc), "completion": None, "finish_reason": None,
                        "attempts": attempt, "retries": max(0, attempt - 1)})  # fmt: skip
            if row.get("end_time") is None:
                row["end_time"] = pd.Timestamp.now(tz="UTC").isoformat()

    async def _one_attempt(self, call: Call, row: dict[str, Any], queued_at: float, attempt: int) -> None:
        client = self._client(call)
        self._emit("started", call.call_id, attempt=attempt)
        sent_at = time.perf_counter()
        queue_ms = (sent_at - queued_at) * 1000.0
        attrs = schema_attrs_for_call(
            sweep_id=self.sweep_id, call_id=call.call_id, prompt_id=call.prompt_id, repeat=call.repeat,
            seed=call.seed, provider=call.provider, attempts=attempt, queue_ms=round(queue_ms, 3),
            params=json.dumps(call.params, sort_keys=True) if call.params else None,
        )  # fmt: skip
        start_wall = time.time_ns()
        parts: list[str] = []
        ttft_ms = None
        finish = None
        usage = None
        response_model = None
        with call_context(attrs) as ctrace:
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
            from .tokens import estimate_messages_tokens, estimate_tokens

            tokens_in = estimate_messages_tokens(list(call.messages))
            tokens_out = estimate_tokens(completion)
            total = tokens_in + tokens_out
        gen_ms = latency_ms - (ttft_ms or 0.0)
        row.update({
            "trace_id": trace_id, "span_id": span_id, "service": self.config.app_name,
            "start_time": pd.Timestamp(start_wall, unit="ns", tz="UTC").isoformat(),
            "end_time": pd.Timestamp(start_wall + int(latency_ms * 1e6), unit="ns", tz="UTC").isoformat(),
            "latency_ms": latency_ms, "ttft_ms": ttft_ms,
            "tokens_per_s": (tokens_out / (gen_ms / 1000.0)) if tokens_out and gen_ms > 0 else None,
            "response_model": response_model, "completion": completion,
            "finish_reason": finish, "input_tokens": tokens_in, "output_tokens": tokens_out, "total_tokens": total,
            "tokens_estimated": estimated, "cost_usd": self._cost(call.qualified_model, tokens_in, tokens_out),
            "status": "ok", "error": "", "queue_ms": queue_ms,
            "itl_ms": (gen_ms / (tokens_out - 1)) if tokens_out and tokens_out > 1 else None,
        })  # fmt: skip


_CACHE_FIELDS = ("completion", "finish_reason", "input_tokens", "output_tokens", "total_tokens", "tokens_estimated",
                 "response_model", "latency_ms", "ttft_ms", "tokens_per_s", "itl_ms", "trace_id", "span_id",
                 "start_time", "end_time", "service", "cost_usd")  # fmt: skip


def _describe(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        message = exc.message
        return redact(f"HTTP {exc.status_code}: {message}")
    return redact(f"{type(exc).__name__}: {exc}")


# --- entry points -----------------------------------------------------------------------------


def _default_display() -> bool:
    from .display import in_notebook

    return in_notebook()


async def run_async(sweep: Sweep, concurrency: int = 8, display: bool | None = None, budget_usd: float | None = None,
                    cache: bool | str = True, *, http_client: httpx.AsyncClient | None = None,
                    retry: RetryPolicy | None = None, bus: EventBus | None = None, handle: RunHandle | None = None,
                    sweep_id: str | None = None) -> "SweepResult":
    """Run ``sweep`` on the current event loop (``await sweep.arun()``)."""
    from .display import attach_display
    from .results import SweepResult

    options = RunOptions(concurrency=concurrency, budget_usd=budget_usd, cache=cache,
                         retry=retry or RetryPolicy(), http_client=http_client, sweep_id=sweep_id)  # fmt: skip
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


def run_sync(sweep: Sweep, **kwargs: Any) -> "SweepResult":
    """Run ``sweep`` to completion from synchronous code, also when a loop already runs here
    (a Jupyter kernel): then the sweep runs on a fresh loop in a worker thread while this
    thread waits."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run_async(sweep, **kwargs))
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(run_async(sweep, **kwargs))
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name="llmlab-sweep", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


__all__ = ["RetryPolicy", "RunHandle", "SweepRunner", "run_async", "run_sync", "is_transient", "BudgetError",
           "ReplayMissError", "Callable"]
