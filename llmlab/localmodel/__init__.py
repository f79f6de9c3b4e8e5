"""The embedded local models and their OpenAI-compatible server.

llmlab's ``local`` provider points the ``openai`` client at :func:`ensure_server`, which
starts one process-wide server on a free 127.0.0.1 port the first time it is needed.
Models: ``tiny`` (bigram) and ``small`` (4-gram), see :mod:`llmlab.localmodel.model`; their tokenizer is
:mod:`llmlab.localmodel.tokenizer`, their training text :mod:`llmlab.localmodel.corpus`.

Example:
    >>> from llmlab.localmodel import get_model
    >>> gen = get_model("small").generate([{"role": "user", "content": "What is a rainbow?"}], temperature=0)
    >>> "rainbow" in "".join(gen).lower(), gen.finish_reason in ("stop", "length")
    (True, True)
"""

from __future__ import annotations

import threading

from llmlab.localmodel.model import MODELS, Generation, NGramModel, get_model
from llmlab.localmodel.server import create_app
from llmlab.localmodel.tokenizer import (
    MESSAGE_OVERHEAD_TOKENS,
    REPLY_PRIMING_TOKENS,
    count_prompt_tokens,
    count_tokens,
    detokenize,
    tokenize,
)
from llmlab.serving import BackgroundServer

__all__ = [
    "MESSAGE_OVERHEAD_TOKENS",
    "MODELS",
    "REPLY_PRIMING_TOKENS",
    "Generation",
    "NGramModel",
    "count_prompt_tokens",
    "count_tokens",
    "create_app",
    "detokenize",
    "ensure_server",
    "get_model",
    "stop_server",
    "tokenize",
]

_lock = threading.Lock()
_server: BackgroundServer | None = None


def ensure_server() -> str:
    """Start the process-wide local model server if it is not running; returns its base URL.

    Thread-safe; a server that died is replaced by a new one (on a new port).

    Returns:
        The OpenAI base URL, e.g. ``"http://127.0.0.1:41237/v1"``.
    """
    global _server
    with _lock:
        if _server is None or not _server.running:
            if _server is not None:
                _server.stop(timeout=1.0)
            _server = BackgroundServer(create_app(), name="llmlab-localmodel").start()
        return _server.url + "/v1"


def stop_server() -> None:
    """Stop the process-wide local model server (no-op if none is running)."""
    global _server
    with _lock:
        srv, _server = _server, None
    if srv is not None:
        srv.stop()
