"""A DataKit 1.84 stand-in for tests: DataKit's strictness and answer shapes over the collector's storage.

The embedded collector is friendly on purpose (it explains a rejected request in a JSON body, reads
``limit: 0`` literally, keeps OTLP details a reader wants). Tests that only pass against it may fail
against a real DataKit, so every read-back test also runs against this stand-in, which behaves as
DataKit 1.84 does, read from its source (repository GuanceCloud/datakit; each rule cites its file):

Ingest (``POST /otel/v1/{traces,metrics,logs}``)
    - the ``Content-Type`` must be exactly ``application/x-protobuf`` or ``application/json``; a
      ``; charset=…`` parameter is a 400 (``internal/httpapi/middlewares.go``,
      ``internal/plugins/inputs/opentelemetry/otel_http.go``);
    - OTLP/JSON is decoded strictly (protojson: an unknown field is a 400, ``otel_http.go``);
    - no body limit over HTTP (``otel_http.go``: the 16 MiB limit is gRPC's), so no 413;
    - 200 with an empty body on success, 400 with an empty body on any bad request (``otel_http.go``).

Query (``POST /v1/query/raw``)
    - only from loopback unless the API is white-listed: 403 ``datakit.publicAccessDisabled``
      "api /v1/query/raw disabled from external IP, only loopback(localhost) allowed"
      (``internal/httpapi/http.go``, ``apiWhiteListMiddleware``); ``external=True`` simulates a
      client on another host;
    - an empty ``token`` is replaced by the dataway's token (``internal/httpapi/api_query.go``); none
      → "dataway token missing"; a token the workspace does not know is the backend's error;
    - the backend's body is passed through with HTTP 200 whatever it says (1.84:
      ``internal/httpapi/api_query.go`` + ``wrap.go``); an error is a top-level ``error_code`` and
      ``message`` with no ``content`` (the shape ``internal/cmds/dql.go`` reads);
    - ``limit: 0`` means "the default" (DataKit's own CLI always sends 0, ``internal/cmds/dql.go``).

Points
    - spans (``internal/plugins/inputs/opentelemetry/trace.go``): ``clean_message`` (default on)
      strips ids, name, kind, times and status from ``message``; resource, scope and event
      attributes are merged into its attributes; ``customer_tags`` attributes leave the message and
      become columns (dots → underscores), list values as the JSON string ``{"values":[…]}``
      (``helper.go``), bytes values as an empty string (``GetStringValue()`` of a bytes value);
      an ``exception`` event becomes ``error_message``/``error_type``/``error_stack``; tags
      ``source``, ``host`` and ``remote_ip`` are added;
    - metrics (``internal/plugins/inputs/opentelemetry/metric.go``, 1.84): no ``__temporality`` tag,
      histogram ``_min``/``_max`` written as 0 when the data point has none, float attributes
      formatted ``%.3f``, summary quantile points not written, ``remote_ip`` added.
"""

from __future__ import annotations

import copy
import gzip
import json
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llmlab.collector import dql
from llmlab.collector.ingest import (
    DEFAULT_CUSTOMER_TAGS,
    REQUEST_TYPES,
    log_rows,
    metric_rows,
    span_groups,
)
from llmlab.collector.storage import Storage
from llmlab.errors import QueryError

__all__ = ["STANDIN_TOKEN", "create_standin_app", "datakit_metric_point", "datakit_span_point"]

#: The workspace token the stand-in's "dataway" holds (and accepts in a query body).
STANDIN_TOKEN = "tkn_standin_0123456789abcdef"
_TYPES = ("application/x-protobuf", "application/json")
_SPAN_COLUMNS = tuple(c for c in dql.ALL_COLUMNS if c != "message")  # the point's columns, its message aside
_EXCEPTION = {
    "exception.message": "error_message",
    "exception.type": "error_type",
    "exception.stacktrace": "error_stack",
}


def _plain(value: dict[str, Any]) -> Any:
    """A protojson AnyValue as DataKit types a ``customer_tags`` column (``helper.go``)."""
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return value["boolValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "arrayValue" in value:  # a list attribute: the JSON of the ArrayValue, a string
        return json.dumps(value["arrayValue"], separators=(",", ":"), ensure_ascii=False)
    if "bytesValue" in value:  # GetStringValue() of a bytes value is ""
        return ""
    return None


def datakit_span_point(
    point: dict[str, Any], customer_tags: Sequence[str], clean_message: bool = True
) -> dict[str, Any]:
    """One collector point (all columns, ``message`` in full) as DataKit 1.84 stores it (``trace.go``)."""
    full = json.loads(point["message"])
    out = {k: point[k] for k in _SPAN_COLUMNS if k in point}
    out["source"] = "opentelemetry"
    out["host"] = socket.gethostname()
    out["remote_ip"] = "127.0.0.1"
    wanted = set(customer_tags)
    resource = [kv for kv in full.get("resource", {}).get("attributes", []) if kv["key"] != "service.name"]
    events, merged = [], resource + full.get("scope", {}).get("attributes", []) + full.get("attributes", [])
    for event in full.get("events", []):
        if event.get("name") == "exception":
            for kv in event.get("attributes", []):
                if kv["key"] in _EXCEPTION:
                    out[_EXCEPTION[kv["key"]]] = _plain(kv["value"])
            continue
        events.append(event)
        merged += event.get("attributes", [])
    kept = []
    for kv in merged:
        if kv["key"] in wanted:
            out[kv["key"].replace(".", "_")] = _plain(kv["value"])
        else:
            kept.append(kv)
    kept.append({"key": "trace_id", "value": {"stringValue": point["trace_id"]}})
    message = {k: v for k, v in full.items() if k not in ("resource", "scope", "attributes", "events")}
    message["attributes"] = kept
    if events:
        message["events"] = events
    if clean_message:
        for key in ("traceId", "spanId", "parentSpanId", "name", "kind", "startTimeUnixNano", "endTimeUnixNano"):
            message.pop(key, None)
        message.pop("status", None)
    else:
        import base64

        for key in ("traceId", "spanId", "parentSpanId"):
            if message.get(key):
                message[key] = base64.b64encode(bytes.fromhex(message[key])).decode("ascii")
    out["message"] = json.dumps(message, ensure_ascii=False)
    return out


def _float_tag(value: Any) -> Any:
    """A tag the collector wrote from a double, as DataKit 1.84 formats it (``%.3f``, ``metric.go``)."""
    if isinstance(value, str) and "." in value:
        try:
            return f"{float(value):.3f}"
        except ValueError:
            return value
    return value


def datakit_metric_point(point: dict[str, Any]) -> dict[str, Any] | None:
    """One collector ``otel_service`` point as DataKit 1.84 writes it (``metric.go``), or None if it writes none."""
    if point.get("quantile") is not None:
        return None
    out: dict[str, Any] = {}
    for key, value in point.items():
        if key == "__temporality":
            continue
        out[key] = _float_tag(value) if isinstance(value, str) and key not in ("le", "unit") else value
    for key in list(out):
        if key.endswith("_count") and out[key] is not None and key[:-6] + "_sum" in out:
            base = key[:-6]
            for stat in ("_min", "_max"):
                if out.get(base + stat) is None:
                    out[base + stat] = 0.0
    out["remote_ip"] = "127.0.0.1"
    return out


class _StandIn:
    def __init__(
        self,
        storage: Storage,
        customer_tags: Sequence[str],
        token: str | None,
        external: bool,
        clean_message: bool,
    ) -> None:
        self.storage = storage
        self.customer_tags = tuple(customer_tags)
        self.token = token
        self.external = external
        self.clean_message = clean_message
        self.points_returned = 0
        self.queries: list[dict[str, Any]] = []

    def _ingest(self, kind: str, body: bytes, json_body: bool) -> None:
        msg = REQUEST_TYPES[kind]()
        if json_body:  # protojson, strict: unknown fields rejected (otel_http.go)
            json_format.Parse(body, msg, ignore_unknown_fields=False)
        else:
            msg.ParseFromString(body)
        if kind == "traces":
            groups = span_groups(msg, self.customer_tags)  # type: ignore[arg-type]
            if groups:
                self.storage.insert_spans(groups)
        elif kind == "metrics":
            rows = metric_rows(msg)  # type: ignore[arg-type]
            if rows:
                self.storage.insert_metrics(rows)
        else:
            rows = log_rows(msg)  # type: ignore[arg-type]
            if rows:
                self.storage.insert_logs(rows)

    async def otlp(self, request: Request) -> Response:
        kind = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        media = request.headers.get("content-type", "")
        if media not in _TYPES:  # exact match, parameters included (middlewares.go)
            return Response(status_code=400)
        body = await request.body()
        if request.headers.get("content-encoding", "").lower() == "gzip":
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError):
                return Response(status_code=400)
        try:
            await run_in_threadpool(self._ingest, kind, body, media == "application/json")
        except (DecodeError, json_format.ParseError, ValueError, TypeError):
            return Response(status_code=400)
        return Response(status_code=200)

    async def ping(self, request: Request) -> Response:
        return JSONResponse({"content": {"version": "1.84.0", "uptime": "1s", "host": socket.gethostname()}})

    async def query_raw(self, request: Request) -> Response:
        if self.external:  # http.go, apiWhiteListMiddleware
            return JSONResponse(
                {
                    "error_code": "datakit.publicAccessDisabled",
                    "message": "api /v1/query/raw disabled from external IP, only loopback(localhost) allowed",
                },
                status_code=403,
            )
        try:
            payload = json.loads(await request.body())
        except ValueError as exc:
            return JSONResponse({"error_code": "datakit.badRequest", "message": str(exc)}, status_code=400)
        if not isinstance(payload, dict):
            return JSONResponse({"error_code": "datakit.badRequest", "message": "body"}, status_code=400)
        token = payload.get("token") or self.token  # api_query.go: an empty token becomes the dataway's
        if not token:
            return JSONResponse(
                {"error_code": "datakit.badRequest", "message": "dataway token missing"}, status_code=500
            )
        if token != self.token:  # the backend's answer, passed through with 200 (api_query.go, wrap.go)
            return JSONResponse({"error_code": "kodo.tokenNotFound", "message": "token not found"})
        queries = copy.deepcopy(payload.get("queries"))
        if isinstance(queries, list):
            for q in queries:
                if isinstance(q, dict) and q.get("limit") == 0:  # 0: the default (cmds/dql.go sends it)
                    q.pop("limit")
        self.queries.extend(q for q in queries or [] if isinstance(q, dict))
        try:
            content = await run_in_threadpool(dql.run_request, self.storage, {"queries": queries})
        except QueryError as exc:
            return JSONResponse({"error_code": "kodo.dqlError", "message": str(exc)})
        for c in content:
            for series in c.get("series") or []:
                self._reshape(series)
        return JSONResponse({"content": content})

    def _reshape(self, series: dict[str, Any]) -> None:
        columns = series.get("columns") or []
        points = [dict(zip(columns, v)) for v in series.get("values") or []]
        if "message" in columns:
            points = [datakit_span_point(p, self.customer_tags, self.clean_message) for p in points]
        elif series.get("name") == "otel_service":
            points = [q for q in (datakit_metric_point(p) for p in points) if q is not None]
        else:
            self.points_returned += len(points)
            return
        self.points_returned += len(points)
        cols = ["time", *sorted({k for p in points for k in p} - {"time"})] if points else columns
        series["columns"] = cols
        series["values"] = [[p.get(k) for k in cols] for p in points]


def create_standin_app(
    db_path: str | Path,
    *,
    customer_tags: Sequence[str] | None = None,
    token: str | None = STANDIN_TOKEN,
    external: bool = False,
    clean_message: bool = True,
) -> Starlette:
    """A Starlette app answering as DataKit 1.84 does (see the module docstring).

    Args:
        db_path: SQLite file of the points (the collector's storage).
        customer_tags: the ``customer_tags`` of its ``opentelemetry.conf`` (default: the seed's list).
        token: the dataway token (None: DataKit without a dataway token).
        external: answer queries as to a client on another host (403).
        clean_message: DataKit's ``clean_message`` option (default on).

    Returns:
        the app; ``app.state.standin`` has ``points_returned`` and ``queries`` (for benchmarks).
    """
    storage = Storage(db_path)
    state = _StandIn(
        storage,
        DEFAULT_CUSTOMER_TAGS if customer_tags is None else customer_tags,
        token,
        external,
        clean_message,
    )
    app = Starlette(
        routes=[
            *(Route(f"/otel/v1/{kind}", state.otlp, methods=["POST"]) for kind in REQUEST_TYPES),
            Route("/v1/ping", state.ping, methods=["GET"]),
            Route("/v1/query/raw", state.query_raw, methods=["POST"]),
        ]
    )
    app.state.storage = storage
    app.state.standin = state
    return app
