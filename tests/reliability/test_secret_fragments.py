"""A provider that quotes part of a key, or a library that logs headers at DEBUG, leaks nothing."""

from __future__ import annotations

import logging

import pytest

import llmlab as ll
from llmlab.errors import redact, register_secret
from llmlab.run.retry import RetryPolicy
from llmlab.testing import FaultServer

KEY = "sk-proj-Zq81mNvB4tXw0yLc7Hd2Ke9Rf5Ua3Gi6"


@pytest.mark.parametrize(
    "quoted",
    [KEY[8:20], KEY[-12:], KEY[3:11], "Incorrect API key provided: " + KEY[:10] + "*" * 20 + KEY[-8:]],
)
def test_any_run_of_eight_key_characters_is_masked(quoted):
    register_secret(KEY)
    masked = redact(f"error 401: {quoted} (see docs)")
    for i in range(len(KEY) - 7):
        assert KEY[i : i + 8] not in masked, masked
    assert masked.startswith("error 401: ") and masked.endswith(" (see docs)")


def test_short_coincidences_and_ordinary_text_survive():
    register_secret(KEY)
    assert redact("temperature=0.7 top_p 0.9 Zq81mNv") == "temperature=0.7 top_p 0.9 Zq81mNv"  # 7 chars: kept


def test_a_debug_log_of_headers_from_any_library_is_masked(caplog):
    register_secret(KEY)
    with caplog.at_level(logging.DEBUG, logger="httpcore.http11"):
        logging.getLogger("httpcore.http11").debug(
            "receive_response_headers.complete return_value=%r", [(b"x-echo", KEY[5:30].encode())]
        )
    assert caplog.records and all(KEY[5:13] not in r.getMessage() for r in caplog.records)
    assert "***" in caplog.text


def test_partial_key_quoted_by_a_provider_reaches_no_row_or_store(tmp_path, monkeypatch):
    """A real server answers 401 quoting key[8:20]; the error column and the store hold no fragment of it."""
    monkeypatch.setenv("FRAGMENT_API_KEY", KEY)
    ll.configure(home=tmp_path / "home", datakit=None)
    with FaultServer(rate_5xx=1.0, echo_auth_slice=(8, 20)) as server:
        ll.provider("frag", base_url=server.base_url, api_key_env="FRAGMENT_API_KEY")
        sweep = ll.Sweep(prompts=["rain"], models=["frag/tiny"], temperature=0.0, max_tokens=4)
        res = sweep.run(display=False, retry=RetryPolicy(max_attempts=1, initial_s=0.01))
        assert server.app.requests >= 1
    assert res.df["status"].tolist() == ["error"]
    blob = res.df.astype(str).to_csv() + b"".join(
        p.read_bytes() for p in (tmp_path / "home").rglob("*") if p.is_file()
    ).decode("latin-1")
    for i in range(len(KEY) - 7):
        assert KEY[i : i + 8] not in blob, KEY[i : i + 8]


@pytest.mark.parametrize("quote", [None, (8, 20)])
def test_a_recorded_cassette_holds_no_key_a_provider_quoted(tmp_path, monkeypatch, quote):
    """A 401 body quoting the key (whole or part) is recorded as ``***``; the file never holds the key."""
    monkeypatch.setenv("FRAGMENT_API_KEY", KEY)
    ll.configure(home=tmp_path / "home", datakit=None)
    cassette = tmp_path / "c.json"
    with FaultServer(invalid_key=True, echo_auth=quote is None, echo_auth_slice=quote) as server:
        ll.provider("frag", base_url=server.base_url, api_key_env="FRAGMENT_API_KEY")
        sweep = ll.Sweep(prompts=["rain", "snow"], models=["frag/tiny"], temperature=0.0, max_tokens=4)
        res = sweep.run(display=False, cache="record", cassette=cassette)
    assert (res.df["status"] == "error").all()
    text = cassette.read_text()
    assert "Incorrect API key provided" in text and "***" in text  # the answer was recorded, masked
    for i in range(len(KEY) - 7):
        assert KEY[i : i + 8] not in text


def test_a_cassette_that_would_still_hold_the_key_is_refused(tmp_path):
    from llmlab.errors import ConfigError
    from llmlab.run.cassette import Cassette

    register_secret(KEY)
    cassette = Cassette(tmp_path / "c.json", "record")
    cassette.put("k", {"request": {}, "response": {"status": 401, "body_b64": "", "note": KEY}})
    with pytest.raises(ConfigError, match="would contain a configured API key"):
        cassette.save()
    assert not (tmp_path / "c.json").exists()
