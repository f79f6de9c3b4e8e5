"""Terminal progress bar (tqdm) fed by runner events."""

from __future__ import annotations

from typing import IO, Any

from tqdm import tqdm

from .events import Event


class ProgressBar:
    """A tqdm bar: calls done / total, with ok, errors, cached, retries and spend in the postfix."""

    def __init__(self, total: int, budget_usd: float | None = None, file: IO[str] | None = None) -> None:
        self.bar = tqdm(total=total, unit="call", file=file, dynamic_ncols=True, desc="sweep", leave=True)
        self.budget_usd = budget_usd
        self.counts = {"ok": 0, "error": 0, "cached": 0, "retries": 0, "skipped": 0}
        self.spent = 0.0

    def on_event(self, event: Event) -> None:
        kind = event.kind
        if kind in ("finished", "failed", "cached", "skipped", "cancelled"):
            key = {"finished": "ok", "failed": "error", "cached": "cached", "skipped": "skipped", "cancelled": "skipped"}[kind]
            self.counts[key] += 1
            row: dict[str, Any] = event.data.get("row") or {}
            cost = row.get("cost_usd")
            if kind == "finished" and isinstance(cost, (int, float)):
                self.spent += cost
            self.bar.update(1)
            self._postfix()
        elif kind == "retry":
            self.counts["retries"] += 1
            self._postfix()
        elif kind == "sweep_finished" and event.data.get("stopped"):
            self.bar.set_description(f"sweep (stopped: {event.data['stopped']})")

    def _postfix(self) -> None:
        post = {k: v for k, v in self.counts.items() if v}
        if self.spent or self.budget_usd is not None:
            post["usd"] = f"{self.spent:.4f}" + (f"/{self.budget_usd:g}" if self.budget_usd is not None else "")
        self.bar.set_postfix(post, refresh=False)

    def close(self) -> None:
        self.bar.close()
