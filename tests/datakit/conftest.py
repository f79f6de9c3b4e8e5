"""Read-back fixtures: each runs against the embedded collector and against the DataKit 1.84 stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import llmlab as ll
from llmlab.collector import background, ensure_embedded
from llmlab.collector.standin import create_standin_app


def start_standin(tmp_path: Any, **options: Any) -> Any:
    """A started DataKit stand-in (stop it with ``.stop()``); ``.app.state.standin`` has its counters."""
    app = create_standin_app(tmp_path / f"standin-{len(list(tmp_path.glob('standin-*')))}.db", **options)
    return background(app).start()


@pytest.fixture(params=["embedded", "standin"])
def collector_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A DataKit URL llmlab is configured for: the embedded collector, or a DataKit 1.84 stand-in."""
    if request.param == "embedded":
        cfg = ll.configure(datakit="embedded")
        yield ensure_embedded(cfg)
        return
    server = start_standin(tmp_path)
    ll.configure(datakit=server.url)
    try:
        yield str(server.url)
    finally:
        server.stop()
        server.app.state.storage.close()
