"""A call's row as the runner builds it, stores it and caches it: the shape every stage after the runner reads."""

from __future__ import annotations

import json
from typing import Any

from llmlab import schema
from llmlab.errors import ReplayMissError
from llmlab.plan.grid import Call
from llmlab.store.callrows import CACHE_FIELDS  # a cached response: these values of the call row that paid for it

__all__ = ["CACHE_FIELDS", "base_row", "combined_miss", "row_for_store"]


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
