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

__all__ = ["GRID_CSS", "GRID_ESM", "STATIC_GRID_JS", "HtmlView", "render_cell", "render_html", "render_static"]

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
.llg th.llg-group{text-align:center;background:var(--jp-layout-color3,#ddd)}
.llg .llg-rate{float:right;white-space:nowrap}
.llg .llg-rate button,.llg .llg-rating button{font-size:11px;line-height:1;padding:1px 3px;margin-left:1px;cursor:pointer;
 border:1px solid #ccc;border-radius:3px;background:var(--jp-layout-color1,#fff);opacity:.45}
.llg .llg-rate button.on,.llg .llg-rating button.on{opacity:1;border-color:#1e88e5;background:#e3f2fd}
.llg button.llg-pending{outline:1px dashed #1e88e5}
.llg .llg-stars{font-size:11px;font-weight:700;color:#f9a825;margin-left:3px}
.llg .llg-rating{margin:3px 0}.llg .llg-rating input{width:60%;font-size:11px}
.llg .llg-msg{margin:2px 0}.llg .llg-msg b{font-weight:600;color:#555}
.llg .llg-empty{color:#666;padding:6px}
.llg .llg-pager button{margin-right:4px}
</style>
"""
GRID_CSS = _CSS

_CELL_PREVIEW = 600  # characters of a completion shown in the cell face before opening it


def _num(value: Any, fmt: str) -> str | None:
    if is_na(value) or not isinstance(value, (int, float)):
        return None
    return format(value, fmt)


def _rating_face(cell: Cell, interactive: bool) -> str:
    """The 👍/👎 buttons on a cell's face (a static report shows only the rating given)."""
    r = cell.rating
    stars = f'<span class="llg-stars" title="score {r}/5">★{r}</span>' if r is not None and r >= 2 else ""
    if not interactive:
        thumb = {1: "👍", -1: "👎"}.get(r, "") if r is not None else ""
        return f'<span class="llg-rate">{thumb}{stars}</span>' if thumb or stars else ""
    up = ' class="on"' if r == 1 else ""
    down = ' class="on"' if r == -1 else ""
    # kept short: a page holds hundreds of cells and is re-sent while the sweep streams
    return f'<span class="llg-rate">{stars}<button data-rate="1"{up}>👍</button><button data-rate="-1"{down}>👎</button></span>'


def _rating_details(cell: Cell, interactive: bool) -> str:
    """The rating in a cell's details: read-only in a static report; in the live grid an empty slot that the
    front end fills with the 1–5 score buttons and the note field when the cell is opened."""
    esc = html.escape
    note = cell.rating_note or ""
    if interactive:
        return '<div class="llg-rating"></div>'
    if cell.rating is None and not note:
        return ""
    given = "–" if cell.rating is None else str(cell.rating)
    return f'<div class="llg-rating"><b>rating</b> {given} {esc(note)}</div>'


def render_cell(cell: Cell, interactive: bool = True) -> str:
    """One call as an HTML ``<details>``: state badge, rating buttons, text and metrics; open for everything else.

    ``interactive=False`` (the static report) shows the rating given instead of buttons.
    """
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
    rated = f' data-note="{esc(cell.rating_note)}"' if cell.rating_note else ""
    if cell.rating is not None:
        rated += f' data-rating="{cell.rating}"'
        state_class = f"st-{state} rt-{'down' if cell.rating < 0 else 'up' if cell.rating == 1 else 'score'}"
    else:
        state_class = f"st-{state}"
    parts = [
        f'<details class="llg-cell {state_class}" data-call="{esc(cell.spec.call_id)}"{rated}><summary>',
        _rating_face(cell, interactive),
        f'<span class="llg-badge">{esc(badge)}</span>{esc(repeat)}',
        f'<span class="llg-txt">{esc(face)}</span>',
    ]
    if meta:
        parts.append(f'<span class="llg-meta">{esc(" · ".join(meta))}</span>')
    parts.append("</summary>")
    parts.append(_details(cell, interactive))
    parts.append("</details>")
    return "".join(parts)


def _messages_html(cell: Cell) -> str:
    """The whole message list sent, when it says more than the prompt (a system message, several turns)."""
    msgs = cell.spec.messages
    if not msgs or (len(msgs) == 1 and msgs[0].get("content") == cell.spec.prompt):
        return ""
    esc = html.escape
    items = []
    for m in msgs:
        content = m.get("content", "")
        text = content if isinstance(content, str) else fmt_value(content)
        items.append(f'<div class="llg-msg"><b>{esc(str(m.get("role", "?")))}</b><pre>{esc(text)}</pre></div>')
    return f"<b>messages</b>{''.join(items)}"


def _details(cell: Cell, interactive: bool = True) -> str:
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
        f'<div class="llg-more">{_rating_details(cell, interactive)}<b>prompt</b><pre>{esc(cell.spec.prompt)}</pre>'
        f"{_messages_html(cell)}<b>completion</b><pre>{esc(text)}</pre><table>{table}</table></div>"
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
            visible = st.visible_prompts()
            if shown and len(shown) < len(visible):
                first = visible.index(shown[0]) + 1
                out.append(esc(f" · prompts {first}–{first + len(shown) - 1} of {len(visible)}"))
            if len(columns) < len(st.columns):
                out.append(esc(f" · settings {columns[0] + 1}–{columns[-1] + 1} of {len(st.columns)}"))
            out.append('</div><div class="llg-wrap"><table><thead>')
            out.append(_header_rows(st, columns))
            out.append("</thead><tbody>")
            filtered = st.filter.active
            for p_index in shown:
                out.append(_prompt_header(st, p_index))
                for col in columns:
                    out.append("<td>")
                    for call_id in st.layout.get((p_index, col), ()):
                        if filtered and not st.cell_shown(call_id):
                            continue
                        frag = self._cache.get(call_id)
                        if frag is None:
                            frag = self._cache[call_id] = render_cell(st.cells[call_id])
                        out.append(frag)
                    out.append("</td>")
                out.append("</tr>")
            out.append("</tbody></table>")
            if not shown:
                out.append('<div class="llg-empty">no call matches the filter</div>')
            out.append("</div></div>")
            return "".join(out)


def _header_rows(st: GridState, columns: Iterable[int]) -> str:
    """The column headers: a group row naming the prompt variants (``template_name=…``) when they vary."""
    esc = html.escape
    columns = list(columns)
    out = []
    groups = st.column_groups(columns)
    if groups:
        out.append("<tr><th></th>")
        for label, span in groups:
            out.append(f'<th class="llg-group" colspan="{span}" title="{esc(label)}">{esc(label)}</th>')
        out.append("</tr>")
    out.append("<tr><th>prompt</th>")
    for col in columns:
        label = st.column_label(col, groups=not groups)
        out.append(f'<th title="{esc(label)}">{esc(label)}</th>')
    out.append("</tr>")
    return "".join(out)


def _prompt_header(st: GridState, p_index: int, attrs: str = "") -> str:
    esc = html.escape
    prompt_id, prompt = st.prompts[p_index]
    short = snip(prompt, 121)  # the header cell wraps; a long prompt shows its first 120 characters
    return f'<tr{attrs}><th class="llg-prompt" title="{esc(prompt_id)}">{esc(short)}</th>'


def render_static(state: GridState, page_size: int = 20) -> str:
    """The whole grid for a static page (the shareable report): every prompt row and setting, ratings shown
    read-only, paged in the browser by :data:`STATIC_GRID_JS` (rows carry ``data-page``)."""
    esc = html.escape
    st = state
    with st.lock:
        size = max(1, int(page_size))
        order = st.prompt_order
        pages = max(1, -(-len(order) // size))
        columns = range(len(st.columns))
        out = [
            '<div class="llg llg-static" data-pages="',
            str(pages),
            '"><div class="llg-head">',
            esc(st.header_text()),
            f' · <span class="llg-pageinfo">page 1/{pages}</span></div>',
            '<div class="llg-pager"><button type="button" class="llg-prev">◀</button>'
            '<button type="button" class="llg-next">▶</button></div>',
            '<div class="llg-wrap"><table><thead>',
            _header_rows(st, columns),
            "</thead><tbody>",
        ]
        for i, p_index in enumerate(order):
            page = i // size
            hidden = ' style="display:none"' if page else ""
            out.append(_prompt_header(st, p_index, f' data-page="{page}"{hidden}'))
            for col in columns:
                out.append("<td>")
                for call_id in st.layout.get((p_index, col), ()):
                    out.append(render_cell(st.cells[call_id], interactive=False))
                out.append("</td>")
            out.append("</tr>")
        out.append("</tbody></table></div></div>")
        return "".join(out)


#: Pages a :func:`render_static` grid in the browser (no kernel): ◀ ▶ show one page of prompt rows.
STATIC_GRID_JS = """
for (const grid of document.querySelectorAll(".llg-static")) {
  const pages = Number(grid.dataset.pages);
  let page = 0;
  const show = () => {
    for (const row of grid.querySelectorAll("tr[data-page]")) {
      row.style.display = Number(row.dataset.page) === page ? "" : "none";
    }
    grid.querySelector(".llg-pageinfo").textContent = `page ${page + 1}/${pages}`;
    grid.querySelector(".llg-prev").disabled = page <= 0;
    grid.querySelector(".llg-next").disabled = page >= pages - 1;
  };
  grid.querySelector(".llg-prev").addEventListener("click", () => { page = Math.max(0, page - 1); show(); });
  grid.querySelector(".llg-next").addEventListener("click", () => { page = Math.min(pages - 1, page + 1); show(); });
  show();
}
"""


def render_html(state: GridState, page: int = 0, page_size: int = 20, max_cells: int = MAX_CELLS_PER_PAGE) -> str:
    """The HTML of one page of ``state`` (a pure function of the state)."""
    view = HtmlView(state, page_size, max_cells)
    view.page = page
    return view.render()


# The page is drawn from the kernel's HTML as an ipywidgets HTML widget would, except that cells a
# reader opened stay open: a plain HTML widget replaces its content at every redraw, closing an
# opened cell within a fraction of a second while the rest of the sweep streams.
# A rating button sends {event: "rate", call_id, value, note} to the kernel at once (value null clears: a click
# on the rating already given); the kernel's next redraw shows the rating. A note being typed survives redraws.
GRID_ESM = """
function render({ model, el }) {
  const draw = () => {
    const open = new Set(Array.from(el.querySelectorAll("details.llg-cell[open]"), (d) => d.dataset.call));
    const typed = new Map();
    let focus = null;
    for (const input of el.querySelectorAll("input.llg-note")) {
      const call = input.closest("details.llg-cell").dataset.call;
      if (input.value !== input.defaultValue) typed.set(call, input.value);
      if (document.activeElement === input) focus = [call, input.selectionStart, input.selectionEnd];
    }
    el.innerHTML = model.get("value");
    for (const d of el.querySelectorAll("details.llg-cell")) {
      const call = d.dataset.call;
      if (open.has(call)) { d.open = true; fill(d); }
      const input = d.querySelector("input.llg-note");
      if (!input) continue;
      if (typed.has(call)) input.value = typed.get(call);
      if (focus && focus[0] === call) { input.focus(); input.setSelectionRange(focus[1], focus[2]); }
    }
  };
  const fill = (d) => {  // the score buttons and the note field of an opened cell
    const slot = d.querySelector(".llg-rating");
    if (!slot || slot.childElementCount) return;
    const r = d.dataset.rating === undefined ? null : Number(d.dataset.rating);
    let h = "<b>score</b> ";
    for (let n = 1; n <= 5; n++) h += `<button data-rate="${n}"${r === n && n > 1 ? ' class="on"' : ""}>${n}</button>`;
    slot.innerHTML = h + ' <input class="llg-note" type="text" placeholder="note" data-lm-suppress-shortcuts="true">'
      + '<button data-rate="note">save note</button>';
    const input = slot.querySelector("input");
    input.value = input.defaultValue = d.dataset.note || "";
  };
  const toggled = (e) => { if (e.target.matches && e.target.matches("details.llg-cell") && e.target.open) fill(e.target); };
  const rate = (button) => {
    const d = button.closest("details.llg-cell");
    const current = d.dataset.rating === undefined ? null : Number(d.dataset.rating);
    const input = d.querySelector("input.llg-note");
    const note = input && input.value ? input.value : null;
    let value = current;
    if (button.dataset.rate !== "note") {
      value = Number(button.dataset.rate);
      if (value === current) value = null;
    }
    button.classList.add("llg-pending");
    if (input) input.defaultValue = input.value;
    model.send({ event: "rate", call_id: d.dataset.call, value, note });
  };
  const click = (e) => {
    const button = e.target.closest("button[data-rate]");
    if (!button || !el.contains(button)) return;
    e.preventDefault();  // a button on the cell's face must not open the cell
    e.stopPropagation();
    rate(button);
  };
  const key = (e) => {
    if (!e.target.matches || !e.target.matches("input.llg-note")) return;
    e.stopPropagation();  // typing a note is not a notebook shortcut
    if (e.key === "Enter") {
      e.preventDefault();
      rate(e.target.closest("details.llg-cell").querySelector('button[data-rate="note"]'));
    }
  };
  draw();
  el.addEventListener("click", click);
  el.addEventListener("keydown", key);
  el.addEventListener("toggle", toggled, true);  // toggle does not bubble
  model.on("change:value", draw);
  return () => {
    model.off("change:value", draw);
    el.removeEventListener("click", click);
    el.removeEventListener("keydown", key);
    el.removeEventListener("toggle", toggled, true);
  };
}
export default { render };
"""
