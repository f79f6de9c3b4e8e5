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
