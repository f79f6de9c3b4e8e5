"""The sweep grid without a browser: its state machine driven by runner events, the coalescing
bound on front-end messages, Cancel against a real streaming sweep, paging, ``res.show()``, and
the terminal/none displays."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time

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
    assert {st.column_label(i) for i in range(2)} == {"template=terse", "template=steps"}
    html = render_html(st)
    assert "[system]\nBe exact.\n\n[user]\nAnswer: Why?" in html
