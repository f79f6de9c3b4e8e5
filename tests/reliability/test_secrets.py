"""No secret anywhere: a planted API key and DataKit tokens never reach a span, an exported OTLP
body, a store or collector file, a log, the CLI's output or an error message; and with
trace_content=False no prompt or completion text reaches spans, exports or the store."""

from __future__ import annotations

import io
import json
import logging
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import llmlab as ll
from llmlab.errors import redact
from llmlab.events import EventBus
from llmlab.run.retry import RetryPolicy
from llmlab.store import spanbytes
from llmlab.tracing import flush
from llmlab.tracing.export import drain
from llmlab.view.progress import ProgressBar
from tests.reliability.collector_faults import GatedCollector
from tests.reliability.conftest import price_fault_models

ROOT = Path(__file__).resolve().parents[2]


def _all_bytes(root: Path) -> bytes:
    """Every file under ``root`` (databases, their WAL and SHM files, specs, outputs), and every packed
    blob in its databases unpacked: span bytes are stored zlib-compressed (``llmlab.store.spanbytes``),
    so a secret inside a span would not show in the files' raw bytes."""
    files = [p for p in sorted(root.rglob("*")) if p.is_file()]
    return b"".join(p.read_bytes() for p in files) + b"".join(_unpacked_blobs(p) for p in files if p.suffix == ".db")


def _unpacked_blobs(path: Path) -> bytes:
    out = []
    con = sqlite3.connect(path)  # sees what is still in the WAL too
    try:
        tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in con.execute(f'SELECT * FROM "{table}"'):
                out += [spanbytes.unpack(v) for v in row if isinstance(v, bytes) and v[:1] == b"\x78"]
    finally:
        con.close()
    assert all(out), f"a packed blob in {path} did not unpack"
    return b"".join(out)


@pytest.fixture
def canaries(monkeypatch):
    hexes = [uuid.uuid4().hex for _ in range(3)]
    key, header_token, dql_token = f"canarykey{hexes[0]}", f"canaryhdr{hexes[1]}", f"canarydql{hexes[2]}"
    monkeypatch.setenv("CANARY_API_KEY", key)
    monkeypatch.setenv("TRACELOOP_HEADERS", f"x-datakit-token={header_token}")
    monkeypatch.setenv("LLMLAB_DATAKIT_TOKEN", dql_token)
    return key, header_token, dql_token


def test_planted_key_and_tokens_appear_nowhere(fault, canaries, home, tmp_path, caplog, capfd):
    key, header_token, dql_token = canaries
    price_fault_models(home, tiny=(1.0, 2.0))
    secrets = [s.encode() for s in canaries]
    caplog.set_level(logging.DEBUG)  # every logger, at its most talkative
    collector = GatedCollector(tmp_path / "collector" / "collector.db")
    try:
        # a careless provider that quotes the key back in its error bodies, and fails a lot
        fault.faults.rate_429, fault.faults.rate_5xx, fault.faults.rate_cut, fault.faults.seed = 0.3, 0.3, 0.1, 4
        fault.faults.echo_auth = True
        ll.provider("fault", base_url=fault.base_url, api_key_env="CANARY_API_KEY")
        config = ll.configure(datakit=collector.url)
        bus = EventBus()
        events: list = []
        bus.subscribe(events.append)
        out = io.StringIO()
        bar = ProgressBar(total=24, file=out)
        bus.subscribe(bar.on_event)
        sweep = ll.Sweep(
            prompts=[f"rain {i}" for i in range(12)], models=["fault/tiny"], temperature=[0.0, 0.5], max_tokens=6
        )
        res = sweep.run(
            display=False, bus=bus, retry=RetryPolicy(max_attempts=2, max_rate_limited=2, initial_s=0.01, max_s=0.02)
        )
        bar.close()
        errors = res.df.loc[res.df["status"] == "error", "error"]
        assert len(errors) > 0 and errors.str.contains("your API key").any()  # the provider did echo it
        assert fault.app.auth_seen == {f"Bearer {key}"}  # and the key was really sent
        # a request that fails outright, with the key in its error
        with pytest.raises(Exception) as raised:
            ll.provider("fault", base_url="http://127.0.0.1:9/v1", api_key_env="CANARY_API_KEY", timeout=0.5)
            r = ll.Sweep(prompts=["x"], models=["fault/tiny"], max_tokens=2, temperature=0.0).run(
                display=False, retry=RetryPolicy(max_attempts=1)
            )
            raise RuntimeError(str(r.df["error"].iloc[0]))
        flush()
        drain(config)
        local = ll.spans(sweep_id=res.sweep_id, source="local")
        remote = ll.spans(sweep_id=res.sweep_id, source="datakit")  # DQL with the token
        assert len(local) == len(remote) > 0
        assert any(
            h.get("x-datakit-token") == header_token for h in collector.headers
        )  # the header went where it belongs

        # the CLI, in its own process, with the same secrets (openai provider → the fault server)
        spec = tmp_path / "spec.yaml"
        spec.write_text("prompts: ['rain', 'sun', 'snow']\nmodels: [tiny]\ntemperature: [0.0, 0.9]\nmax_tokens: 6\n")
        env = {
            **os.environ,
            "OPENAI_API_KEY": key,
            "OPENAI_BASE_URL": fault.base_url,
            "LLMLAB_DATAKIT_URL": collector.url,
            "LLMLAB_HOME": str(config.home),
            "PYTHONPATH": str(ROOT),
            "LLMLAB_DEBUG": "0",
        }
        cli_out = b""
        for args in (
            ["sweep", str(spec), "--no-progress"],
            ["spans", "--source", "datakit"],
            ["replay"],
            ["spans", "--source", "datakit", "--out", str(tmp_path / "out.csv")],
        ):
            proc = subprocess.run([sys.executable, "-m", "llmlab", *args], env=env, capture_output=True, timeout=120)
            cli_out += proc.stdout + proc.stderr
        env["LLMLAB_DATAKIT_URL"] = "http://127.0.0.1:9"  # a failing CLI command too
        proc = subprocess.run(
            [sys.executable, "-m", "llmlab", "spans", "--source", "datakit"], env=env, capture_output=True, timeout=120
        )
        assert proc.returncode == 1 and b"Error:" in proc.stderr
        cli_out += proc.stdout + proc.stderr
    finally:
        collector.stop()
    captured = capfd.readouterr()

    haystacks = {
        "home files (store, WAL, collector db)": _all_bytes(tmp_path),
        "exported OTLP bodies": b"".join(collector.bodies),
        "logs": "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records).encode(),
        "stdout/stderr": (captured.out + captured.err).encode() + cli_out,
        "progress display": out.getvalue().encode(),
        "events": repr([e.data for e in events]).encode(),
        "results and spans frames": (res.df.to_csv() + local.to_csv() + remote.to_csv()).encode(),
        "error messages": (str(raised.value) + "".join(errors)).encode(),
    }
    assert len(haystacks["home files (store, WAL, collector db)"]) > 100_000 and len(caplog.records) > 10
    assert b"gen_ai.request.model" in _unpacked_blobs(home / "llmlab.db")  # the spans were unpacked and searched
    for where, data in haystacks.items():
        for secret in secrets:
            at = data.find(secret)
            assert at < 0, f"a planted secret leaked into {where}: ...{data[max(0, at - 300) : at + 60]!r}"
    for path in sorted(tmp_path.rglob("*")):  # and name the file, if one leaks
        if path.is_file():
            assert not any(s in path.read_bytes() for s in secrets), f"a planted secret leaked into {path}"


def test_trace_content_false_keeps_text_out_of_spans_exports_and_store(fault, home, tmp_path):
    price_fault_models(home, tiny=(1.0, 2.0))
    marker = f"zebra{uuid.uuid4().hex[:12]}"
    collector = GatedCollector(tmp_path / "collector.db")
    try:
        config = ll.configure(datakit=collector.url, trace_content=False)
        sweep = ll.Sweep(
            prompts=[{"topic": f"rain {marker}"}, {"topic": f"snow {marker}"}],
            template="Tell me about {topic}",
            system=f"You are terse {marker}",
            models=["fault/tiny"],
            temperature=0.0,
            max_tokens=8,
        )
        res = sweep.run(display=False)
        assert (res.df["status"] == "ok").all()
        completions = [c.encode() for c in res.df["completion"] if c and len(c) > 12]
        assert completions and marker in res.df["prompt"].iloc[0]  # the user still sees the text in memory
        flush()
        drain(config)
        assert collector.stats["spans_stored"] >= 2
        places = {
            "home files": _all_bytes(config.home),
            "exported OTLP bodies": b"".join(collector.bodies),
            "collector files": b"".join(p.read_bytes() for p in tmp_path.glob("collector.db*"))
            + _unpacked_blobs(tmp_path / "collector.db"),
        }
        for where, data in places.items():
            at = data.find(marker.encode())
            assert at < 0, f"prompt text in {where}: ...{data[max(0, at - 200) : at + 40]!r}"
            for text in completions:
                assert text not in data, f"completion text in {where}"
    finally:
        collector.stop()


def test_a_provider_header_token_stays_out_of_its_repr_and_errors(fault):
    from llmlab.errors import ProviderError
    from llmlab.plan.providers import providers

    token = f"canaryazure{uuid.uuid4().hex}"
    prov = ll.provider("fault", base_url=fault.base_url, api_key_env=None, headers={"api-key": token})
    assert dict(prov.default_headers) == {"api-key": token}  # sent with each request
    assert token not in repr(prov) and token not in repr(providers())  # what a notebook cell would display
    assert token not in str(ProviderError(f"HTTP 401: bad api-key {token}"))


def test_planted_key_and_header_token_stay_out_of_notebook_outputs(fault, tmp_path, monkeypatch):
    """A real kernel runs a notebook that displays a provider, a live grid, failing sweeps, frames,
    the config and an exception; the saved notebook (every output) holds neither secret."""
    import nbformat
    from nbclient import NotebookClient

    key, token = f"canarykey{uuid.uuid4().hex}", f"canaryhdr{uuid.uuid4().hex}"
    monkeypatch.setenv("CANARY_API_KEY", key)
    monkeypatch.setenv("CANARY_HEADER", token)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    fault.faults.rate_429, fault.faults.rate_5xx, fault.faults.seed, fault.faults.echo_auth = 0.5, 0.3, 7, True
    cells = [
        f"import llmlab as ll\nfrom llmlab.run.retry import RetryPolicy\nll.configure(home={str(tmp_path / 'home')!r}, datakit=None)",
        f"import os\np = ll.provider('fault', base_url={fault.base_url!r}, api_key_env='CANARY_API_KEY',\n"
        "                headers={'x-extra': os.environ['CANARY_HEADER']})\np",
        "sweep = ll.Sweep(prompts=[f'rain {i}' for i in range(6)], models=['fault/tiny'], temperature=0.0, max_tokens=4)\n"
        "res = sweep.run(display=True, retry=RetryPolicy(max_attempts=1, max_rate_limited=1, initial_s=0.01))\nres",
        "res.df[['status', 'error', 'attempts']]",
        "print(res.df['error'].tolist()); ll.configure()",
        "raise RuntimeError(res.df.loc[res.df['status'] == 'error', 'error'].iloc[0])",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(
        nb,
        timeout=180,
        kernel_name="python3",
        allow_errors=True,
        store_widget_state=True,
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    saved = json.dumps([c.get("outputs", []) for c in nb.cells]) + json.dumps(nb.metadata)  # outputs, widget state
    assert "your API key ***" in saved  # the careless provider did quote the key, and it was masked
    assert "RuntimeError" in saved and "Provider(name='fault'" in saved
    for secret in (key, token):
        at = saved.find(secret)
        assert at < 0, f"a planted secret is in the notebook's outputs: ...{saved[max(0, at - 300) : at + 60]!r}"


@pytest.mark.parametrize(
    "text, secret",
    [
        ("POST http://dk:9529/v1/query/raw?token=tkn_0123456789abcdef failed: 401", "tkn_0123456789abcdef"),
        ("GET https://api.example.com/v1/models?api_key=a1b2c3d4e5&limit=5", "a1b2c3d4e5"),
        ("connect failed: access_token=ya29.A0ARrdaM-xyz", "ya29.A0ARrdaM-xyz"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload", "eyJhbGciOiJIUzI1NiJ9.payload"),
    ],
)
def test_unregistered_credentials_in_urls_and_lines_are_masked(text, secret):
    # a secret llmlab was never told about (a token in a URL someone pasted) is still masked by its shape
    masked = redact(text)
    assert secret not in masked and "***" in masked


def test_masking_leaves_parameters_alone():
    text = "max_tokens=64: must be <= 2048; top_k=5; monkey=banana"
    assert redact(text) == text
