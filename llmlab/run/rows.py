"""A call's row as the runner builds it, stores it and caches it: the shape every stage after the runner reads."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

from llmlab import schema
from llmlab.errors import ReplayMissError
from llmlab.plan.grid import Call
from llmlab.store.callrows import CACHE_FIELDS  # a cached response: these values of the call row that paid for it

__all__ = ["CACHE_FIELDS", "PackedRows", "base_row", "combined_miss", "row_for_store"]


def base_row(call: Call, sweep_id: str) -> dict[str, Any]:
    """The row of ``call`` before it runs: its settings and ids, every measurement still empty."""
    return {
        "sweep_id": sweep_id,
        "call_id": call.call_id,
        "trace_id": None,
        "span_id": None,
        "service": None,
        "start_time": None,
        "end_time": None,
        "latency_ms": None,
        "ttft_ms": None,
        "tokens_per_s": None,
        "provider": call.provider,
        "model": call.qualified_model,
        "response_model": None,
        "temperature": call.temperature,
        "top_p": call.top_p,
        "max_tokens": call.max_tokens,
        "seed": call.seed,
        "repeat": call.repeat,
        "prompt_id": call.prompt_id,
        "prompt": call.prompt,
        "completion": None,
        "finish_reason": None,
        "input_tokens": None,
        "output_tokens": None,
        "total_tokens": None,
        "tokens_estimated": False,
        "cost_usd": None,
        "status": "ok",
        "error": "",
        "cached": False,
        **call.variant_columns,
        "spent_usd": 0.0,  # what this run paid for the call: cost_usd when sent, 0 for a cache hit
        "queue_ms": None,
        "attempts": 0,
        "retries": 0,
        "itl_ms": None,
        "params": json.dumps(call.params, sort_keys=True) if call.params else "",
        **{k: v for k, v in call.params.items() if k not in schema.CANONICAL_COLUMNS},
        **{
            k if k not in schema.CANONICAL_COLUMNS else f"data.{k}": v
            for k, v in call.data.items()
            if k not in ("prompt_id", "id", "messages")
        },
    }


def row_for_store(row: dict[str, Any], call: Call, trace_content: bool) -> dict[str, Any]:
    """The row as stored: without trace_content, no prompt, completion or prompt-row values
    (template variables are prompt text too)."""
    if trace_content:
        return row
    data_keys = {k if k not in schema.CANONICAL_COLUMNS else f"data.{k}" for k in call.data}
    return {**row, "prompt": None, "completion": None, **{k: None for k in data_keys if k in row}}


def combined_miss(misses: list[ReplayMissError], total: int) -> ReplayMissError:
    """One error naming every call the cassette lacked (the first few in full)."""
    lines = [str(m) for m in misses[:5]]
    more = f"\n  ... and {len(misses) - 5} more" if len(misses) > 5 else ""
    err = ReplayMissError(f"{len(misses)} of {total} calls are not in the cassette:\n  " + "\n  ".join(lines) + more)
    err.misses = misses  # type: ignore[attr-defined]
    err.call_ids = [getattr(m, "call_id", None) for m in misses]  # type: ignore[attr-defined]
    return err


class PackedRows(Sequence[dict[str, Any]]):
    """Rows kept as tuples of values under shared tuples of keys; each read gives a fresh dict.

    A finished call's row is a dict of about 45 keys, 1,584 bytes; the tuple of its values is 400.
    A sweep keeps every row until it returns, so a 10,000-call sweep held 16 MB of row dicts at its
    peak. ``schema.frame`` builds a DataFrame from :meth:`columns_and_records` without making the
    dicts again.
    """

    def __init__(self) -> None:
        self._shapes: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._packed: list[tuple[tuple[str, ...], tuple[Any, ...]]] = []

    def append(self, row: Mapping[str, Any]) -> int:
        """Keep ``row`` (its keys shared with earlier rows of the same shape); returns its position."""
        keys = tuple(row)
        self._packed.append((self._shapes.setdefault(keys, keys), tuple(row.values())))
        return len(self._packed) - 1

    def picked(self, positions: Iterable[int]) -> PackedRows:
        """The rows at ``positions``, in that order (sharing their tuples)."""
        out = PackedRows()
        out._shapes = self._shapes
        out._packed = [self._packed[i] for i in positions]
        return out

    def __len__(self) -> int:
        return len(self._packed)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [dict(zip(*packed)) for packed in self._packed[index]]
        keys, values = self._packed[index]
        return dict(zip(keys, values))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (dict(zip(keys, values)) for keys, values in self._packed)

    def columns_and_records(self) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Every key (in first-seen order) and one tuple of values per row (None where a row lacks a key)."""
        shapes = list(dict.fromkeys(keys for keys, _ in self._packed))
        if len(shapes) <= 1:  # every row has the same keys (a sweep's usual case)
            return (list(shapes[0]) if shapes else []), [values for _, values in self._packed]
        columns = list(dict.fromkeys(k for keys in shapes for k in keys))
        where = {keys: [keys.index(c) if c in keys else -1 for c in columns] for keys in shapes}
        return columns, [tuple(values[i] if i >= 0 else None for i in where[keys]) for keys, values in self._packed]
