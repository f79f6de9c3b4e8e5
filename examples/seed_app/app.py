"""The seed article's Flask app, runnable offline against llmlab's embedded model server.

This is the app from ``shared/seed/`` (an OpenLLMetry-instrumented Flask service that streams a
chat completion and exports to DataKit with ``TRACELOOP_BASE_URL=http://localhost:9529/otel``),
kept as close to the original as possible. What changed, and why:

- the OpenAI client reads ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` (the ``openai`` defaults) instead
  of a hard-coded Moonshot URL and ``MOONSHOT_API_KEY``; with no key set it sends a placeholder,
  which the local model server ignores — point it at ``llmlab serve-model`` to run offline;
- ``select_model`` estimates prompt tokens locally (~4 characters a token) instead of calling
  Moonshot's tokenizer endpoint, and picks ``SEED_SMALL_MODEL`` / ``SEED_LARGE_MODEL``
  (default ``tiny`` / ``small``, the local models) the way the seed picks 8k/32k/128k;
- the model call sits in a ``@task`` (``call_model``), so the span tree reads
  workflow → task → ``openai.chat`` as in the Guance trace view;
- the request asks for ``stream_options={"include_usage": True}``: OpenLLMetry records token
  usage of a stream only when the server sends it, and OpenAI-compatible servers send it only
  on request. A request body with ``"include_usage": false`` behaves exactly as the seed.

Run it (three terminals)::

    llmlab collector --port 9529
    llmlab serve-model --port 8000
    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 TRACELOOP_BASE_URL=http://127.0.0.1:9529/otel \\
        python examples/seed_app/app.py --port 5001
    curl -N -X POST localhost:5001/ask -H 'Content-Type: application/json' \\
        -d '{"messages": [{"role": "user", "content": "What is a span?"}], "max_tokens": 32}'

``Traceloop.init()`` is plain: metrics on (they go to ``$TRACELOOP_BASE_URL/v1/metrics``), batch
span processor, every installed instrumentation.
"""

from __future__ import annotations

import argparse
import os

from flask import Flask, Response, jsonify, request, stream_with_context
from openai import OpenAI
from traceloop.sdk import Traceloop
from traceloop.sdk.decorators import task, workflow

app = Flask(__name__)

try:  # the seed instruments Flask too; optional here (opentelemetry-instrumentation-flask)
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    FlaskInstrumentor().instrument_app(app)
except ImportError:  # pragma: no cover - depends on the environment
    pass

Traceloop.init(app_name=os.getenv("SEED_APP_NAME", "kimi_openllmetry_stream_flask"))

client = OpenAI(
    api_key=os.getenv("OPENAI_API_KEY") or "not-needed-for-the-local-model-server",
    base_url=os.getenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1"),
)

SMALL_MODEL = os.getenv("SEED_SMALL_MODEL", "tiny")
LARGE_MODEL = os.getenv("SEED_LARGE_MODEL", "small")
SMALL_CONTEXT = int(os.getenv("SEED_SMALL_CONTEXT", "256"))


def estimate_token_count(input_messages: list[dict]) -> int:
    """Rough prompt size in tokens (~4 characters each), standing in for Moonshot's tokenizer API."""
    return sum(len(str(m.get("content") or "")) for m in input_messages) // 4 + 4 * len(input_messages)


@task(name="select_model")
def select_model(input_messages: list[dict], max_tokens: int = 1024) -> str:
    """Pick the smallest model whose context fits the prompt plus ``max_tokens`` (as the seed does)."""
    if not isinstance(max_tokens, int) or max_tokens <= 0:
        raise ValueError("max_tokens must be a positive integer")
    total_tokens = estimate_token_count(input_messages) + max_tokens
    return SMALL_MODEL if total_tokens <= SMALL_CONTEXT else LARGE_MODEL


@task(name="call_model")
def call_model(model: str, messages: list[dict], max_tokens: int, include_usage: bool):
    """Start the streaming chat completion (the stream is consumed by the response)."""
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    return client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        temperature=0.3,
        stream=True,
        **extra,
    )


@app.route("/ask", methods=["POST"])
@workflow(name="ask_workflow")
def ask():
    data = request.json or {}
    messages = data.get("messages")
    max_tokens = data.get("max_tokens", 2048)

    if not messages:
        return jsonify({"error": "messages must not be empty"}), 400

    try:
        model = select_model(messages, max_tokens)
        completion = call_model(model, messages, max_tokens, bool(data.get("include_usage", True)))

        def generate():
            for chunk in completion:
                if not chunk.choices:  # the usage chunk has no choices
                    continue
                delta = chunk.choices[0].delta
                if delta.content:
                    yield delta.content

        return Response(stream_with_context(generate()), content_type="text/event-stream")
    except Exception as e:  # the seed answers every failure with a 500 and the message
        return jsonify({"error": str(e)}), 500


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    args = parser.parse_args()
    # no debug reloader: it would fork a second process with its own Traceloop.init
    app.run(host=args.host, port=args.port, debug=False, threaded=True)
