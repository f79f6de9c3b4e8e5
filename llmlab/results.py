"""The result of a sweep: the canonical frame plus what was skipped and why."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from llmlab import schema

__all__ = ["RateCallback", "SweepResult", "store_ratings"]

log = logging.getLogger(__name__)

#: ``on_rate(call_id, value, note)``: what a grid calls when a rating is given in it; ``value`` is +1/-1 (thumbs),
#: 1..5 (score) or None (cleared), ``note`` free text or None.
RateCallback = Callable[[str, "int | None", "str | None"], None]


def store_ratings(sweep_id: str | None) -> RateCallback:
    """The default ``on_rate`` of a sweep's live grid: each click is stored at once in the home's store (so it
    survives a kernel restart and ``ll.load``/``ll.ratings`` read it back); None clears the rating."""

    def on_rate(call_id: str, value: int | None, note: str | None) -> None:
        from llmlab.store import get_store, ratings

        if not sweep_id:
            return
        if value is None:
            ratings.clear_rating(get_store(), sweep_id, call_id)
        else:
            ratings.rate_call(sweep_id, call_id, value, note)

    return on_rate


class SweepResult:
    """What ``Sweep.run()`` returns (and ``ll.load()`` rebuilds from the store).

    Attributes:
        sweep_id: the experiment id.
        df: one row per call that ran (or came from the cache), canonical columns first.
        skipped: plan rows of calls not sent (budget reached, cancelled), with a ``reason``.
        stopped: None when every call ran, else ``"budget"`` or ``"cancelled"``.
    """

    def __init__(
        self,
        sweep_id: str,
        df: pd.DataFrame,
        skipped: pd.DataFrame | None = None,
        stopped: str | None = None,
        spec: dict[str, Any] | None = None,
    ) -> None:
        self.sweep_id = sweep_id
        self.df = df
        self.skipped = (
            skipped if skipped is not None else pd.DataFrame(columns=["call_id", "prompt_id", "model", "reason"])
        )
        self.stopped = stopped
        self.spec = spec or {}
        # call_id -> the rendered message list sent (known when the result comes from a run; else rebuilt
        # from the spec on demand, see message_lists())
        self._messages: Mapping[str, Sequence[Mapping[str, Any]]] | None = None

    @classmethod
    def from_rows(
        cls,
        sweep_id: str,
        rows: Sequence[dict[str, Any]],
        sweep: Any = None,
        skipped: Sequence[tuple[Any, str]] = (),
        stopped: str | None = None,
    ) -> SweepResult:
        spec = sweep.spec() if sweep is not None else {}
        df = schema.sweep_frame(rows, params=spec.get("params") or ())
        skipped_df = pd.DataFrame(
            [
                {
                    "call_id": c.call_id,
                    "prompt_id": c.prompt_id,
                    "model": c.qualified_model,
                    "temperature": c.temperature,
                    "top_p": c.top_p,
                    "repeat": c.repeat,
                    "reason": reason,
                }
                for c, reason in skipped
            ],
            columns=["call_id", "prompt_id", "model", "temperature", "top_p", "repeat", "reason"],
        )
        result = cls(sweep_id, df, skipped_df, stopped, spec or None)
        if sweep is not None:
            result._messages = sweep.grid.calls.messages_by_id()  # rendered when looked up
        return result

    @classmethod
    def from_store_rows(
        cls,
        sweep_id: str,
        rows: Sequence[dict[str, Any]],
        ratings: Sequence[dict[str, Any]] = (),
        skipped: pd.DataFrame | None = None,
        stopped: str | None = None,
        spec: dict[str, Any] | None = None,
    ) -> SweepResult:
        """A past sweep's result from its stored rows and ratings (``ll.load``)."""
        by_call = {r["call_id"]: r for r in ratings}
        merged = []
        for row in rows:
            r = by_call.get(row.get("call_id"))
            merged.append({**row, "rating": r["rating"], "rating_note": r["note"]} if r else row)
        df = schema.sweep_frame(merged, params=(spec or {}).get("params") or ())
        return cls(sweep_id, df, skipped, stopped, spec)

    def rate(
        self,
        call_id: str,
        value: int | None = None,
        note: str | None = None,
        *,
        stars: int | None = None,
        scale: str | None = None,
    ) -> dict[str, Any]:
        """Rate one call now: ``+1``/``-1`` (thumbs) or an integer 1..5, with an optional note; None clears it.

        One sweep is rated on one scale, thumbs or stars: its first rating fixes it and a rating on
        the other scale is refused, so they are never averaged together. ``res.rate(call_id, 1)`` is
        a thumb up (one star in a sweep rated in stars); ``res.rate(call_id, stars=1)`` (or
        ``scale="stars"``) says one star explicitly.

        Stored at once in the home's store (durable across kernels: ``ll.load`` and
        ``ll.ratings`` read it back) and set on ``self.df``'s ``rating``/``rating_note``.
        Returns the stored record (call_id, sweep_id, rating, note, rated_at, scale).

        Raises:
            ValidationError: a bad value, a call_id not in this sweep, or a rating on the other scale.
        """
        from llmlab.errors import ValidationError
        from llmlab.store import get_store, ratings

        if "call_id" in self.df and not (self.df["call_id"] == call_id).any():
            raise ValidationError("call_id", call_id, f"no such call in sweep {self.sweep_id}")
        if stars is not None:
            if value is not None:
                raise ValidationError("stars", stars, "give either a value or stars=, not both")
            value, scale = stars, "stars"
        mask = self.df["call_id"] == call_id
        if value is None:
            ratings.clear_rating(get_store(), self.sweep_id, call_id)
            if "rating" in self.df:
                self.df.loc[mask, "rating"] = None
                self.df.loc[mask, "rating_note"] = None
            return {"call_id": call_id, "sweep_id": self.sweep_id, "rating": None, "note": None, "rated_at": None}
        record = ratings.rate(get_store(), self.sweep_id, call_id, value, note, scale)
        self.df.loc[mask, "rating"] = record["rating"]
        self.df.loc[mask, "rating_note"] = record["note"]
        return record

    def message_lists(self) -> Mapping[str, Sequence[Mapping[str, Any]]]:
        """call_id -> the whole message list sent; rebuilt from the stored spec for a loaded sweep (empty
        when its prompts were too many to store with the spec)."""
        if self._messages is None:
            self._messages = {}
            spec = self.spec or {}
            if spec.get("prompts"):
                try:
                    from llmlab.plan.grid import grid_from_spec

                    grid = grid_from_spec(spec)
                    self._messages = grid.calls.messages_by_id()
                except Exception as exc:  # an older or unusual spec: the details show the prompt only
                    log.debug("message lists not rebuilt for %s: %s", self.sweep_id, exc)
        return self._messages

    def __repr__(self) -> str:
        n = len(self.df)
        errors = int((self.df["status"] == "error").sum()) if n else 0
        cached = int(self.df["cached"].fillna(False).sum()) if n else 0
        extra = f", stopped={self.stopped!r}, skipped={len(self.skipped)}" if self.stopped else ""
        return f"SweepResult(sweep_id={self.sweep_id!r}, calls={n}, errors={errors}, cached={cached}{extra})"

    def show(self, page_size: int = 20, on_rate: RateCallback | None = None) -> None:
        """Display the finished sweep grid again, rebuilt from the stored rows (nothing is sent).

        Each cell opens on click to the whole prompt, completion and call details; its 👍/👎, score and note
        call ``on_rate(call_id, value, note)`` (default: this result's :meth:`rate`).
        """
        from llmlab.view.widgets import SweepGrid

        SweepGrid.from_result(
            self, page_size=page_size, on_rate=on_rate or self._rate_callback(), messages=self.message_lists()
        ).show()

    def _rate_callback(self) -> RateCallback:
        def on_rate(call_id: str, value: int | None, note: str | None) -> None:
            self.rate(call_id, value, note=note)  # through rate(): a click also updates this result's df

        return on_rate

    def save_report(self, path: str | Path, page_size: int = 20) -> Path:
        """Write one self-contained HTML file (no network needed to open it): the grid with ratings and
        cell details, the summary table, the verdicts of ``ll.compare`` per swept setting and the charts."""
        from llmlab.report import write_report

        return write_report(self, path, page_size=page_size)

    def tag(self, *tags: str) -> SweepResult:
        """Add tags to this experiment in the store (``ll.sweeps(tag=...)`` finds it); returns self."""
        from llmlab.store import experiments, get_store

        experiments.add_tags(get_store(), self.sweep_id, tags)
        return self

    def note(self, text: str | None, append: bool = False) -> SweepResult:
        """Set (or with ``append`` extend) this experiment's free-text note in the store; returns self."""
        from llmlab.store import experiments, get_store

        experiments.set_note(get_store(), self.sweep_id, text, append=append)
        return self

    def summary(self, by: Sequence[str] | str | None = None) -> pd.DataFrame:
        """``ll.summary`` of this result, grouped by the swept settings by default."""
        from llmlab.analysis.stats import summary

        return summary(self.df, by=by or self.setting_columns())

    def setting_columns(self) -> list[str]:
        """The grid columns that vary in this sweep (model, temperature, top_p, params...)."""
        cols = [
            c
            for c in ("model", "template_name", "system_name", "temperature", "top_p", "max_tokens")
            if c in self.df and self.df[c].nunique(dropna=True) > 1
        ]
        if "seed" in self.df and self._seed_swept():
            cols.append("seed")
        params = [
            c
            for c in self.df.columns
            if c not in schema.CANONICAL_COLUMNS
            and c not in schema.EXTRA_COLUMNS
            and not c.startswith(("data.", "assoc."))
            and c in (self.spec.get("params") or {})
        ]
        cols += [c for c in params if self.df[c].nunique(dropna=True) > 1]
        return cols or ["model"]

    def _seed_swept(self) -> bool:
        """Whether the seed was a grid parameter, not just ``seed + repeat`` of repeats (which must
        pool into one setting, or every summary row would hold a single repeat)."""
        seed = pd.to_numeric(self.df["seed"], errors="coerce")
        if "repeat" in self.df:
            seed = seed - pd.to_numeric(self.df["repeat"], errors="coerce").fillna(0)
        return bool(seed.nunique(dropna=True) > 1)

    def check(self, **expectations: Any) -> Any:
        """Regression checks on this result: ``ll.expect(res.df, **expectations)`` (see
        :func:`llmlab.checks.expect`); raises ``CheckFailed`` listing the offending calls."""
        from llmlab.analysis.checks import expect

        return expect(self.df, **expectations)

    def report(self, by: Sequence[str] | str | None = None, scores: Sequence[str] | str = (), digits: int = 3) -> Any:
        """A stable, rounded summary for nbval-checked cells (see :func:`llmlab.checks.report`),
        grouped by the swept settings by default."""
        from llmlab.analysis.checks import report

        return report(self.df, by=by or self.setting_columns(), scores=scores, digits=digits)
