"""The command line: demo, sweep SPEC.yaml, serve-model, collector; errors are one clear line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pandas as pd
import pytest


def _run(*args: str, cwd=None, timeout: float = 120, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "llmlab", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_runs_offline_end_to_end(tmp_path):
    # --delay-ms wins over the environment variable (argument > env var > default)
    proc = _run(
        "demo",
        "--home",
        str(tmp_path / "h"),
        "--out",
        str(tmp_path / "charts"),
        "--delay-ms",
        "4",
        env_extra={"LLMLAB_DATAKIT_URL": "embedded", "LLMLAB_LOCAL_DELAY_MS": "0"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "plan: 48 calls" in out
    assert "calls=48, errors=0" in out
    assert "read back 48 spans from the collector over DQL" in out
    for model in ("local/tiny", "local/small"):
        assert model in out  # the summary table
    assert "latency_p50" in out and "ttft_p50" in out
    html = (tmp_path / "charts" / "latency_by_setting.html").read_text()
    assert "plotly" in html.lower() and "latency (ms)" in html
    import llmlab as ll

    ll.configure(home=tmp_path / "h", datakit=None)
    df = ll.spans(source="local")
    assert len(df) == 48 and (df["latency_ms"] >= 0.9 * 4 * df["output_tokens"]).all()  # 4 ms per token at least


def test_sweep_spec_yaml_with_progress_and_output(tmp_path):
    (tmp_path / "prompts.csv").write_text(
        "question,reference\nWhat is a rainbow?,light\nWhy do cats purr?,cats\n", encoding="utf-8"
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: yaml-sweep\nprompts: prompts.csv\ntemplate: 'Answer briefly: {question}'\nmodels: [local/tiny, local/small]\n"
        "temperature: [0.0, 0.7]\nmax_tokens: 8\nseed: 3\nrun: {concurrency: 4}\n",
        encoding="utf-8",
    )
    out = tmp_path / "res.csv"
    proc = _run("sweep", str(spec), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "8/8" in proc.stderr  # the progress bar
    df = pd.read_csv(out)
    assert len(df) == 8 and (df["status"] == "ok").all()
    assert set(df["reference"]) == {"light", "cats"}  # prompt-row columns come along for evaluators
    assert df["prompt"].str.startswith("Answer briefly: ").all()


def test_a_sweep_whose_every_call_fails_says_why_and_exits_1(tmp_path):
    """A wrong base_url in a spec used to end with exit 0 and a summary of dashes: now the reason is on stderr
    and the exit code tells a script or CI job that nothing succeeded."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "prompts: [a, b]\nmodels: [nowhere/tiny]\ntemperature: 0.0\nmax_tokens: 4\n"
        "providers: {nowhere: {base_url: 'http://127.0.0.1:9/v1', api_key_env: null}}\n",
        encoding="utf-8",
    )
    proc = _run("sweep", str(spec), "--no-progress", timeout=300)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "2 of 2 calls failed" in proc.stderr
    assert "provider 'nowhere' at http://127.0.0.1:9/v1" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize(
    "content, message",
    [
        ("prompts: [a]\nmodels: [local/tiny]\ntemprature: 0.5\n", "Error: spec.yaml: temprature="),
        ("prompts: [a]\ntemperature: 5\n", "Error: spec.yaml: temperature=5: must be in [0, 2]"),
        ("prompts: [a\n", "invalid YAML at line"),
        ("models: [local/tiny]\n", "Error: spec.yaml: prompts=None: required key is missing"),
        ("- just\n- a list\n", "top level must be a mapping"),
    ],
)
def test_bad_spec_is_one_clear_line(tmp_path, content, message):
    spec = tmp_path / "spec.yaml"
    spec.write_text(content, encoding="utf-8")
    proc = _run("sweep", str(spec))
    assert proc.returncode == 1
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def _wait_http(url: str, timeout: float = 20.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=1.0)
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_serve_model_and_collector_commands(tmp_path):
    mport, cport = _free_port(), _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "llmlab", "serve-model", "--port", str(mport)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "llmlab", "collector", "--port", str(cport), "--home", str(tmp_path / "c")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ),
    ]
    try:
        models = _wait_http(f"http://127.0.0.1:{mport}/v1/models").json()
        assert {m["id"] for m in models["data"]} >= {"tiny", "small"}
        ping = _wait_http(f"http://127.0.0.1:{cport}/v1/ping").json()
        assert "version" in ping["content"]
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


def _stored(home) -> tuple[int, list]:
    import sqlite3

    db = home / "llmlab.db"
    if not db.exists():
        return 0, []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            done = con.execute("SELECT count(*) FROM calls WHERE status='ok'").fetchone()[0]
            sweeps = con.execute("SELECT status, n_ok, n_errors, n_skipped FROM sweeps ORDER BY created_at").fetchall()
            return done, sweeps
    except sqlite3.OperationalError:  # not migrated yet
        return 0, []


def test_ctrl_c_stops_a_cli_sweep_keeps_what_finished_and_a_rerun_sends_the_rest(tmp_path):
    import signal

    home = tmp_path / "h"
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "prompts: [" + ", ".join(f"'rain and sun {i}'" for i in range(8)) + "]\nmodels: [local/small]\n"
        "temperature: [0.0, 0.9]\nmax_tokens: 40\nseed: 1\nrun: {concurrency: 2}\n"
    )
    # SIGINT as a terminal sends it; set to Python's default in the child whatever the test runner inherited
    code = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); from llmlab.cli import main; "
        f"sys.exit(main(['sweep', {str(spec)!r}, '--home', {str(home)!r}, '--no-progress']))"
    )
    env = {**os.environ, "LLMLAB_LOCAL_DELAY_MS": "25"}  # ~1 s per call: 16 calls take ~8 s
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.monotonic() + 120
    while _stored(home)[0] < 2:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no call finished"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "Cancelled:" in err and "run the same command again" in err
    assert "stopped='cancelled'" in out
    done, sweeps = _stored(home)
    assert len(sweeps) == 1
    status, n_ok, n_errors, n_skipped = sweeps[0]
    # the sweep is on record as cancelled, every call accounted for, every finished one kept
    assert status == "cancelled" and 2 <= n_ok == done < 16 and n_ok + n_errors + n_skipped == 16

    again = _run("sweep", str(spec), "--home", str(home), "--no-progress")
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"calls=16, errors=0, cached={done})" in again.stdout  # only the rest was sent


SCRIPT_DEFAULT_DISPLAY = """
import sys, tempfile
import llmlab as ll
ll.configure(home=tempfile.mkdtemp(), datakit=None)
ll.Sweep(prompts=["hi", "why"], models=["local/tiny"], max_tokens=4, repeats=3).run()
print("DONE")
"""


def _run_script_with_stderr(stderr_tty: bool, tmp_path) -> str:
    """Run a script that calls ``run()`` with the default display; return what reached its stderr."""
    import os
    import pty
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMLAB_", "TRACELOOP_"))}
    if not stderr_tty:
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT_DEFAULT_DISPLAY],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        assert proc.returncode == 0 and "DONE" in proc.stdout, proc.stderr
        return proc.stderr
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT_DEFAULT_DISPLAY],
        stdout=subprocess.PIPE,
        stderr=follower,
        env=env,
        cwd=tmp_path,
        text=True,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    out, _ = proc.communicate(timeout=120)
    os.close(leader)
    assert proc.returncode == 0 and "DONE" in out
    return b"".join(chunks).decode(errors="replace")


def test_default_display_is_a_bar_in_a_terminal_and_nothing_when_piped(tmp_path):
    # run()'s default display: the progress bar when stderr is a terminal, silence in logs and pipes
    shown = _run_script_with_stderr(True, tmp_path)
    assert "sweep: 100%" in shown and "ok=" in shown
    assert _run_script_with_stderr(False, tmp_path).strip() == ""


def test_spans_sweep_by_name_show_variants_and_money_format(tmp_path):
    home = str(tmp_path / "h")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: faq\n"
        "prompts: [{id: q1, q: 'Why?'}, {id: q2, q: 'How?'}]\n"
        "template: {terse: 'Answer: {q}', steps: 'Steps: {q}'}\n"
        "system: [Be brief.]\n"
        "providers:\n  other: {base_url: 'http://127.0.0.1:9/v1', rpm: 60}\n"
        "models: [local/tiny]\ntemperature: [0.0]\nmax_tokens: 6\n"
    )
    ran = _run("sweep", str(spec), "--home", home, "--no-progress")
    assert ran.returncode == 0, ran.stderr
    spans = _run("spans", "--sweep", "faq", "--source", "local", "--home", home)
    assert spans.returncode == 0, spans.stderr
    assert "4 spans" in spans.stdout
    missing = _run("spans", "--sweep", "nope", "--source", "local", "--home", home)
    assert missing.returncode != 0 and "no sweep named 'nope'" in (missing.stderr + missing.stdout)
    show = _run("show", "faq", "--home", home)
    assert show.returncode == 0, show.stderr
    assert "template terse" in show.stdout and "'Steps: {q}'" in show.stdout
    assert "e-0" not in show.stdout and "µ$" in show.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("prompts: [a]\nproviders:\n  x: {base_url: 'http://h/v1', colour: red}\n")
    refused = _run("sweep", str(bad), "--home", home)
    assert refused.returncode != 0 and "providers.x.colour" in (refused.stderr + refused.stdout)
