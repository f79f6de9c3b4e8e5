"""The plan of a sweep: one row per call with estimated tokens, cost and time, before sending."""

from __future__ import annotations

import json

import pandas as pd

from llmlab.plan.grid import Call, Grid

#: Reply length assumed for a call that sets no max_tokens (used in the plan and for TPM limits).
DEFAULT_OUTPUT_TOKENS = 256

#: Rough seconds per call used for the time estimate when nothing was measured yet.
_DEFAULT_SECONDS_PER_CALL = {"local": 0.05}
_REMOTE_SECONDS_PER_CALL = 2.0


def estimate_call_tokens(call: Call) -> tuple[int, int]:
    """(input, output) tokens of ``call`` estimated before sending: the prompt by the offline
    estimator, the reply at its bound (``max_tokens``), else :data:`DEFAULT_OUTPUT_TOKENS`."""
    from llmlab.tokens import estimate_messages_tokens

    return estimate_messages_tokens(list(call.messages)), call.max_output_tokens or DEFAULT_OUTPUT_TOKENS


def estimate_plan(grid: Grid, concurrency: int = 8) -> pd.DataFrame:
    """The plan frame of ``grid``: one row per call with estimated tokens and cost, totals in ``attrs``.

    ``attrs`` holds ``calls``, ``est_cost_usd`` (None if a model has no price), ``unpriced_models``
    and ``est_seconds`` (a rough figure at ``concurrency``); see ``Sweep.plan``.
    """
    from llmlab.pricing import cost_for, load_prices

    table = load_prices()
    rows = []
    total_cost = 0.0
    unpriced: set[str] = set()
    seconds = 0.0
    for call in grid.calls:
        est_in, est_out = estimate_call_tokens(call)
        cost = cost_for(call.qualified_model, est_in, est_out, table)
        if cost is None:
            unpriced.add(call.qualified_model)
        else:
            total_cost += cost
        seconds += _DEFAULT_SECONDS_PER_CALL.get(call.provider, _REMOTE_SECONDS_PER_CALL)
        row = {
            "call_id": call.call_id,
            "prompt_id": call.prompt_id,
            "prompt": call.prompt,
            "provider": call.provider,
            "model": call.qualified_model,
            "temperature": call.temperature,
            "top_p": call.top_p,
            "max_tokens": call.max_tokens,
            "seed": call.seed,
            "repeat": call.repeat,
            "params": json.dumps(call.params, sort_keys=True) if call.params else "",
            "est_input_tokens": est_in,
            "est_output_tokens": est_out,
            "est_cost_usd": cost,
        }
        if grid.variants:  # the prompt variants are an axis: named in the plan
            row["template_name"] = call.template_name
            row["system_name"] = call.system_name
        for key, value in call.params.items():
            row[key] = value
        rows.append(row)
    df = pd.DataFrame(rows)
    df["est_cost_usd"] = pd.to_numeric(df["est_cost_usd"], errors="coerce").astype("Float64")
    df.attrs["calls"] = len(df)
    df.attrs["est_cost_usd"] = None if unpriced else round(total_cost, 6)
    df.attrs["unpriced_models"] = sorted(unpriced)
    df.attrs["est_seconds"] = round(seconds / max(1, concurrency), 1)
    return df
