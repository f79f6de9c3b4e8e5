"""Fixtures of the reliability suite: a fault server registered as provider ``fault``."""

from __future__ import annotations

import json

import pytest

import llmlab as ll
from llmlab.testing import FaultServer

#: a fast retry policy for tests: the behaviour under faults, not the production backoff times
FAST = {"initial_s": 0.01, "max_s": 0.05}


@pytest.fixture
def fault():
    """A started FaultServer (no faults until the test sets them) behind provider ``fault``."""
    from llmlab.plan import providers

    providers._registry.pop("fault", None)  # a clean registry: no provider left over from another test
    server = FaultServer().start()
    ll.provider("fault", base_url=server.base_url, api_key_env=None, timeout=10.0)
    yield server
    server.stop()
    providers._registry.pop("fault", None)


def price_fault_models(home, **models: tuple[float, float]) -> None:
    """Give ``fault/<name>`` models a price (USD per 1M input, output tokens) in ``home/prices.json``."""
    home.mkdir(parents=True, exist_ok=True)
    table = {f"fault/{name}": {"input": i, "output": o} for name, (i, o) in models.items()}
    (home / "prices.json").write_text(json.dumps(table))
