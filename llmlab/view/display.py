"""Choose and attach the display for a sweep: the live widget grid in Jupyter, a progress bar
in a terminal, nothing when ``display=False``. Both are event subscribers."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def in_notebook() -> bool:
    """True inside a Jupyter kernel (ZMQ shell)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def attach_display(
    bus: Any,
    handle: Any,
    sweep: Any,
    display: bool,
    budget_usd: float | None,
    on_rate: Callable[[str, int | None, str | None], None] | None = None,
) -> Callable[[], None]:
    """Subscribe the right display to ``bus``; returns a function that detaches it.

    ``on_rate(call_id, value, note)`` receives the ratings given in the Jupyter grid (the terminal has none).
    """
    if not display:
        return lambda: None
    if in_notebook():
        try:
            from llmlab.view.widgets import SweepGrid
        except ImportError:
            pass
        else:
            grid = SweepGrid(sweep, handle=handle, budget_usd=budget_usd, on_rate=on_rate)
            grid.show()
            unsubscribe_grid = bus.subscribe(grid.on_event)

            def detach_grid() -> None:
                unsubscribe_grid()
                grid.close_feed()

            return detach_grid
    from llmlab.view.progress import ProgressBar

    bar = ProgressBar(total=len(sweep.calls), budget_usd=budget_usd, file=sys.stderr)
    unsubscribe_bar = bus.subscribe(bar.on_event)

    def detach_bar() -> None:
        unsubscribe_bar()
        bar.close()

    return detach_bar
