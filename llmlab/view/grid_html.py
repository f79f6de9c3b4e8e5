"""The live sweep grid drawn as HTML (and the few lines of JavaScript that redraw it in the browser).

:func:`render_html` turns one page of a :class:`~llmlab.view.grid_state.GridState` into HTML: cells carry
their state as a CSS class, and each cell is a ``<details>`` element, so clicking it opens the whole prompt,
completion and call details in the browser without a round trip to the kernel. :class:`HtmlView`
re-renders only the cells that changed, which keeps the kernel's CPU cost low while a sweep streams.
:data:`GRID_ESM` is the front-end module of the widget that shows the HTML (see :mod:`llmlab.view.widgets`).
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

from llmlab.pricing import format_usd
from llmlab.text import is_na, snip
from llmlab.view.grid_state import MAX_CELLS_PER_PAGE, Cell, GridState, fmt_value

__all__ = ["GRID_ESM", "HtmlView", "render_cell", "render_html"]

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
    if is_na(value) or not isinstance(value, (int, float)):
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
    # cut, not snip(): the face keeps the completion's line breaks (it is drawn pre-wrap)
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
        if not is_na(value) and value != "":
            if key == "cost_usd" and isinstance(value, (int, float)):
                value = format_usd(float(value))  # rounding to 3 decimals would show a small cost as 0
            items.append((key, round(value, 3) if isinstance(value, float) else value))
    if cell.note and not row.get("error"):
        items.append(("note", cell.note))
    table = "".join(f"<tr><td>{esc(str(k))}</td><td>{esc(fmt_value(v))}</td></tr>" for k, v in items)
    text = cell.text if cell.text or cell.row else ""
    return (
        f'<div class="llg-more"><b>prompt</b><pre>{esc(cell.spec.message_text())}</pre>'
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
                short = snip(prompt, 121)  # the header cell wraps; a long prompt shows its first 120 characters
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


# The page is drawn from the kernel's HTML as an ipywidgets HTML widget would, except that cells a
# reader opened stay open: a plain HTML widget replaces its content at every redraw, closing an
# opened cell within a fraction of a second while the rest of the sweep streams.
GRID_ESM = """
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
