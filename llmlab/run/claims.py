"""Calls claimed by another sweep (in this process or another): wait for their answer instead of paying twice.

Before sending, a sweep claims its uncached calls in the store; a call already claimed elsewhere
is awaited here until it is answered (then served from the cache) or its claim goes away.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["ACTIVE_SWEEPS", "ClaimWaiter"]

log = logging.getLogger("llmlab.runner")

#: sweeps running in this process now (their claims are live; any other claim made here is stale)
ACTIVE_SWEEPS: set[str] = set()


class ClaimWaiter:
    """Waits for calls that another sweep (in this process or another one) claimed and is sending.

    One poller reads the cache for all of them a few times a second; a call that is answered
    is served from the cache, and a call whose claim went away without an answer (it failed
    there, was skipped, or its process died) is claimed here and sent by this sweep.
    """

    interval_s = 0.2

    def __init__(self, store: Any, owner: str, call_ids: set[str]) -> None:
        self.store = store
        self.owner = owner
        self._ids = set(call_ids)
        self._futures: dict[str, asyncio.Future[dict[str, Any] | None]] = {}
        self._poller: asyncio.Task[None] | None = None

    def __contains__(self, call_id: str) -> bool:
        return call_id in self._ids

    async def wait(self, call_id: str) -> dict[str, Any] | None:
        """The cached answer of ``call_id``, or None once it is this sweep's to send."""
        fut = self._futures.setdefault(call_id, asyncio.get_running_loop().create_future())
        if self._poller is None:
            self._poller = asyncio.ensure_future(self._poll())
        return await fut

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            waiting = [cid for cid, fut in self._futures.items() if not fut.done()]
            if not waiting:
                continue
            try:
                hits = await asyncio.to_thread(self.store.cached_responses, waiting)
                rest = [cid for cid in waiting if cid not in hits]
                still_elsewhere = (
                    await asyncio.to_thread(self.store.claim_calls, rest, self.owner, set(ACTIVE_SWEEPS))
                    if rest
                    else set()
                )
            except Exception:  # e.g. the store briefly locked by another process: ask again next round
                log.warning("could not check calls claimed by another sweep; retrying", exc_info=True)
                continue
            for cid in waiting:
                fut = self._futures[cid]
                if fut.done():
                    continue
                if cid in hits:
                    fut.set_result(hits[cid])
                elif cid not in still_elsewhere:
                    fut.set_result(None)

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
