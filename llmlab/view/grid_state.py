"""The live sweep grid as plain data: cells moved by runner events, header counts, paging and push pacing.

:class:`GridState` is driven by runner events (``llmlab.events``): each cell moves through
queued → running → retrying → done / error / cached / cancelled / skipped, and the state keeps the header
counts (n/N, elapsed, spend against the budget, errors) and a set of *dirty* cells. It is thread-safe and
needs no front end, so the grid's logic is tested without a browser or a kernel. Paging keeps a sweep of
thousands of calls to one page of about :data:`MAX_CELLS_PER_PAGE` cells in the browser; :class:`Pacer`
decides when the next page may be sent (at most ``max_rate`` times a second, capped at
:data:`MAX_UPDATES_PER_S`, and no faster than :data:`MAX_BYTES_PER_S`). Drawing the state is
:mod:`llmlab.view.grid_html`'s business, showing it :mod:`llmlab.view.widgets`'.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from llmlab.events import Event
from llmlab.pricing import format_usd
from llmlab.text import is_na

__all__ = [
    "FINAL_STATES",
    "MAX_BYTES_PER_S",
    "MAX_CELLS_PER_PAGE",
    "MAX_COLUMNS_PER_PAGE",
    "MAX_UPDATES_PER_S",
    "SHOW_FILTERS",
    "STATES",
    "VARIANT_SETTINGS",
    "Cell",
    "CellSpec",
    "GridFilter",
    "GridState",
    "Pacer",
    "fmt_value",
    "rating_value",
    "specs_from_calls",
    "specs_from_rows",
]

STATES = ("queued", "running", "retrying", "done", "error", "cached", "cancelled", "skipped")
FINAL_STATES = frozenset({"done", "error", "cached", "cancelled", "skipped"})
MAX_UPDATES_PER_S = 30.0  # the bound on front-end updates for the whole grid (issue 5)
# one page of the grid holds about this many calls and at most this many settings (columns): the
# browser and each update stay small however large the sweep
MAX_CELLS_PER_PAGE = 200
# and the updates of a heavy page (long prompts, long answers) are spaced to send at most this much
MAX_BYTES_PER_S = 2_000_000
MAX_COLUMNS_PER_PAGE = 16
_SHORT = {"temperature": "T", "top_p": "top_p", "max_tokens": "max_tokens", "seed": "seed"}
#: prompt variants swept as an axis (``template=`` / ``system=`` lists or dicts): when they vary the grid groups
#: its columns under a header row naming them (``template_name=terse``)
VARIANT_SETTINGS = ("template_name", "system_name")
#: what "show only" can keep: every cell, or only errors / retried / rated / unrated calls
SHOW_FILTERS = ("all", "errors", "retried", "rated", "unrated")


@dataclasses.dataclass(frozen=True)
class CellSpec:
    """What the grid knows about one planned call before it runs."""

    call_id: str
    prompt_index: int
    prompt_id: str
    prompt: str
    settings: tuple[tuple[str, Any], ...]  # (name, value) pairs that place the call in a column
    repeat: int = 0
    messages: tuple[Mapping[str, Any], ...] = ()  # the whole rendered message list sent, when known


@dataclasses.dataclass
class Cell:
    """The live state of one call."""

    spec: CellSpec
    state: str = "queued"
    parts: list[str] = dataclasses.field(default_factory=list)
    attempt: int = 0
    note: str = ""  # retry reason, error message, skip reason
    row: dict[str, Any] | None = None
    rating: int | None = None  # +1/-1 (thumbs) or 1..5, from the grid's buttons or the rows' ``rating``
    rating_note: str | None = None
    retried: bool = False  # at least one attempt failed and was retried

    @property
    def text(self) -> str:
        return "".join(self.parts)


def rating_value(value: Any) -> int | None:
    """A rating as the grid keeps it: +1/-1 or 1..5, None for none (NA, empty, out of range)."""
    if value is None or isinstance(value, bool) or is_na(value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not number.is_integer() or int(number) not in (-1, 1, 2, 3, 4, 5):
        return None
    return int(number)


@dataclasses.dataclass(frozen=True)
class GridFilter:
    """Which calls the grid shows and in which prompt order (applied before paging).

    ``show`` keeps only errors / retried / rated / unrated calls (:data:`SHOW_FILTERS`); ``search`` keeps
    calls whose prompt or completion contains the text (case-insensitive); ``sort_by`` orders the prompt
    rows by the mean of a numeric row column (``latency_ms``, ``rating``, a score) over their shown calls,
    rows without a value last.
    """

    show: str = "all"
    search: str = ""
    sort_by: str | None = None
    descending: bool = False

    def __post_init__(self) -> None:
        if self.show not in SHOW_FILTERS:
            raise ValueError(f"show must be one of {SHOW_FILTERS}, not {self.show!r}")

    @property
    def active(self) -> bool:
        return self.show != "all" or bool(self.search.strip()) or bool(self.sort_by)

    def keeps(self, cell: Cell) -> bool:
        """Whether ``cell`` passes the show filter and the search."""
        if self.show == "errors" and cell.state != "error":
            return False
        if self.show == "retried" and not cell.retried:
            return False
        if self.show == "rated" and cell.rating is None:
            return False
        if self.show == "unrated" and (cell.rating is not None or cell.state not in ("done", "error", "cached")):
            return False
        query = self.search.strip().casefold()
        return not query or query in cell.spec.prompt.casefold() or query in cell.text.casefold()


def fmt_value(value: Any) -> str:
    """A setting's value as the grid shows it (floats without trailing zeros)."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _settings_of(
    model: Any,
    temperature: Any,
    top_p: Any,
    max_tokens: Any,
    seed: Any,
    repeat: int,
    params: Mapping[str, Any],
    variants: Mapping[str, Any] | None = None,
) -> tuple[tuple[str, Any], ...]:
    # a seeded sweep gives repeat r the seed base+r: the column keeps the base so repeats group
    base_seed = seed - repeat if isinstance(seed, int) and not isinstance(seed, bool) else seed
    # prompt variants first: they group the columns under a header of their own
    pairs = [(name, (variants or {}).get(name)) for name in VARIANT_SETTINGS]
    pairs += [
        ("model", model),
        ("temperature", temperature),
        ("top_p", top_p),
        ("max_tokens", max_tokens),
        ("seed", base_seed),
    ]
    pairs += sorted((str(k), v) for k, v in params.items())
    return tuple((k, None if is_na(v) else v) for k, v in pairs)


def _variants_of(source: Any) -> dict[str, Any]:
    """``template_name`` / ``system_name`` of a planned call (attribute or ``data`` entry) or a row (key)."""
    out: dict[str, Any] = {}
    for name in VARIANT_SETTINGS:
        if isinstance(source, Mapping):
            value = source.get(name)
        else:
            value = getattr(source, name, None)
            if value is None:
                value = (getattr(source, "data", None) or {}).get(name)
        out[name] = None if is_na(value) else value
    return out


def _messages_of(value: Any) -> tuple[Mapping[str, Any], ...]:
    if isinstance(value, str) and value.startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            return ()
    if isinstance(value, (list, tuple)) and all(isinstance(m, Mapping) for m in value):
        return tuple(value)
    return ()


def specs_from_calls(calls: Sequence[Any]) -> list[CellSpec]:
    """Cell specs from a sweep's planned ``Call`` objects."""
    return [
        CellSpec(
            c.call_id,
            c.prompt_index,
            c.prompt_id,
            c.prompt,
            _settings_of(
                c.qualified_model, c.temperature, c.top_p, c.max_tokens, c.seed, c.repeat, c.params, _variants_of(c)
            ),
            c.repeat,
            _messages_of(list(getattr(c, "messages", ()) or ())),
        )
        for c in calls
    ]


def specs_from_rows(
    rows: Iterable[Mapping[str, Any]], messages: Mapping[str, Sequence[Mapping[str, Any]]] | None = None
) -> list[CellSpec]:
    """Cell specs from stored result rows (``SweepResult.df`` records), prompts in first-seen order.

    ``messages`` maps call ids to the message lists sent, when known (else a row's ``messages`` is used).
    """
    index: dict[str, int] = {}
    specs = []
    for row in rows:
        prompt_id = str(row.get("prompt_id"))
        p_index = index.setdefault(prompt_id, len(index))
        raw = row.get("params")
        params = json.loads(raw) if isinstance(raw, str) and raw else {}
        raw_repeat, raw_seed = row.get("repeat"), row.get("seed")
        repeat = 0 if raw_repeat is None or is_na(raw_repeat) else int(raw_repeat)
        seed = None if raw_seed is None or is_na(raw_seed) else int(raw_seed)
        prompt = row.get("prompt")
        specs.append(
            CellSpec(
                str(row["call_id"]),
                p_index,
                prompt_id,
                "" if is_na(prompt) else str(prompt),
                _settings_of(
                    row.get("model"),
                    row.get("temperature"),
                    row.get("top_p"),
                    row.get("max_tokens"),
                    seed,
                    repeat,
                    params,
                    _variants_of(row),
                ),
                repeat,
                _messages_of(list((messages or {}).get(str(row["call_id"]), ())) or row.get("messages")),
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
        self.filter = GridFilter()
        self._visible: tuple[Any, list[int]] | None = None  # (key, prompt rows) of the last filter run

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
        found = self.cells.get(event.call_id or "")
        if found is None:
            return False
        cell = found
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
            cell.retried = True
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
            retries = row.get("retries")
            if isinstance(retries, (int, float)) and not is_na(retries) and retries > 0:
                cell.retried = True
            if "rating" in row and rating_value(row.get("rating")) is not None:
                cell.rating = rating_value(row.get("rating"))
                note = row.get("rating_note")
                cell.rating_note = None if is_na(note) or note == "" else str(note)
            cost = row.get("cost_usd")
            if kind == "finished" and isinstance(cost, (int, float)) and not is_na(cost):
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

    def set_rating(self, call_id: str, value: Any, note: str | None = None) -> bool:
        """Record a rating shown in the grid (None clears it); returns whether the call is in the grid."""
        with self.lock:
            cell = self.cells.get(call_id)
            if cell is None:
                return False
            cell.rating = rating_value(value)
            cell.rating_note = note if note else None
            self.dirty.add(call_id)
            self.version += 1
            return True

    def set_filter(self, grid_filter: GridFilter) -> None:
        """Show only the calls ``grid_filter`` keeps, in its prompt order (the page is reset by the view)."""
        with self.lock:
            self.filter = grid_filter
            self.header_dirty = True
            self.version += 1

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

    def column_label(self, col: int, groups: bool = True) -> str:
        """A column's header; with ``groups=False`` without the prompt variants (shown as a group above)."""
        pairs = [(n, v) for n, v in zip(self.column_names, self.columns[col]) if groups or n not in VARIANT_SETTINGS]
        if [n for n, _ in pairs] == ["model"]:
            return fmt_value(pairs[0][1])
        return " · ".join(fmt_value(v) if n == "model" else f"{_SHORT.get(n, n)}={fmt_value(v)}" for n, v in pairs)

    def column_groups(self, columns: Iterable[int]) -> list[tuple[str, int]]:
        """(label, span) of the variant header row over ``columns``: runs of adjacent columns that share
        their ``template_name`` / ``system_name``; empty when no variant varies."""
        names = [n for n in self.column_names if n in VARIANT_SETTINGS]
        if not names:
            return []
        out: list[tuple[str, int]] = []
        for col in columns:
            values = dict(zip(self.column_names, self.columns[col]))
            label = " · ".join(f"{n}={fmt_value(values.get(n))}" for n in names)
            if out and out[-1][0] == label:
                out[-1] = (label, out[-1][1] + 1)
            else:
                out.append((label, 1))
        return out

    def cell_shown(self, call_id: str) -> bool:
        """Whether the current filter keeps this call."""
        return self.filter.keeps(self.cells[call_id])

    def visible_prompts(self) -> list[int]:
        """The prompt rows the filter keeps (a row with at least one kept call), in the filter's order."""
        with self.lock:
            flt = self.filter
            if not flt.active:
                return self.prompt_order
            key = (flt, self.version)
            if self._visible is not None and self._visible[0] == key:
                return self._visible[1]
            kept: dict[int, list[Cell]] = {}
            for (p_index, _col), ids in self.layout.items():
                for call_id in ids:
                    cell = self.cells[call_id]
                    if flt.keeps(cell):
                        kept.setdefault(p_index, []).append(cell)
            rows = [p for p in self.prompt_order if p in kept]
            if flt.sort_by:
                scores = {p: _mean_of(kept[p], flt.sort_by) for p in rows}
                known = sorted((p for p in rows if scores[p] is not None), key=lambda p: scores[p] or 0.0)
                if flt.descending:
                    known.reverse()
                rows = known + [p for p in rows if scores[p] is None]
            self._visible = (key, rows)
            return rows

    def numeric_columns(self) -> list[str]:
        """Row columns with a number in some call (what prompt rows can be sorted by), ``rating`` included."""
        with self.lock:
            names: set[str] = set()
            for cell in self.cells.values():
                for k, v in (cell.row or {}).items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and not is_na(v):
                        names.add(str(k))
                if cell.rating is not None:
                    names.add("rating")
            first = [n for n in ("rating", "latency_ms", "ttft_ms", "output_tokens", "cost_usd") if n in names]
            return first + sorted(names - set(first))

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
        if self.filter.active:
            shown = self.visible_prompts()
            parts.append(f"filter: {len(shown)} of {len(self.prompt_order)} prompts")
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

    def needs_push(self) -> bool:
        """Whether the page shown is out of date: a cell or the header changed, or a running sweep's
        elapsed time ticks (a finished or not yet started sweep has no clock to tick)."""
        with self.lock:
            idle = self.finished or self.started_at is None
            return bool(self.dirty) or self.header_dirty or not idle

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
        order = self.visible_prompts()
        row_blocks = max(1, math.ceil(len(order) / rows))
        col_block, row_block = divmod(page, row_blocks)
        first = col_block * cols
        return (
            order[row_block * rows : (row_block + 1) * rows],
            range(first, min(first + cols, len(self.columns))),
        )

    def pages(
        self, page_size: int, max_cells: int = MAX_CELLS_PER_PAGE, max_columns: int = MAX_COLUMNS_PER_PAGE
    ) -> int:
        rows, cols = self.page_shape(page_size, max_cells, max_columns)
        return max(1, math.ceil(len(self.visible_prompts()) / rows)) * max(1, math.ceil(len(self.columns) / cols))


def _mean_of(cells: Sequence[Cell], column: str) -> float | None:
    values = []
    for cell in cells:
        value = cell.rating if column == "rating" else (cell.row or {}).get(column)
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        if number is not None and not is_na(number) and not math.isnan(float(number)):
            values.append(float(number))
    return sum(values) / len(values) if values else None


def _key(value: Any) -> Any:
    try:
        hash(value)
        return value
    except TypeError:
        return json.dumps(value, sort_keys=True, default=str)


@dataclasses.dataclass
class Pacer:
    """When the grid may send its next page: never more often than ``min_interval`` seconds apart, and a
    heavy page (long prompts, long answers) spaced so that no more than :data:`MAX_BYTES_PER_S` go out.

    Times are monotonic seconds passed in by the caller, so the decisions are testable with a fake clock.
    """

    min_interval: float
    next_at: float = 0.0  # monotonic time before which nothing is sent

    @classmethod
    def for_rate(cls, max_rate: float) -> Pacer:
        """A pacer allowing ``max_rate`` pages a second, capped at :data:`MAX_UPDATES_PER_S`."""
        return cls(1.0 / min(float(max_rate), MAX_UPDATES_PER_S))

    def wait_s(self, now: float) -> float:
        """Seconds to wait from ``now`` before the next page may be sent (zero or less: send now)."""
        return self.next_at - now

    def sent(self, now: float, nbytes: int) -> None:
        """Record that a page of ``nbytes`` went out at ``now`` (0 when nothing changed and nothing was sent)."""
        self.next_at = now + max(self.min_interval, nbytes / MAX_BYTES_PER_S)
