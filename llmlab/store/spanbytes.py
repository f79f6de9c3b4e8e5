"""A stored span's bytes: packed once, unpacked for the outbox, an export, or its attributes.

A span is stored once: as the OTLP protobuf bytes (``spans.otlp``) the outbox sends, zlib-compressed
(:func:`pack`; a short answer's span shrinks by 40 %), plus the canonical columns ``ll.spans()``
reads. Rows written before compression (and imported ones) hold the plain protobuf; :func:`unpack`
tells them apart by the first byte (a serialized ``ExportTraceServiceRequest`` starts with 0x0A,
a zlib stream with 0x78). The attribute dictionary is decoded from those bytes when someone asks
(``ll.trace``, tests); ``attrs_json`` holds a copy only in rows written before (or imported
without bytes), which are read as they are.
"""

from __future__ import annotations

import json
import zlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the protobuf classes load on first decode, not when ``import llmlab`` reaches the store
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def pack(otlp: bytes) -> bytes:
    """The stored form of a span's serialized ``ExportTraceServiceRequest``."""
    return zlib.compress(otlp, 6)


def unpack(stored: bytes | memoryview | None) -> bytes:
    """The serialized ``ExportTraceServiceRequest`` of a stored span (plain or packed); b"" for none."""
    if not stored:
        return b""
    data = bytes(stored)
    return zlib.decompress(data) if data[:1] == b"\x78" else data


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
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        request = ExportTraceServiceRequest.FromString(unpack(otlp))
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    return {kv.key: any_value(kv.value) for kv in span.attributes}
    return json.loads(attrs_json) if attrs_json else {}
