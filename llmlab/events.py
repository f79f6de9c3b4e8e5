"""Runner events and a tiny synchronous pub/sub bus.

The runner never renders anything: it publishes :class:`Event` objects, and the display layers
(the ipywidgets grid, the CLI progress bar, tests) subscribe. Subscribers are called in the
runner's thread and must be quick; a subscriber that raises is logged and dropped from that
event only, never breaking the sweep.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import Any, Literal

log = logging.getLogger("llmlab.events")

EventKind = Literal[
    "sweep_started",  # data: total, calls (the planned Calls, a sequence made when read), budget_usd
    "queued",  # a call is waiting for a slot
    "started",  # an attempt is sending (data: attempt)
    "token",  # data: text (one streamed delta)
    "retry",  # data: attempt, error, wait_s (the partial output so far is discarded)
    "finished",  # data: row (status ok)
    "failed",  # data: row (status error)
    "cached",  # data: row (served from the cache, nothing sent)
    "skipped",  # data: reason (budget or cancel: not sent)
    "cancelled",  # an in-flight call was cancelled
    "sweep_finished",  # data: stopped (None | "budget" | "cancelled"), counts
]


@dataclasses.dataclass(frozen=True)
class Event:
    """One thing that happened in a sweep. ``call_id`` is None for sweep-level events."""

    kind: str
    sweep_id: str
    call_id: str | None = None
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


Subscriber = Callable[[Event], None]


class EventBus:
    """Fan events out to subscribers.

    Example:
        >>> bus = EventBus(); seen = []
        >>> unsubscribe = bus.subscribe(seen.append)
        >>> bus.publish(Event("queued", "s1", "c1")); len(seen)
        1
    """

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add ``subscriber``; returns a function that removes it."""
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, event: Event) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(event)
            except Exception:  # a display bug must never stop a sweep
                log.exception("event subscriber %r failed on %s", subscriber, event.kind)
