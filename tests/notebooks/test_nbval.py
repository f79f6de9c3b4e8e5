"""nbval really guards the regression notebook: a copy passes as committed, and fails when the
model's output changes (in the cassette it replays) or when an expected output is edited.

Each case runs ``pytest --nbval`` on a copy in a subprocess, with the committed sanitizer config,
exactly as CI runs the notebooks folder.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
REGRESSION = "04_regression.ipynb"


def _copy(tmp_path: Path) -> Path:
    work = tmp_path / "nb"
    work.mkdir()
    shutil.copy(NOTEBOOKS / REGRESSION, work / REGRESSION)
    shutil.copytree(NOTEBOOKS / "cassettes", work / "cassettes")
    return work


def _nbval(work: Path) -> tuple[int, str, dict[str, int]]:
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-rf",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        "--nbval",
        "--nbval-current-env",
        "--nbval-sanitize-with",
        str(NOTEBOOKS / "nbval_sanitize.cfg"),
        REGRESSION,
    ]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=240)
    out = proc.stdout + proc.stderr
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|error)", out.splitlines()[-1] if out else "")}
    return proc.returncode, out, counts


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _failed_cells(out: str) -> set[int]:
    return {int(n) for n in re.findall(r"FAILED \S*::Cell (\d+)", out)}


def _code_index(nb_path: Path, marker: str) -> int:
    """nbval's cell number (it counts code cells) of the code cell containing ``marker``."""
    code = [c for c in json.loads(nb_path.read_text())["cells"] if c["cell_type"] == "code"]
    return next(i for i, c in enumerate(code) if marker in _source(c))


def _edit_answer(work: Path, model: str, question: str, first: str, keep_rest: bool) -> dict:
    """Change the recorded greedy answer of ``model`` to ``question`` in the copied cassette: its
    first streamed piece becomes ``first``, the later pieces stay (``keep_rest``) or are emptied."""
    cassette = work / "cassettes" / "regression.json"
    data = json.loads(cassette.read_text())
    target = next(
        e
        for e in data["interactions"].values()
        if e["request"]["body"]["model"] == model
        and e["request"]["body"]["temperature"] == 0.0
        and e["request"]["body"]["messages"][0]["content"] == question
    )
    replaced = False
    for i, event in enumerate(target["response"]["events"]):
        chunk = json.loads(event.removeprefix("data: ")) if event != "data: [DONE]" else {}
        delta = (chunk.get("choices") or [{}])[0].get("delta", {})
        if delta.get("content"):
            if replaced and keep_rest:
                break
            delta["content"] = "" if replaced else first
            replaced = True
            target["response"]["events"][i] = "data: " + json.dumps(chunk)
    cassette.write_text(json.dumps(data))
    return target


def test_committed_regression_notebook_passes(tmp_path):
    code, out, counts = _nbval(_copy(tmp_path))
    assert code == 0, out
    code_cells = [c for c in json.loads((NOTEBOOKS / REGRESSION).read_text())["cells"] if c["cell_type"] == "code"]
    assert counts == {"passed": len(code_cells)}, out  # every cell ran and matched


def test_changed_model_output_makes_nbval_fail(tmp_path):
    work = _copy(tmp_path)
    # the model now answers one question with a different first word (a small, plausible drift)
    _edit_answer(work, "small", "Why do we need sleep?", "Slumber", keep_rest=True)

    code, out, counts = _nbval(work)
    assert code != 0, out
    assert "Cell outputs differ" in out
    failed = _failed_cells(out)
    nb = work / REGRESSION
    assert _code_index(nb, "ll.report(df") in failed  # the digest of the completions moved
    assert _code_index(nb, 'df[["model", "temperature", "question", "completion"') in failed
    assert _code_index(nb, 'print("mode:", MODE)') not in failed  # only what the change touches fails
    assert counts.get("failed") == len(failed) == 2, out


def test_drifted_answer_fails_the_regression_check_naming_the_call(tmp_path):
    work = _copy(tmp_path)
    # the model now gives an unrelated answer to one question: far below the baseline similarity bound
    target = _edit_answer(
        work, "tiny", "What causes a rainbow?", "Stock prices fell sharply on Tuesday.", keep_rest=False
    )

    code, out, _counts = _nbval(work)
    assert code != 0, out
    nb = work / REGRESSION
    assert _code_index(nb, "ll.expect(\n    df,") in _failed_cells(out), out
    # the failure reads as a sentence naming the call, its answer and the baseline's
    assert "CheckFailed" in out
    assert "FAIL  completions >= 0.9 similar to the baseline by difflib (tolerance rel 0.05): 1 calls below" in out
    failing = re.search(r"call_id=(\w+) model=local/tiny temperature=0 .*prompt='What causes a rainbow\?'", out)
    assert failing is not None and failing.group(1) == target["request"]["call_id"], out
    assert "completion='Stock prices fell sharply on Tuesday.'" in out


def test_edited_expected_output_makes_nbval_fail(tmp_path):
    work = _copy(tmp_path)
    nb_path = work / REGRESSION
    nb = json.loads(nb_path.read_text())
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code" and "ll.report(df" in _source(c))
    data = cell["outputs"][0]["data"]
    text = "".join(data["text/plain"]) if isinstance(data["text/plain"], list) else data["text/plain"]
    data["text/plain"] = text.replace("12 calls, 0 errors", "12 calls, 1 errors")
    assert data["text/plain"] != text
    nb_path.write_text(json.dumps(nb))

    code, out, counts = _nbval(work)
    assert code != 0 and "Cell outputs differ" in out, out
    assert _failed_cells(out) == {_code_index(nb_path, "ll.report(df")}, out


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_notebooks_are_tutorials_with_committed_outputs(name):
    nb = json.loads((NOTEBOOKS / name).read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"  # no kernel-picker dialog in JupyterLab
    cells = nb["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert sum(c["cell_type"] == "markdown" for c in cells) >= len(code) // 2  # prose between the cells
    assert all(c.get("execution_count") for c in code), "every code cell was executed"
    checked = [c for c in code if "NBVAL_IGNORE_OUTPUT" not in _source(c)]
    assert sum(bool(c.get("outputs")) for c in checked) >= 0.8 * len(checked), "outputs are committed"
    assert len(checked) >= 2 * (len(code) - len(checked)), "most cells are checked, not ignored"
    assert (NOTEBOOKS / name).stat().st_size < 200_000  # no plotly.js or other bloat in the file
    text = json.dumps(nb)
    assert "Traceback" not in text and '"output_type": "error"' not in text
    assert "/work/" not in text  # nothing machine-specific (temp homes are sanitized, never the repo)
