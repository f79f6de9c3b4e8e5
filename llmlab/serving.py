"""Run an ASGI app with uvicorn in a background thread (embedded model server, collector).

Both embedded servers are started on demand inside the user's process, which may already
run an event loop (a Jupyter kernel): each server gets its own thread and loop, and binds
its socket itself so that port 0 yields a free port known before the first request.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from typing import Any

import uvicorn

__all__ = ["BackgroundServer", "serve_forever"]


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP so asyncio enables TCP_NODELAY on accepted connections; without it a
    # response written in two parts (headers, body) waits ~40 ms for a delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class BackgroundServer:
    """An ASGI app served by uvicorn on a daemon thread.

    Example:
        >>> srv = BackgroundServer(app).start()   # doctest: +SKIP
        >>> srv.url                                 # 'http://127.0.0.1:41237'
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, name: str = "llmlab-server") -> None:
        self.app = app
        self.host = host
        self.name = name
        self._sock = _bind(host, port)
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        """Start serving and wait until the server accepts connections."""

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            # uvicorn installs signal handlers only on the main thread; none here.
            loop.run_until_complete(self._server.serve(sockets=[self._sock]))
            loop.close()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} failed to start on {self.url}")
            time.sleep(0.005)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the server to exit and wait for its thread."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            self._sock.close()
        except OSError:
            pass

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._server.should_exit


def serve_forever(app: Any, host: str, port: int) -> None:
    """Serve ``app`` in the foreground (CLI commands); Ctrl-C stops it."""
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
