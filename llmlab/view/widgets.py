"""The live sweep grid in Jupyter: the ipywidgets/anywidget front and its kernel plumbing.

The grid's logic is plain Python elsewhere, so it is testable without a browser:
:mod:`llmlab.view.grid_state` keeps the cells, counts, paging and push pacing, and
:mod:`llmlab.view.grid_html` draws a page as HTML. Here :class:`SweepGrid` puts them on screen: a Cancel
button, paging buttons and **one** HTML widget (:class:`GridHTML`, an anywidget that redraws like
ipywidgets' HTML but keeps the cells a reader opened open while the sweep streams). The runner calls
:meth:`SweepGrid.on_event` from its own thread at token rate; that only updates the state. A flush thread
pushes the page when the state's :class:`~llmlab.view.grid_state.Pacer` allows (``max_rate`` times a
second at most, default 15, well under the 30 updates/s bound) and only when something changed;
:meth:`SweepGrid.close_feed` pushes the exact final state.

Cancel: the button calls ``RunHandle.cancel()``. The click reaches the kernel as a comm message,
which the kernel only handles while it is free: with ``await sweep.arun()`` (the kernel runs
other cells while the sweep streams) it takes effect at once. ``sweep.run()`` blocks the cell
until the sweep ends, so clicks wait in the kernel's queue; on ipykernel ≥ 7 the grid routes
its Cancel button's messages to a kernel *subshell* (a second shell thread) so the click is
handled while the cell still runs; elsewhere use ``arun()`` or interrupt the kernel.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import anywidget
import traitlets

from llmlab.events import Event
from llmlab.view.grid_html import GRID_ESM, HtmlView
from llmlab.view.grid_state import MAX_CELLS_PER_PAGE, CellSpec, GridState, Pacer, specs_from_calls, specs_from_rows

__all__ = ["GridHTML", "SweepGrid", "route_clicks_to_subshell"]

# --- clicks while run() blocks the kernel -------------------------------------------------------

_subshell: dict[str, Any] = {}
_subshell_lock = threading.Lock()


def _widget_subshell() -> str | None:
    """The id of a kernel subshell (a second shell thread, ipykernel ≥ 7) for grid buttons, or None.

    ``sweep.run()`` keeps the kernel's main thread waiting until the sweep ends, and the main
    shell handles comm messages (button clicks) only between cells. ipykernel 7 routes a comm's
    messages to the subshell its ``_reply_subshell_for`` names, and a subshell has its own thread,
    so clicks routed there are handled at once. One subshell serves every grid of the kernel.
    Anything unexpected (another kernel, an older ipykernel) returns None: clicks then wait
    for the cell as usual.
    """
    with _subshell_lock:
        if "id" in _subshell:
            return _subshell["id"]
        _subshell["id"] = None
        try:
            from concurrent.futures import Future

            from IPython import get_ipython

            kernel = getattr(get_ipython(), "kernel", None)
            channel = getattr(kernel, "shell_channel_thread", None)
            manager = getattr(channel, "_manager", None)
            create = getattr(manager, "_create_subshell", None)
            if channel is None or create is None or not channel.is_alive():
                return None
            made: Future[str] = Future()

            def make() -> None:  # must run on the shell channel thread
                try:
                    made.set_result(create())
                except BaseException as exc:
                    made.set_exception(exc)

            channel.io_loop.add_callback(make)
            _subshell["id"] = made.result(timeout=5)
        except Exception:  # a private ipykernel API: fall back to the main shell
            _subshell["id"] = None
        return _subshell["id"]


def route_clicks_to_subshell(buttons: Sequence[Any]) -> bool:
    """Have the kernel handle these widgets' front-end messages on a subshell; see above."""
    subshell_id = _widget_subshell()
    if subshell_id is None:
        return False
    for button in buttons:
        comm = getattr(button, "comm", None)
        if comm is not None and hasattr(comm, "_reply_subshell_for"):
            comm._reply_subshell_for = lambda data, default, _sid=subshell_id: _sid
    return True


# --- the widget -------------------------------------------------------------------------------


class GridHTML(anywidget.AnyWidget):
    """One page of the sweep grid as HTML; opened cells survive redraws.

    A plain ipywidgets HTML widget replaces its content at every redraw, closing a cell the reader opened
    within a fraction of a second while the rest of the sweep streams; this one's front end
    (:data:`~llmlab.view.grid_html.GRID_ESM`) reopens them. Notebooks saved with the grid name it by
    module and class (``llmlab.view.widgets.GridHTML``), so it stays defined here.
    """

    _esm = GRID_ESM
    value = traitlets.Unicode("").tag(sync=True)


class SweepGrid:
    """The live grid shown by ``sweep.run(display=True)`` in Jupyter (see the module docstring).

    Args:
        sweep: the ``Sweep`` whose calls fill the grid.
        handle: the run's ``RunHandle``; without one there is no Cancel button.
        budget_usd: shown in the header as the spend limit.
        page_size: prompts (rows) per page.
        max_cells: calls per page at most (about); a wide sweep pages over settings too.
        max_rate: front-end updates per second at most (capped at 30).
    """

    def __init__(
        self,
        sweep: Any,
        handle: Any = None,
        budget_usd: float | None = None,
        *,
        page_size: int = 20,
        max_rate: float = 15.0,
        specs: Sequence[CellSpec] | None = None,
        max_cells: int = MAX_CELLS_PER_PAGE,
    ) -> None:
        import ipywidgets as w

        self.state = GridState(specs if specs is not None else specs_from_calls(sweep.calls), budget_usd)
        self.handle = handle
        self.view = HtmlView(self.state, page_size, max_cells)
        self.pacer = Pacer.for_rate(max_rate)
        self.updates = 0  # HTML pushes to the front end
        self._html = GridHTML(layout=w.Layout(width="100%"))
        self._html.add_class("llmlab-grid")
        self._cancel = w.Button(
            description="Cancel",
            icon="stop",
            button_style="danger",
            tooltip="stop dispatching and cancel calls in flight",
            disabled=handle is None,
            layout=w.Layout(width="auto", display=None if handle is not None else "none"),
        )
        self._cancel.add_class("llmlab-cancel")
        self._cancel.on_click(lambda _b: self.cancel())
        self._prev = w.Button(description="◀", layout=w.Layout(width="36px"))
        self._next = w.Button(description="▶", layout=w.Layout(width="36px"))
        self._page_label = w.Label()
        self._prev.on_click(lambda _b: self.set_page(self.view.page - 1))
        self._next.on_click(lambda _b: self.set_page(self.view.page + 1))
        paged = self.view.pages() > 1
        pager = [self._prev, self._page_label, self._next] if paged else []
        self._bar = w.HBox([self._cancel, *pager])
        self.widget = w.VBox([self._bar, self._html])
        self._push_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._update_pager()
        self._push(force=True)

    @classmethod
    def from_result(cls, result: Any, page_size: int = 20) -> SweepGrid:
        """A finished grid rebuilt from a ``SweepResult``'s stored rows (nothing is sent)."""
        records = result.df.to_dict("records")
        _add_system_messages(records, (result.spec or {}).get("system"))
        skipped = result.skipped.to_dict("records") if result.skipped is not None else []
        specs = specs_from_rows(records + [dict(s, prompt=None) for s in skipped])
        grid = cls(None, None, result.spec.get("budget_usd") if result.spec else None, page_size=page_size, specs=specs)
        grid.state.load_rows(records, skipped, result.stopped)
        grid._push(force=True)
        return grid

    # --- feed ---------------------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        """Runner subscriber: update the state (cheap); the flush thread pushes it later."""
        if self.state.apply(event):
            if self._thread is None and not self._closed:
                self._start_flusher()
            self._wake.set()

    def close_feed(self) -> None:
        """Stop the flush thread and push the exact final state (called when the sweep ends)."""
        self._closed = True
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._cancel.disabled = True
        self._cancel.description = "Cancelled" if self.state.stopped == "cancelled" else "Finished"
        self._cancel.button_style = ""
        self._push(force=True)

    def _start_flusher(self) -> None:
        with self._push_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._flush_loop, name="llmlab-grid-flush", daemon=True)
                self._thread.start()

    def _flush_loop(self) -> None:
        while not self._stop.is_set():
            # wake on a change, or once a second so the elapsed time ticks
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            if self._stop.is_set():
                break
            wait = self.pacer.wait_s(time.monotonic())
            if wait > 0 and self._stop.wait(wait):
                break
            self._push()

    def _push(self, force: bool = False) -> None:
        """Send the current page if it changed, when the :class:`~llmlab.view.grid_state.Pacer` allows."""
        with self._push_lock:
            wait = self.pacer.wait_s(time.monotonic())
            if wait > 0 and self.updates:
                time.sleep(wait)  # the final push also respects the rate bound
            with self.state.lock:
                if not force and not self.state.needs_push():
                    return
                dirty = self.state.take_dirty()
                value = self.view.render(dirty)
            sent = 0
            if value != self._html.value:
                self._html.value = value
                self.updates += 1
                sent = len(value)
            self.pacer.sent(time.monotonic(), sent)

    # --- controls -----------------------------------------------------------------------------
    def cancel(self) -> None:
        """What the Cancel button does: stop dispatching, cancel calls in flight."""
        if self.handle is None or self.state.finished:
            return
        self.state.request_cancel()
        self.handle.cancel()
        self._cancel.disabled = True
        self._cancel.description = "Cancelling…"
        self._wake.set()

    def set_page(self, page: int) -> None:
        """Show page ``page`` (0-based) of the prompts."""
        self.view.page = min(max(0, page), self.view.pages() - 1)
        self._update_pager()
        self.view._cache.clear()
        self._push(force=True)

    def _update_pager(self) -> None:
        pages = self.view.pages()
        self._page_label.value = f"page {self.view.page + 1}/{pages}"
        self._prev.disabled = self.view.page <= 0
        self._next.disabled = self.view.page >= pages - 1

    @property
    def html(self) -> str:
        """The HTML currently shown."""
        return str(self._html.value)

    def show(self) -> None:
        """Display the grid in the current notebook output."""
        from IPython.display import display

        display(self.widget)
        if self.handle is not None or self.view.pages() > 1:
            route_clicks_to_subshell([self._cancel, self._prev, self._next])

    def _ipython_display_(self) -> None:
        self.show()

    def __repr__(self) -> str:
        return f"SweepGrid({self.state.header_text()})"


def _add_system_messages(records: list[dict[str, Any]], system: Any) -> None:
    """Give stored rows their message list back (system prompt + prompt) for the cell details,
    from the spec's system text(s) and each row's ``system_name``."""
    texts = system if isinstance(system, dict) else {"s1": system} if isinstance(system, str) else {}
    for rec in records:
        text, prompt = texts.get(rec.get("system_name")), rec.get("prompt")
        if isinstance(text, str) and isinstance(prompt, str):
            rec["messages"] = [{"role": "system", "content": text}, {"role": "user", "content": prompt}]
