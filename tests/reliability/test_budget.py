"""budget_usd: stop dispatching before the estimated spend would pass it; say so; keep what finished."""

from __future__ import annotations

import io

import pytest

import llmlab as ll
from llmlab.errors import ValidationError
from llmlab.events import EventBus
from llmlab.store import get_store
from llmlab.view.grid_state import GridState, specs_from_calls
from llmlab.view.progress import ProgressBar
from tests.reliability.conftest import price_fault_models


def _sweep(n: int = 20) -> ll.Sweep:
    return ll.Sweep(
        prompts=[f"What is rain, part {i}?" for i in range(n)], models=["fault/tiny"], temperature=0.0, max_tokens=20
    )


def test_budget_stops_dispatch_keeps_finished_and_says_so(fault, home):
    # $1 per 1M input and $1000 per 1M output tokens: a call is estimated at ~ (10 + 20) → about $0.02
    price_fault_models(home, tiny=(1.0, 1000.0))
    sweep = _sweep(20)
    est = sweep.plan().attrs.get("est_cost_usd")
    budget = 0.1
    bus = EventBus()
    out = io.StringIO()
    bar = ProgressBar(total=len(sweep.calls), budget_usd=budget, file=out)
    bus.subscribe(bar.on_event)
    grid = GridState(specs_from_calls(sweep.calls), budget_usd=budget)  # the notebook grid, without a front end
    bus.subscribe(grid.apply)
    res = sweep.run(display=False, budget_usd=budget, concurrency=4, bus=bus)
    bar.close()

    assert res.stopped == "budget" and "stopped='budget'" in repr(res)
    sent = fault.stats()["requests"]
    assert 0 < len(res.df) == sent < 20  # dispatch stopped: the skipped calls were never sent
    assert len(res.skipped) == 20 - len(res.df) and set(res.skipped["reason"]) == {"budget"}
    assert (res.df["status"] == "ok").all()
    spent = res.df["cost_usd"].sum()
    assert spent <= budget  # the actual spend stays under it
    assert est is None or est != est or est > budget  # the whole sweep would have cost more
    assert "stopped: budget" in out.getvalue()  # the displays say so: progress bar and notebook grid
    assert "stopped: budget" in grid.header_text()
    assert sum(c.state == "skipped" for c in grid.cells.values()) == len(res.skipped)
    # what finished is kept: stored, and served from the cache by a re-run with a larger budget
    stored = get_store().call_rows(res.sweep_id)
    assert {r["call_id"] for r in stored} == set(res.df["call_id"])
    again = sweep.run(display=False, budget_usd=10.0)
    assert again.stopped is None and len(again.df) == 20
    assert int(again.df["cached"].sum()) == len(res.df)
    assert fault.stats()["requests"] == 20  # each call paid for once


def test_a_budget_too_small_for_one_call_sends_nothing(fault, home):
    price_fault_models(home, tiny=(1.0, 1000.0))
    res = _sweep(3).run(display=False, budget_usd=0.0)
    assert res.stopped == "budget" and len(res.df) == 0 and len(res.skipped) == 3
    assert fault.stats()["requests"] == 0


def test_a_budget_on_a_model_without_a_price_is_refused_before_sending(fault):
    with pytest.raises(ValidationError, match=r"budget_usd=0\.5: model 'fault/tiny' has no price.*prices\.json"):
        _sweep(3).run(display=False, budget_usd=0.5)
    assert fault.stats()["requests"] == 0


def test_a_budget_with_unbounded_replies_is_refused_before_sending(fault, home):
    # without max_tokens a reply's length, and so its cost, has no upper bound: the cap could be passed
    price_fault_models(home, tiny=(1.0, 1000.0))
    sweep = ll.Sweep(
        prompts=["What is rain?", "What is snow?"], models=["fault/tiny"], temperature=0.0, max_tokens=None
    )
    with pytest.raises(ValidationError, match=r"budget_usd=0\.5: max_tokens=None leaves .* unbounded; set max_tokens"):
        sweep.run(display=False, budget_usd=0.5)
    assert fault.stats()["requests"] == 0
    # a swept max_completion_tokens bounds it too
    bounded = ll.Sweep(
        prompts=["What is rain?"],
        models=["fault/tiny"],
        temperature=0.0,
        max_tokens=None,
        params={"max_completion_tokens": [8]},
    )
    res = bounded.run(display=False, budget_usd=0.5)
    assert res.stopped is None and res.df["status"].tolist() == ["ok"] and res.df["output_tokens"].iloc[0] <= 8
