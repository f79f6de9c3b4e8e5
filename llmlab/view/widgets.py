"""The live sweep grid: one row per prompt, one column per setting, every cell streaming.

Two layers, so the logic is testable without a browser:

* :class:`GridState` is plain Python. Runner events (``llmlab.events``) move each cell through
  queued → running → retrying → done / error / cached / cancelled / skipped; it keeps the header
  counts (n/N, elapsed, spend against the budget, errors) and a set of *dirty* cells.
  :func:`render_html` turns one page of it into HTML (cells carry their state as a CSS class, and
  each cell is a ``<details>`` element, so clicking it opens the whole prompt, completion and call
  details in the browser without a round trip to the kernel).
* :class:`SweepGrid` is the ipywidgets front: a Cancel button, paging buttons and **one** HTML
  widget (an anywidget that redraws like ipywidgets' HTML but keeps the cells a reader opened
  open while the sweep streams). The runner calls :meth:`SweepGrid.on_event` from its own thread
  at token rate; that only updates the state. A flush thread pushes the page at most
  ``max_rate`` times a second (default 15, well under the 30 updates/s bound), no faster than
  :data:`MAX_BYTES_PER_S`, and only when something changed; :meth:`SweepGrid.close_feed` pushes
  the exact final state. Re-rendering only the cells that changed keeps the kernel's CPU cost
  low; paging (about :data:`MAX_CELLS_PER_PAGE` calls a page) keeps a sweep of thousands of
  calls to one page of cells in the browser.

Cancel: the button calls ``RunHandle.cancel()``. The click reaches the kernel as a comm message,
which the kernel only handles while it is free: with ``await sweep.arun()`` (the kernel runs
other cells while the sweep streams) it takes effect at once. ``sweep.run()`` blocks the cell
until the sweep ends, so clicks wait in the kernel's queue; on ipykernel ≥ 7 the grid routes
its Cancel button's messages to a kernel *subshell* (a second shell thread) so the click is
handled while the cell still runs; elsewhere use ``arun()`` or interrupt the kernel.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from llmlab.events import Event
from llmlab.pricing import format_usd

STATES = ("queued", "running", "retrying", "done", "error", "cached", "cancelled", "skipped")
FINAL_STATES = frozenset({"done", "error", "cached", "cancelled", "skipped"})
MAX_UPDATES_PER_S = 30.0  # the bound on front-end updates for the whole grid (issue 5)
# one page of the grid holds about this many calls and at most this many settings (columns): the
# browser and each update stay small however large the sweep
MAX_CELLS_PER_PAGE = 200
# and the updates of a heavy page (long prompts, long answers) are spaced to send at most this much
MAX_BYTES_PER_S = 2_000_000
MAX_COLUMNS_PER_PAGE = 16

_SETTING_NAMES = ("model", "temperature", "top_p", "max_tokens", "seed")
_SHORT = {"temperature": "T", "top_p": "top_p", "max_tokens": "max_tokens", "seed": "seed"}


@dataclasses.dataclass(frozen=True)
class CellSpec:
    """What the grid knows about one planned call before it runs."""

    call_id: str
    prompt_index: int
    prompt_id: str
    prompt: str
    settings: tuple[tuple[str, Any], ...]  # (name, value) pairs that place the call in a column
    repeat: int = 0


@dataclasses.dataclass
class Cell:
    """The live state of one call."""

    spec: CellSpec
    state: str = "queued"
    parts: list[str] = dataclasses.field(default_factory=list)
    attempt: int = 0
    note: str = ""  # retry reason, error message, skip reason
    row: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)


def _fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _settings_of(
    model: Any, temperature: Any, top_p: Any, max_tokens: Any, seed: Any, repeat: int, params: Mapping[str, Any]
) -> tuple[tuple[str, Any], ...]:
    # a seeded sweep gives repeat r the seed base+r: the column keeps the base so repeats group
    base_seed = seed - repeat if isinstance(seed, int) and not isinstance(seed, bool) else seed
    pairs = [
        ("model", model),
        ("temperature", temperature),
        ("top_p", top_p),
        ("max_tokens", max_tokens),
        ("seed", base_seed),
    ]
    pairs += sorted((str(k), v) for k, v in params.items())
    return tuple((k, None if _isna(v) else v) for k, v in pairs)


def _isna(value: Any) -> bool:
    """None, NaN, pd.NA or NaT (stored rows carry pandas' missing values)."""
    import pandas as pd

    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def specs_from_calls(calls: Sequence[Any]) -> list[CellSpec]:
    """Cell specs from a sweep's planned ``Call`` objects."""
    return [
        CellSpec(
            c.call_id,
            c.prompt_index,
            c.prompt_id,
            c.prompt,
            _settings_of(c.qualified_model, c.temperature, c.top_p, c.max_tokens, c.seed, c.repeat, c.params),
            c.repeat,
        )
        for c in calls
    ]


def specs_from_rows(rows: Iterable[Mapping[str, Any]]) -> list[CellSpec]:
    """Cell specs from stored result rows (``SweepResult.df`` records), prompts in first-seen order."""
    index: dict[str, int] = {}
    specs = []
    for row in rows:
        prompt_id = str(row.get("prompt_id"))
        p_index = index.setdefault(prompt_id, len(index))
        raw = row.get("params")
        params = json.loads(raw) if isinstance(raw, str) and raw else {}
        repeat = row.get("repeat")
        repeat = 0 if _isna(repeat) else int(repeat)
        seed = row.get("seed")
        seed = None if _isna(seed) else int(seed)
        prompt = row.get("prompt")
        specs.append(
            CellSpec(
                str(row["call_id"]),
                p_index,
                prompt_id,
                "" if _isna(prompt) else str(prompt),
                _settings_of(
                    row.get("model"),
                    row.get("temperature"),
                    row.get("top_p"),
                    row.get("max_tokens"),
                    seed,
                    repeat,
                    params,
                ),
                repeat,
            )
        )
    return specs


class GridState:
    """The grid as data, driven by runner events; thread-safe; no front end needed.

    Args:
        specs: one :class:`CellSpec` per call (see :func:`specs_from_calls`).
        budget_usd: shown in the header as the spend limit.
        clock: monotonic clock (tests pass a fake one).

    Example:
        >>> st = GridState([CellSpec("c1", 0, "p1", "Hi", (("model", "local/tiny"),))])
        >>> _ = st.apply(Event("token", "s", "c1", {"text": "Hel"})); st.cells["c1"].state, st.cells["c1"].text
        ('running', 'Hel')
    """

    def __init__(
        self, specs: Sequence[CellSpec], budget_usd: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.clock = clock
        self.budget_usd = budget_usd
        self.cells: dict[str, Cell] = {s.call_id: Cell(s) for s in specs}
        self.lock = threading.RLock()
        # the columns show only the settings that vary; repeats of one setting share a column
        names = [k for k, _ in specs[0].settings] if specs else []
        varying = [n for n in names if len({dict(s.settings).get(n) for s in specs}) > 1]
        self.column_names = varying or ["model"]
        self.columns: list[tuple[Any, ...]] = []
        col_index: dict[tuple[Any, ...], int] = {}
        self.prompts: dict[int, tuple[str, str]] = {}
        self.layout: dict[tuple[int, int], list[str]] = {}  # (prompt_index, column) -> call ids by repeat
        self.position: dict[str, tuple[int, int]] = {}
        for s in specs:
            key = tuple(_key(dict(s.settings).get(n)) for n in self.column_names)
            col = col_index.get(key)
            if col is None:
                col = col_index[key] = len(self.columns)
                self.columns.append(tuple(dict(s.settings).get(n) for n in self.column_names))
            self.prompts.setdefault(s.prompt_index, (s.prompt_id, s.prompt))
            self.layout.setdefault((s.prompt_index, col), []).append(s.call_id)
            self.position[s.call_id] = (s.prompt_index, col)
        self.prompt_order = sorted(self.prompts)
        self.total = len(self.cells)
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.finished = False
        self.stopped: str | None = None
        self.cancel_requested = False
        self.spent_usd = 0.0
        self.retries = 0
        self.counts = dict.fromkeys(STATES, 0)
        self.counts["queued"] = self.total
        self.dirty: set[str] = set()
        self.header_dirty = True
        self.version = 0  # bumped on every change

    # --- events -------------------------------------------------------------------------------
    def apply(self, event: Event) -> bool:
        """Apply one runner event; returns whether anything visible changed."""
        with self.lock:
            changed = self._apply(event)
            if changed:
                self.version += 1
            return changed

    def _set(self, cell: Cell, state: str) -> None:
        if cell.state != state:
            self.counts[cell.state] -= 1
            self.counts[state] += 1
            cell.state = state
            self.header_dirty = True

    def _apply(self, event: Event) -> bool:
        kind, data = event.kind, event.data
        if kind == "sweep_started":
            self.started_at = self.clock()
            if data.get("budget_usd") is not None:
                self.budget_usd = data["budget_usd"]
            self.header_dirty = True
            return True
        if kind == "sweep_finished":
            self.finished = True
            self.finished_at = self.clock()
            self.stopped = data.get("stopped")
            if isinstance(data.get("spent_usd"), (int, float)):
                self.spent_usd = float(data["spent_usd"])  # the runner's exact total
            # calls cancelled while still waiting for a slot get no event of their own: once the
            # sweep is over nothing is pending, so the grid never shows a stale "queued"
            for cell in self.cells.values():
                if cell.state not in FINAL_STATES:
                    cell.note = "not sent: the sweep was cancelled" if self.stopped == "cancelled" else "not sent"
                    self._set(cell, "cancelled" if self.stopped == "cancelled" else "skipped")
                    self.dirty.add(cell.spec.call_id)
            self.header_dirty = True
            return True
        cell = self.cells.get(event.call_id or "")
        if cell is None:
            return False
        if self.started_at is None:
            self.started_at = self.clock()
        if cell.state in FINAL_STATES and kind not in ("finished", "failed", "cached"):
            return False  # a late token after cancel must not resurrect a finished cell
        if kind == "queued":
            self._set(cell, "queued")
        elif kind == "started":
            cell.attempt = int(data.get("attempt") or 1)
            cell.parts = []  # a new attempt starts from an empty completion
            self._set(cell, "running")
        elif kind == "token":
            cell.parts.append(str(data.get("text") or ""))
            self._set(cell, "running")
        elif kind == "retry":
            self.retries += 1
            cell.parts = []  # the runner discards the partial output of a failed attempt
            cell.note = f"attempt {data.get('attempt')} failed: {data.get('error', '')}"
            self._set(cell, "retrying")
            self.header_dirty = True
        elif kind in ("finished", "failed", "cached"):
            row = dict(data.get("row") or {})
            cell.row = row
            completion = row.get("completion")
            cell.parts = [completion] if isinstance(completion, str) else cell.parts
            cell.note = str(row.get("error") or "") if kind == "failed" else ""
            cost = row.get("cost_usd")
            if kind == "finished" and isinstance(cost, (int, float)) and not _isna(cost):
                self.spent_usd += float(cost)
            self._set(cell, {"finished": "done", "failed": "error", "cached": "cached"}[kind])
        elif kind == "skipped":
            reason = str(data.get("reason") or "")
            cell.note = reason
            self._set(cell, "cancelled" if reason == "cancelled" else "skipped")
        elif kind == "cancelled":
            cell.note = "cancelled while running; partial output not kept"
            self._set(cell, "cancelled")
        else:
            return False
        self.dirty.add(cell.spec.call_id)
        return True

    def load_rows(
        self, rows: Iterable[Mapping[str, Any]], skipped: Iterable[Mapping[str, Any]] = (), stopped: str | None = None
    ) -> None:
        """Fill the grid from stored rows (a finished sweep): no events, no requests."""
        for row in rows:
            row = dict(row)
            kind = "cached" if row.get("cached") is True else ("finished" if row.get("status") == "ok" else "failed")
            self.apply(Event(kind, str(row.get("sweep_id")), str(row["call_id"]), {"row": row}))
        for item in skipped:
            self.apply(Event("skipped", "", str(item["call_id"]), {"reason": item.get("reason", "")}))
        with self.lock:
            self.finished, self.stopped, self.started_at = True, stopped, None
            self.header_dirty = True

    def request_cancel(self) -> None:
        with self.lock:
            self.cancel_requested = True
            self.header_dirty = True
            self.version += 1

    # --- views --------------------------------------------------------------------------------
    @property
    def done(self) -> int:
        return sum(self.counts[s] for s in FINAL_STATES)

    def elapsed_s(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at if self.finished_at is not None else self.clock()
        return max(0.0, end - self.started_at)

    def column_label(self, col: int) -> str:
        values = self.columns[col]
        if self.column_names == ["model"]:
            return _fmt_value(values[0])
        return " · ".join(
            _fmt_value(v) if n == "model" else f"{_SHORT.get(n, n)}={_fmt_value(v)}"
            for n, v in zip(self.column_names, values)
        )

    def header_text(self) -> str:
        """The header line as plain text: progress, elapsed, spend vs budget, errors, state."""
        parts = [f"{self.done}/{self.total} calls"]
        elapsed = self.elapsed_s()
        if elapsed is not None:
            parts.append(f"{elapsed:.1f} s")
        spend = format_usd(self.spent_usd)
        if self.budget_usd is not None:
            spend += f" of ${self.budget_usd:g} budget"
        parts.append(spend)
        for state, label in (
            ("running", "running"),
            ("error", "errors"),
            ("cached", "cached"),
            ("cancelled", "cancelled"),
            ("skipped", "skipped"),
        ):
            if self.counts[state] or state == "error":
                parts.append(f"{self.counts[state]} {label}")
        if self.retries:
            parts.append(f"{self.retries} retries")
        if self.finished:
            parts.append(f"stopped: {self.stopped}" if self.stopped else "finished")
        elif self.cancel_requested:
            parts.append("cancelling…")
        return " · ".join(parts)

    def take_dirty(self) -> set[str]:
        with self.lock:
            dirty, self.dirty = self.dirty, set()
            self.header_dirty = False
            return dirty

    def page_shape(
        self, page_size: int, max_cells: int = MAX_CELLS_PER_PAGE, max_columns: int = MAX_COLUMNS_PER_PAGE
    ) -> tuple[int, int]:
        """(prompts, columns) on one page: at most ``page_size`` prompts, ``max_columns`` settings
        and about ``max_cells`` calls, so a wide sweep (many settings × repeats) pages too."""
        reps = max((len(ids) for ids in self.layout.values()), default=1)
        cols = max(1, min(len(self.columns) or 1, max_columns, max_cells // reps))
        rows = max(1, min(page_size, max_cells // (cols * reps)))
        return rows, cols

    def page_window(
        self, page: int, page_size: int, max_cells: int = MAX_CELLS_PER_PAGE, max_columns: int = MAX_COLUMNS_PER_PAGE
    ) -> tuple[list[int], range]:
        """The prompt indices and column indices of page ``page`` (prompts page first, then settings)."""
        rows, cols = self.page_shape(page_size, max_cells, max_columns)
        row_blocks = max(1, math.ceil(len(self.prompt_order) / rows))
        col_block, row_block = divmod(page, row_blocks)
        first = col_block * cols
        return (
            self.prompt_order[row_block * rows : (row_block + 1) * rows],
            range(first, min(first + cols, len(self.columns))),
        )

    def pages(
        self, page_size: int, max_cells: int = MAX_CELLS_PER_PAGE, max_columns: int = MAX_COLUMNS_PER_PAGE
    ) -> int:
        rows, cols = self.page_shape(page_size, max_cells, max_columns)
        return max(1, math.ceil(len(self.prompt_order) / rows)) * max(1, math.ceil(len(self.columns) / cols))


def _key(value: Any) -> Any:
    try:
        hash(value)
        return value
    except TypeError:
        return json.dumps(value, sort_keys=True, default=str)


# --- HTML -------------------------------------------------------------------------------------

_CSS = """
<style>
.llg{font:12px/1.35 var(--jp-ui-font-family,sans-serif);color:var(--jp-ui-font-color1,#222)}
.llg .llg-head{padding:4px 2px 6px;font-weight:600}
.llg .llg-wrap{overflow-x:auto;max-width:100%}
.llg table{border-collapse:separate;border-spacing:3px;table-layout:fixed}
.llg th{font-weight:600;text-align:left;padding:2px 4px;background:var(--jp-layout-color2,#eee);
 white-space:nowrap;overflow:hidden;text-overflow:ellipsis;max-width:220px}
.llg th.llg-prompt{max-width:200px;white-space:normal;vertical-align:top}
.llg td{vertical-align:top;padding:0;width:220px;min-width:140px}
.llg .llg-cell{border:1px solid #ccc;border-left-width:4px;border-radius:3px;margin:0 0 2px;padding:2px 4px;
 background:var(--jp-layout-color0,#fff)}
.llg summary{cursor:pointer;list-style:none;display:block}
.llg summary::-webkit-details-marker{display:none}
.llg .llg-badge{display:inline-block;font-size:10px;font-weight:700;text-transform:uppercase;border-radius:2px;
 padding:0 4px;margin-right:4px;color:#fff}
.llg .llg-txt{white-space:pre-wrap;word-break:break-word;max-height:5.4em;overflow:hidden;display:block}
.llg details[open] .llg-txt{max-height:none}
.llg .llg-meta{color:#666;font-size:11px;display:block}
.llg .llg-more{font-size:11px;border-top:1px dashed #bbb;margin-top:3px;padding-top:3px}
.llg .llg-more pre{white-space:pre-wrap;word-break:break-word;margin:2px 0;max-height:24em;overflow:auto;
 background:var(--jp-layout-color2,#f4f4f4);padding:2px}
.llg .llg-more td{width:auto;min-width:0;padding:0 6px 0 0}
.llg .st-queued{border-color:#bbb;opacity:.75}.llg .st-queued .llg-badge{background:#999}
.llg .st-running{border-color:#1e88e5}.llg .st-running .llg-badge{background:#1e88e5}
.llg .st-retrying{border-color:#fb8c00}.llg .st-retrying .llg-badge{background:#fb8c00}
.llg .st-done{border-color:#43a047}.llg .st-done .llg-badge{background:#43a047}
.llg .st-error{border-color:#e53935;background:#fdecea}.llg .st-error .llg-badge{background:#e53935}
.llg .st-cached{border-color:#8e24aa}.llg .st-cached .llg-badge{background:#8e24aa}
.llg .st-cancelled{border-color:#555;
 background:repeating-linear-gradient(45deg,#f3f3f3,#f3f3f3 6px,#e6e6e6 6px,#e6e6e6 12px)}
.llg .st-cancelled .llg-badge{background:#555}
.llg .st-skipped{border-color:#bbb;border-style:dashed}.llg .st-skipped .llg-badge{background:#bbb}
</style>
"""

_CELL_PREVIEW = 600  # characters of a completion shown in the cell face before opening it


def _num(value: Any, fmt: str) -> str | None:
    if value is None or _isna(value) or not isinstance(value, (int, float)):
        return None
    return format(value, fmt)


def render_cell(cell: Cell) -> str:
    """One call as an HTML ``<details>``: state badge, text and metrics; open for everything else."""
    esc = html.escape
    state = cell.state
    badge = state
    if state == "running" and cell.attempt > 1:
        badge = f"running #{cell.attempt}"
    elif state == "retrying":
        badge = f"retrying #{cell.attempt}"
    text = cell.text
    face = text if len(text) <= _CELL_PREVIEW else text[:_CELL_PREVIEW] + "…"
    if state in ("error", "skipped", "cancelled", "retrying") and cell.note and not text:
        face = cell.note
    meta = []
    row = cell.row or {}
    for key, fmt, unit in (("latency_ms", ".0f", " ms"), ("output_tokens", "d", " tok")):
        shown = _num(row.get(key), fmt)
        if shown is not None:
            meta.append(shown + unit)
    if _num(row.get("cost_usd"), "f") is not None:
        meta.append(format_usd(float(row["cost_usd"])))
    repeat = f"r{cell.spec.repeat} " if cell.spec.repeat else ""
    parts = [
        f'<details class="llg-cell st-{state}" data-call="{esc(cell.spec.call_id)}"><summary>',
        f'<span class="llg-badge">{esc(badge)}</span>{esc(repeat)}',
        f'<span class="llg-txt">{esc(face)}</span>',
    ]
    if meta:
        parts.append(f'<span class="llg-meta">{esc(" · ".join(meta))}</span>')
    parts.append("</summary>")
    parts.append(_details(cell))
    parts.append("</details>")
    return "".join(parts)


def _details(cell: Cell) -> str:
    esc = html.escape
    row = cell.row or {}
    items: list[tuple[str, Any]] = [
        ("call_id", cell.spec.call_id),
        ("prompt_id", cell.spec.prompt_id),
        ("state", cell.state),
        ("repeat", cell.spec.repeat),
    ]
    items += [(k, v) for k, v in cell.spec.settings if v is not None]
    for key in (
        "response_model",
        "finish_reason",
        "input_tokens",
        "output_tokens",
        "tokens_estimated",
        "latency_ms",
        "ttft_ms",
        "tokens_per_s",
        "cost_usd",
        "attempts",
        "retries",
        "cached",
        "trace_id",
        "span_id",
        "error",
    ):
        value = row.get(key)
        if value is not None and not _isna(value) and value != "":
            if key == "cost_usd" and isinstance(value, (int, float)):
                value = format_usd(float(value))  # rounding to 3 decimals would show a small cost as 0
            items.append((key, round(value, 3) if isinstance(value, float) else value))
    if cell.note and not row.get("error"):
        items.append(("note", cell.note))
    table = "".join(f"<tr><td>{esc(str(k))}</td><td>{esc(_fmt_value(v))}</td></tr>" for k, v in items)
    text = cell.text if cell.text or cell.row else ""
    return (
        f'<div class="llg-more"><b>prompt</b><pre>{esc(cell.spec.prompt)}</pre>'
        f"<b>completion</b><pre>{esc(text)}</pre><table>{table}</table></div>"
    )


class HtmlView:
    """Renders a :class:`GridState` page to HTML, re-rendering only the cells that changed."""

    def __init__(self, state: GridState, page_size: int = 20, max_cells: int = MAX_CELLS_PER_PAGE) -> None:
        self.state = state
        self.page_size = max(1, int(page_size))
        self.max_cells = max(1, int(max_cells))
        self.page = 0
        self._cache: dict[str, str] = {}

    def pages(self) -> int:
        return self.state.pages(self.page_size, self.max_cells)

    def render(self, dirty: Iterable[str] = ()) -> str:
        st = self.state
        with st.lock:
            for call_id in dirty:
                self._cache.pop(call_id, None)
            pages = self.pages()
            self.page = min(max(0, self.page), pages - 1)
            shown, columns = st.page_window(self.page, self.page_size, self.max_cells)
            esc = html.escape
            out = [_CSS, '<div class="llg"><div class="llg-head">', esc(st.header_text())]
            if len(shown) < len(st.prompt_order):
                out.append(esc(f" · prompts {shown[0] + 1}–{shown[-1] + 1} of {len(st.prompt_order)}"))
            if len(columns) < len(st.columns):
                out.append(esc(f" · settings {columns[0] + 1}–{columns[-1] + 1} of {len(st.columns)}"))
            out.append('</div><div class="llg-wrap"><table><thead><tr><th>prompt</th>')
            for col in columns:
                label = st.column_label(col)
                out.append(f'<th title="{esc(label)}">{esc(label)}</th>')
            out.append("</tr></thead><tbody>")
            for p_index in shown:
                prompt_id, prompt = st.prompts[p_index]
                short = prompt if len(prompt) <= 120 else prompt[:120] + "…"
                out.append(f'<tr><th class="llg-prompt" title="{esc(prompt_id)}">{esc(short)}</th>')
                for col in columns:
                    out.append("<td>")
                    for call_id in st.layout.get((p_index, col), ()):
                        frag = self._cache.get(call_id)
                        if frag is None:
                            frag = self._cache[call_id] = render_cell(st.cells[call_id])
                        out.append(frag)
                    out.append("</td>")
                out.append("</tr>")
            out.append("</tbody></table></div></div>")
            return "".join(out)


def render_html(state: GridState, page: int = 0, page_size: int = 20, max_cells: int = MAX_CELLS_PER_PAGE) -> str:
    """The HTML of one page of ``state`` (a pure function of the state)."""
    view = HtmlView(state, page_size, max_cells)
    view.page = page
    return view.render()


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

# The page is drawn from the kernel's HTML as an ipywidgets HTML widget would, except that cells a
# reader opened stay open: a plain HTML widget replaces its content at every redraw, closing an
# opened cell within a fraction of a second while the rest of the sweep streams.
_GRID_ESM = """
function render({ model, el }) {
  const draw = () => {
    const open = new Set(Array.from(el.querySelectorAll("details.llg-cell[open]"), (d) => d.dataset.call));
    el.innerHTML = model.get("value");
    for (const d of el.querySelectorAll("details.llg-cell")) {
      if (open.has(d.dataset.call)) d.open = true;
    }
  };
  draw();
  model.on("change:value", draw);
  return () => model.off("change:value", draw);
}
export default { render };
"""

_grid_widget_class: list[type] = []


def _grid_html_widget() -> type:
    """The widget class that shows the grid's HTML (built once: anywidget compiles it on first use)."""
    if not _grid_widget_class:
        import anywidget
        import traitlets

        class GridHTML(anywidget.AnyWidget):  # type: ignore[misc]
            """One page of the sweep grid as HTML; opened cells survive redraws."""

            _esm = _GRID_ESM
            value = traitlets.Unicode("").tag(sync=True)

        _grid_widget_class.append(GridHTML)
    return _grid_widget_class[0]


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
        self.min_interval = 1.0 / min(float(max_rate), MAX_UPDATES_PER_S)
        self.updates = 0  # HTML pushes to the front end
        self._html = _grid_html_widget()(layout=w.Layout(width="100%"))
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
        self._next_push = 0.0  # monotonic time before which nothing is sent
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
            wait = self._next_push - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                break
            self._push()

    def _push(self, force: bool = False) -> None:
        """Send the current page if it changed, never more often than ``min_interval`` nor faster
        than :data:`MAX_BYTES_PER_S` (a page of long prompts is sent less often)."""
        with self._push_lock:
            wait = self._next_push - time.monotonic()
            if wait > 0 and self.updates:
                time.sleep(wait)  # the final push also respects the rate bound
            with self.state.lock:
                idle = self.state.finished or self.state.started_at is None  # no clock to tick
                if not force and not self.state.dirty and not self.state.header_dirty and idle:
                    return
                dirty = self.state.take_dirty()
                value = self.view.render(dirty)
            sent = 0
            if value != self._html.value:
                self._html.value = value
                self.updates += 1
                sent = len(value)
            self._next_push = time.monotonic() + max(self.min_interval, sent / MAX_BYTES_PER_S)

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


__all__ = [
    "MAX_BYTES_PER_S",
    "MAX_CELLS_PER_PAGE",
    "MAX_COLUMNS_PER_PAGE",
    "MAX_UPDATES_PER_S",
    "STATES",
    "Cell",
    "CellSpec",
    "GridState",
    "HtmlView",
    "SweepGrid",
    "render_cell",
    "render_html",
    "route_clicks_to_subshell",
    "specs_from_calls",
    "specs_from_rows",
]
