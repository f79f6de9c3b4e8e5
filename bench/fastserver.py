"""A minimal OpenAI-compatible streaming server for benchmarks (aiohttp, its own process).

It answers every ``POST /v1/chat/completions`` with ``--tokens`` streamed chunks and a usage
chunk, with no model behind it, so a benchmark measures the client side, not the server:

* ``--first-ms 0 --per-token-ms 0`` (default): as fast as the server can answer;
* ``--first-ms 200 --per-token-ms 10``: a "realistic" endpoint (0.2 s to the first token, then
  10 ms per token). The server's own time per request is exported in the
  ``x-server-ms`` trailer-free form: the ``/stats`` route reports the mean and p50 it measured.

    python bench/fastserver.py --port 8123 [--tokens 16] [--first-ms 200] [--per-token-ms 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from aiohttp import web


def make_app(tokens: int, first_ms: float, per_token_ms: float, details: bool = True) -> web.Application:
    """The aiohttp app: chat completions (streamed or not), ``/v1/models`` and ``/stats``."""
    served_ms: list[float] = []

    def chunk(i: int, model: str, content: str | None, finish: str | None, usage: dict | None = None) -> bytes:
        choices = (
            [] if usage else [{"index": 0, "delta": {"content": content} if content else {}, "finish_reason": finish}]
        )
        body = {
            "id": f"chatcmpl-{i}",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": choices,
            "usage": usage,
        }
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    async def chat(request: web.Request) -> web.StreamResponse:
        t0 = time.perf_counter()
        body = await request.json()
        model = body.get("model", "tiny")
        n = min(tokens, int(body.get("max_tokens") or tokens))
        usage = {
            "prompt_tokens": 12,
            "completion_tokens": n,
            "total_tokens": 12 + n,
            # as OpenAI sends them (OpenLLMetry 0.62 raises, and formats a traceback, on every call without them)
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }
        if not details:  # as vLLM and other OpenAI-compatible servers answer
            del usage["prompt_tokens_details"], usage["completion_tokens_details"]
        if not body.get("stream"):
            if first_ms or per_token_ms:
                await asyncio.sleep((first_ms + per_token_ms * max(0, n - 1)) / 1000)
            text = " ".join(f"w{i}" for i in range(n))
            served_ms.append((time.perf_counter() - t0) * 1000)
            return web.json_response(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": model,
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
                    ],
                    "usage": usage,
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if first_ms:
            await asyncio.sleep(first_ms / 1000)
        for i in range(n):
            if i and per_token_ms:
                await asyncio.sleep(per_token_ms / 1000)
            await resp.write(chunk(i, model, f" w{i}", "length" if i == n - 1 else None))
        await resp.write(chunk(n, model, None, None, usage))
        await resp.write(b"data: [DONE]\n\n")
        served_ms.append((time.perf_counter() - t0) * 1000)
        await resp.write_eof()
        return resp

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "tiny", "object": "model"}]})

    async def stats(request: web.Request) -> web.Response:
        data = sorted(served_ms)
        return web.json_response(
            {
                "n": len(data),
                "p50_ms": statistics.median(data) if data else None,
                "mean_ms": statistics.fmean(data) if data else None,
            }
        )

    async def reset(request: web.Request) -> web.Response:
        served_ms.clear()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--first-ms", type=float, default=0.0)
    parser.add_argument("--per-token-ms", type=float, default=0.0)
    parser.add_argument("--no-details", action="store_true", help="usage without *_tokens_details (as vLLM)")
    args = parser.parse_args()
    web.run_app(
        make_app(args.tokens, args.first_ms, args.per_token_ms, not args.no_details),
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
        backlog=1024,
    )


if __name__ == "__main__":
    main()
