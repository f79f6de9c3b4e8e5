"""The live grid in a real JupyterLab, in headless Chromium (Debian's package, driven by Playwright).

One notebook, run top to bottom by the Run menu, while a ``MutationObserver`` in the page records
every grid update the browser receives (per notebook cell: how many times the grid was redrawn,
and for each call the sequence of states and text lengths it showed):
  1. ``sweep.run()`` on the embedded model: a call's text is seen growing token by token in the
     DOM; the browser received at most 30 grid updates per second of the sweep (coalescing, end to
     end); every cell ends "done" with latency and tokens;
  2. a longer sweep started with ``asyncio.ensure_future(sweep.arun())``: the next cell executes
     while it streams (the kernel stays responsive); a finished cell clicked open stays open while
     the grid keeps redrawing; the test clicks **Cancel** in the grid, and
     the awaited result says ``stopped='cancelled'`` with finished cells kept and the rest marked;
  3. ``res.show()`` re-renders the first grid from stored rows; clicking a cell opens its prompt,
     completion and call details;
  4. a 👍 clicked during the *blocking* ``run()`` reaches its ``on_rate`` in the kernel (the kernel's
     redraw shows it while the cell still runs), then Cancel (clicks go through a kernel subshell);
     then the same sweep run again resumes: what finished shows "cached", only the rest is sent;
  5. a sweep against a fault-injecting server: every call is rate-limited once (the grid shows
     "retrying"), the calls to an unknown model end "error" with the server's message, and the
     header counts errors and retries;
     the "errors" filter shows only the error cells;
  6. a 200-call sweep at full speed: the browser gets a bounded number of redraws (far fewer than
     tokens), one page of 80 cells, and the ▶ button pages on; a search narrows it to one page.
A second notebook: a 👍 clicked in a grid with the default ``on_rate`` is found by ``ll.load(sweep_id).df`` in the
kernel started by JupyterLab's Kernel ▸ Restart Kernel.
The shareable report (``res.save_report``) is opened from ``file://`` with the network off: its grid
pages, a cell opens to the message list, and a plotly chart renders.
Screenshots go to ``test-artifacts/``. Every wait is for a condition, with a generous deadline.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.widgets.jupyter_harness import CHROMIUM, CHROMIUM_ARGS, have_browser, jupyter_lab, write_notebook

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

if not have_browser():
    if os.environ.get("CI"):
        raise RuntimeError("CI must run the browser test: install Debian's chromium and the playwright package")
    pytest.skip("needs /usr/bin/chromium and playwright", allow_module_level=True)

CELLS = [
    # 0: setup: temp home, no export, a small per-token delay so streaming is visible
    """import os, tempfile, asyncio, time
os.environ["LLMLAB_LOCAL_DELAY_MS"] = "25"
import llmlab as ll
ll.configure(home=tempfile.mkdtemp(prefix="llmlab-nb-"), datakit=None)
RATED = []  # what the grids' on_rate received in the kernel: (call_id, value, note, time)
sweep = ll.Sweep(prompts=["What is a rainbow?", "Explain photosynthesis.", "Why do cats purr?"],
                 models=["local/tiny"], temperature=[0.0, 1.0], max_tokens=48, seed=1)
print("SETUP-OK")""",
    # 1: the blocking form, display defaults to the grid inside Jupyter
    "t1 = time.monotonic()\nres = sweep.run(concurrency=3)\nt1 = time.monotonic() - t1",
    (
        "print('RUN-RESULT', len(res.df), int((res.df.status == 'ok').sum()), res.stopped, round(t1, 3), "
        "int(res.df.output_tokens.sum()))"
    ),
    # 3: the awaitable form as a background task: the kernel is free while it streams
    """long = ll.Sweep(prompts=[f"Tell me a story about planet {i}." for i in range(8)], models=["local/tiny"],
                temperature=[0.0, 1.0], max_tokens=64, seed=2)
task = asyncio.ensure_future(long.arun(concurrency=2))""",
    "print('RESPONSIVE', task.done())",
    "res2 = await task\nprint('ARUN-RESULT', res2.stopped, len(res2.df), len(res2.skipped))",
    "res.show()",
    # 7: Cancel while the blocking run() holds the cell: clicks go through a kernel subshell
    """os.environ["LLMLAB_LOCAL_DELAY_MS"] = "40"
slow = ll.Sweep(prompts=[f"Describe river number {i}." for i in range(6)], models=["local/tiny"],
                temperature=[0.0, 1.0], max_tokens=64, seed=3)
res3 = slow.run(concurrency=2, on_rate=lambda c, v, n: RATED.append((c, v, n, time.monotonic())))
print("RUN-CANCEL", res3.stopped, len(res3.df))
print("RATED", *[f"{c}:{v}" for c, v, n, t in RATED])""",
    # 8: run it again: the finished calls come from the cache, the rest are sent
    """os.environ["LLMLAB_LOCAL_DELAY_MS"] = "5"
res4 = slow.run(concurrency=2)
print("RESUME", res4.stopped, len(res4.df), int(res4.df.cached.sum()), int((res4.df.status == 'ok').sum()))""",
    # 9: faults: every request is rate-limited once (Retry-After 1.5 s), one model does not exist
    """from llmlab.testing import FaultServer
fs = FaultServer(rate_429=1.0, retry_after_s=1.5, max_faults_per_request=1, delay_ms=20).start()
ll.provider("fault", base_url=fs.base_url, api_key_env=None)
faulty = ll.Sweep(prompts=["What is a rainbow?", "Why do cats purr?"], models=["fault/tiny", "fault/no-such-model"],
                  temperature=0.0, max_tokens=32, seed=4)
res5 = faulty.run(concurrency=4)
print("FAULTS", len(res5.df), int((res5.df.status == 'error').sum()), int(res5.df.retries.sum()))""",
    # 10: a 200-call sweep at full speed: the browser gets a bounded number of redraws of one page
    """os.environ["LLMLAB_LOCAL_DELAY_MS"] = "0"
big = ll.Sweep(prompts=[f"Question number {i}: what is a rainbow?" for i in range(50)], models=["local/tiny"],
               temperature=[0.0, 0.3, 0.6, 0.9], max_tokens=32, seed=5)
t10 = time.monotonic()
res6 = big.run(concurrency=16)
t10 = time.monotonic() - t10
print("BIG", len(res6.df), int((res6.df.status == 'ok').sum()), round(t10, 3), int(res6.df.output_tokens.sum()))""",
]

# Records, per notebook cell index, every grid redraw the browser gets and each call's history of
# (state, text length) as shown. A redraw replaces the grid's HTML, so a new ``.llg`` element is
# one update from the kernel; a WeakSet keeps a re-attached element from counting twice.
OBSERVER = """() => {
  const log = window.__llg = {updates: {}, seen: {}};
  const counted = new WeakSet();
  const record = (root) => {
    if (counted.has(root)) return;
    counted.add(root);
    const cells = Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell'));
    const idx = cells.indexOf(root.closest('.jp-CodeCell'));
    if (idx < 0) return;
    log.updates[idx] = (log.updates[idx] || 0) + 1;
    const seen = log.seen[idx] = log.seen[idx] || {};
    for (const el of root.querySelectorAll('.llg-cell')) {
      const state = Array.from(el.classList).find(c => c.startsWith('st-')).slice(3);
      const txt = el.querySelector('.llg-txt');
      const n = txt ? txt.textContent.length : 0;
      const list = seen[el.dataset.call] = seen[el.dataset.call] || [];
      const last = list[list.length - 1];
      if (!last || last[0] !== state || last[1] !== n) list.push([state, n]);
    }
  };
  new MutationObserver(muts => {
    for (const m of muts) for (const node of m.addedNodes) {
      if (node.nodeType !== 1) continue;
      if (node.classList.contains('llg')) record(node);
      else node.querySelectorAll('.llg').forEach(record);
    }
  }).observe(document.body, {childList: true, subtree: true});
}"""


def _wait(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _line(text: str, marker: str) -> list[str]:
    return next(ln for ln in text.splitlines() if ln.startswith(marker)).split()


def test_live_grid_streams_cancels_and_reshows_in_jupyterlab(tmp_path):
    from playwright.sync_api import sync_playwright

    root = tmp_path / "nb"
    root.mkdir()
    write_notebook(root / "grid.ipynb", CELLS)
    ARTIFACTS.mkdir(exist_ok=True)
    with jupyter_lab(root) as lab, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.goto(lab.url("grid.ipynb"))
            page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=90_000)
            page.wait_for_function("document.body.innerText.includes('| Idle')", timeout=90_000)
            cells = page.locator(".jp-Notebook .jp-CodeCell")
            assert cells.count() == len(CELLS)
            page.evaluate(OBSERVER)

            def out(i: int):
                return cells.nth(i).locator(".jp-OutputArea")

            def history(i: int) -> dict[str, list[list]]:
                return page.evaluate(f"window.__llg.seen[{i}] || {{}}")

            news = page.locator(".jp-toast-container button", has_text="No")
            if news.count():
                news.first.click()  # the "official Jupyter news?" toast would cover the grid
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

            # 1. the run() grid streams token by token, coalesced, and ends exact
            grid1 = out(1)
            _wait(lambda: "RUN-RESULT" in out(2).inner_text(), 120, "the run() cell to finish")
            words = _line(out(2).inner_text(), "RUN-RESULT")
            assert words[1:4] == ["6", "6", "None"], words
            run_s, tokens = float(words[4]), int(words[5])
            _wait(lambda: grid1.locator(".llg-cell.st-done").count() == 6, 60, "six done cells")
            head = grid1.locator(".llg-head").inner_text()
            assert head.startswith("6/6 calls") and "finished" in head and "0 errors" in head
            done_texts = grid1.locator(".st-done .llg-txt").all_inner_texts()
            assert all(len(t.strip()) > 0 for t in done_texts)  # the streamed completions
            meta = grid1.locator(".st-done .llg-meta").first.inner_text()
            # latency, tokens, cost in one money format (3 significant digits; µ$ for tiny sums)
            assert re.fullmatch(r"\d+ ms · 48 tok · (\$0\.0+[1-9]\d\d|\d+(\.\d+)? µ\$)", meta), meta
            seen1 = history(1)
            assert len(seen1) == 6, seen1
            # token by token: some call was shown running with at least three growing partial texts
            growth = [[n for state, n in steps if state == "running" and n > 0] for steps in seen1.values()]
            assert any(len(g) >= 3 and g == sorted(set(g)) for g in growth), seen1
            assert all(steps[-1][0] == "done" for steps in seen1.values()), seen1
            # the bound, end to end: the browser got at most 30 redraws per second of the sweep
            # (plus the first and the last), although tokens arrived far faster than that
            updates1 = page.evaluate("window.__llg.updates[1]")
            assert 3 <= updates1 <= 30 * run_s + 2, (updates1, run_s, tokens)
            assert updates1 < tokens, (updates1, tokens)

            # 2. arun() in the background: the next cell ran while it streams; Cancel stops it
            grid2 = out(3)
            _wait(lambda: "RESPONSIVE" in out(4).inner_text(), 60, "a cell to execute during the sweep")
            assert "RESPONSIVE False" in out(4).inner_text()
            _wait(lambda: grid2.locator(".llg-cell.st-done").count() >= 2, 120, "two finished calls in the arun grid")
            running_before = grid2.locator(".llg-cell.st-running").count()
            # a finished cell opened while the rest streams stays open through the next redraws
            call = grid2.locator("details.llg-cell.st-done").first.get_attribute("data-call")
            reopened = grid2.locator(f'details.llg-cell[data-call="{call}"]')  # by id: redraws replace nodes
            reopened.locator("summary").click()
            drawn = page.evaluate("window.__llg.updates[3]")
            _wait(lambda: page.evaluate("window.__llg.updates[3]") >= drawn + 3, 60, "three more redraws")
            assert reopened.get_attribute("open") is not None
            assert (
                reopened.locator(".llg-more").is_visible() and "call_id" in reopened.locator(".llg-more").inner_text()
            )
            page.screenshot(path=str(ARTIFACTS / "grid-streaming.png"), full_page=True)
            grid2.locator("button.llmlab-cancel").click()
            _wait(lambda: "ARUN-RESULT" in out(5).inner_text(), 120, "the cancelled sweep to return")
            words = _line(out(5).inner_text(), "ARUN-RESULT")
            assert words[1] == "cancelled", words
            kept, skipped = int(words[2]), int(words[3])
            assert 2 <= kept < 16 and kept + skipped <= 16
            _wait(lambda: "stopped: cancelled" in grid2.locator(".llg-head").inner_text(), 60, "the grid header")
            assert grid2.locator(".llg-cell.st-done").count() == kept
            assert grid2.locator(".llg-cell.st-cancelled").count() == 16 - kept
            assert running_before >= 1
            assert grid2.locator("button.llmlab-cancel").is_disabled()

            # 3. res.show(): the first grid again from stored rows; a click opens the details
            grid3 = out(6)
            _wait(lambda: grid3.locator(".llg-cell.st-done").count() == 6, 60, "the re-shown grid")
            assert grid3.locator(".llg-txt").all_inner_texts() == done_texts
            first = grid3.locator("details.llg-cell").first
            assert not first.locator(".llg-more").is_visible()
            first.locator("summary").click()
            details = first.locator(".llg-more")
            assert details.is_visible()
            text = details.inner_text()
            assert "What is a rainbow?" in text and "call_id" in text and "finish_reason" in text
            assert "trace_id" in text or "latency_ms" in text

            # 4. Cancel during the blocking run(): it stops the sweep while the cell still runs
            grid4 = out(7)
            _wait(lambda: grid4.locator(".llg-cell.st-done").count() >= 2, 120, "two finished calls in the run() grid")
            # ... and before that, a 👍 on a finished cell reaches on_rate in the kernel while run() still
            # streams: the kernel's next redraw shows the rating (the class comes only from the kernel's HTML)
            rated = grid4.locator("details.llg-cell.st-done").first.get_attribute("data-call")
            grid4.locator(f'details.llg-cell[data-call="{rated}"] button[data-rate="1"]').click()
            _wait(
                lambda: grid4.locator(f'details.llg-cell.rt-up[data-call="{rated}"]').count() == 1,
                60,
                "the rating drawn by the kernel during run()",
            )
            assert "RUN-CANCEL" not in out(7).inner_text()  # the blocking cell is still running
            assert grid4.locator(f'details.llg-cell[data-call="{rated}"]').get_attribute("open") is None
            assert grid4.locator(".llg-cell.st-running").count() >= 1
            grid4.locator("button.llmlab-cancel").click()
            _wait(lambda: "RUN-CANCEL" in out(7).inner_text(), 120, "the cancelled run() to return")
            line = _line(out(7).inner_text(), "RUN-CANCEL")
            assert line[1] == "cancelled", line
            kept4 = int(line[2])
            assert _line(out(7).inner_text(), "RATED")[1:] == [f"{rated}:1"]  # on_rate ran in the kernel
            assert 2 <= kept4 < 12  # finished calls kept, the rest never sent or cancelled in flight
            _wait(lambda: "stopped: cancelled" in grid4.locator(".llg-head").inner_text(), 60, "the run() grid header")
            assert grid4.locator(".llg-cell.st-cancelled").count() == 12 - kept4
            # ... and the same sweep run again resumes from the cache
            grid5 = out(8)
            _wait(lambda: "RESUME" in out(8).inner_text(), 120, "the resumed run() to return")
            assert _line(out(8).inner_text(), "RESUME")[1:] == ["None", "12", str(kept4), "12"]
            _wait(lambda: "finished" in grid5.locator(".llg-head").inner_text(), 60, "the resumed grid header")
            assert grid5.locator(".llg-cell.st-cached").count() == kept4
            assert grid5.locator(".llg-cell.st-done").count() == 12 - kept4
            assert f"{kept4} cached" in grid5.locator(".llg-head").inner_text()
            assert grid5.locator(".st-cached .llg-badge").first.inner_text().lower() == "cached"

            # 5. faults: retrying shown while the Retry-After runs, errors with their message
            grid6 = out(9)
            _wait(lambda: "FAULTS" in out(9).inner_text(), 120, "the faulty sweep to return")
            assert _line(out(9).inner_text(), "FAULTS")[1:] == ["4", "2", "4"]
            _wait(lambda: "finished" in grid6.locator(".llg-head").inner_text(), 60, "the faulty grid header")
            head6 = grid6.locator(".llg-head").inner_text()
            assert head6.startswith("4/4 calls") and "2 errors" in head6 and "4 retries" in head6, head6
            assert grid6.locator(".llg-cell.st-done").count() == 2
            assert grid6.locator(".llg-cell.st-error").count() == 2
            for face in grid6.locator(".st-error .llg-txt").all_inner_texts():
                assert "404" in face and "no-such-model" in face, face
            seen6 = history(9)
            assert len(seen6) == 4 and all("retrying" in [s for s, _ in steps] for steps in seen6.values()), seen6
            assert sorted(steps[-1][0] for steps in seen6.values()) == ["done", "done", "error", "error"], seen6
            # the states look different: each has its own badge colour
            colours = {
                state: grid6.locator(f".st-{state} .llg-badge").first.evaluate(
                    "e => getComputedStyle(e).backgroundColor"
                )
                for state in ("done", "error")
            }
            colours["cached"] = grid5.locator(".st-cached .llg-badge").first.evaluate(
                "e => getComputedStyle(e).backgroundColor"
            )
            colours["cancelled"] = grid4.locator(".st-cancelled .llg-badge").first.evaluate(
                "e => getComputedStyle(e).backgroundColor"
            )
            assert len(set(colours.values())) == 4, colours
            # a filter: only the errors of this grid are shown; then all again
            grid6.locator(".llmlab-show select").select_option("errors")
            _wait(lambda: grid6.locator(".llg-cell").count() == 2, 60, "the errors filter")
            assert grid6.locator(".llg-cell.st-error").count() == 2
            assert "filter: 2 of 2 prompts" in grid6.locator(".llg-head").inner_text()
            grid6.locator(".llmlab-show select").select_option("all")
            _wait(lambda: grid6.locator(".llg-cell").count() == 4, 60, "the filter cleared")

            # 6. a big sweep at full speed: bounded redraws, one page of cells, paging in the browser
            grid7 = out(10)
            _wait(lambda: "BIG" in out(10).inner_text(), 300, "the 200-call sweep to return")
            words = _line(out(10).inner_text(), "BIG")
            assert words[1:3] == ["200", "200"], words
            big_s, big_tokens = float(words[3]), int(words[4])
            _wait(lambda: "200/200 calls" in grid7.locator(".llg-head").inner_text(), 60, "the big grid's header")
            assert "prompts 1–20 of 50" in grid7.locator(".llg-head").inner_text()
            assert grid7.locator(".llg-cell").count() == 80  # 20 prompts x 4 settings on a page, not 200
            updates7 = page.evaluate("window.__llg.updates[10]")
            assert updates7 <= 30 * big_s + 2 and updates7 < big_tokens / 10, (updates7, big_s, big_tokens)
            grid7.locator("button", has_text="▶").click()
            _wait(lambda: "prompts 21–40 of 50" in grid7.locator(".llg-head").inner_text(), 60, "page 2")
            assert "Question number 20:" in grid7.locator(".llg-prompt").first.inner_text()
            assert grid7.locator(".llg-cell.st-done").count() == 80
            # the search, applied before paging: 11 prompts match ("number 1", 10..19), one page
            search = grid7.locator(".llmlab-search input")
            search.fill("number 1")
            search.press("Enter")
            _wait(lambda: "filter: 11 of 50 prompts" in grid7.locator(".llg-head").inner_text(), 60, "the search")
            assert grid7.locator(".llg-cell").count() == 44
            assert grid7.locator(".widget-label", has_text="page 1/1").count() == 1
            assert "Question number 1:" in grid7.locator(".llg-prompt").first.inner_text()

            # what the browser saw, for a human reading the artifacts
            (ARTIFACTS / "grid-updates.json").write_text(
                json.dumps({"run_s": run_s, "tokens": tokens, **page.evaluate("window.__llg")}, indent=1),
                encoding="utf-8",
            )
            page.screenshot(path=str(ARTIFACTS / "grid-final.png"), full_page=True)
            cells.nth(6).screenshot(path=str(ARTIFACTS / "grid-details.png"))  # scrolls the cell into view
            cells.nth(7).screenshot(path=str(ARTIFACTS / "grid-run-cancelled.png"))
            cells.nth(8).screenshot(path=str(ARTIFACTS / "grid-resumed-cached.png"))
            cells.nth(9).screenshot(path=str(ARTIFACTS / "grid-errors-retries.png"))
        finally:
            browser.close()


def test_saved_report_opens_offline_from_file(tmp_path, monkeypatch):
    """``res.save_report()``'s file in Chromium from ``file://`` with every network request refused: the grid
    pages client-side, a cell opens to its message list and rating, and the charts render (plotly inlined)."""
    from playwright.sync_api import sync_playwright

    import llmlab as ll

    monkeypatch.setenv("LLMLAB_LOCAL_DELAY_MS", "0")
    ll.configure(home=str(tmp_path / "home"), datakit=None)
    sweep = ll.Sweep(
        prompts=[f"Question number {i}: what is a rainbow?" for i in range(25)],
        system="You answer in one line.",
        models=["local/tiny"],
        temperature=[0.0, 1.0],
        max_tokens=8,
        seed=7,
    )
    res = sweep.run(display=False)
    res.df["rating"] = [1] + [pd.NA] * (len(res.df) - 1)  # the column h13core's ratings fill
    path = res.save_report(tmp_path / "faq.html")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(offline=True, viewport={"width": 1400, "height": 1600})
            asked: list[str] = []

            def refuse(route):
                if not route.request.url.startswith("file://"):
                    asked.append(route.request.url)
                    route.abort()
                else:
                    route.continue_()

            context.route("**/*", refuse)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(path.resolve().as_uri())
            grid = page.locator(".llg-static")
            assert "page 1/2" in grid.locator(".llg-head").inner_text()
            assert grid.locator("tr[data-page] .llg-prompt:visible").count() == 20
            assert grid.locator(".llg-cell.rt-up").count() == 1
            grid.locator(".llg-next").click()
            _wait(lambda: "page 2/2" in grid.locator(".llg-head").inner_text(), 10, "page 2 of the report grid")
            visible = grid.locator("tr[data-page] .llg-prompt:visible")
            assert visible.count() == 5 and "Question number 20:" in visible.first.inner_text()
            cell = grid.locator("tr[data-page='1'] details.llg-cell").first
            cell.locator("summary").click()
            details = cell.locator(".llg-more")
            assert details.is_visible()
            text = details.inner_text()
            assert "You answer in one line." in text and "Question number 20:" in text and "call_id" in text
            # a plotly chart rendered from the inlined plotly.js
            _wait(lambda: page.locator(".js-plotly-plot .main-svg").count() >= 2, 30, "the charts to render")
            assert "Summary" in page.inner_text("body") and page.locator(".llr-verdict").count() >= 1
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
            assert asked == [] and errors == [], (asked, errors)
        finally:
            browser.close()


def test_grid_rating_survives_a_kernel_restart(tmp_path):
    """A 👍 clicked in a grid with the *default* ``on_rate`` (no callback given) is stored at once: after JupyterLab's
    Kernel ▸ Restart Kernel, a fresh kernel's ``ll.load(<sweep_id>).df`` carries that rating on that call."""
    from playwright.sync_api import sync_playwright

    root = tmp_path / "nb"
    root.mkdir()
    home = tmp_path / "home"  # outside the kernel: the same home before and after the restart
    cells = [
        f"""import os
os.environ["LLMLAB_LOCAL_DELAY_MS"] = "0"
import llmlab as ll
ll.configure(home={str(home)!r}, datakit=None)
res = ll.Sweep(prompts=["What is a rainbow?", "Why do cats purr?"], models=["local/tiny"], temperature=0.0,
               max_tokens=12, seed=1).run()
open("sweep_id.txt", "w").write(res.sweep_id)
print("PID", os.getpid())""",
        f"""import os
import llmlab as ll
ll.configure(home={str(home)!r}, datakit=None)
df = ll.load(open("sweep_id.txt").read()).df
print("PID", os.getpid())
rated = df[df.rating.notna()]
print("LOADED", len(df), *[f"{{c}}:{{int(r)}}" for c, r in zip(rated.call_id, rated.rating)])""",
    ]
    write_notebook(root / "restart.ipynb", cells)
    ARTIFACTS.mkdir(exist_ok=True)
    with jupyter_lab(root) as lab, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.goto(lab.url("restart.ipynb"))
            page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=90_000)
            page.wait_for_function("document.body.innerText.includes('| Idle')", timeout=90_000)
            nb_cells = page.locator(".jp-Notebook .jp-CodeCell")
            news = page.locator(".jp-toast-container button", has_text="No")
            if news.count():
                news.first.click()

            def out(i: int):
                return nb_cells.nth(i).locator(".jp-OutputArea")

            def run_cell(i: int) -> None:
                nb_cells.nth(i).locator(".jp-InputPrompt").click()  # selects the cell (command mode)
                page.keyboard.press("Control+Enter")

            run_cell(0)
            grid = out(0)
            _wait(lambda: "PID" in out(0).inner_text(), 120, "the sweep cell to finish")
            pid_before = _line(out(0).inner_text(), "PID")[1]
            _wait(lambda: grid.locator(".llg-cell.st-done").count() == 2, 60, "two done cells")
            rated = grid.locator("details.llg-cell.st-done").first.get_attribute("data-call")
            grid.locator(f'details.llg-cell[data-call="{rated}"] button[data-rate="1"]').click()
            # the kernel redraws the cell as rated only after on_rate returned, i.e. after the store has it
            _wait(lambda: grid.locator(f'details.llg-cell.rt-up[data-call="{rated}"]').count() == 1, 60, "the rating")

            page.locator(".lm-MenuBar-itemLabel", has_text="Kernel").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Restart Kernel…").first.click()
            page.locator(".jp-Dialog button.jp-mod-accept", has_text="Restart").click()
            _wait(lambda: page.locator(".jp-Dialog").count() == 0, 30, "the restart dialog to close")
            page.wait_for_function("document.body.innerText.includes('| Idle')", timeout=90_000)

            run_cell(1)
            _wait(lambda: "LOADED" in out(1).inner_text(), 120, "the load cell after the restart")
            assert _line(out(1).inner_text(), "PID")[1] != pid_before  # a new kernel process
            assert _line(out(1).inner_text(), "LOADED")[1:] == ["2", f"{rated}:1"]
            page.screenshot(path=str(ARTIFACTS / "grid-rating-after-restart.png"), full_page=True)
        finally:
            browser.close()
