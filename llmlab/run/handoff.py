"""Awaiting the store's writes from the event loop with one wake-up per burst, not one per write.

``asyncio.wrap_future`` wakes the loop (a write to its self-pipe, from the store's writer thread)
once per finished write: with a group commit that settles hundreds of writes at once, the writer
thread made hundreds of syscalls while the loop thread wanted the interpreter lock back. A
:class:`Handoff` queues the finished writes and wakes the loop once for all of them.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
from typing import Any

__all__ = ["Handoff"]


class Handoff:
    """Bridges futures settled on other threads to one event loop, waking it once per burst."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._done: collections.deque[tuple[concurrent.futures.Future[Any], asyncio.Future[Any]]] = collections.deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def wait(self, future: concurrent.futures.Future[Any]) -> asyncio.Future[Any]:
        """An asyncio future of this loop settled like ``future`` (result or exception)."""
        waiter = self._loop.create_future()
        future.add_done_callback(lambda f: self._settled(f, waiter))
        return waiter

    def _settled(self, future: concurrent.futures.Future[Any], waiter: asyncio.Future[Any]) -> None:
        self._done.append((future, waiter))
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    def _deliver(self) -> None:
        with self._lock:
            self._scheduled = False
        while self._done:
            future, waiter = self._done.popleft()
            if waiter.done():  # cancelled meanwhile
                continue
            if future.cancelled():
                waiter.cancel()
                continue
            exc = future.exception()
            if exc is not None:
                waiter.set_exception(exc)
            else:
                waiter.set_result(future.result())
