"""A scripted judge: an OpenAI-compatible endpoint whose verdicts are known in advance.

Tests of ``ll.evals.llm_judge`` and ``ll.evals.pairwise_judge`` need a judge whose answers they
can predict. :class:`JudgeApp` reads llmlab's judge prompts (the answers after ``Answer A:`` /
``Answer B:`` for a pairwise prompt, after ``Answer:`` for a score prompt) and answers by a
fixed rule:

- ``"longer"`` — prefers the longer answer (``A``, ``B``, or ``tie`` when equally long); scores an
  answer by its word count (``Score: n``, at most 10);
- ``"first"`` — always answers ``A`` (a judge with pure position bias); scores every answer 5;
- ``"silent"`` — replies with text that holds no verdict (``I cannot say.``);
- any callable ``rule(prompt_text) -> reply``.

It streams (SSE with ``stream_options.include_usage``) or answers in one JSON body, like the
embedded model server, and counts requests. :class:`JudgeServer` serves it on 127.0.0.1.

Example:
    >>> with JudgeServer("longer") as js:                          # doctest: +SKIP
    ...     ll.provider("judge", base_url=js.base_url, api_key_env=None)
    ...     pref = ll.evals.pairwise_judge(df, a="terse", b="steps", model="judge/longer")
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from llmlab.testing.asgi import read_body

__all__ = ["RULES", "JudgeApp", "JudgeServer", "scripted_reply"]

RULES = ("longer", "first", "silent")
_PAIR = re.compile(r"Answer A:\n(.*?)\n\nAnswer B:\n(.*?)\n\n(?:Which|Reply)", re.DOTALL)
_SINGLE = re.compile(r"Answer:\n(.*?)\n\nScore", re.DOTALL)


def _words(text: str) -> int:
    return len(text.split())


def scripted_reply(rule: str | Callable[[str], str], prompt: str) -> str:
    """The reply of the scripted judge ``rule`` to one judge prompt."""
    if callable(rule):
        return str(rule(prompt))
    if rule == "silent":
        return "I cannot say."
    pair = _PAIR.search(prompt)
    if pair:
        if rule == "first":
            return "A"
        a, b = _words(pair.group(1)), _words(pair.group(2))
        return "A" if a > b else "B" if b > a else "tie"
    single = _SINGLE.search(prompt)
    if rule == "first":
        return "Score: 5"
    n = _words(single.group(1)) if single else 0
    return f"Score: {min(10, n)}"


class JudgeApp:
    """The ASGI app (``POST …/chat/completions``, ``GET …/models``); ``requests`` counts chat calls."""

    def __init__(self, rule: str | Callable[[str], str] = "longer") -> None:
        if not callable(rule) and rule not in RULES:
            raise ValueError(f"rule={rule!r}: expected one of {RULES} or a callable")
        self.rule = rule
        self.requests = 0
        self.prompts: list[str] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        path = scope["path"]
        if path.endswith("/models"):
            await _json(send, 200, {"object": "list", "data": [{"id": r, "object": "model"} for r in RULES]})
            return
        if not path.endswith("/chat/completions"):
            await _json(send, 404, {"error": {"message": f"no route {path}", "type": "invalid_request_error"}})
            return
        try:
            req = json.loads(body)
            prompt = "\n".join(str(m.get("content", "")) for m in req["messages"] if m.get("role") == "user")
        except (ValueError, KeyError, TypeError, AttributeError):
            await _json(send, 400, {"error": {"message": "invalid chat request", "type": "invalid_request_error"}})
            return
        with self._lock:
            self.requests += 1
            self.prompts.append(prompt)
        reply = scripted_reply(self.rule, prompt)
        model = str(req.get("model", "judge"))
        usage = {"prompt_tokens": _words(prompt), "completion_tokens": _words(reply)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        cid, created = "chatcmpl-" + uuid.uuid4().hex[:24], int(time.time())
        if not req.get("stream"):
            choice = {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
            payload = {"id": cid, "object": "chat.completion", "created": created, "model": model}
            await _json(send, 200, {**payload, "choices": [choice], "usage": usage})
            return
        head = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
        chunks = [
            {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
            {**head, "choices": [{"index": 0, "delta": {"content": reply}, "finish_reason": None}]},
            {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
        if (req.get("stream_options") or {}).get("include_usage"):
            chunks.append({**head, "choices": [], "usage": usage})
        text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": text.encode()})


async def _json(send: Any, status: int, payload: dict[str, Any]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(payload).encode()})


class JudgeServer:
    """:class:`JudgeApp` served on 127.0.0.1 in a background thread (a context manager)."""

    def __init__(self, rule: str | Callable[[str], str] = "longer", port: int = 0) -> None:
        self.app = JudgeApp(rule)
        self.port = port
        self._server: Any = None

    def start(self) -> JudgeServer:
        """Start serving; returns self."""
        from llmlab.serving import BackgroundServer

        self._server = BackgroundServer(self.app, port=self.port, name="llmlab-judgeserver").start()
        return self

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (``…/v1``) to give ``ll.provider``."""
        return str(self._server.url) + "/v1"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> JudgeServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
