"""Provider clients parse answers with pydantic's validator and fall back to openai's own lenient parser.

What a user relies on: every answer parses to the same object openai's parser builds, and an answer
that is off-spec (a provider's own finish reason, a string where a number belongs) still parses, on
every chunk of a sweep, not only the first.
"""

from __future__ import annotations

import json

import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

import llmlab as ll
from llmlab.plan.providers import _LENIENT_AFTER, get_provider, make_client

CHUNKS: list[dict] = [
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "m",
        "system_fingerprint": None,
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        ],
    },
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {"index": 0, "id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ]
                },
                "finish_reason": None,
            }
        ],
    },
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5, "provider_extra": 1},
        "x_vendor": {"k": [1, 2]},
    },
    # off-spec: an unknown finish reason and a created time as text, as some servers send
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": "1700000000",
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "eos"}],
    },
]
COMPLETION = {
    "id": "c2",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop", "logprobs": None}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


def _parsed(client, data: dict, cast_to: type):
    return client._process_response_data(data=json.loads(json.dumps(data)), cast_to=cast_to, response=None)


@pytest.mark.parametrize("index", range(len(CHUNKS)))
def test_every_chunk_parses_to_what_openais_own_parser_builds(index):
    ours = make_client(get_provider("local"))
    theirs = openai.AsyncOpenAI(api_key="x", base_url="http://127.0.0.1:9/v1")
    got, want = _parsed(ours, CHUNKS[index], ChatCompletionChunk), _parsed(theirs, CHUNKS[index], ChatCompletionChunk)
    assert type(got) is type(want) is ChatCompletionChunk
    assert got.model_dump(warnings=False) == want.model_dump(warnings=False) and got.model_extra == want.model_extra
    # pydantic counts extra keys as set, openai's parser does not; the declared fields set are the same
    assert got.model_fields_set - set(got.model_extra or ()) == want.model_fields_set
    assert got.to_dict(warnings=False) == want.to_dict(warnings=False)
    got_completion = _parsed(ours, COMPLETION, ChatCompletion)
    assert got_completion.model_dump() == _parsed(theirs, COMPLETION, ChatCompletion).model_dump()


def test_a_provider_whose_chunks_are_always_off_spec_still_parses_every_one():
    client = make_client(get_provider("local"))
    off_spec = CHUNKS[-1]
    for _ in range(_LENIENT_AFTER * 2):
        chunk = _parsed(client, off_spec, ChatCompletionChunk)
        assert chunk.choices[0].finish_reason == "eos" and chunk.created == "1700000000"
    assert _parsed(client, CHUNKS[0], ChatCompletionChunk).choices[0].delta.role == "assistant"


def test_a_sweep_against_an_off_spec_streaming_server_keeps_its_text_and_finish_reason():
    """A whole sweep through the real openai client over an in-process transport: a server that
    streams an unknown finish reason gives ok rows with its words and reason."""
    words = ["Rain", " falls", " down", "."]

    def handler(request: httpx2.Request) -> httpx2.Response:
        lines = []
        for i, word in enumerate(words):
            chunk = {
                "id": "x",
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": "odd",
                "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": "eos" if i == 3 else None}],
            }
            lines.append(f"data: {json.dumps(chunk)}\n\n")
        lines.append("data: [DONE]\n\n")
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content="".join(lines).encode())

    ll.provider("offspec", base_url="http://offspec.invalid/v1", api_key_env=None)
    res = ll.Sweep(prompts=["Why rain?"], models=["offspec/odd"], repeats=3, max_tokens=8).run(
        display=False, cache=False, transport=httpx2.MockTransport(handler)
    )
    assert (res.df["status"] == "ok").all(), list(res.df["error"])
    assert len(res.df) >= 3 and set(res.df["completion"]) == {"Rain falls down."}
    assert set(res.df["finish_reason"]) == {"eos"}
