"""A configuration error never drops spans: 401/403/404/405/415 keep the whole outbox pending and
say so; only single spans DataKit refuses as malformed (400) are set aside, kept and re-sendable."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import llmlab as ll
from llmlab.serving import BackgroundServer
from llmlab.tracing import flush
from llmlab.tracing.export import drain, export_problem, rejected
from tests.datakit.test_export import SWEEP


class Scripted:
    """An OTLP endpoint answering a scripted status; ``bad`` span names are refused with 400."""

    def __init__(self) -> None:
        self.status = 200
        self.bad: set[str] = set()
        self.received: list[str] = []

    async def traces(self, request: Request) -> Response:
        import gzip

        body = gzip.decompress(await request.body())
        if self.status != 200:
            return Response(status_code=self.status)
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
        if any(s.span_id.hex() in self.bad for s in spans):
            return Response(status_code=400)
        self.received += [s.span_id.hex() for s in spans]
        return Response(b"")


@pytest.fixture
def scripted():
    app = Scripted()
    server = BackgroundServer(Starlette(routes=[Route("/otel/v1/traces", app.traces, methods=["POST"])])).start()
    app.url = server.url
    yield app
    server.stop()


def _sweep_offline() -> ll.Config:
    ll.configure(datakit="http://127.0.0.1:9")  # nothing listens: every span stays pending
    ll.Sweep(**SWEEP).run(display=False)
    flush()
    return ll.configure(datakit=None)


@pytest.mark.parametrize("status", [401, 403, 404, 405, 415])
def test_wrong_place_answers_keep_every_span_pending_and_say_so(scripted, status, caplog, home):
    base = _sweep_offline()
    cfg = dataclasses.replace(base, datakit=scripted.url)
    scripted.status = status
    result = drain(cfg)
    assert result["sent"] == 0 and result["pending"] == 4 and str(status) in result["error"]
    assert rejected(cfg) == [] and str(status) in export_problem(cfg)["message"]
    out = subprocess.run(
        [sys.executable, "-m", "llmlab", "store", "status", "--home", str(home)], capture_output=True, text=True
    )
    status_json = json.loads(out.stdout)
    assert status_json["pending_export"] == 4 and str(status) in status_json["export_problem"]
    with caplog.at_level(logging.WARNING, logger="llmlab.export"):  # the next sweep says so
        ll.configure(datakit=None)
        from llmlab.tracing.export import warn_if_stuck

        warn_if_stuck(cfg)
    assert "4 spans are waiting" in caplog.text and str(status) in caplog.text
    scripted.status = 200
    assert drain(cfg) == {"sent": 4, "pending": 0, "error": None}
    assert export_problem(cfg) is None and len(scripted.received) == 4


def test_a_malformed_span_is_set_aside_alone_kept_and_resendable(scripted, home):
    base = _sweep_offline()
    cfg = dataclasses.replace(base, datakit=scripted.url)
    from llmlab.store import get_store

    ids = [r[0] for r in get_store(cfg.home).read("SELECT span_id FROM spans WHERE export_state = 0")]
    scripted.bad = {ids[1]}
    result = drain(cfg)
    assert result["sent"] == len(ids) - 1 and result["pending"] == 0
    assert [r["span_id"] for r in rejected(cfg)] == [ids[1]]
    assert sorted(scripted.received) == sorted(set(ids) - {ids[1]})
    assert get_store(cfg.home).read("SELECT count(*) FROM spans")[0][0] == len(ids)  # nothing deleted
    scripted.bad = set()
    env_home = ["--home", str(home)]
    import os

    env = {**os.environ, "LLMLAB_DATAKIT_URL": scripted.url}
    out = subprocess.run(
        [sys.executable, "-m", "llmlab", "replay", "--rejected", *env_home], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert "1 rejected spans queued again" in out.stdout and rejected(cfg) == []
    assert sorted(scripted.received) == sorted(ids)
