"""Record/replay cassettes: replay needs no server and no key, sends nothing, reproduces the rows;
a request missing from the cassette fails naming the call; secrets never reach the file."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx2
import pytest

import llmlab as ll
from llmlab import localmodel
from llmlab.localmodel import create_app
from llmlab.run.cassette import Cassette, CassetteTransport, request_key
from llmlab.serving import BackgroundServer
from tests.core.faulty import FlakyApp

SECRET = "sk-cassette-test-0123456789abcdef"
STABLE = [
    "call_id",
    "model",
    "temperature",
    "completion",
    "finish_reason",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cost_usd",
    "status",
]


@pytest.fixture
def paid(monkeypatch):
    """A provider 'paid' that needs a key, served by a counting local model server."""
    app = FlakyApp(create_app(delay_ms=0), fail_first=0)
    server = BackgroundServer(app).start()
    monkeypatch.setenv("PAID_KEY", SECRET)
    ll.provider("paid", base_url=server.url + "/v1", api_key_env="PAID_KEY")
    yield app
    server.stop()


def _sweep(prompts=("What is a rainbow?", "Why do we need sleep?"), model="paid/tiny", **kw):
    args = {"temperature": [0.0, 0.8], "max_tokens": 10, "seed": 4, "repeats": 2}
    args.update(kw)
    return ll.Sweep(prompts=list(prompts), models=[model], **args)


def test_replay_reproduces_recording_without_key_or_requests(paid, tmp_path, monkeypatch):
    cassette = tmp_path / "c.json"
    sweep = _sweep()
    recorded = sweep.run(display=False, cache="record", cassette=cassette)
    assert paid.requests == len(sweep.calls) == 8
    data = json.loads(cassette.read_text())
    assert len(data["interactions"]) == 8  # the two repeats of a request are distinct interactions
    assert oct(cassette.stat().st_mode & 0o777) == "0o644"

    monkeypatch.delenv("PAID_KEY")  # replay needs no key...
    replayed = sweep.run(display=False, cache="replay", cassette=cassette)
    assert paid.requests == 8  # ...and sends nothing
    assert not replayed.df["cached"].any()  # answered by the cassette, not llmlab's response cache
    assert replayed.df[STABLE].equals(recorded.df[STABLE])
    assert (replayed.df["ttft_ms"] > 0).all()  # the streamed SSE body was replayed through the real client
    assert cassette.read_text() == json.dumps(data, indent=1, ensure_ascii=False) + "\n"  # replay never writes


def test_cassette_holds_no_secret_and_no_request_headers(paid, tmp_path):
    cassette = tmp_path / "c.json"
    _sweep(repeats=1).run(display=False, cache="record", cassette=cassette)
    text = cassette.read_text()
    assert SECRET not in text
    for word in ("authorization", "bearer", "api-key", "x-stainless", "user-agent"):
        assert word not in text.lower()
    entry = next(iter(json.loads(text)["interactions"].values()))
    assert set(entry["response"]["headers"]) <= {"content-type", "content-encoding"}
    assert entry["response"]["events"][-1] == "data: [DONE]"  # the SSE stream, event by event


def test_replay_miss_names_the_call_and_sends_nothing(paid, tmp_path, monkeypatch):
    cassette = tmp_path / "c.json"
    _sweep(repeats=1).run(display=False, cache="record", cassette=cassette)
    before = paid.requests
    monkeypatch.delenv("PAID_KEY")
    changed = _sweep(prompts=("What is a rainbow?", "Why is the sky blue?"), repeats=1)
    missing = [c for c in changed.calls if c.prompt == "Why is the sky blue?"]
    with pytest.raises(ll.ReplayMissError) as info:
        changed.run(display=False, cache="replay", cassette=cassette)
    message = str(info.value)
    assert message.startswith("2 of 4 calls are not in the cassette")
    for call in missing:
        assert f"call_id={call.call_id}" in message
    assert "model=paid/tiny" in message and "prompt='Why is the sky blue?'" in message
    assert sorted(info.value.call_ids) == sorted(c.call_id for c in missing)
    assert paid.requests == before


def test_replay_of_local_model_does_not_start_the_model_server(tmp_path):
    cassette = tmp_path / "c.json"
    sweep = _sweep(model="local/tiny", repeats=1)
    recorded = sweep.run(display=False, cache="record", cassette=cassette)
    localmodel.stop_server()
    replayed = sweep.run(display=False, cache="replay", cassette=cassette)
    assert localmodel._server is None
    assert replayed.df[STABLE].equals(recorded.df[STABLE])


def test_re_recording_starts_afresh_and_later_recordings_add(tmp_path):
    cassette = tmp_path / "c.json"
    # an earlier session recorded two questions (another process, as when a notebook is re-executed)
    script = (
        f"import llmlab as ll; ll.configure(home={str(tmp_path / 'home')!r}, datakit=None); "
        f"ll.Sweep(prompts=['What is a rainbow?', 'Why do we need sleep?'], models=['local/tiny'], "
        f"temperature=0.0, max_tokens=6).run(display=False, cache='record', cassette={str(cassette)!r})"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    assert len(json.loads(cassette.read_text())["interactions"]) == 2

    def prompts() -> list[str]:
        entries = json.loads(cassette.read_text())["interactions"].values()
        return sorted(e["request"]["body"]["messages"][0]["content"] for e in entries)

    # the question set changed: re-recording keeps exactly what this run sends
    _sweep(prompts=("What is a rainbow?",), model="local/tiny", repeats=1, temperature=0.0).run(
        display=False, cache="record", cassette=cassette
    )
    assert prompts() == ["What is a rainbow?"]
    # a second sweep of the same session adds to the cassette
    _sweep(prompts=("How do plants make food?",), model="local/tiny", repeats=1, temperature=0.0).run(
        display=False, cache="record", cassette=cassette
    )
    assert prompts() == ["How do plants make food?", "What is a rainbow?"]


def test_transient_failures_are_not_recorded(tmp_path):
    app = FlakyApp(create_app(delay_ms=0), fail_first=1, status=503, retry_after="0.01")
    server = BackgroundServer(app).start()
    try:
        ll.provider("flaky2", base_url=server.url + "/v1", api_key_env=None)
        cassette = tmp_path / "c.json"
        sweep = _sweep(model="flaky2/tiny", repeats=1)
        res = sweep.run(display=False, cache="record", cassette=cassette)
        assert app.requests == 8 and (res.df["retries"] == 1).all()
        statuses = [e["response"]["status"] for e in json.loads(cassette.read_text())["interactions"].values()]
        assert statuses == [200] * 4
        again = sweep.run(display=False, cache="replay", cassette=cassette)
        assert (again.df["status"] == "ok").all() and (again.df["retries"] == 0).all() and app.requests == 8
    finally:
        server.stop()


def test_bad_cassette_arguments_fail_before_sending(paid, tmp_path):
    sweep = _sweep(repeats=1)
    with pytest.raises(ll.ConfigError, match="nowhere.json.*file not found.*cache='record'"):
        sweep.run(display=False, cache="replay", cassette=tmp_path / "nowhere.json")
    with pytest.raises(ll.ValidationError, match="cassette=None: cache='replay' needs cassette="):
        sweep.run(display=False, cache="replay")
    with pytest.raises(ll.ValidationError, match="cassette=.*only with cache='record' or 'replay'"):
        sweep.run(display=False, cassette=tmp_path / "c.json")
    with pytest.raises(ll.ValidationError, match="cache='replya'"):
        sweep.run(display=False, cache="replya", cassette=tmp_path / "c.json")
    (tmp_path / "bad.json").write_text('{"version": 99, "interactions": {}}')
    with pytest.raises(ll.ConfigError, match="version 99"):
        sweep.run(display=False, cache="replay", cassette=tmp_path / "bad.json")
    assert paid.requests == 0


def test_request_key_is_canonical():
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.0}
    key = request_key("local", "POST", "/chat/completions", json.dumps(body).encode())
    reordered = json.dumps(dict(reversed(list(body.items())))).encode()
    assert request_key("local", "post", "/chat/completions", reordered) == key  # key order, method case
    with_user = json.dumps({**body, "user": "alice", "metadata": {"run": 7}}).encode()
    assert request_key("local", "POST", "/chat/completions", with_user) == key  # volatile fields dropped
    hotter = json.dumps({**body, "temperature": 0.5}).encode()
    assert request_key("local", "POST", "/chat/completions", hotter) != key
    assert request_key("other", "POST", "/chat/completions", json.dumps(body).encode()) != key
    assert request_key("local", "POST", "/chat/completions", json.dumps(body).encode(), repeat=1) != key


async def test_transport_alone_raises_a_miss_without_a_network_transport(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text('{"version": 1, "interactions": {}}')
    transport = CassetteTransport(Cassette(path, "replay"), provider="openai", base_url="https://api.openai.com/v1")
    assert transport._inner is None  # replay has nothing that could send
    async with httpx2.AsyncClient(transport=transport) as client:
        with pytest.raises(
            ll.ReplayMissError, match=r"model=openai/gpt-4o-mini prompt='Say hi' \(POST /chat/completions"
        ):
            await client.post(
                "https://api.openai.com/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hi"}]},
            )
