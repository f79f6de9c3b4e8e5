"""OTLP decoding: request bodies → DataKit-shaped points.

The point shape follows DataKit's OpenTelemetry input (measurement ``opentelemetry``):
tags ``service``, ``status`` (OTel ERROR → ``error``, anything else ``ok``), ``span_kind``,
``source`` and one tag per ``customer_tags`` attribute (dots → underscores, value as string);
fields ``trace_id``/``span_id`` (hex), ``parent_id`` (hex, ``"0"`` for a root span, as DataKit
writes it), ``resource`` and ``operation`` (span name), ``start``/``duration`` (µs), ``message``.

``message`` is built lazily (see :func:`build_message`) from the stored span bytes: the span as
protojson (``json_format.MessageToDict``, camelCase keys, ids in hex as in OTLP/JSON) plus
``"resource"`` (protojson of the Resource: ``{"attributes": [...]}``) and ``"scope"`` (protojson
of the InstrumentationScope: ``{"name": ..., "version": ...}``).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from llmlab.collector.storage import SpanGroup, digest, dumps
from llmlab.schema import SWEEP_CUSTOMER_TAGS

__all__ = [
    "DEFAULT_CUSTOMER_TAGS",
    "EMBEDDED_CUSTOMER_TAGS",
    "DecodeFailed",
    "anyvalue",
    "build_message",
    "decode",
    "log_rows",
    "metric_rows",
    "span_groups",
]

#: The seed's DataKit ``customer_tags``: these span attributes become tags (dots → underscores).
DEFAULT_CUSTOMER_TAGS: tuple[str, ...] = (
    "llm.request.type",
    "traceloop.entity.path",
    "llm.is_streaming",
    "gen_ai.openai.api_base",
    "gen_ai.prompt.1.content",
    "gen_ai.response.model",
    "gen_ai.completion.0.content",
    "gen_ai.request.model",
    "gen_ai.request.temperature",
    "gen_ai.system",
    "traceloop.workflow.name",
)

#: The embedded collector's customer_tags: the seed's list plus llmlab's call attributes
#: (:data:`llmlab.schema.SWEEP_CUSTOMER_TAGS`), as docs/datakit.md asks of a real DataKit.
EMBEDDED_CUSTOMER_TAGS: tuple[str, ...] = DEFAULT_CUSTOMER_TAGS + tuple(
    t for t in SWEEP_CUSTOMER_TAGS if t not in DEFAULT_CUSTOMER_TAGS
)

SPAN_KINDS = {
    Span.SPAN_KIND_UNSPECIFIED: "unspecified",
    Span.SPAN_KIND_INTERNAL: "internal",
    Span.SPAN_KIND_SERVER: "server",
    Span.SPAN_KIND_CLIENT: "client",
    Span.SPAN_KIND_PRODUCER: "producer",
    Span.SPAN_KIND_CONSUMER: "consumer",
}
STATUS_ERROR = Status.STATUS_CODE_ERROR
UNKNOWN_SERVICE = "unknown_service"

REQUEST_TYPES: dict[str, type[Message]] = {
    "traces": ExportTraceServiceRequest,
    "metrics": ExportMetricsServiceRequest,
    "logs": ExportLogsServiceRequest,
}

# OTLP/JSON carries trace and span ids as hex; protobuf's JSON mapping expects base64.
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


class DecodeFailed(ValueError):
    """The body is not a valid OTLP request of the expected kind."""


def _hex_ids_to_b64(obj: Any) -> Any:
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in _ID_KEYS and isinstance(value, str):
                try:
                    obj[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
                except ValueError as exc:
                    raise DecodeFailed(f"{key}={value[:40]!r} is not hex") from exc
            elif isinstance(value, (dict, list)):
                _hex_ids_to_b64(value)
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, (dict, list)):
                _hex_ids_to_b64(item)
    return obj


#: Most resource and scope entries in one request (an exporter sends a few; each costs a group of its own, and
#: 7 million empty ones fit in a 16 MiB body: 20 s of CPU).
MAX_GROUPS = 10_000

_RESOURCE_FIELDS = {"traces": "resource_spans", "metrics": "resource_metrics", "logs": "resource_logs"}
_SCOPE_FIELDS = {"traces": "scope_spans", "metrics": "scope_metrics", "logs": "scope_logs"}


def check_groups(kind: str, msg: Message) -> None:
    """Refuse a request of more than :data:`MAX_GROUPS` resource + scope entries.

    Raises:
        DecodeFailed: too many entries.
    """
    resources = getattr(msg, _RESOURCE_FIELDS[kind])
    count = len(resources)
    if count <= MAX_GROUPS:
        scope_field = _SCOPE_FIELDS[kind]
        count += sum(len(getattr(r, scope_field)) for r in resources)
    if count > MAX_GROUPS:
        raise DecodeFailed(f"OTLP {kind} request of more than {MAX_GROUPS} resource and scope entries")


def decode(kind: str, body: bytes, json_body: bool) -> Message:
    """Decode an OTLP export request (``kind`` is traces, metrics or logs).

    Raises:
        DecodeFailed: the body is not a valid request.
    """
    msg = REQUEST_TYPES[kind]()
    try:
        if json_body:
            data = json.loads(body)
            if not isinstance(data, dict):
                raise DecodeFailed("OTLP/JSON body must be a JSON object")
            json_format.ParseDict(_hex_ids_to_b64(data), msg, ignore_unknown_fields=True)
        else:
            msg.ParseFromString(body)
    except DecodeFailed:
        raise
    except (DecodeError, json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise DecodeFailed(f"cannot decode OTLP {kind} ({'json' if json_body else 'protobuf'}): {exc}") from exc
    check_groups(kind, msg)
    return msg


def anyvalue(v: Any) -> Any:
    """An OTLP AnyValue as a plain Python value."""
    which = v.WhichOneof("value")
    if which == "string_value":
        return v.string_value
    if which == "bool_value":
        return v.bool_value
    if which == "int_value":
        return v.int_value
    if which == "double_value":
        return v.double_value
    if which == "array_value":
        return [anyvalue(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: anyvalue(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value).decode("ascii")
    return None


def _tag_string(v: Any) -> str:
    """A DataKit tag value: always a string."""
    which = v.WhichOneof("value")
    if which == "string_value":
        return v.string_value
    if which == "bool_value":
        return "true" if v.bool_value else "false"
    if which == "int_value":
        return str(v.int_value)
    if which == "double_value":
        return repr(v.double_value)
    value = anyvalue(v)
    return "" if value is None else dumps(value)


def _service(resource: Any) -> str:
    for kv in resource.attributes:
        if kv.key == "service.name":
            return kv.value.string_value or UNKNOWN_SERVICE
    return UNKNOWN_SERVICE


def _id_hex(raw: bytes) -> str:
    """A trace or span id as DataKit writes it: hex, or ``"0"`` when empty or all zeros
    (internal/plugins/inputs/opentelemetry/trace.go, ``byteToString``); such spans are each stored."""
    return raw.hex() if raw.strip(b"\x00") else "0"


def span_groups(
    req: ExportTraceServiceRequest, customer_tags: Sequence[str] = DEFAULT_CUSTOMER_TAGS
) -> list[SpanGroup]:
    """Turn a decoded trace request into storable span rows, one group per resource × scope."""
    wanted = {key: key.replace(".", "_") for key in customer_tags}
    wanted_get = wanted.get
    kinds_get = SPAN_KINDS.get
    received_ms = int(time.time() * 1000)
    groups: list[SpanGroup] = []
    for rs in req.resource_spans:
        resource = rs.resource
        service = _service(resource)
        res_tags = {wanted[kv.key]: _tag_string(kv.value) for kv in resource.attributes if kv.key in wanted}
        res_bytes = resource.SerializeToString(deterministic=True)
        res_json: str | None = None
        for ss in rs.scope_spans:
            scope = ss.scope
            scope_bytes = scope.SerializeToString(deterministic=True)
            rows: list[list[Any]] = []
            append = rows.append
            for span in ss.spans:
                start = span.start_time_unix_nano
                end = span.end_time_unix_nano
                tags = dict(res_tags) if res_tags else None
                for kv in span.attributes:
                    tag = wanted_get(kv.key)
                    if tag is not None:
                        if tags is None:
                            tags = {}
                        v = kv.value
                        tags[tag] = v.string_value if v.WhichOneof("value") == "string_value" else _tag_string(v)
                parent = span.parent_span_id
                append(
                    [
                        None,  # ctx_id, set by Storage.insert_spans
                        _id_hex(span.trace_id),
                        _id_hex(span.span_id),
                        parent.hex() if parent else "0",
                        service,
                        "error" if span.status.code == STATUS_ERROR else "ok",
                        kinds_get(span.kind, "unspecified"),
                        span.name,
                        start // 1000,
                        (end - start) // 1000 if end > start else 0,
                        start // 1_000_000,
                        dumps(tags) if tags else None,
                        span.SerializeToString(),
                        received_ms,
                    ]
                )
            if not rows:
                continue
            if res_json is None:
                res_json = dumps(json_format.MessageToDict(resource))
            groups.append(
                SpanGroup(
                    digest(res_bytes, scope_bytes),
                    service,
                    res_json,
                    dumps(json_format.MessageToDict(scope)),
                    rows,
                )
            )
    return groups


_B64 = base64.b64encode
_KIND_NAMES = {v: Span.SpanKind.Name(v) for v in Span.SpanKind.values()}
_STATUS_NAMES = {v: Status.StatusCode.Name(v) for v in Status.StatusCode.values()}


def _pj_double(x: float) -> Any:
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def _pj_any(v: Any) -> dict[str, Any]:
    """protojson of an AnyValue (same output as json_format.MessageToDict, ~20x faster)."""
    which = v.WhichOneof("value")
    if which == "string_value":
        return {"stringValue": v.string_value}
    if which == "int_value":
        return {"intValue": str(v.int_value)}
    if which == "double_value":
        return {"doubleValue": _pj_double(v.double_value)}
    if which == "bool_value":
        return {"boolValue": v.bool_value}
    if which == "array_value":
        values = [_pj_any(x) for x in v.array_value.values]
        return {"arrayValue": {"values": values} if values else {}}
    if which == "kvlist_value":
        kvs = _pj_attrs(v.kvlist_value.values)
        return {"kvlistValue": {"values": kvs} if kvs else {}}
    if which == "bytes_value":
        return {"bytesValue": _B64(v.bytes_value).decode("ascii")}
    return {}


def _pj_attrs(kvs: Any) -> list[dict[str, Any]]:
    out = []
    for kv in kvs:
        d: dict[str, Any] = {}
        if kv.key:
            d["key"] = kv.key
        if kv.HasField("value"):
            d["value"] = _pj_any(kv.value)
        out.append(d)
    return out


def span_to_dict(span: Span) -> dict[str, Any]:
    """The span as protojson (``MessageToDict`` output), except ids in hex as in OTLP/JSON."""
    d: dict[str, Any] = {}
    if span.trace_id:
        d["traceId"] = span.trace_id.hex()
    if span.span_id:
        d["spanId"] = span.span_id.hex()
    if span.trace_state:
        d["traceState"] = span.trace_state
    if span.parent_span_id:
        d["parentSpanId"] = span.parent_span_id.hex()
    if span.name:
        d["name"] = span.name
    if span.kind:
        d["kind"] = _KIND_NAMES.get(span.kind, span.kind)
    if span.start_time_unix_nano:
        d["startTimeUnixNano"] = str(span.start_time_unix_nano)
    if span.end_time_unix_nano:
        d["endTimeUnixNano"] = str(span.end_time_unix_nano)
    if span.attributes:
        d["attributes"] = _pj_attrs(span.attributes)
    if span.dropped_attributes_count:
        d["droppedAttributesCount"] = span.dropped_attributes_count
    if span.events:
        events = []
        for ev in span.events:
            e: dict[str, Any] = {}
            if ev.time_unix_nano:
                e["timeUnixNano"] = str(ev.time_unix_nano)
            if ev.name:
                e["name"] = ev.name
            if ev.attributes:
                e["attributes"] = _pj_attrs(ev.attributes)
            if ev.dropped_attributes_count:
                e["droppedAttributesCount"] = ev.dropped_attributes_count
            events.append(e)
        d["events"] = events
    if span.dropped_events_count:
        d["droppedEventsCount"] = span.dropped_events_count
    if span.links:
        links = []
        for ln in span.links:
            link: dict[str, Any] = {}
            if ln.trace_id:
                link["traceId"] = ln.trace_id.hex()
            if ln.span_id:
                link["spanId"] = ln.span_id.hex()
            if ln.trace_state:
                link["traceState"] = ln.trace_state
            if ln.attributes:
                link["attributes"] = _pj_attrs(ln.attributes)
            if ln.dropped_attributes_count:
                link["droppedAttributesCount"] = ln.dropped_attributes_count
            if ln.flags:
                link["flags"] = ln.flags
            links.append(link)
        d["links"] = links
    if span.dropped_links_count:
        d["droppedLinksCount"] = span.dropped_links_count
    if span.HasField("status"):
        st: dict[str, Any] = {}
        if span.status.message:
            st["message"] = span.status.message
        if span.status.code:
            st["code"] = _STATUS_NAMES.get(span.status.code, span.status.code)
        d["status"] = st
    if span.flags:
        d["flags"] = span.flags
    return d


def build_message(span_pb: bytes, resource_json: str, scope_json: str) -> str:
    """The ``message`` field: the span as protojson (ids in hex) plus its ``resource`` and ``scope``."""
    span = Span()
    span.ParseFromString(span_pb)
    data = span_to_dict(span)
    data["resource"] = json.loads(resource_json)
    data["scope"] = json.loads(scope_json)
    return _dumps_in_pieces(data)


#: Items of a list encoded by one ``json`` call in :func:`_dumps_in_pieces`.
_PIECE = 1000


def _dumps_in_pieces(data: dict[str, Any]) -> str:
    """``dumps(data)``, a long list (a span of 500,000 attributes) encoded ``_PIECE`` items at a time: one C-level
    ``json`` call holds the GIL throughout (0.9 s for that span), stalling every other request of the collector."""
    parts = []
    for key, value in data.items():
        if isinstance(value, list) and len(value) > _PIECE:
            text = "[" + ",".join(dumps(value[i : i + _PIECE])[1:-1] for i in range(0, len(value), _PIECE)) + "]"
        else:
            text = dumps(value)
        parts.append(f"{dumps(key)}:{text}")
    return "{" + ",".join(parts) + "}"


# --- metrics and logs ----------------------------------------------------------------------


def _attrs(kvs: Iterable[Any]) -> dict[str, Any]:
    return {kv.key: anyvalue(kv.value) for kv in kvs}


def _number(dp: Any) -> float | None:
    which = dp.WhichOneof("value")
    if which == "as_double":
        return dp.as_double
    if which == "as_int":
        return float(dp.as_int)
    return None


def metric_rows(req: ExportMetricsServiceRequest) -> list[tuple]:
    """Rows for ``Storage.insert_metrics``: one per data point."""
    rows: list[tuple] = []
    for rm in req.resource_metrics:
        service = _service(rm.resource)
        res_json = dumps(json_format.MessageToDict(rm.resource))
        for sm in rm.scope_metrics:
            # DataKit tags every point with the scope's name and attributes too
            scope = {"name": sm.scope.name, "attributes": _attrs(sm.scope.attributes)} if sm.HasField("scope") else None
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                container = getattr(metric, kind)
                for dp in container.data_points:
                    data: dict[str, Any]
                    value: float | None
                    if kind in ("gauge", "sum"):
                        value = _number(dp)
                        data = {"value": value}
                        if kind == "sum":
                            data["is_monotonic"] = container.is_monotonic
                            data["aggregation_temporality"] = container.aggregation_temporality
                    elif kind == "histogram":
                        value = dp.sum if dp.HasField("sum") else None
                        data = {
                            "count": dp.count,
                            "sum": value,
                            "bucket_counts": list(dp.bucket_counts),
                            "explicit_bounds": list(dp.explicit_bounds),
                            "min": dp.min if dp.HasField("min") else None,
                            "max": dp.max if dp.HasField("max") else None,
                            "aggregation_temporality": container.aggregation_temporality,
                        }
                    elif kind == "exponential_histogram":
                        value = dp.sum if dp.HasField("sum") else None
                        data = {
                            "count": dp.count,
                            "sum": value,
                            "scale": dp.scale,
                            "zero_count": dp.zero_count,
                            "positive": {
                                "offset": dp.positive.offset,
                                "bucket_counts": list(dp.positive.bucket_counts),
                            },
                            "negative": {
                                "offset": dp.negative.offset,
                                "bucket_counts": list(dp.negative.bucket_counts),
                            },
                            "min": dp.min if dp.HasField("min") else None,
                            "max": dp.max if dp.HasField("max") else None,
                            "aggregation_temporality": container.aggregation_temporality,
                        }
                    else:  # summary
                        value = dp.sum
                        data = {
                            "count": dp.count,
                            "sum": dp.sum,
                            "quantiles": [{"quantile": q.quantile, "value": q.value} for q in dp.quantile_values],
                        }
                    if scope is not None:
                        data["scope"] = scope
                    rows.append(
                        (
                            service,
                            metric.name,
                            kind,
                            metric.unit,
                            dumps(_attrs(dp.attributes)),
                            dp.time_unix_nano,
                            dp.start_time_unix_nano or None,
                            value,
                            dumps(data),
                            res_json,
                        )
                    )
    return rows


def log_rows(req: ExportLogsServiceRequest) -> list[tuple]:
    """Rows for ``Storage.insert_logs``: one per log record."""
    rows: list[tuple] = []
    for rl in req.resource_logs:
        service = _service(rl.resource)
        res_json = dumps(json_format.MessageToDict(rl.resource))
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                rows.append(
                    (
                        service,
                        rec.time_unix_nano,
                        rec.observed_time_unix_nano,
                        rec.severity_number,
                        rec.severity_text,
                        dumps(anyvalue(rec.body)) if rec.HasField("body") else "null",
                        dumps(_attrs(rec.attributes)),
                        rec.trace_id.hex(),
                        rec.span_id.hex(),
                        res_json,
                    )
                )
    return rows
