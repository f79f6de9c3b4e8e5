"""The sweep grid without a browser: its state machine driven by runner events, the coalescing
bound on front-end messages, Cancel against a real streaming sweep, paging, ``res.show()``, and
the terminal/none displays."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time

import pandas as pd
import pytest

import llmlab as ll
from llmlab.events import Event, EventBus
from llmlab.run.runner import RunHandle
from llmlab.sweep import run_async, run_sync
from llmlab.view.grid_html import render_html
from llmlab.view.grid_state import (
    MAX_BYTES_PER_S,
    MAX_CELLS_PER_PAGE,
    MAX_UPDATES_PER_S,
    CellSpec,
    GridState,
    specs_from_calls,
)
from llmlab.view.widgets import SweepGrid, route_clicks_to_subshell


def _specs() -> list[CellSpec]:
    sweep = ll.Sweep(
        prompts=["What is a rainbow?", "Why is the sky <b>blue</b>?"],
        models=["local/tiny"],
        temperature=[0.0, 1.0],
        max_tokens=8,
        repeats=2,
        seed=5,
    )
    return specs_from_calls(sweep.calls)


def _ev(kind: str, call_id: str | None = None, **data) -> Event:
    return Event(kind, "sw-test", call_id, data)


def _row(call_id: str, completion: str = "A bow.", status: str = "ok", **extra) -> dict:
    return {
        "call_id": call_id,
        "completion": completion if status == "ok" else None,
        "status": status,
        "error": extra.pop("error", ""),
        "latency_ms": 123.4,
        "output_tokens": 3,
        "cost_usd": 0.0015,
        **extra,
    }


def test_layout_one_row_per_prompt_one_column_per_setting_repeats_grouped():
    specs = _specs()
    st = GridState(specs)
    assert st.total == 8
    assert st.prompt_order == [0, 1]
    # model and seed do not vary (seed base+repeat groups repeats), temperature does: two columns
    assert st.column_names == ["temperature"]
    assert [st.column_label(c) for c in range(len(st.columns))] == ["T=0", "T=1"]
    assert all(len(ids) == 2 for ids in st.layout.values())  # both repeats share a cell
    html = render_html(st)
    assert html.count('<tr><th class="llg-prompt"') == 2
    assert "Why is the sky &lt;b&gt;blue&lt;/b&gt;?" in html and "<b>blue</b>" not in html  # escaped


def test_state_machine_follows_runner_events():
    specs = _specs()
    ids = [s.call_id for s in specs]
    clock = [100.0]
    st = GridState(specs, budget_usd=0.01, clock=lambda: clock[0])
    st.apply(_ev("sweep_started", total=8, budget_usd=0.01))
    for cid in ids:
        st.apply(_ev("queued", cid))
    a, b, c, d, e, f, g, h = ids
    st.apply(_ev("started", a, attempt=1))
    st.apply(_ev("token", a, text="A rain"))
    st.apply(_ev("token", a, text="bow is"))
    assert (st.cells[a].state, st.cells[a].text) == ("running", "A rainbow is")
    # a retry discards the partial text, the next attempt streams afresh
    st.apply(_ev("started", b, attempt=1))
    st.apply(_ev("token", b, text="partial"))
    st.apply(_ev("retry", b, attempt=1, error="HTTP 429: slow down", wait_s=0.01))
    assert st.cells[b].state == "retrying" and st.cells[b].text == "" and "429" in st.cells[b].note
    st.apply(_ev("started", b, attempt=2))
    assert st.cells[b].state == "running" and st.cells[b].attempt == 2
    st.apply(_ev("finished", a, row=_row(a, "A rainbow is light.")))
    st.apply(_ev("failed", c, row=_row(c, status="error", error="HTTP 400: bad top_p")))
    st.apply(_ev("cached", d, row=_row(d, "cached text", cached=True, cost_usd=0.0)))
    st.apply(_ev("skipped", e, reason="budget_usd=0.01 would be exceeded"))
    st.apply(_ev("cancelled", b))
    st.apply(_ev("token", b, text="late"))  # a straggler after cancel changes nothing
    st.apply(_ev("skipped", f, reason="cancelled"))
    states = {cid: st.cells[cid].state for cid in ids}
    assert states == {
        a: "done",
        b: "cancelled",
        c: "error",
        d: "cached",
        e: "skipped",
        f: "cancelled",
        g: "queued",
        h: "queued",
    }
    assert st.cells[b].text == ""
    assert st.cells[a].text == "A rainbow is light."
    clock[0] = 103.5
    header = st.header_text()
    assert header.startswith("6/8 calls · 3.5 s · $0.00150 of $0.01 budget")
    assert "1 errors" in header and "1 cached" in header and "2 cancelled" in header and "1 retries" in header
    html = render_html(st)
    for state in ("done", "cancelled", "error", "cached", "skipped", "queued"):
        assert f"llg-cell st-{state}" in html  # each state is its own CSS class
    assert "123 ms · 3 tok · $0.00150" in html  # latency, tokens, cost once done
    assert "HTTP 400: bad top_p" in html
    st.apply(_ev("sweep_finished", ok=2, error=1, skipped=3, spent_usd=0.0015, stopped="cancelled"))
    clock[0] = 200.0
    assert st.elapsed_s() == pytest.approx(3.5)  # the clock stops with the sweep
    assert st.header_text().endswith("stopped: cancelled")
    # calls cancelled while waiting for a slot get no event: the end of the sweep marks them
    assert st.cells[g].state == st.cells[h].state == "cancelled" and st.done == 8


def test_small_costs_stay_visible_in_cells_and_header():
    specs = _specs()
    a, b = specs[0].call_id, specs[1].call_id
    st = GridState(specs, budget_usd=0.5)
    st.apply(_ev("finished", a, row=_row(a, cost_usd=1.834e-06)))
    st.apply(_ev("finished", b, row=_row(b, cost_usd=2.2e-07)))
    assert "2.05 µ$ of $0.5 budget" in st.header_text()  # not "$0.0000", nor 2.05e-06
    html = render_html(st)
    assert "3 tok · 1.83 µ$<" in html and "3 tok · 0.22 µ$<" in html
    assert "<td>cost_usd</td><td>1.83 µ$</td>" in html  # the details too
    st.apply(_ev("finished", specs[2].call_id, row=_row(specs[2].call_id, cost_usd=12.5)))
    assert "$12.5000" in st.header_text()


def test_unknown_call_ids_are_ignored():
    st = GridState(_specs())
    assert st.apply(_ev("token", "not-a-call", text="x")) is False
    assert st.done == 0


def _count_front_end_messages(monkeypatch) -> list[float]:
    """Record the time of every message any widget sends to the front end."""
    from ipywidgets import Widget

    sent: list[float] = []
    original = Widget._send

    def counting(self, msg, buffers=None):
        sent.append(time.monotonic())
        return original(self, msg, buffers)

    monkeypatch.setattr(Widget, "_send", counting)
    return sent


def test_token_storm_is_coalesced_under_30_updates_per_second_and_final_state_is_exact(monkeypatch):
    sweep = ll.Sweep(
        prompts=[f"prompt {i}" for i in range(50)],
        models=["local/tiny"],
        temperature=[0.0, 0.5, 1.0, 1.5],
        max_tokens=8,
    )  # 200 cells
    sent = _count_front_end_messages(monkeypatch)
    grid = SweepGrid(sweep, handle=RunHandle(), page_size=50)
    ids = [c.call_id for c in sweep.calls]
    grid.on_event(_ev("sweep_started", total=len(ids)))
    start = time.monotonic()
    n_tokens = 0

    def storm() -> None:  # the runner's thread, at far more than 30 events/s
        nonlocal n_tokens
        for round_ in range(40):
            for cid in ids:
                grid.on_event(_ev("token", cid, text=f"t{round_} "))
                n_tokens += 1
            time.sleep(0.03)

    thread = threading.Thread(target=storm)
    thread.start()
    thread.join()
    for cid in ids:
        grid.on_event(_ev("finished", cid, row=_row(cid, completion=f"final {cid}")))
    grid.on_event(_ev("sweep_finished", ok=len(ids), stopped=None, spent_usd=0.3))
    grid.close_feed()
    duration = time.monotonic() - start
    assert n_tokens == 8000 and duration > 1.0
    stamps = [t for t in sent if t >= start]
    # no one-second window holds more than 30 messages, whatever the token rate
    worst = max(sum(1 for t in stamps if s <= t < s + 1.0) for s in stamps)
    assert worst <= MAX_UPDATES_PER_S, f"{worst} front-end messages in one second"
    assert len(stamps) >= 5  # it did stream, not only render at the end
    # the final state is exact: every cell shows its final completion and state
    html = grid.html
    assert html.count("llg-cell st-done") == 200
    for cid in ids:
        assert f"final {cid}" in html
    assert "200/200 calls" in html and "$0.3000" in html


def test_a_heavy_page_is_sent_less_often_so_bytes_per_second_stay_bounded(monkeypatch):
    from ipywidgets import Widget

    document = "Summarize this report. " + "The quarterly figures rose while costs held steady. " * 80  # ~4 KB
    sweep = ll.Sweep(
        prompts=[f"{i}. {document}" for i in range(20)],
        models=["local/tiny"],
        temperature=[0.0, 0.25, 0.5, 0.75, 1.0],
        max_tokens=8,
    )  # 100 cells, each with its prompt
    sent: list[tuple[float, int]] = []
    original = Widget._send

    def measuring(self, msg, buffers=None):
        sent.append((time.monotonic(), len(json.dumps(msg, default=str))))
        return original(self, msg, buffers)

    monkeypatch.setattr(Widget, "_send", measuring)
    grid = SweepGrid(sweep, handle=RunHandle())
    assert len(grid.html) > MAX_BYTES_PER_S / 15  # heavier than the rate bound alone allows
    ids = [c.call_id for c in sweep.calls]
    start = time.monotonic()
    grid.on_event(_ev("sweep_started", total=len(ids)))
    for round_ in range(30):  # tokens for every cell, far faster than the grid sends
        for cid in ids:
            grid.on_event(_ev("token", cid, text=f"w{round_} "))
        time.sleep(0.05)
    for cid in ids:
        grid.on_event(_ev("finished", cid, row=_row(cid, completion=f"final {cid}")))
    grid.on_event(_ev("sweep_finished", ok=len(ids), stopped=None))
    grid.close_feed()
    stamps = [(t, n) for t, n in sent if t >= start]
    biggest = max(n for _, n in stamps)
    # spacing each update by its size bounds any one-second window to the budget plus one message
    worst = max(sum(n for t, n in stamps if s <= t < s + 1.0) for s, _ in stamps)
    assert worst <= MAX_BYTES_PER_S + biggest, (worst, biggest)
    assert len(stamps) >= 3  # it still streamed
    assert grid.html.count("llg-cell st-done") == 100 and f"final {ids[-1]}" in grid.html  # exact at the end


def _delay(monkeypatch, ms: int) -> None:
    monkeypatch.setenv("LLMLAB_LOCAL_DELAY_MS", str(ms))


async def test_cancel_button_stops_the_sweep_keeps_results_and_rerun_resumes_from_cache(monkeypatch):
    _delay(monkeypatch, 25)
    sweep = ll.Sweep(
        prompts=[f"Tell me about topic {i}." for i in range(6)],
        models=["local/tiny"],
        temperature=[0.0, 1.0],
        max_tokens=24,
        seed=1,
    )
    bus, handle = EventBus(), RunHandle()
    grid = SweepGrid(sweep, handle=handle)
    unsubscribe = bus.subscribe(grid.on_event)
    ids = [c.call_id for c in sweep.calls]

    async def click_when_some_finished() -> None:
        while grid.state.counts["done"] < 3 and not grid.state.finished:
            await asyncio.sleep(0.01)
        grid._cancel.click()  # what the browser's click does once it reaches the kernel

    clicker = asyncio.ensure_future(click_when_some_finished())
    res = await run_async(sweep, concurrency=3, display=False, bus=bus, handle=handle)
    await asyncio.wait_for(clicker, 5)
    assert (res.df["status"] == "ok").all(), res.df["error"].tolist()
    unsubscribe()
    grid.close_feed()
    assert res.stopped == "cancelled"
    done = set(res.df.loc[res.df["status"] == "ok", "call_id"])
    assert 3 <= len(done) < len(ids)
    states = {cid: grid.state.cells[cid].state for cid in ids}
    assert {cid for cid, s in states.items() if s == "done"} == done  # finished results are kept
    assert {s for cid, s in states.items() if cid not in done} == {"cancelled"}  # the rest marked
    assert "stopped: cancelled" in grid.html and grid._cancel.disabled
    # a later run resumes: what finished comes from the cache, only the rest is sent
    again = await run_async(sweep, concurrency=3, display=False)
    assert again.stopped is None and len(again.df) == len(ids)
    assert set(again.df.loc[again.df["cached"], "call_id"]) == done


def test_thousands_of_calls_render_one_page_and_page_on(monkeypatch):
    sweep = ll.Sweep(
        prompts=[f"question number {i}" for i in range(600)],
        models=["local/tiny", "local/small"],
        temperature=[0.0, 1.0],
        max_tokens=8,
    )  # 2400 calls
    grid = SweepGrid(sweep, handle=RunHandle(), page_size=25)
    assert len(sweep.calls) == 2400
    html = grid.html
    assert html.count("llg-cell st-queued") == 100  # 25 prompts x 4 settings on screen, not 2400
    assert "question number 24" in html and "question number 25<" not in html
    assert "prompts 1–25 of 600" in html and grid._page_label.value == "page 1/24"
    assert len(html) < 120_000
    grid._next.click()
    assert "question number 25" in grid.html and "prompts 26–50 of 600" in grid.html
    grid.set_page(99)
    assert grid._page_label.value == "page 24/24" and grid._next.disabled
    assert route_clicks_to_subshell([grid._cancel]) is False  # no kernel here: clicks stay on the main shell


def test_a_wide_sweep_pages_over_settings_too():
    # 2 prompts x 2000 settings x 2 repeats: without column paging one page would hold 8000 calls
    sweep = ll.Sweep(
        prompts=["a question", "another question"],
        models=["local/tiny"],
        temperature=[i / 100 for i in range(100)],
        top_p=[0.5 + i / 40 for i in range(20)],
        max_tokens=8,
        repeats=2,
        seed=1,
    )
    assert len(sweep.calls) == 8000
    grid = SweepGrid(sweep, handle=RunHandle())
    html = grid.html
    on_page = html.count('class="llg-cell ')
    assert 0 < on_page <= MAX_CELLS_PER_PAGE and len(html) < 300_000
    assert html.count("<th title=") == 16  # settings columns on this page
    assert "settings 1–16 of 2000" in html and "prompts" not in grid.state.header_text()
    assert grid._page_label.value == "page 1/125"
    grid._next.click()
    assert "settings 17–32 of 2000" in grid.html
    # every call is on exactly one page
    seen: list[str] = []
    for page in range(grid.view.pages()):
        grid.set_page(page)
        seen += re.findall(r'data-call="(\w+)"', grid.html)
    assert sorted(seen) == sorted(c.call_id for c in sweep.calls)
    # many repeats of few settings: fewer prompts per page, the whole cell's repeats together
    tall = ll.Sweep(
        prompts=[f"q{i}" for i in range(40)],
        models=["local/tiny"],
        temperature=[0.0, 1.0],
        max_tokens=8,
        repeats=10,
        seed=1,
    )
    st = GridState(specs_from_calls(tall.calls))
    assert st.page_shape(20) == (10, 2) and st.pages(20) == 4
    assert render_html(st).count('class="llg-cell ') == 200


def test_result_show_rerenders_from_stored_rows_without_requests(counting_provider, capsys):
    counted = counting_provider("counted")
    sweep = ll.Sweep(
        prompts=["What is a rainbow?", "Explain photosynthesis."],
        models=["counted/tiny"],
        temperature=[0.0, 0.8],
        max_tokens=10,
        seed=2,
    )
    res = sweep.run(display=False)
    assert counted.requests == 4
    grid = SweepGrid.from_result(res)
    res.show()  # outside a notebook IPython prints the widget's text form
    assert counted.requests == 4  # nothing was sent
    html = grid.html
    assert html.count("llg-cell st-done") == 4 and "4/4 calls" in html and "finished" in html
    for row in res.df.itertuples():
        # each cell opens to the whole prompt, the whole completion and the call's details
        cell = re.search(rf'<details class="llg-cell st-done" data-call="{row.call_id}">.*?</details>', html, re.S)
        assert cell is not None
        body = cell.group(0)
        assert f"<pre>{row.prompt}</pre>" in body
        assert row.completion.replace("'", "&#x27;").replace('"', "&quot;") in body
        assert f"<td>trace_id</td><td>{row.trace_id}</td>" in body and "<td>finish_reason</td>" in body
    assert "VBox" in capsys.readouterr().out


def test_outside_jupyter_a_progress_bar_and_display_false_shows_nothing(capsys):
    sweep = ll.Sweep(prompts=["What is a rainbow?"], models=["local/tiny"], temperature=[0.0, 1.0], max_tokens=6)
    run_sync(sweep, display=False)
    quiet = capsys.readouterr()
    assert quiet.out == "" and quiet.err == ""
    run_sync(sweep, display=True, cache=False)
    shown = capsys.readouterr()
    assert "sweep: 100%" in shown.err and "2/2" in shown.err and "ok=2" in shown.err  # tqdm on stderr


def test_variants_are_named_setting_columns_and_details_show_every_message():
    import llmlab as ll
    from llmlab.view.grid_html import render_html
    from llmlab.view.grid_state import specs_from_calls

    sweep = ll.Sweep(
        prompts=[{"id": "q1", "q": "Why?"}],
        template={"terse": "Answer: {q}", "steps": "Steps: {q}"},
        system="Be exact.",
        temperature=[0.0],
        max_tokens=8,
    )
    st = GridState(specs_from_calls(sweep.calls))
    assert st.column_names == ["template_name"]
    assert sorted(c[0] for c in st.columns) == ["steps", "terse"]
    assert {st.column_label(i) for i in range(2)} == {"template_name=terse", "template_name=steps"}
    html = render_html(st)
    assert "<b>system</b><pre>Be exact.</pre>" in html and "<b>user</b><pre>Answer: Why?</pre>" in html


# --- ratings, filters, variant columns, the report (issue 13) ----------------------------------


def _finished_state(n_prompts: int = 10) -> tuple[GridState, list[str]]:
    """``n_prompts`` prompts x T in {0, 1}, all finished: prompt i's T=1 call errors when i % 4 == 3,
    its T=0 call was retried when i % 3 == 0, latency 100 + 10 * (i * 7 % n_prompts)."""
    sweep = ll.Sweep(
        prompts=[f"question {i} about {'cats' if i % 2 else 'dogs'}" for i in range(n_prompts)],
        models=["local/tiny"],
        temperature=[0.0, 1.0],
        max_tokens=8,
    )
    st = GridState(specs_from_calls(sweep.calls))
    for call in sweep.calls:
        i, hot = call.prompt_index, call.temperature == 1.0
        latency = 100.0 + 10 * (i * 7 % n_prompts)
        if hot and i % 4 == 3:
            row = _row(call.call_id, status="error", error="HTTP 500: boom", latency_ms=latency)
            st.apply(_ev("failed", call.call_id, row=row))
        else:
            retries = 1 if (not hot and i % 3 == 0) else 0
            row = _row(call.call_id, f"answer {i} {'warm' if hot else 'cold'}", latency_ms=latency, retries=retries)
            st.apply(_ev("finished", call.call_id, row=row))
    return st, [c.call_id for c in sweep.calls]


def test_filters_show_only_errors_retried_rated_unrated_and_apply_before_paging():
    from llmlab.view.grid_state import GridFilter

    st, ids = _finished_state(10)
    assert st.pages(3) == 4 and st.visible_prompts() == list(range(10))
    st.set_filter(GridFilter(show="errors"))
    assert st.visible_prompts() == [3, 7]  # rows with an error call
    assert st.pages(3) == 1  # the page count follows the filter
    html = render_html(st, page_size=3)
    assert html.count('class="llg-cell ') == 2 and "llg-cell st-done" not in html  # only the error cells are drawn
    assert "filter: 2 of 10 prompts" in html
    st.set_filter(GridFilter(show="retried"))
    assert st.visible_prompts() == [0, 3, 6, 9]
    st.set_rating(ids[2], 1)
    st.set_rating(ids[5], 4, "clear and short")
    st.set_filter(GridFilter(show="rated"))
    assert st.visible_prompts() == [1, 2] and render_html(st).count('class="llg-cell ') == 2
    st.set_filter(GridFilter(show="unrated"))
    assert len(st.visible_prompts()) == 10 and render_html(st).count('class="llg-cell ') == 18
    # paging keeps working on the filtered rows: 4 retried rows, 3 a page
    st.set_filter(GridFilter(show="retried"))
    assert st.pages(3) == 2
    assert st.page_window(1, 3)[0] == [9]
    assert "prompts 4–4 of 4" in render_html(st, page=1, page_size=3)
    with pytest.raises(ValueError):
        GridFilter(show="everything")


def test_search_over_prompts_and_completions_and_sort_by_a_numeric_column():
    from llmlab.view.grid_state import GridFilter

    st, ids = _finished_state(10)
    st.set_filter(GridFilter(search="CATS"))  # case-insensitive, in the prompt
    assert st.visible_prompts() == [1, 3, 5, 7, 9]
    st.set_filter(GridFilter(search="warm"))  # in the completion: only the matching cells are drawn
    assert len(st.visible_prompts()) == 8  # rows 3 and 7 errored at T=1
    assert render_html(st).count("llg-cell st-done") == 8
    st.set_filter(GridFilter(search="no such words"))
    assert st.visible_prompts() == [] and st.pages(3) == 1 and "no call matches the filter" in render_html(st)
    # sort prompt rows by mean latency (ascending, then descending); rows without a value last
    st.set_filter(GridFilter(sort_by="latency_ms"))
    order = st.visible_prompts()
    latency = {i: 100.0 + 10 * (i * 7 % 10) for i in range(10)}
    assert order == sorted(range(10), key=latency.__getitem__)
    st.set_filter(GridFilter(sort_by="latency_ms", descending=True))
    assert st.visible_prompts() == order[::-1]
    st.set_rating(ids[8], -1)  # prompt 4 (T=0)
    st.set_rating(ids[0], 5)  # prompt 0
    st.set_filter(GridFilter(sort_by="rating", descending=True))
    assert st.visible_prompts()[:2] == [0, 4] and len(st.visible_prompts()) == 10  # unrated rows last
    assert st.numeric_columns()[:2] == ["rating", "latency_ms"]


def test_rating_buttons_call_on_rate_at_once_and_the_cell_shows_the_rating():
    specs = _specs()
    got: list[tuple] = []
    grid = SweepGrid(None, specs=specs, on_rate=lambda *a: got.append(a))
    a, b = specs[0].call_id, specs[1].call_id
    grid.state.apply(_ev("finished", a, row=_row(a)))
    # what the front end sends for a click on 👍 (kernel side of GRID_ESM's model.send)
    grid._on_front_msg(grid._html, {"event": "rate", "call_id": a, "value": 1, "note": None}, [])
    assert got == [(a, 1, None)]
    cell = re.search(
        rf'<details class="llg-cell st-done rt-up" data-call="{a}" data-rating="1">.*?</details>', grid.html
    )
    assert cell and '<button data-rate="1" class="on">' in cell.group(0)
    # a score with a note, while b still streams (no row yet); then cleared
    grid.state.apply(_ev("token", b, text="par"))
    grid._on_front_msg(grid._html, {"event": "rate", "call_id": b, "value": 4, "note": " terse "}, [])
    assert got[-1] == (b, 4, "terse")
    assert f'data-call="{b}" data-note="terse" data-rating="4"' in grid.html and "★4" in grid.html
    grid.rate(b, None)
    assert got[-1] == (b, None, None) and f'data-call="{b}" data-rating' not in grid.html
    # values the grid does not offer and unknown calls are ignored; a failing on_rate does not break the grid
    grid.rate(a, 7)
    grid.rate("no-such-call", 1)
    assert len(got) == 3

    def broken(*_a):
        raise RuntimeError("store down")

    grid.on_rate = broken
    grid.rate(a, -1)
    assert "rt-down" in grid.html and "store down" in grid.rate_errors[0]


def test_stored_ratings_show_in_a_reshown_grid_and_redraws_keep_them(counting_provider):
    counting_provider("rated")
    sweep = ll.Sweep(prompts=["What is a rainbow?", "Why is the sky blue?"], models=["rated/tiny"], temperature=0.0)
    res = sweep.run(display=False)
    first, second = res.df.call_id.tolist()
    res.df["rating"] = [1, pd.NA]  # the column h13core's store fills
    res.df["rating_note"] = ["nice", pd.NA]
    got: list[tuple] = []
    grid = SweepGrid.from_result(res, on_rate=lambda *a: got.append(a))
    assert f'data-call="{first}" data-note="nice" data-rating="1"' in grid.html
    grid.rate(second, -1)
    grid.set_page(0)  # a redraw from scratch keeps both
    assert "rt-up" in grid.html and "rt-down" in grid.html and got == [(second, -1, None)]
    # the message list sent is in the details when it says more than the prompt
    grid2 = SweepGrid.from_result(
        res,
        messages={
            first: [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a rainbow?"}]
        },
    )
    assert "<b>messages</b>" in grid2.html and "Be brief." in grid2.html


def test_sort_and_filter_controls_drive_the_grid():
    st_grid = SweepGrid(None, specs=_specs(), page_size=1)
    assert st_grid._page_label.value == "page 1/2"
    st_grid._search.value = "sky"
    assert st_grid._page_label.value == "page 1/1" and "filter: 1 of 2 prompts" in st_grid.html
    st_grid._search.value = ""
    st_grid._show.value = "errors"
    assert "no call matches the filter" in st_grid.html


def test_template_and_system_variants_group_the_columns():
    from llmlab.view.grid_state import specs_from_rows

    rows = [
        {"call_id": f"c{t}{s}{p}", "prompt_id": f"p{p}", "prompt": f"q{p}", "model": "local/tiny",
         "temperature": temp, "template_name": t, "system_name": "s1"}
        for t in ("terse", "steps") for s, temp in ((0, 0.0), (1, 1.0)) for p in range(2)
    ]  # fmt: skip
    st = GridState(specs_from_rows(rows))
    assert st.column_names == ["template_name", "temperature"]
    assert st.column_groups(range(4)) == [("template_name=terse", 2), ("template_name=steps", 2)]
    html = render_html(st)
    assert html.count('class="llg-group" colspan="2"') == 2 and ">template_name=steps</th>" in html
    assert ">T=0</th>" in html  # the rest of the label under the group
    # without variants there is no group row
    assert GridState(_specs()).column_groups(range(2)) == [] and 'class="llg-group"' not in render_html(
        GridState(_specs())
    )


def test_save_report_writes_one_self_contained_file(counting_provider, tmp_path):
    counting_provider("rep")
    sweep = ll.Sweep(
        prompts=[f"Explain idea {i} <b>now</b>." for i in range(25)],
        system="You are terse.",
        models=["rep/tiny"],
        temperature=[0.0, 1.0],
        max_tokens=8,
        seed=1,
    )
    res = sweep.run(display=False)
    res.df["rating"] = [1] + [pd.NA] * (len(res.df) - 1)
    path = res.save_report(tmp_path / "faq.html")
    text = path.read_text(encoding="utf-8")
    assert text.count("llg-cell ") == 50 and 'data-pages="2"' in text and "rt-up" in text
    assert "You are terse." in text and "<b>messages</b>" in text  # the whole message list in the details
    assert "&lt;b&gt;now&lt;/b&gt;" in text and "<b>now</b>" not in text
    assert "<h2>Summary</h2>" in text and "latency_p50" in text
    assert "llr-verdict" in text and "by temperature" in text
    assert text.count("plotly.js v") == 1 and "cdn.plot.ly" not in text.split("</head>", 1)[1]
    assert 'src="http' not in text and "<script src=" not in text
    assert "Plotly.newPlot" in text


def test_cli_report_writes_the_file(counting_provider, tmp_path):
    from click.testing import CliRunner

    from llmlab.cli import cli

    counting_provider("clirep")
    res = ll.Sweep(prompts=["What is a rainbow?"], models=["clirep/tiny"], temperature=[0.0, 1.0]).run(display=False)
    out = tmp_path / "r.html"
    home = str(ll.configure().home)
    result = CliRunner().invoke(cli, ["report", res.sweep_id, "--out", str(out), "--home", home])
    assert result.exit_code == 0, result.output
    assert "report written" in result.output and "llg-static" in out.read_text(encoding="utf-8")
