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
    "STATES",
    "Cell",
    "CellSpec",
    "GridState",
    "Pacer",
    "fmt_value",
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
_SHORT = {
    "temperature": "T",
    "top_p": "top_p",
    "max_tokens": "max_tokens",
    "seed": "seed",
    "template_name": "template",
    "system_name": "system",
}


@dataclasses.dataclass(frozen=True)
class CellSpec:
    """What the grid knows about one planned call before it runs."""

    call_id: str
    prompt_index: int
    prompt_id: str
    prompt: str
    settings: tuple[tuple[str, Any], ...]  # (name, value) pairs that place the call in a column
    repeat: int = 0
    messages: tuple[dict[str, Any], ...] = ()  # the whole rendered message list sent (system prompt included)

    def message_text(self) -> str:
        """The whole request as the cell details show it: every message as ``role: content``
        (just the prompt when the call is a single user message or the messages are unknown)."""
        msgs = [m for m in self.messages if isinstance(m, Mapping)]
        if len(msgs) <= 1:
            return self.prompt
        parts = []
        for m in msgs:
            content = m.get("content")
            text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
            parts.append(f"[{m.get('role', '?')}]\n{text}")
        return "\n\n".join(parts)


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
    variants = variants or {}
    pairs = [
        ("model", model),
        # prompt variants are settings like temperature: a column per name when they vary
        ("template_name", variants.get("template_name")),
        ("system_name", variants.get("system_name")),
        ("temperature", temperature),
        ("top_p", top_p),
        ("max_tokens", max_tokens),
        ("seed", base_seed),
    ]
    pairs += sorted((str(k), v) for k, v in params.items())
    return tuple((k, None if is_na(v) else v) for k, v in pairs)


def specs_from_calls(calls: Sequence[Any]) -> list[CellSpec]:
    """Cell specs from a sweep's planned ``Call`` objects."""
    return [
        CellSpec(
            c.call_id,
            c.prompt_index,
            c.prompt_id,
            c.prompt,
            _settings_of(
                c.qualified_model,
                c.temperature,
                c.top_p,
                c.max_tokens,
                c.seed,
                c.repeat,
                c.params,
                {"template_name": c.template_name, "system_name": c.system_name},
            ),
            c.repeat,
            tuple(c.messages),
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
        repeat = 0 if is_na(repeat) else int(repeat)
        seed = row.get("seed")
        seed = None if is_na(seed) else int(seed)
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
                    {k: row.get(k) for k in ("template_name", "system_name")},
                ),
                repeat,
                tuple(row.get("messages") or ()),
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
            cost = row.get("spent_usd", row.get("cost_usd") if kind == "finished" else 0.0)  # a hit paid nothing
            if isinstance(cost, (int, float)) and not is_na(cost):
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
            return fmt_value(values[0])
        return " · ".join(
            fmt_value(v) if n == "model" else f"{_SHORT.get(n, n)}={fmt_value(v)}"
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
