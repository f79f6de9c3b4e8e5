"""The embedded DataKit-compatible collector.

llmlab exports OTLP to DataKit; when the user has no DataKit (``datakit="embedded"``, the
default), this collector stands in for it: the same OTLP/HTTP endpoints, the same point shape
(measurement ``opentelemetry``, DataKit's tags and fields) and the raw DQL query API, so the
read-back code path is the same for both. Points live in SQLite at ``Config.collector_db_path``.

- :func:`create_app` — the Starlette app (tests, custom hosting).
- :func:`ensure_embedded` — one process-wide collector on 127.0.0.1, started on demand.
- :func:`serve` — the ``llmlab collector`` command (foreground).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmlab.collector.ingest import DEFAULT_CUSTOMER_TAGS, EMBEDDED_CUSTOMER_TAGS
from llmlab.collector.server import MAX_BODY_BYTES, create_app

__all__ = [
    "DEFAULT_CUSTOMER_TAGS",
    "EMBEDDED_CUSTOMER_TAGS",
    "MAX_BODY_BYTES",
    "background",
    "create_app",
    "embedded_url",
    "ensure_embedded",
    "serve",
    "stop_embedded",
]

_lock = threading.Lock()
_embedded: Any = None  # BackgroundServer
_embedded_db: Path | None = None


def ensure_embedded(config: Any = None, customer_tags: Sequence[str] | None = None) -> str:
    """Start the process-wide embedded collector (if not running for this home) and return its URL.

    Args:
        config: a :class:`llmlab.config.Config` (default: the active one). Its
            ``collector_db_path`` selects the database; a different home starts a new collector
            (the previous one is stopped).
        customer_tags: span attributes stored as tags; default: :data:`EMBEDDED_CUSTOMER_TAGS`.

    Returns:
        the base URL, e.g. ``http://127.0.0.1:41237`` (OTLP at ``<url>/otel/v1/traces``).
    """
    if config is None:
        from llmlab.config import get_config

        config = get_config()
    db_path = Path(config.collector_db_path).resolve()
    global _embedded, _embedded_db
    with _lock:
        if _embedded is not None and _embedded.running and _embedded_db == db_path:
            return str(_embedded.url)
        if _embedded is not None:
            _stop(_embedded)
            _embedded = None
        app = create_app(db_path, EMBEDDED_CUSTOMER_TAGS if customer_tags is None else customer_tags)
        server = background(app).start()
        _embedded, _embedded_db = server, db_path
        return str(server.url)


def background(app: Any, host: str = "127.0.0.1", port: int = 0) -> Any:
    """A (not yet started) BackgroundServer for ``app`` with TCP_NODELAY on its connections.

    The listening socket of BackgroundServer is created with proto 0, so asyncio does not set
    TCP_NODELAY on accepted connections and every response written in two parts (headers, body)
    waits ~40 ms for a delayed ACK; Linux copies the option from the listening socket on accept.
    """
    import socket

    from llmlab.serving import BackgroundServer

    server = BackgroundServer(app, host=host, port=port, name="llmlab-collector")
    try:
        server._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):  # pragma: no cover - other platforms / a fixed BackgroundServer
        pass
    return server


def embedded_url() -> str | None:
    """URL of the running embedded collector, or None."""
    with _lock:
        return str(_embedded.url) if _embedded is not None and _embedded.running else None


def stop_embedded() -> None:
    """Stop the embedded collector, if one runs."""
    global _embedded, _embedded_db
    with _lock:
        if _embedded is not None:
            _stop(_embedded)
        _embedded, _embedded_db = None, None


def _stop(server: Any) -> None:
    server.stop()
    storage = getattr(getattr(server.app, "state", None), "storage", None)
    if storage is not None:
        storage.close()


def serve(host: str = "127.0.0.1", port: int = 9529, home: str | os.PathLike[str] | None = None) -> None:
    """Run the collector in the foreground (``llmlab collector``) until Ctrl-C.

    Args:
        host: interface to bind; 127.0.0.1 unless told otherwise.
        port: TCP port (DataKit's default 9529).
        home: llmlab home directory (default: LLMLAB_HOME or ./.llmlab); data in ``home/collector.db``.
    """
    from llmlab.config import DEFAULT_HOME, LLMLAB_HOME
    from llmlab.serving import serve_forever

    home_path = Path(home or os.environ.get(LLMLAB_HOME) or DEFAULT_HOME).expanduser().resolve()
    db_path = home_path / "collector.db"
    app = create_app(db_path, EMBEDDED_CUSTOMER_TAGS)
    print(
        f"llmlab collector on http://{host}:{port} (OTLP: /otel/v1/traces, DQL: /v1/query/raw), data: {db_path}",
        flush=True,
    )
    serve_forever(app, host, port)
