"""The seed article's app, end to end: a Flask app with plain ``Traceloop.init(app_name=…)``
(metrics on), ``@workflow``/``@task`` and a streaming OpenAI call to the embedded model server,
exporting with ``TRACELOOP_BASE_URL=http://127.0.0.1:<port>/otel`` to ``llmlab collector`` run
as its own process. Its traces come back through ``ll.spans(source="datakit")``, its metrics
through ``ll.metrics()``, and they agree with each other, with what the client received, and
with the dashboard and the trace view.

The app runs in a subprocess (``Traceloop.init`` is a process singleton) and is stopped with
SIGINT, so OpenTelemetry's exit hooks flush the last spans and metrics as in production.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

import llmlab as ll
from llmlab.analysis.dashboard import dashboard_frame
from llmlab.localmodel import create_app as model_app
from llmlab.readback.traces import span_tree
from llmlab.serving import BackgroundServer

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "examples" / "seed_app" / "app.py"
SERVICE = "seed_openllmetry_stream_flask"
QUESTIONS = [
    "What is a span?",
    "Why trace LLM calls?",
    "What does DataKit collect?",
    "What is a token?",
    "How is cost computed?",
    "What is time to first token?",
]
PRICES = {"tiny": {"input": 1.0, "output": 2.0}, "small": {"input": 3.0, "output": 6.0}}
# what the OTel SDK / exporters / Traceloop print when an export fails
EXPORT_ERRORS = (
    "Failed to export",
    "Exception while exporting",
    "Transient error",
    "Traceback",
    "Error:",
    "error exporting",
    "Invalid type",
    "ConnectionError",
    "Max retries",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"{proc.args} exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"
            )
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout}s")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMLAB_", "TRACELOOP_", "OPENAI_", "OTEL_"))}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    """``llmlab collector`` in its own process, and the embedded model server; yields (port, model url, tmp)."""
    tmp = tmp_path_factory.mktemp("seed")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmlab", "collector", "--port", str(port), "--home", str(tmp / "collector")],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    model = BackgroundServer(model_app(delay_ms=1.0), name="seed-model").start()
    try:
        _wait_http(f"http://127.0.0.1:{port}/v1/ping", proc)
        yield port, model.url + "/v1", tmp
    finally:
        model.stop()
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _start_app(port: int, model_url: str, cwd: Path, service: str, **env: str) -> tuple[subprocess.Popen, str]:
    app_port = _free_port()
    app = subprocess.Popen(
        [sys.executable, str(APP), "--port", str(app_port)],
        env=_env(
            OPENAI_BASE_URL=model_url,
            TRACELOOP_BASE_URL=f"http://127.0.0.1:{port}/otel",
            SEED_APP_NAME=service,
            PYTHONUNBUFFERED="1",
            **env,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(cwd),
    )
    _wait_http(f"http://127.0.0.1:{app_port}/", app)
    return app, f"http://127.0.0.1:{app_port}/ask"


def _stop_app(app: subprocess.Popen) -> tuple[str, str]:
    app.send_signal(signal.SIGINT)  # exit hooks flush spans and metrics
    try:
        return app.communicate(timeout=60)
    finally:
        if app.poll() is None:
            app.kill()
            app.communicate()


@pytest.fixture(scope="module")
def seed_run(collector):
    """Run the seed app against the collector, send traffic, stop the app; yield what happened."""
    port, model_url, tmp = collector
    app, url = _start_app(port, model_url, tmp, SERVICE, OTEL_METRIC_EXPORT_INTERVAL="500")
    try:
        sent = []
        with httpx.Client(timeout=30.0) as client:
            for q in QUESTIONS:
                r = client.post(url, json={"messages": [{"role": "user", "content": q}], "max_tokens": 24})
                assert r.status_code == 200, r.text
                sent.append({"prompt": q, "body": r.text, "usage": True})
            # exactly the seed's request: no stream_options, so no usage comes back
            q = "Tell me about OpenLLMetry."
            r = client.post(
                url, json={"messages": [{"role": "user", "content": q}], "max_tokens": 24, "include_usage": False}
            )
            assert r.status_code == 200, r.text
            sent.append({"prompt": q, "body": r.text, "usage": False})
            # a failing call: the model server rejects max_tokens beyond its window (HTTP 400)
            r = client.post(url, json={"messages": [{"role": "user", "content": "fail"}], "max_tokens": 100000})
            assert r.status_code == 500 and "max_tokens" in r.json()["error"]
            time.sleep(1.2)  # at least one periodic metrics export while the app runs
    finally:
        out, err = _stop_app(app)
    yield {"port": port, "sent": sent, "stdout": out, "stderr": err, "returncode": app.returncode, "tmp": tmp}


@pytest.fixture
def datakit(seed_run, home):
    home.mkdir(parents=True, exist_ok=True)
    (home / "prices.json").write_text(json.dumps(PRICES))
    ll.configure(home=str(home), datakit=f"http://127.0.0.1:{seed_run['port']}")
    return seed_run


def test_app_logs_no_export_errors(seed_run):
    assert seed_run["returncode"] in (0, -signal.SIGINT, 130), seed_run["stderr"][-2000:]
    logs = seed_run["stdout"] + seed_run["stderr"]
    for needle in EXPORT_ERRORS:
        assert needle not in logs, f"{needle!r} in the app's output:\n{logs[-3000:]}"
    assert "Metrics are disabled" not in logs  # plain Traceloop.init(): metrics on


def test_spans_come_back_with_workflow_model_temperature_tokens_latency(datakit):
    df = ll.spans(source="datakit", service=SERVICE)
    sent = datakit["sent"]
    assert len(df) == len(sent) + 1  # + the failed call
    assert (df["service"] == SERVICE).all()
    assert (df["workflow"] == "ask_workflow").all()
    assert (df["span_name"] == "openai.chat").all()
    assert (df["temperature"] == 0.3).all()
    ok = df[df["status"] == "ok"].set_index("prompt")
    failed = df[df["status"] == "error"]
    assert len(failed) == 1 and "max_tokens" in failed["error"].iloc[0]
    for call in sent:
        row = ok.loc[call["prompt"]]
        assert row["model"] == "tiny" and row["response_model"] == "tiny"
        assert row["completion"] == call["body"]  # the span holds exactly what the client streamed
        assert row["max_tokens"] == 24
        assert 0 < row["ttft_ms"] < row["latency_ms"] < 30_000
        if call["usage"]:
            assert row["input_tokens"] > 0 and row["output_tokens"] > 0
            assert row["total_tokens"] == row["input_tokens"] + row["output_tokens"]
            expected = row["input_tokens"] * 1.0 / 1e6 + row["output_tokens"] * 2.0 / 1e6
            assert row["cost_usd"] == pytest.approx(expected)
        else:  # the seed as written: the server sends no usage, OpenLLMetry records none
            assert pd.isna(row["input_tokens"]) and pd.isna(row["output_tokens"])


def test_metrics_come_back_and_agree_with_spans(datakit):
    df = ll.spans(source="datakit", service=SERVICE)
    m = ll.metrics(service=SERVICE)
    names = set(m["name"])
    assert {
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.duration",
        "gen_ai.server.time_to_first_token",
        "gen_ai.client.generation.choices",
        "llm.openai.chat_completions.exceptions",
    } <= names
    assert (m["service"] == SERVICE).all()

    tokens = m[m["name"] == "gen_ai.client.token.usage"]
    assert set(tokens["kind"]) == {"histogram"} and set(tokens["unit"]) == {"token"}
    # several cumulative exports: the increments add up to the final totals, which match the spans
    per_type = tokens.groupby("gen_ai_token_type")[["count_delta", "sum_delta"]].sum()
    with_usage = df[df["input_tokens"].notna()]
    assert per_type.loc["input", "count_delta"] == len(with_usage)
    assert per_type.loc["input", "sum_delta"] == with_usage["input_tokens"].sum()
    assert per_type.loc["output", "sum_delta"] == with_usage["output_tokens"].sum()
    last = tokens.sort_values("time").groupby("gen_ai_token_type").tail(1)
    for _, row in last.iterrows():
        assert row["bucket_bounds"] == [
            1,
            4,
            16,
            64,
            256,
            1024,
            4096,
            16384,
            65536,
            262144,
            1048576,
            4194304,
            16777216,
            67108864,
            float("inf"),
        ]  # OpenLLMetry's token view
        assert sum(row["bucket_counts"]) == row["count"]
        assert row["min"] <= row["sum"] / row["count"] <= row["max"]

    duration = m[m["name"] == "gen_ai.client.operation.duration"]
    assert set(duration["unit"]) == {"s"}
    ok_dur = duration[duration["error_type"].isna()] if "error_type" in duration else duration
    n_ok = int((df["status"] == "ok").sum())
    assert ok_dur["count_delta"].sum() == n_ok
    # the metric measures the same calls as the spans (its clock starts a little later)
    mean_s = ok_dur["sum_delta"].sum() / n_ok
    assert 0 < mean_s <= df.loc[df["status"] == "ok", "latency_ms"].mean() / 1000 * 1.5
    ttft = m[m["name"] == "gen_ai.server.time_to_first_token"]
    assert ttft["count_delta"].sum() == n_ok
    errors = m[m["name"] == "llm.openai.chat_completions.exceptions"]
    assert set(errors["kind"]) == {"sum"} and set(errors["temporality"]) == {"cumulative"}
    assert errors["value_delta"].sum() == 1 and errors["value"].max() == 1
    assert set(errors["error_type"]) == {"BadRequestError"}
    # a name filter gives the same rows as filtering the full frame
    only = ll.metrics("gen_ai.client.token.usage", service=SERVICE)
    assert len(only) == len(tokens) and set(only["name"]) == {"gen_ai.client.token.usage"}


def test_dashboard_of_the_app(datakit):
    df = ll.spans(source="datakit", service=SERVICE)
    fig = ll.charts.dashboard(df, by="model")
    frame = dashboard_frame(df, by="model")
    assert fig.layout.meta["interval"] == frame.attrs["interval"] == "1s"  # a few seconds of traffic
    requests = [t for t in fig.data if t.meta["panel"] == "requests"]
    assert sum(sum(t.y) for t in requests) == len(df)
    rates = {t.meta["group"]: t for t in fig.data if t.meta["panel"] == "error_rate"}
    assert set(rates) == {"tiny", "small"}  # the failing call asked for more tokens: select_model chose small
    assert [v for v in rates["small"].y if v == v] == [1.0]
    assert all(v == 0.0 for v in rates["tiny"].y if v == v)
    cost = next(t for t in fig.data if t.meta["panel"] == "cost" and t.meta["group"] == "tiny")
    assert cost.y[-1] == pytest.approx(df.loc[df["model"] == "tiny", "cost_usd"].sum())


def test_trace_view_shows_workflow_task_chat_tree_and_messages(datakit):
    df = ll.spans(source="datakit", service=SERVICE)
    view = ll.traces(df, source="datakit")
    assert len(view) == len(df)
    first_ok = next(i for i in range(len(view)) if view.calls.loc[i, "status"] == "ok")
    tree = [(depth, span["name"]) for depth, span in span_tree(view.trace(first_ok))]
    # with opentelemetry-instrumentation-flask installed (as in the seed) a server span is the root
    root = 1 if tree and tree[0][1] == "POST /ask" else 0
    assert tree[root:] == [
        (root, "ask_workflow.workflow"),
        (root + 1, "select_model.task"),
        (root + 1, "call_model.task"),
        (root + 2, "openai.chat"),
    ]
    assert view.tree(first_ok).splitlines()[3 + root].startswith("  " * (root + 2) + "openai.chat  ")
    html = view._repr_html_()
    row = view.calls.loc[first_ok]
    assert row["prompt"] in html and row["completion"].split()[0] in html
    assert "ask_workflow.workflow" in html and "openai.chat" in html
    spans = view.trace(first_ok)
    assert set(spans["name"]) - {"POST /ask"} == {
        "ask_workflow.workflow",
        "select_model.task",
        "call_model.task",
        "openai.chat",
    }
    assert spans["trace_id"].nunique() == 1


def test_logs_reach_the_collector(collector):
    """With TRACELOOP_LOGGING_ENABLED=true the app's log records go to /otel/v1/logs and are kept."""
    port, model_url, tmp = collector
    app, url = _start_app(port, model_url, tmp, "seed_logs", TRACELOOP_LOGGING_ENABLED="true")
    try:
        r = httpx.post(url, json={"messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}, timeout=30.0)
        assert r.status_code == 200
    finally:
        out, err = _stop_app(app)
    for needle in EXPORT_ERRORS:
        assert needle not in out + err
    # there is no DQL path for logs (L::) in the embedded collector: read its database
    db = sqlite3.connect(tmp / "collector" / "collector.db")
    try:
        bodies = [json.loads(b) for (b,) in db.execute("SELECT body FROM logs WHERE service = 'seed_logs'")]
    finally:
        db.close()
    assert any("POST /ask" in str(b) for b in bodies), bodies[:5]
