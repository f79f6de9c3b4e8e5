"""The ``Sweep`` facade: what ``ll.Sweep`` is, built on the plan and run layers.

``Sweep(...)`` validates its arguments into a :class:`llmlab.plan.grid.Grid` (nothing is sent);
``plan()`` estimates that grid; ``run()``/``arun()`` hand it to the run layer, subscribe the
display (grid in Jupyter, bar in a terminal) to the runner's events, and wrap the outcome in a
:class:`llmlab.results.SweepResult`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from llmlab.events import EventBus
from llmlab.plan.estimate import estimate_plan
from llmlab.plan.grid import Call, Grid, build_grid, call_id_for
from llmlab.plan.prompts import load_prompts
from llmlab.results import RateCallback, SweepResult, store_ratings

if TYPE_CHECKING:
    import httpx2

    from llmlab.run.retry import RetryPolicy
    from llmlab.run.runner import RunHandle

__all__ = ["Call", "Sweep", "call_id_for", "load_prompts", "run_async", "run_sync"]


class Sweep:
    """A grid of LLM calls: prompt set × prompt variants × models × temperature × top_p × params × repeats.

    ``template=``, ``system=`` and ``messages=`` each take one text, a list (named ``t1, t2, …`` /
    ``s1, …`` / ``m1, …``) or a dict ``{name: text}``: variants are an axis like temperature, and
    every call records ``template_name`` and ``system_name``. Every argument is validated here,
    before anything is sent. ``plan()`` shows the calls;
    ``run()`` sends them (blocking, also inside Jupyter), ``arun()`` is the awaitable form.

    Example:
        >>> import llmlab as ll
        >>> sweep = ll.Sweep(prompts=["What is a rainbow?"], models=["local/tiny"], temperature=[0.0, 0.7])
        >>> len(sweep.plan())
        2
    """

    def __init__(
        self,
        prompts: Any,
        template: str | Sequence[str] | Mapping[str, str] | None = None,
        system: str | Sequence[str] | Mapping[str, str] | None = None,
        models: str | Sequence[str] = ("local/tiny",),
        temperature: float | Sequence[float] | None = (0.0, 0.7, 1.0),
        top_p: float | Sequence[float] | None = (1.0,),
        max_tokens: int | Sequence[int] | None = 64,
        repeats: int = 1,
        seed: int | Sequence[int] | None = None,
        name: str | None = None,
        params: Mapping[str, Any] | None = None,
        messages: Any = None,
    ) -> None:
        self.grid: Grid = build_grid(
            prompts,
            template=template,
            system=system,
            models=models,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            repeats=repeats,
            seed=seed,
            name=name,
            params=params,
            messages=messages,
        )
        grid = self.grid
        # the grid's settings as lists, under the names notebooks and the CLI read
        self.name = grid.name
        self.template = grid.template
        self.system = grid.system
        self.messages_template = grid.messages_template
        self.variants = list(grid.variants)
        self.prompts_input = prompts
        self.models = list(grid.models)
        self.temperature = list(grid.temperature)
        self.top_p = list(grid.top_p)
        self.max_tokens = list(grid.max_tokens)
        self.seed = list(grid.seed)
        self.repeats = grid.repeats
        self.params = dict(grid.params)
        self.rows = grid.rows  # read-only: plain-string prompts read as {"prompt": text} rows
        self.messages = grid.messages  # (messages, data) per variant and row, rendered when read
        self.calls: Sequence[Call] = grid.calls  # made when read: the grid keeps each call's id, not the Call

    def spec(self) -> dict[str, Any]:
        """The sweep's specification as plain data (stored with every run)."""
        return self.grid.spec()

    def plan(self) -> pd.DataFrame:
        """One row per call, before anything is sent: ids, settings, prompt, estimated tokens and cost.

        ``plan().attrs`` holds the totals: ``calls``, ``est_cost_usd`` (NA if a model has no
        price) and ``est_seconds`` (a rough figure at the default concurrency).
        """
        return estimate_plan(self.grid)

    def __len__(self) -> int:
        return len(self.calls)

    def __repr__(self) -> str:
        return f"Sweep(name={self.name!r}, calls={len(self.calls)}, models={self.models})"

    def run(
        self,
        concurrency: int = 8,
        display: bool | None = None,
        budget_usd: float | None = None,
        cache: bool | str = True,
        **kwargs: Any,
    ) -> SweepResult:
        """Send every call and wait; works in scripts and inside a running Jupyter kernel.

        Args:
            concurrency: calls in flight at once per provider+model (each has its own queue, so one
                provider's rate limits never hold up another's calls).
            display: live grid (Jupyter) / progress bar (terminal); default: on in Jupyter and TTYs.
            budget_usd: stop dispatching before the estimated spend would pass this.
            cache: True reuses stored responses (a re-run sends nothing); False always sends;
                ``"record"`` / ``"replay"`` with ``cassette=path`` records responses to a cassette
                file, or answers every call from it with no model, key or network.
        """
        return run_sync(self, concurrency=concurrency, display=display, budget_usd=budget_usd, cache=cache, **kwargs)

    async def arun(
        self,
        concurrency: int = 8,
        display: bool | None = None,
        budget_usd: float | None = None,
        cache: bool | str = True,
        **kwargs: Any,
    ) -> SweepResult:
        """Awaitable form of :meth:`run`."""
        return await run_async(
            self, concurrency=concurrency, display=display, budget_usd=budget_usd, cache=cache, **kwargs
        )


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
    transport: httpx2.AsyncBaseTransport | None = None,
    retry: RetryPolicy | None = None,
    bus: EventBus | None = None,
    handle: RunHandle | None = None,
    sweep_id: str | None = None,
    cassette: Any = None,
    on_rate: RateCallback | None = None,
) -> SweepResult:
    """Run ``sweep`` on the current event loop (``await sweep.arun()``) and return its result.

    ``on_rate(call_id, value, note)`` receives the ratings given in the live grid while (and after) it
    streams; by default :func:`~llmlab.results.store_ratings` (stored at once, durable across kernels).

    ``cache``: True reuses stored responses, False always sends, ``"record"`` sends and writes
    every response to ``cassette`` (a .json path), ``"replay"`` answers every call from
    ``cassette`` without a model, a key or any request (a call it lacks raises ReplayMissError).
    """
    # imported here: the run layer (openai, tracing) and the widgets load on the first run, not on ``import llmlab``
    from llmlab.run.entry import prepare_run
    from llmlab.run.runner import RunHandle
    from llmlab.view.display import attach_display

    bus = bus or EventBus()
    handle = handle or RunHandle()
    runner = prepare_run(
        sweep.grid,
        concurrency,
        budget_usd,
        cache,
        transport=transport,
        retry=retry,
        bus=bus,
        handle=handle,
        sweep_id=sweep_id,
        cassette=cassette,
    )
    # subscribed after the preflight (a bad argument shows no display) and before the first event
    shown = _default_display() if display is None else display
    rate = on_rate if on_rate is not None else store_ratings(getattr(runner, "sweep_id", sweep_id))
    detach = attach_display(bus, handle, sweep, shown, budget_usd, on_rate=rate)
    try:
        outcome = await runner.run()
    finally:
        detach()
    return SweepResult.from_rows(
        outcome.sweep_id, outcome.rows, sweep=sweep, skipped=outcome.skipped, stopped=outcome.stopped
    )


def run_sync(sweep: Sweep, **kwargs: Any) -> SweepResult:
    """Run ``sweep`` to completion from synchronous code, also when a loop already runs here
    (a Jupyter kernel): then the sweep runs on a fresh loop in a worker thread while this
    thread waits.

    An interrupt (Ctrl-C, the kernel's stop button) stops the sweep the way ``cancel()`` does:
    nothing more is sent, calls in flight are cancelled, finished calls are kept, and the
    partial result is returned with ``stopped == "cancelled"`` (a second Ctrl-C in a script
    raises KeyboardInterrupt at once).
    """
    from llmlab.run.entry import run_blocking
    from llmlab.run.runner import RunHandle

    handle = kwargs.get("handle") or RunHandle()
    kwargs["handle"] = handle
    return run_blocking(lambda: run_async(sweep, **kwargs), handle)
