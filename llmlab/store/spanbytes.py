"""A stored span's attributes, read back from its bytes.

A span is stored once: as the OTLP protobuf bytes (``spans.otlp``) the outbox sends, plus the
canonical columns ``ll.spans()`` reads. Its attribute dictionary is decoded from those bytes when
someone asks (``ll.trace``, tests); ``attrs_json`` holds a copy only in rows written before
(or imported without bytes), which are read as they are.
"""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def any_value(value: AnyValue) -> Any:
    """The Python value of an OTLP ``AnyValue`` (arrays as tuples, as the SDK keeps them)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(any_value(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def span_attributes(attrs_json: str | None, otlp: bytes | None) -> dict[str, Any]:
    """The attributes of one stored span: decoded from its OTLP bytes when it has them, else ``attrs_json``."""
    if otlp:
        request = ExportTraceServiceRequest.FromString(bytes(otlp))
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    return {kv.key: any_value(kv.value) for kv in span.attributes}
    return json.loads(attrs_json) if attrs_json else {}
