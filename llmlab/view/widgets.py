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

Ratings: each cell's 👍/👎 (and, in its details, a 1–5 score and a note) send a message from the grid's
front end; :meth:`SweepGrid.rate` records the rating in the state (the next redraw shows it) and calls
the injected ``on_rate(call_id, value, note)`` at once. Those messages go through the same subshell, so
rating works while ``run()`` still streams. Filters (show only errors / retried / rated / unrated, a
search over prompts and completions, a sort of the prompt rows by a numeric column) apply before paging.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anywidget
import traitlets

from llmlab.events import Event
from llmlab.view.grid_html import GRID_ESM, HtmlView
from llmlab.view.grid_state import (
    MAX_CELLS_PER_PAGE,
    SHOW_FILTERS,
    CellSpec,
    GridFilter,
    GridState,
    Pacer,
    rating_value,
    specs_from_calls,
    specs_from_rows,
)

__all__ = ["GridHTML", "RateCallback", "SweepGrid", "route_clicks_to_subshell"]

#: What the grid calls when a rating is given in it: ``on_rate(call_id, value, note)``; ``value`` is +1/-1
#: (thumbs), 1..5 (score) or None (cleared), ``note`` a free-text note or None.
RateCallback = Callable[[str, "int | None", "str | None"], None]

log = logging.getLogger(__name__)

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
        on_rate: called as ``on_rate(call_id, value, note)`` when a rating is given in the grid (see
            :data:`RateCallback`); None: ratings are only shown.
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
        on_rate: RateCallback | None = None,
    ) -> None:
        import ipywidgets as w

        self.state = GridState(specs if specs is not None else specs_from_calls(sweep.calls), budget_usd)
        self.handle = handle
        self.on_rate = on_rate
        self.rate_errors: list[str] = []  # what a failing on_rate said (also logged)
        self.view = HtmlView(self.state, page_size, max_cells)
        self.pacer = Pacer.for_rate(max_rate)
        self.updates = 0  # HTML pushes to the front end
        self._html = GridHTML(layout=w.Layout(width="100%"))
        self._html.add_class("llmlab-grid")
        self._html.on_msg(self._on_front_msg)
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
        self._show = w.Dropdown(options=list(SHOW_FILTERS), value="all", layout=w.Layout(width="auto"))
        self._show.add_class("llmlab-show")
        self._search = w.Text(
            placeholder="search prompts and completions", continuous_update=False, layout=w.Layout(width="220px")
        )
        self._search.add_class("llmlab-search")
        self._sort = w.Dropdown(options=self._sort_options(), value="", layout=w.Layout(width="auto"))
        self._sort.add_class("llmlab-sort")
        self._desc = w.ToggleButton(value=False, description="desc", layout=w.Layout(width="auto"))
        self._desc.add_class("llmlab-desc")
        self._quiet = False  # set while the sort options are replaced (not a reader's choice)
        for control in (self._show, self._search, self._sort, self._desc):
            control.observe(lambda _change: self._filter_changed(), names="value")
        paged = self.view.pages() > 1
        pager = [self._prev, self._page_label, self._next] if paged else []
        self._bar = w.HBox([self._cancel, *pager, self._show, self._search, self._sort, self._desc])
        self.widget = w.VBox([self._bar, self._html])
        self._push_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._update_pager()
        self._push(force=True)

    @classmethod
    def from_result(
        cls,
        result: Any,
        page_size: int = 20,
        on_rate: RateCallback | None = None,
        messages: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    ) -> SweepGrid:
        """A finished grid rebuilt from a ``SweepResult``'s stored rows (nothing is sent); ratings in the
        rows' ``rating`` / ``rating_note`` columns are shown, and new ones go to ``on_rate``."""
        records = result.df.to_dict("records")
        _add_system_messages(records, (result.spec or {}).get("system"))
        skipped = result.skipped.to_dict("records") if result.skipped is not None else []
        specs = specs_from_rows(records + [dict(s, prompt=None) for s in skipped], messages)
        grid = cls(
            None,
            None,
            result.spec.get("budget_usd") if result.spec else None,
            page_size=page_size,
            specs=specs,
            on_rate=on_rate,
        )
        grid.state.load_rows(records, skipped, result.stopped)
        grid._refresh_sort_options()
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
        self._refresh_sort_options()
        self._update_pager()
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

    def rate(self, call_id: str, value: Any, note: str | None = None) -> None:
        """What a rating button does: show the rating (None clears it) and pass it to ``on_rate`` at once."""
        rating = rating_value(value)
        if value is not None and rating is None:
            return  # not a rating the grid offers
        note = note.strip() if isinstance(note, str) and note.strip() else None
        if not self.state.set_rating(call_id, rating, note):
            return
        if self.on_rate is not None:
            try:
                self.on_rate(call_id, rating, note)
            except Exception as exc:  # the grid keeps working; the reason is kept and logged
                self.rate_errors.append(f"{call_id}: {type(exc).__name__}: {exc}")
                log.warning("on_rate failed for %s: %s", call_id, exc)
        self._wake.set()
        self._push(force=True)

    def _on_front_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("event") == "rate" and isinstance(content.get("call_id"), str):
            note = content.get("note")
            self.rate(content["call_id"], content.get("value"), note if isinstance(note, str) else None)

    def set_filter(
        self, show: str = "all", search: str = "", sort_by: str | None = None, descending: bool = False
    ) -> None:
        """Show only some calls (``show``: all, errors, retried, rated, unrated; ``search`` in prompts and
        completions), prompt rows sorted by a numeric column; the page count follows, page 1 is shown."""
        self.state.set_filter(GridFilter(show, search, sort_by or None, descending))
        self.view.page = 0
        self._update_pager()
        self.view._cache.clear()
        self._push(force=True)

    def _filter_changed(self) -> None:
        if self._quiet:
            return
        self.set_filter(self._show.value, self._search.value, self._sort.value or None, self._desc.value)

    def _sort_options(self) -> list[tuple[str, str]]:
        names = self.state.numeric_columns() or ["latency_ms", "rating"]
        return [("prompt order", ""), *((f"sort: {n}", n) for n in names)]

    def _refresh_sort_options(self) -> None:
        options = self._sort_options()
        if [tuple(o) for o in self._sort.options] != options:
            current = self._sort.value
            self._quiet = True
            try:
                self._sort.options = options
                self._sort.value = current if current in [v for _, v in options] else ""
            finally:
                self._quiet = False

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
        # every control, the ratings too, answers while run() holds the kernel
        route_clicks_to_subshell(
            [self._cancel, self._prev, self._next, self._html, self._show, self._search, self._sort, self._desc]
        )

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
