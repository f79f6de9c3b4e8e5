"""The embedded OpenAI-compatible server, driven through the real ``openai`` client over HTTP."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest

import llmlab.localmodel as lm
from llmlab.localmodel import count_prompt_tokens, create_app
from llmlab.serving import BackgroundServer

MSGS = [{"role": "system", "content": "You are a helpful tutor."}, {"role": "user", "content": "What is a rainbow?"}]


@pytest.fixture(scope="module")
def srv():
    server = BackgroundServer(create_app(delay_ms=0)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(srv):
    with openai.OpenAI(base_url=srv.url + "/v1", api_key="sk-anything-goes-here", max_retries=0) as c:
        yield c


def test_plain_completion_shape(client):
    r = client.chat.completions.create(model="small", messages=MSGS, temperature=0, max_tokens=12)
    assert r.id.startswith("chatcmpl-") and r.object == "chat.completion" and r.model == "small"
    assert isinstance(r.created, int)
    choice = r.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant" and choice.logprobs is None
    assert "rainbow" in choice.message.content.lower()
    assert choice.finish_reason == "length"
    assert r.usage.completion_tokens == 12
    assert r.usage.prompt_tokens == count_prompt_tokens(MSGS)
    assert r.usage.total_tokens == r.usage.prompt_tokens + 12


def test_raw_plain_json_keys(srv):
    body = httpx.post(
        srv.url + "/v1/chat/completions", json={"model": "local/tiny", "messages": MSGS, "max_tokens": 3}
    ).json()
    assert set(body) >= {"id", "object", "created", "model", "choices", "usage"}
    assert set(body["choices"][0]) >= {"index", "message", "finish_reason", "logprobs"}
    assert body["choices"][0]["logprobs"] is None
    assert set(body["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert body["model"] == "tiny"


def test_streaming_with_usage(client):
    stream = client.chat.completions.create(
        model="small",
        messages=MSGS,
        temperature=0.8,
        seed=7,
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    final = chunks[-1]
    assert final.choices == [] and final.usage is not None
    assert final.usage.completion_tokens == len(content)
    assert final.usage.prompt_tokens == count_prompt_tokens(MSGS)
    assert final.usage.total_tokens == final.usage.prompt_tokens + len(content)
    assert content[-1].choices[0].finish_reason in ("stop", "length")
    assert all(c.choices[0].finish_reason is None for c in content[:-1])
    assert all(c.usage is None for c in chunks[:-1])
    # same seed, plain request → the same text
    text = "".join(c.choices[0].delta.content for c in content)
    plain = client.chat.completions.create(model="small", messages=MSGS, temperature=0.8, seed=7, max_tokens=40)
    assert plain.choices[0].message.content == text
    assert plain.usage.completion_tokens == len(content)


def test_streaming_without_usage_and_raw_sse(srv):
    with httpx.stream(
        "POST",
        srv.url + "/v1/chat/completions",
        json={"model": "tiny", "messages": MSGS, "max_tokens": 5, "stream": True, "temperature": 0},
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert len(chunks) == 1 + 5  # role chunk + one chunk per token, no usage chunk
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all("usage" not in c or c["usage"] is None for c in chunks)


def test_stream_stop_sequence(client):
    full = client.chat.completions.create(model="small", messages=MSGS, temperature=0, max_tokens=30)
    text = full.choices[0].message.content
    stream = client.chat.completions.create(
        model="small",
        messages=MSGS,
        temperature=0,
        max_tokens=30,
        stop=["colors"],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    got = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert got == text[: text.index("colors")]
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert reasons == ["stop"]
    assert chunks[-1].usage.completion_tokens == sum(1 for c in chunks if c.choices and c.choices[0].delta.content)


def test_seed_and_temperature_through_http(client):
    def ask(**kw):
        return (
            client.chat.completions.create(model="tiny", messages=MSGS, max_tokens=20, **kw).choices[0].message.content
        )

    assert ask(temperature=0) == ask(temperature=0)
    assert ask(temperature=1.0, seed=5) == ask(temperature=1.0, seed=5)
    assert len({ask(temperature=1.2, seed=s) for s in range(6)}) >= 3


def test_models_list(client, srv):
    ids = [m.id for m in client.models.list()]
    assert ids == ["tiny", "small"]
    raw = httpx.get(srv.url + "/v1/models").json()
    assert raw["object"] == "list" and all(m["object"] == "model" and "owned_by" in m for m in raw["data"])
    assert client.models.retrieve("local/small").id == "small"


def test_ignores_unknown_openai_params(client):
    r = client.chat.completions.create(
        model="tiny",
        messages=MSGS,
        temperature=0,
        max_completion_tokens=4,
        presence_penalty=0.5,
        frequency_penalty=0.1,
        user="u1",
        logit_bias={},
        n=1,
        extra_body={"some_vendor_flag": True},
    )
    assert r.usage.completion_tokens == 4 and r.choices[0].finish_reason == "length"


@pytest.mark.parametrize(
    "body, status, param, code",
    [
        (b"{not json", 400, None, "invalid_json"),
        ({"model": "tiny"}, 400, "messages", "missing_required_parameter"),
        ({"model": "tiny", "messages": []}, 400, "messages", "invalid_value"),
        ({"messages": MSGS}, 400, "model", "missing_required_parameter"),
        ({"model": "tiny", "messages": MSGS, "temperature": 2.5}, 400, "temperature", "invalid_value"),
        ({"model": "tiny", "messages": MSGS, "temperature": -0.1}, 400, "temperature", "invalid_value"),
        ({"model": "tiny", "messages": MSGS, "temperature": "hot"}, 400, "temperature", "invalid_type"),
        ({"model": "tiny", "messages": MSGS, "top_p": 0}, 400, "top_p", "invalid_value"),
        ({"model": "tiny", "messages": MSGS, "top_p": 1.5}, 400, "top_p", "invalid_value"),
        ({"model": "tiny", "messages": MSGS, "max_tokens": 0}, 400, "max_tokens", "invalid_value"),
        ({"model": "tiny", "messages": MSGS, "max_tokens": "ten"}, 400, "max_tokens", "invalid_type"),
        (
            {"model": "tiny", "messages": MSGS, "max_completion_tokens": -3},
            400,
            "max_completion_tokens",
            "invalid_value",
        ),
        ({"model": "tiny", "messages": MSGS, "n": 2}, 400, "n", "invalid_value"),
        ({"model": "tiny", "messages": MSGS, "stop": 5}, 400, "stop", "invalid_value"),
        ({"model": "gpt-9", "messages": MSGS}, 404, "model", "model_not_found"),
    ],
)
def test_error_status_and_shape(srv, body, status, param, code):
    url = srv.url + "/v1/chat/completions"
    headers = {"Authorization": "Bearer sk-secret-key-123456"}
    r = (
        httpx.post(url, content=body, headers=headers)
        if isinstance(body, bytes)
        else httpx.post(url, json=body, headers=headers)
    )
    assert r.status_code == status
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["param"] == param and err["code"] == code
    assert err["message"]


def test_openai_client_raises_typed_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=MSGS)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=MSGS, temperature=3)


def test_unknown_route_is_openai_error(srv):
    r = httpx.get(srv.url + "/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_auth_header_is_never_logged(srv, caplog, capfd):
    caplog.set_level("DEBUG")
    httpx.post(
        srv.url + "/v1/chat/completions",
        json={"model": "tiny", "messages": MSGS, "max_tokens": 2},
        headers={"Authorization": "Bearer sk-very-secret-value-987"},
    )
    out, err = capfd.readouterr()
    assert "sk-very-secret-value-987" not in caplog.text + out + err


def test_delay_per_model_and_concurrency():
    server = BackgroundServer(create_app(delay_ms=20)).start()
    try:
        url = server.url + "/v1/chat/completions"

        def timed(model: str) -> float:
            t0 = time.perf_counter()
            httpx.post(url, json={"model": model, "messages": MSGS, "max_tokens": 5, "temperature": 0}, timeout=10)
            return time.perf_counter() - t0

        # the best of three is what the model costs; a busy machine only ever adds to it
        tiny, small = min(timed("tiny") for _ in range(3)), min(timed("small") for _ in range(3))
        # the delays are floors (sleeps); only the floors and the order are asserted, not upper bounds that a busy
        # machine could break
        assert tiny >= 0.1  # 5 tokens x 20 ms (1x)
        assert small >= 0.2  # 5 tokens x 40 ms (2x)
        assert small > tiny

        async def many() -> float:
            async with httpx.AsyncClient(timeout=10) as ac:
                t0 = time.perf_counter()
                await asyncio.gather(
                    *[
                        ac.post(url, json={"model": "tiny", "messages": MSGS, "max_tokens": 5, "stream": True})
                        for _ in range(20)
                    ]
                )
                return time.perf_counter() - t0

        assert asyncio.run(many()) < 1.9  # 20 x 100 ms one after another could not take less than 2 s
    finally:
        server.stop()


def test_env_delay_is_read_when_not_given(monkeypatch):
    # the delay is a floor of 250 ms per streamed token; the model may stop early (EOS), so the floor is computed
    # from the token count it reports rather than from max_tokens
    monkeypatch.setenv("LLMLAB_LOCAL_DELAY_MS", "250")
    server = BackgroundServer(create_app()).start()
    body = {"model": "tiny", "messages": MSGS, "max_tokens": 4, "temperature": 0}
    try:
        t0 = time.perf_counter()
        r = httpx.post(server.url + "/v1/chat/completions", json=body)
        elapsed = time.perf_counter() - t0
        n = r.json()["usage"]["completion_tokens"]
        assert n >= 1
        assert elapsed >= 0.25 * n * 0.95
        monkeypatch.delenv("LLMLAB_LOCAL_DELAY_MS")
        t0 = time.perf_counter()
        httpx.post(server.url + "/v1/chat/completions", json=body)
        assert time.perf_counter() - t0 < 0.25 * n * 0.95
    finally:
        server.stop()


def test_ensure_server_is_shared_and_restarts():
    lm.stop_server()
    try:
        import threading

        urls: list[str] = []
        threads = [threading.Thread(target=lambda: urls.append(lm.ensure_server())) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(urls)) == 1 and urls[0].startswith("http://127.0.0.1:") and urls[0].endswith("/v1")
        assert httpx.get(urls[0] + "/models").status_code == 200
        lm._server.stop()  # simulate a dead server
        url2 = lm.ensure_server()
        assert httpx.get(url2 + "/models").status_code == 200
    finally:
        lm.stop_server()
    assert lm._server is None


def test_a_caller_that_leaves_mid_request_is_not_logged_as_a_server_error(srv, caplog):
    """A cancelled sweep closes its connections while request bodies are in flight; that is not an error."""
    import logging
    import socket
    from urllib.parse import urlparse

    caplog.set_level(logging.DEBUG)
    url = urlparse(srv.url)
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"model": "tiny"'
        )
        time.sleep(0.2)  # the server is reading the body when the caller leaves
    time.sleep(0.3)
    assert httpx.get(srv.url + "/v1/models").status_code == 200  # still serving
    problems = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not problems, problems
