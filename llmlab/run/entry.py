"""Entry points of the run layer: build a runner for a grid, run it on a loop, and Ctrl-C handling.

:func:`prepare_run` checks everything that can fail before sending and returns the runner, so
a caller (the ``Sweep`` facade) can subscribe a display to the bus before :meth:`SweepRunner.run`.
:func:`run_blocking` runs a coroutine to completion from synchronous code, also inside a running
Jupyter kernel, and turns the first interrupt into a cancel that keeps what finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx2

from llmlab.events import EventBus
from llmlab.plan.grid import Grid
from llmlab.run.retry import RetryPolicy
from llmlab.run.runner import RunHandle, RunOptions, RunOutcome, SweepRunner

__all__ = ["prepare_run", "run_blocking", "run_grid", "run_grid_sync"]

T = TypeVar("T")


def prepare_run(
    grid: Grid,
    concurrency: int = 8,
    budget_usd: float | None = None,
    cache: bool | str = True,
    *,
    transport: httpx2.AsyncBaseTransport | None = None,
    retry: RetryPolicy | None = None,
    bus: EventBus | None = None,
    handle: RunHandle | None = None,
    sweep_id: str | None = None,
    cassette: Any = None,
) -> SweepRunner:
    """A runner for ``grid``, preflighted: keys, budget, concurrency and cassette are checked here.

    ``cache``: True reuses stored responses, False always sends, ``"record"`` sends and writes
    every response to ``cassette`` (a .json path), ``"replay"`` answers every call from
    ``cassette`` without a model, a key or any request (a call it lacks raises ReplayMissError).
    Nothing is sent until the returned runner's ``run()`` is awaited.
    """
    options = RunOptions(
        concurrency=concurrency,
        budget_usd=budget_usd,
        cache=cache,
        retry=retry or RetryPolicy(),
        transport=transport,
        sweep_id=sweep_id,
        cassette=cassette,
    )
    runner = SweepRunner(grid, options, bus or EventBus(), handle or RunHandle())
    runner.preflight()
    return runner


async def run_grid(grid: Grid, concurrency: int = 8, **kwargs: Any) -> RunOutcome:
    """Send ``grid``'s calls on the current event loop with nothing displayed; keywords as :func:`prepare_run`."""
    return await prepare_run(grid, concurrency, **kwargs).run()


def run_grid_sync(grid: Grid, concurrency: int = 8, **kwargs: Any) -> RunOutcome:
    """:func:`run_grid` from synchronous code (also inside a Jupyter kernel), Ctrl-C as :func:`run_blocking`."""
    handle = kwargs.get("handle") or RunHandle()
    kwargs["handle"] = handle
    return run_blocking(lambda: run_grid(grid, concurrency, **kwargs), handle)


def run_blocking(start: Callable[[], Awaitable[T]], handle: RunHandle) -> T:
    """Run the coroutine ``start()`` makes to completion from synchronous code, also when a loop
    already runs here (a Jupyter kernel): then it runs on a fresh loop in a worker thread while
    this thread waits.

    An interrupt (Ctrl-C, the kernel's stop button) calls ``handle.cancel()``: nothing more is
    sent, calls in flight are cancelled, finished calls are kept, and the coroutine returns its
    partial outcome (a second Ctrl-C in a script raises KeyboardInterrupt at once).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        with _cancel_on_first_sigint(handle):
            return asyncio.run(_awaited(start))
    result: dict[str, Any] = {}
    # an Event, not Thread.join(): a join interrupted by KeyboardInterrupt may return at once when
    # called again (CPython < 3.13), before the sweep has stopped
    done = threading.Event()

    def target() -> None:
        try:
            result["value"] = asyncio.run(_awaited(start))
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


async def _awaited(start: Callable[[], Awaitable[T]]) -> T:
    # the awaitable is made inside the loop that runs it (asyncio.run takes a coroutine, not any awaitable)
    return await start()


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
