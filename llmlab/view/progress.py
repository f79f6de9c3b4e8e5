"""Terminal progress bar (tqdm) fed by runner events."""

from __future__ import annotations

import os
from typing import IO, Any

from tqdm import tqdm

from llmlab.events import Event
from llmlab.pricing import format_usd


class ProgressBar:
    """A tqdm bar: calls done / total, with ok, errors, cached, retries and spend in the postfix."""

    def __init__(self, total: int, budget_usd: float | None = None, file: IO[str] | None = None) -> None:
        # a terminal that reports no width (a pty under `script`, `docker exec -t`) would get a 0-column bar
        sized = _reports_width(file)
        self.bar = tqdm(
            total=total,
            unit="call",
            file=file,
            dynamic_ncols=sized,
            ncols=None if sized else 100,
            nrows=None if sized else 24,
            desc="sweep",
            leave=True,
        )
        self.budget_usd = budget_usd
        self.counts = {"ok": 0, "error": 0, "cached": 0, "retries": 0, "skipped": 0}
        self.spent = 0.0

    def on_event(self, event: Event) -> None:
        kind = event.kind
        if kind in ("finished", "failed", "cached", "skipped", "cancelled"):
            key = {
                "finished": "ok",
                "failed": "error",
                "cached": "cached",
                "skipped": "skipped",
                "cancelled": "skipped",
            }[kind]
            self.counts[key] += 1
            row: dict[str, Any] = event.data.get("row") or {}
            cost = row.get("spent_usd", row.get("cost_usd") if kind == "finished" else 0.0)  # a hit paid nothing
            if isinstance(cost, (int, float)):
                self.spent += cost
            self.bar.update(1)
            self._postfix()
        elif kind == "retry":
            self.counts["retries"] += 1
            self._postfix()
        elif kind == "sweep_finished" and event.data.get("stopped"):
            self.bar.set_description(f"sweep (stopped: {event.data['stopped']})")

    def _postfix(self) -> None:
        post: dict[str, object] = {k: v for k, v in self.counts.items() if v}
        if self.spent or self.budget_usd is not None:
            post["spent"] = format_usd(self.spent) + (
                f" of ${self.budget_usd:g}" if self.budget_usd is not None else ""
            )
        self.bar.set_postfix(post, refresh=False)

    def close(self) -> None:
        self.bar.close()


def _reports_width(file: IO[str] | None) -> bool:
    """True when ``file`` is a terminal that reports a non-zero width (or is not a terminal at all)."""
    try:
        return os.get_terminal_size(file.fileno()).columns > 0 if file is not None else True
    except (AttributeError, OSError, ValueError):  # not a real file, or not a terminal
        return True
