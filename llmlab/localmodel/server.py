"""The embedded OpenAI-compatible model server (Starlette ASGI app).

It speaks just enough of OpenAI's Chat Completions API for the ``openai`` client, OpenLLMetry
and llmlab's runner to treat it like a hosted model: ``POST /v1/chat/completions`` (plain
JSON, or SSE streaming with ``stream_options.include_usage``), ``GET /v1/models`` and
``GET /v1/models/{id}``, and OpenAI-shaped error bodies with the matching status codes.

The ``Authorization`` header is accepted and ignored (any key works) and never logged;
unknown OpenAI parameters are ignored rather than rejected. The optional per-token delay is
an ``await asyncio.sleep`` so that one server thread serves many streams concurrently. With
no delay, the SSE events of a stream are written in a few large writes (still one event per
token), because a benchmark drives thousands of streamed calls through this server.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from llmlab.config import LLMLAB_LOCAL_DELAY_MS
from llmlab.errors import ConfigError
from llmlab.localmodel.model import MODELS, SPECS, get_model, resolve_model_name
from llmlab.localmodel.tokenizer import count_prompt_tokens
from llmlab.text import is_finite_number

__all__ = ["DEFAULT_MAX_TOKENS", "MAX_TOKENS_LIMIT", "create_app"]

#: Completion length when the request sets neither ``max_tokens`` nor ``max_completion_tokens``.
DEFAULT_MAX_TOKENS = 256
#: Largest ``max_tokens`` accepted (the "context window" of the local models).
MAX_TOKENS_LIMIT = 8192
_CREATED = int(time.time())
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code


def _error(message: str, status: int, param: str | None = None, code: str | None = None) -> JSONResponse:
    err_type = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(
        {"error": {"message": message, "type": err_type, "param": param, "code": code}}, status_code=status
    )


def _number(body: dict[str, Any], name: str, default: float, lo: float, hi: float, lo_open: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _BadRequest(
            f"Invalid type for '{name}': expected a number, got {type(value).__name__}.", name, code="invalid_type"
        )
    if value != value or value > hi or value < lo or (lo_open and value <= lo):
        bracket = "(" if lo_open else "["
        raise _BadRequest(f"Invalid '{name}': {value} is not in {bracket}{lo:g}, {hi:g}].", name, code="invalid_value")
    return float(value)


def _parse(body: Any) -> dict[str, Any]:
    """Validate a chat completion request; returns the normalized parameters."""
    if not isinstance(body, dict):
        raise _BadRequest("The request body must be a JSON object.")
    model_name = body.get("model")
    if not isinstance(model_name, str) or not model_name:
        raise _BadRequest("Missing required parameter: 'model'.", "model", code="missing_required_parameter")
    base = resolve_model_name(model_name)
    if base is None:
        raise _BadRequest(
            f"The model '{model_name}' does not exist. Available models: {', '.join(MODELS)}.",
            "model",
            status=404,
            code="model_not_found",
        )
    messages = body.get("messages")
    if messages is None:
        raise _BadRequest("Missing required parameter: 'messages'.", "messages", code="missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest(
            "Invalid 'messages': expected a non-empty array of messages.", "messages", code="invalid_value"
        )
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise _BadRequest(
                f"Invalid 'messages[{i}]': expected an object with a 'role'.", f"messages[{i}]", code="invalid_value"
            )
        content = msg.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise _BadRequest(
                f"Invalid 'messages[{i}].content': expected a string or an array of parts.",
                f"messages[{i}].content",
                code="invalid_type",
            )
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0, lo_open=True)

    max_tokens: Any = DEFAULT_MAX_TOKENS
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise _BadRequest(f"Invalid type for '{name}': expected an integer.", name, code="invalid_type")
        if value < 1 or value > MAX_TOKENS_LIMIT:
            raise _BadRequest(
                f"Invalid '{name}': {value} is not in [1, {MAX_TOKENS_LIMIT}].", name, code="invalid_value"
            )
        max_tokens = value
        break

    n = body.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n != 1):
        raise _BadRequest("Invalid 'n': the local models support only n=1.", "n", code="invalid_value")

    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
            raise _BadRequest(
                "Invalid 'stop': expected a string or an array of up to 4 strings.", "stop", code="invalid_value"
            )

    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _BadRequest("Invalid type for 'seed': expected an integer.", "seed", code="invalid_type")

    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise _BadRequest("Invalid type for 'stream': expected a boolean.", "stream", code="invalid_type")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _BadRequest(
            "Invalid type for 'stream_options': expected an object.", "stream_options", code="invalid_type"
        )
    include_usage = bool((options or {}).get("include_usage"))

    return {
        "model": base,
        "messages": messages,
        "temperature": temperature,
        "top_p": top_p,
        "max_tokens": max_tokens,
        "stop": stop,
        "seed": seed,
        "stream": stream,
        "include_usage": include_usage,
    }


def create_app(delay_ms: float | None = None) -> Starlette:
    """Build the OpenAI-compatible ASGI app of the local models.

    Args:
        delay_ms: base per-token delay in milliseconds (``tiny`` waits 1x, ``small`` 2x of it).
            None reads ``LLMLAB_LOCAL_DELAY_MS`` at each request (unset: no delay).

    Returns:
        A Starlette app serving ``/v1/chat/completions`` and ``/v1/models``.

    Raises:
        ConfigError: ``delay_ms`` is not a finite, non-negative number (``inf`` would hang every request).
    """
    if delay_ms is not None and (not is_finite_number(delay_ms) or delay_ms < 0):
        raise ConfigError(f"delay_ms={delay_ms!r}: must be a non-negative, finite number of milliseconds")

    def token_delay(model: str) -> float:
        base = delay_ms
        if base is None:
            raw = os.environ.get(LLMLAB_LOCAL_DELAY_MS, "").strip()
            try:
                base = float(raw) if raw else 0.0
            except ValueError:
                base = 0.0
            if not is_finite_number(base):  # "inf" would hang every request, "nan" means nothing: no delay
                base = 0.0
        return max(0.0, base) * SPECS[model].delay_factor / 1000.0

    async def chat_completions(request: Request) -> Response:
        try:
            raw = await request.body()
        except ClientDisconnect:  # the caller gave up (a cancelled sweep): nobody to answer, nothing to log
            return Response(status_code=499)
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(
                "We could not parse the JSON body of your request. The body must be valid JSON.",
                400,
                code="invalid_json",
            )
        try:
            p = _parse(body)
        except _BadRequest as exc:
            return _error(exc.message, exc.status, exc.param, exc.code)

        model = get_model(p["model"])
        gen = model.generate(p["messages"], p["temperature"], p["top_p"], p["max_tokens"], p["stop"], p["seed"])
        prompt_tokens = count_prompt_tokens(p["messages"])
        cid = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        delay = token_delay(p["model"])
        name = p["model"]

        if not p["stream"]:
            pieces = list(gen)
            if delay:
                await asyncio.sleep(delay * len(pieces))
            n = len(pieces)
            return JSONResponse(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": name,
                    "system_fingerprint": None,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(pieces), "refusal": None},
                            "logprobs": None,
                            "finish_reason": gen.finish_reason,
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": n,
                        "total_tokens": prompt_tokens + n,
                    },
                }
            )

        head = (
            f'data: {{"id":"{cid}","object":"chat.completion.chunk","created":{created},"model":"{name}",'
            f'"system_fingerprint":null,"choices":'
        )
        include_usage = p["include_usage"]

        def event(piece: str, finish: str | None) -> str:
            reason = "null" if finish is None else f'"{finish}"'
            return f'{head}[{{"index":0,"delta":{{"content":{_dumps(piece)}}},"logprobs":null,"finish_reason":{reason}}}]}}\n\n'

        async def events() -> Any:
            first = f'{head}[{{"index":0,"delta":{{"role":"assistant","content":""}},"logprobs":null,"finish_reason":null}}]}}\n\n'
            buf = [first]
            count = 0
            prev: str | None = None
            for piece in gen:
                if prev is not None:
                    buf.append(event(prev, None))
                    count += 1
                    if delay:
                        yield "".join(buf)
                        buf.clear()
                        await asyncio.sleep(delay)
                    elif len(buf) >= 64:
                        yield "".join(buf)
                        buf.clear()
                elif delay:
                    await asyncio.sleep(delay)  # time to the first token
                prev = piece
            finish = gen.finish_reason or "stop"
            if prev is not None:
                buf.append(event(prev, finish))
                count += 1
            else:
                buf.append(f'{head}[{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"{finish}"}}]}}\n\n')
            if include_usage:
                usage = (
                    f'{{"prompt_tokens":{prompt_tokens},"completion_tokens":{count},'
                    f'"total_tokens":{prompt_tokens + count}}}'
                )
                buf.append(f'{head}[],"usage":{usage}}}\n\n')
            buf.append("data: [DONE]\n\n")
            yield "".join(buf)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    def model_card(name: str) -> dict[str, Any]:
        return {
            "id": name,
            "object": "model",
            "created": _CREATED,
            "owned_by": "llmlab",
            "description": SPECS[name].description,
        }

    async def list_models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [model_card(m) for m in MODELS]})

    async def retrieve_model(request: Request) -> Response:
        name = resolve_model_name(request.path_params["model"])
        if name is None:
            return _error(
                f"The model '{request.path_params['model']}' does not exist.", 404, "model", "model_not_found"
            )
        return JSONResponse(model_card(name))

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        detail = getattr(exc, "detail", "error")
        code = "not_found" if status == 404 else ("method_not_allowed" if status == 405 else None)
        return _error(f"{detail}: {request.method} {request.url.path}", status, None, code)

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})
