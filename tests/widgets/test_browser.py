"""The live grid in a real JupyterLab, in headless Chromium (Debian's package, driven by Playwright).

One notebook, run top to bottom by the Run menu:
  1. ``sweep.run()`` on the embedded model: the grid streams (a running cell with partial text is
     seen), then every cell reads "done" with latency and tokens;
  2. a longer sweep started with ``asyncio.ensure_future(sweep.arun())``: the next cell executes
     while it streams (the kernel stays responsive), the test clicks **Cancel** in the grid, and
     the awaited result says ``stopped='cancelled'`` with finished cells kept and the rest marked;
  3. ``res.show()`` re-renders the first grid from stored rows; clicking a cell opens its prompt,
     completion and call details.
A screenshot goes to ``test-artifacts/``.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.widgets.jupyter_harness import CHROMIUM, CHROMIUM_ARGS, have_browser, jupyter_lab, write_notebook

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

if not have_browser():
    if os.environ.get("CI"):
        raise RuntimeError("CI must run the browser test: install Debian's chromium and the playwright package")
    pytest.skip("needs /usr/bin/chromium and playwright", allow_module_level=True)

CELLS = [
    # 0: setup: temp home, no export, a small per-token delay so streaming is visible
    """import os, tempfile, asyncio
os.environ["LLMLAB_LOCAL_DELAY_MS"] = "25"
import llmlab as ll
ll.configure(home=tempfile.mkdtemp(prefix="llmlab-nb-"), datakit=None)
sweep = ll.Sweep(prompts=["What is a rainbow?", "Explain photosynthesis.", "Why do cats purr?"],
                 models=["local/tiny"], temperature=[0.0, 1.0], max_tokens=48, seed=1)
print("SETUP-OK")""",
    # 1: the blocking form, display defaults to the grid inside Jupyter
    "res = sweep.run(concurrency=3)",
    "print('RUN-RESULT', len(res.df), int((res.df.status == 'ok').sum()), res.stopped)",
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
import time; t0 = time.monotonic()
res3 = slow.run(concurrency=2)
print("RUN-CANCEL", res3.stopped, len(res3.df), round(time.monotonic() - t0, 1))""",
]


def _wait(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


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
            page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=45_000)
            page.wait_for_function("document.body.innerText.includes('| Idle')", timeout=45_000)
            cells = page.locator(".jp-Notebook .jp-CodeCell")
            assert cells.count() == len(CELLS)

            def out(i: int):
                return cells.nth(i).locator(".jp-OutputArea")

            news = page.locator(".jp-toast-container button", has_text="No")
            if news.count():
                news.first.click()  # the "official Jupyter news?" toast would cover the grid
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

            # 1. the run() grid streams: a cell is seen running with partial text before the end
            grid1 = out(1)
            seen_running = _wait(
                lambda: grid1.locator(".llg-cell.st-running .llg-txt").evaluate_all(
                    "els => els.map(e => e.textContent).filter(t => t.length > 0)"), 60, "a running cell with text")  # fmt: skip
            _wait(lambda: "RUN-RESULT" in out(2).inner_text(), 60, "the run() cell to finish")
            assert "RUN-RESULT 6 6 None" in out(2).inner_text()
            _wait(lambda: grid1.locator(".llg-cell.st-done").count() == 6, 10, "six done cells")
            head = grid1.locator(".llg-head").inner_text()
            assert head.startswith("6/6 calls") and "finished" in head and "0 errors" in head
            done_texts = grid1.locator(".st-done .llg-txt").all_inner_texts()
            assert all(len(t.strip()) > 0 for t in done_texts)  # the streamed completions
            meta = grid1.locator(".st-done .llg-meta").first.inner_text()
            assert re.fullmatch(r"\d+ ms · 48 tok · \$0\.00000", meta), meta  # latency, tokens, cost
            assert any(seen.strip() and len(seen) < 400 for seen in seen_running)

            # 2. arun() in the background: the next cell ran while it streams; Cancel stops it
            grid2 = out(3)
            _wait(lambda: "RESPONSIVE" in out(4).inner_text(), 30, "a cell to execute during the sweep")
            assert "RESPONSIVE False" in out(4).inner_text()
            _wait(lambda: grid2.locator(".llg-cell.st-done").count() >= 2, 40, "two finished calls in the arun grid")
            running_before = grid2.locator(".llg-cell.st-running").count()
            page.screenshot(path=str(ARTIFACTS / "grid-streaming.png"), full_page=True)
            grid2.locator("button.llmlab-cancel").click()
            _wait(lambda: "ARUN-RESULT" in out(5).inner_text(), 30, "the cancelled sweep to return")
            words = out(5).inner_text().split()
            assert words[1] == "cancelled", words
            kept, skipped = int(words[2]), int(words[3])
            assert 2 <= kept < 16 and kept + skipped <= 16
            _wait(lambda: "stopped: cancelled" in grid2.locator(".llg-head").inner_text(), 10, "the grid header")
            assert grid2.locator(".llg-cell.st-done").count() == kept
            assert grid2.locator(".llg-cell.st-cancelled").count() == 16 - kept
            assert running_before >= 1
            assert grid2.locator("button.llmlab-cancel").is_disabled()

            # 3. res.show(): the first grid again from stored rows; a click opens the details
            grid3 = out(6)
            _wait(lambda: grid3.locator(".llg-cell.st-done").count() == 6, 30, "the re-shown grid")
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
            _wait(lambda: grid4.locator(".llg-cell.st-done").count() >= 2, 40, "two finished calls in the run() grid")
            grid4.locator("button.llmlab-cancel").click()
            _wait(lambda: "RUN-CANCEL" in out(7).inner_text(), 30, "the cancelled run() to return")
            line = [ln for ln in out(7).inner_text().splitlines() if ln.startswith("RUN-CANCEL")][0].split()
            assert line[1] == "cancelled", line
            assert 2 <= int(line[2]) < 12  # finished calls kept, the rest never sent
            assert float(line[3]) < 10.0  # uncancelled it takes ~15 s
            assert grid4.locator(".llg-cell.st-cancelled").count() == 12 - int(line[2])

            page.screenshot(path=str(ARTIFACTS / "grid-final.png"), full_page=True)
            cells.nth(6).screenshot(path=str(ARTIFACTS / "grid-details.png"))  # scrolls the cell into view
            cells.nth(7).screenshot(path=str(ARTIFACTS / "grid-run-cancelled.png"))
        finally:
            browser.close()
