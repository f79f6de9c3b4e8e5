"""A stand-in for a real DataKit's DQL answers, built from the embedded collector's.

A real DataKit (its OpenTelemetry input, defaults) stores a span differently from the embedded
collector's convenient ``message``: with ``clean_message`` (on by default) the message loses the
ids, name, kind, times and status; resource, scope and event attributes are merged into the
span's attributes, plus a hex ``trace_id`` attribute; ``customer_tags`` attributes leave the
message and become typed columns (dots → underscores); an ``exception`` event becomes the
``error_message``/``error_type``/``error_stack`` columns. Without ``clean_message`` the message
keeps ids (base64: Go's protojson) and times. This proxy forwards ``/v1/query/raw`` to the
embedded collector and rewrites each point that way, so ``ll.spans(source="datakit")`` can be
checked against what a real DataKit answers.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llmlab.collector import DEFAULT_CUSTOMER_TAGS, background
from llmlab.readback.datakit_query import _anyvalue

_COLUMNS = (
    "time",
    "trace_id",
    "span_id",
    "parent_id",
    "service",
    "status",
    "span_kind",
    "source",
    "resource",
    "operation",
    "start",
    "duration",
)
_EXCEPTION = {
    "exception.message": "error_message",
    "exception.type": "error_type",
    "exception.stacktrace": "error_stack",
}


def _b64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode("ascii")


def datakit_point(point: dict[str, Any], clean_message: bool = True) -> dict[str, Any]:
    """One embedded-collector point (all columns) reshaped as a real DataKit stores it."""
    full = json.loads(point["message"])
    out = {k: point[k] for k in _COLUMNS if k in point}
    wanted = set(DEFAULT_CUSTOMER_TAGS)
    resource = [kv for kv in full.get("resource", {}).get("attributes", []) if kv["key"] != "service.name"]
    events, merged = [], resource + full.get("scope", {}).get("attributes", []) + full.get("attributes", [])
    for event in full.get("events", []):
        if event.get("name") == "exception":
            for kv in event.get("attributes", []):
                if kv["key"] in _EXCEPTION:
                    out[_EXCEPTION[kv["key"]]] = _anyvalue(kv["value"])
            continue
        events.append(event)
        merged += event.get("attributes", [])
    kept = []
    for kv in merged:
        if kv["key"] in wanted:  # typed column: strings are tags, numbers and booleans fields
            out[kv["key"].replace(".", "_")] = _anyvalue(kv["value"])
        else:
            kept.append(kv)
    kept.append({"key": "trace_id", "value": {"stringValue": point["trace_id"]}})
    message: dict[str, Any] = {k: v for k, v in full.items() if k not in ("resource", "scope", "attributes", "events")}
    message["attributes"] = kept
    if events:
        message["events"] = events
    if clean_message:
        for key in (
            "traceId",
            "spanId",
            "parentSpanId",
            "name",
            "kind",
            "startTimeUnixNano",
            "endTimeUnixNano",
            "status",
        ):
            message.pop(key, None)
    else:
        for key in ("traceId", "spanId", "parentSpanId"):
            if key in message:
                message[key] = _b64(message[key])
    out["message"] = json.dumps(message, ensure_ascii=False)
    return out


class DataKitShape:
    """``/v1/query/raw`` of a real DataKit, in front of an embedded collector at ``upstream``."""

    def __init__(self, upstream: str, clean_message: bool = True) -> None:
        self.upstream = upstream
        self.clean_message = clean_message
        app = Starlette(routes=[Route("/v1/query/raw", self.query, methods=["POST"])])
        self.server = background(app).start()
        self.url = str(self.server.url)

    async def query(self, request: Request) -> Response:
        body = await request.json()
        for q in body["queries"]:  # every column, then reshape; the proxy serves ll.spans()'s plain T:: queries
            assert q["query"].startswith("T::re(`.*`)"), q
        async with httpx.AsyncClient(trust_env=False) as client:
            r = await client.post(self.upstream + "/v1/query/raw", json=body)
        content = r.json()["content"]
        for c in content:
            for series in c.get("series") or []:
                if "message" not in series["columns"]:  # a column-list query (the sweep-tag probe)
                    continue
                points = [datakit_point(dict(zip(series["columns"], v)), self.clean_message) for v in series["values"]]
                columns = sorted({k for p in points for k in p})
                series["columns"] = columns
                series["values"] = [[p.get(k) for k in columns] for p in points]
        return JSONResponse({"content": content}, status_code=r.status_code)

    def stop(self) -> None:
        self.server.stop()
