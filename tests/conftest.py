"""Shared fixtures: every test gets a clean environment and its own llmlab home."""

from __future__ import annotations

import os

import pytest

_ENV_PREFIXES = ("LLMLAB_", "TRACELOOP_", "OPENAI_", "MOONSHOT_")


@pytest.fixture(autouse=True)
def clean_environ(tmp_path, monkeypatch):
    """No llmlab/traceloop/openai env vars leak in; home is a temp dir; export off by default."""
    for key in list(os.environ):
        if key.startswith(_ENV_PREFIXES):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("LLMLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LLMLAB_DATAKIT_URL", "none")
    from llmlab import config

    config.reset_for_tests()
    yield
    config.reset_for_tests()


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


@pytest.fixture
def counting_provider():
    """Register a provider on the embedded model behind a server that counts chat requests.

    Call it with the provider name; returns the counting app (``.requests``; ``.fail_first``/``.status``
    make each request's first attempts fail). Servers stop at the end of the test.
    """
    from llmlab import provider
    from llmlab.localmodel import create_app
    from llmlab.serving import BackgroundServer
    from tests.core.faulty import FlakyApp

    servers = []

    def make(name: str):
        app = FlakyApp(create_app(delay_ms=0), fail_first=0)
        servers.append(BackgroundServer(app).start())
        provider(name, base_url=servers[-1].url + "/v1", api_key_env=None)
        return app

    yield make
    for server in servers:
        server.stop()
