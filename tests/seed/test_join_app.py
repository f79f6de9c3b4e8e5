"""llmlab inside an app that already called Traceloop.init (the seed's Flask app): one process, the
app's requests and a sweep → DataKit receives every span exactly once, and the app's spans keep
the app's service name (issue #15, point 4)."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from llmlab.localmodel import create_app as model_app
from llmlab.serving import BackgroundServer

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "examples" / "seed_app" / "app.py"

SCRIPT = textwrap.dedent(
    """
    import json, runpy, sys
    seed = runpy.run_path(sys.argv[1], run_name="seed_app")   # Traceloop.init(app_name=...) as the app does
    client = seed["app"].test_client()
    r = client.post("/ask", json={"messages": [{"role": "user", "content": "What is a span?"}], "max_tokens": 8})
    assert r.status_code == 200, r.data
    import llmlab as ll
    ll.provider("loc", base_url=sys.argv[2], api_key_env=None)
    res = ll.Sweep(prompts=["What is rain?", "Name a cloud"], models=["loc/tiny"], max_tokens=5).run(display=False)
    from llmlab.tracing import flush
    from llmlab.tracing.export import drain
    from opentelemetry import trace
    flush()
    trace.get_tracer_provider().force_flush()
    print(json.dumps({"sweep_id": res.sweep_id, "calls": len(res.df), "drain": drain(ll.configure())}))
    """
)


class CountingDataKit:
    """An OTLP/HTTP traces endpoint that counts every span it receives, by id."""

    def __init__(self) -> None:
        self.seen: collections.Counter[str] = collections.Counter()
        self.services: dict[str, str] = {}
        self.attrs: dict[str, dict] = {}

    async def traces(self, request: Request) -> Response:
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            import gzip

            body = gzip.decompress(body)
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            service = next((kv.value.string_value for kv in rs.resource.attributes if kv.key == "service.name"), "")
            for ss in rs.scope_spans:
                for span in ss.spans:
                    self.seen[span.span_id.hex()] += 1
                    self.services[span.span_id.hex()] = service
                    self.attrs[span.span_id.hex()] = {kv.key: kv.value.string_value for kv in span.attributes}
        return Response(b"", media_type="application/x-protobuf")

    async def other(self, request: Request) -> Response:
        return Response(b"")


def test_a_sweep_inside_the_seed_app_exports_each_span_once_under_the_apps_name(tmp_path):
    dk = CountingDataKit()
    sink = BackgroundServer(
        Starlette(
            routes=[
                Route("/otel/v1/traces", dk.traces, methods=["POST"]),
                Route("/otel/v1/metrics", dk.other, methods=["POST"]),
                Route("/otel/v1/logs", dk.other, methods=["POST"]),
            ]
        )
    ).start()
    model = BackgroundServer(model_app(delay_ms=0)).start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMLAB_", "TRACELOOP_", "OPENAI_", "OTEL_"))}
        env.update(
            TRACELOOP_BASE_URL=sink.url + "/otel",
            OPENAI_BASE_URL=model.url + "/v1",
            LLMLAB_HOME=str(tmp_path / "home"),
            LLMLAB_DATAKIT_URL=sink.url,
            SEED_APP_NAME="kimi_app",
            PYTHONPATH=str(ROOT),
        )
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(APP), model.url + "/v1"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        sink.stop()
        model.stop()
    assert dk.seen and max(dk.seen.values()) == 1, {k: n for k, n in dk.seen.items() if n > 1}
    sweep_spans = [s for s, a in dk.attrs.items() if a.get("llmlab.sweep_id") == out["sweep_id"]]
    assert len(sweep_spans) == out["calls"] >= 2  # the sweep's calls, delivered by the app's exporter
    assert set(dk.services.values()) == {"kimi_app"}  # nothing renamed to llmlab
    assert any(a.get("traceloop.workflow.name") == "ask_workflow" for a in dk.attrs.values())
