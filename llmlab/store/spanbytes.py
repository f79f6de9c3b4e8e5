"""A stored span's bytes: packed once, unpacked for the outbox, an export, or its attributes.

A span is stored once: as the OTLP protobuf bytes (``spans.otlp``) the outbox sends, zlib-compressed
with a preset dictionary (:func:`pack`; a short answer's span shrinks from ~1.5 KB to under 0.5 KB,
plain zlib gave 0.9 KB), plus the canonical columns ``ll.spans()`` reads. :func:`unpack` reads every
form a home may hold, told apart by their first bytes:

* plain protobuf (rows written before compression, imported ones): a serialized
  ``ExportTraceServiceRequest`` starts with 0x0A;
* zlib without a dictionary (rows written before the dictionary): 0x78 with the FDICT bit clear;
* zlib with a preset dictionary: 0x78 with FDICT set, then the dictionary's Adler-32 (zlib's DICTID),
  by which :data:`DICTIONARIES` finds it. A dictionary is never edited once released (rows depend on
  its exact bytes; a test pins its id): a better one is added next to it and becomes :data:`PACK_DICTIONARY`.

The dictionaries hold constant text only (OTLP framing of the attribute keys, resource and scope names
that llmlab and OpenLLMetry emit, common values such as finish reasons and the JSON skeleton of a
message list), never anything a user wrote. The attribute dictionary is decoded from the span bytes
when someone asks (``ll.trace``, tests); ``attrs_json`` holds a copy only in rows written before (or
imported without bytes), which are read as they are.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the protobuf classes load on first decode, not when ``import llmlab`` reaches the store
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue


# --- the preset dictionaries ------------------------------------------------------------------
# Protobuf framing written out by hand (field tags of opentelemetry/proto/{common,resource,trace}/v1),
# so the dictionary's bytes depend on nothing but this module.


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _any(value: Any) -> bytes:
    """An ``AnyValue``: string 1, bool 2, int 3, double 4, array 5."""
    if isinstance(value, bool):
        return _varint(2 << 3) + _varint(int(value))
    if isinstance(value, int):
        return _varint(3 << 3) + _varint(value)
    if isinstance(value, float):
        return _varint(4 << 3 | 1) + struct.pack("<d", value)
    if isinstance(value, tuple):
        return _field(5, b"".join(_field(1, _any(v)) for v in value))
    return _field(1, value.encode())


def _kv(field: int, key: str, value: Any) -> bytes:
    """A ``KeyValue`` as the repeated field ``field`` of its owner (resource 1, span 9, event 3)."""
    return _field(field, _field(1, key.encode()) + _field(2, _any(value)))


_MESSAGES = '[{"role": "system", "parts": [{"content": "", "type": "text"}]}, {"role": "user", "parts": [{"content": "'
_OUTPUT = '[{"role": "assistant", "parts": [{"content": "", "type": "text"}], "finish_reason": "stop"}]'

#: Version 1's content, rarest first (zlib codes near matches, at the end, shortest).
_V1_RESOURCE: list[tuple[str, Any]] = [
    ("telemetry.sdk.language", "python"),
    ("telemetry.sdk.name", "opentelemetry"),
    ("telemetry.sdk.name", "llmlab"),
    ("telemetry.sdk.version", "1."),
    ("service.instance.id", ""),
    ("service.name", "llmlab"),
]
_V1_RARE_ATTRIBUTES: list[tuple[str, Any]] = [
    ("traceloop.span.kind", "workflow"),
    ("traceloop.span.kind", "task"),
    ("traceloop.entity.name", ""),
    ("traceloop.entity.input", ""),
    ("traceloop.entity.output", ""),
    ("traceloop.entity.path", ""),
    ("traceloop.workflow.name", ""),
    ("traceloop.association.properties.", ""),
    ("llm.request.type", "chat"),
    ("llm.is_streaming", True),
    ("llm.usage.total_tokens", 0),
    ("llm.headers", "None"),
    ("gen_ai.system", "openai"),
    ("gen_ai.user", ""),
    ("gen_ai.headers", ""),
    ("gen_ai.request.seed", 0),
    ("gen_ai.request.frequency_penalty", 0.0),
    ("gen_ai.request.presence_penalty", 0.0),
    ("gen_ai.request.stop_sequences", ""),
    ("gen_ai.request.max_completion_tokens", 0),
    ("gen_ai.openai.api_version", ""),
    ("gen_ai.openai.system_fingerprint", ""),
    ("gen_ai.usage.prompt_tokens", 0),
    ("gen_ai.usage.completion_tokens", 0),
    ("gen_ai.usage.reasoning_tokens", 0),
    ("gen_ai.usage.cache_creation.input_tokens", 0),
    ("gen_ai.prompt.0.role", "system"),
    ("gen_ai.prompt.0.content", ""),
    ("gen_ai.prompt.1.role", "user"),
    ("gen_ai.prompt.1.content", ""),
    ("gen_ai.completion.0.role", "assistant"),
    ("gen_ai.completion.0.finish_reason", "stop"),
    ("gen_ai.completion.0.content", ""),
    ("error.type", ""),
    ("llmlab.seed", 0),
    ("llmlab.params", ""),
    ("llmlab.tokens_estimated", True),
    ("llmlab.template_name", ""),
    ("llmlab.template_hash", ""),
    ("llmlab.system_name", ""),
    ("llmlab.system_hash", ""),
]
_V1_ATTRIBUTES: list[tuple[str, Any]] = [  # an llmlab call's span, in the order OpenLLMetry and llmlab set them
    ("gen_ai.operation.name", "chat"),
    ("llmlab.sweep_id", "sw-"),
    ("llmlab.call_id", ""),
    ("llmlab.prompt_id", "p-"),
    ("llmlab.repeat", 0),
    ("llmlab.provider", "local"),
    ("llmlab.attempts", 1),
    ("llmlab.queue_ms", 0.0),
    ("gen_ai.provider.name", "openai"),
    ("gen_ai.request.model", ""),
    ("gen_ai.request.max_tokens", 0),
    ("gen_ai.request.temperature", 0.0),
    ("gen_ai.request.top_p", 1.0),
    ("gen_ai.is_streaming", True),
    ("gen_ai.openai.api_base", "http://127.0.0.1:/v1/"),
    ("gen_ai.input.messages", _MESSAGES),
    ("llmlab.ttft_ms", 0.0),
    ("gen_ai.response.model", ""),
    ("gen_ai.response.id", "chatcmpl-"),
    ("gen_ai.response.finish_reasons", ("length",)),
    ("gen_ai.response.finish_reasons", ("stop",)),
    ("gen_ai.usage.total_tokens", 0),
    ("gen_ai.usage.output_tokens", 0),
    ("gen_ai.usage.input_tokens", 0),
    ("gen_ai.usage.cache_read.input_tokens", 0),
    ("gen_ai.output.messages", _OUTPUT),
    ("gen_ai.output.messages", '", "type": "text"}], "finish_reason": "length"}]'),
]


def _dictionary_v1() -> bytes:
    parts = [_kv(1, key, value) for key, value in _V1_RESOURCE]
    parts.append(_field(1, _field(1, b"opentelemetry.instrumentation.openai.v1") + _field(2, b"0.")))
    parts += [_field(5, b"openai.chat"), _field(5, b"llmlab.sweep")]
    parts.append(  # an exception event (name, then its attributes) and an error status
        _field(11, _field(2, b"exception") + _kv(3, "exception.type", "") + _kv(3, "exception.message", ""))
        + _kv(3, "exception.stacktrace", "Traceback (most recent call last):\n  File ")
        + _kv(3, "exception.escaped", "False")
        + _field(15, _varint(3 << 3) + _varint(2))
    )
    parts += [_kv(9, key, value) for key, value in _V1_RARE_ATTRIBUTES + _V1_ATTRIBUTES]
    parts.append(  # the folded chunk event, the OK status and the span's flags
        _field(11, _field(2, b"gen_ai.content.completion.chunk") + _kv(3, "llmlab.chunks", 0))
        + _field(15, _varint(3 << 3) + _varint(1))
        + bytes([0x85, 0x01])
        + struct.pack("<I", 256)
    )
    return b"".join(parts)


#: Adler-32 of version 1 (zlib's DICTID): pinned, its rows need these exact bytes.
DICTIONARY_V1_ID = 0xDFC4_9310
_V1 = _dictionary_v1()

#: Every released dictionary by its DICTID.
DICTIONARIES: dict[int, bytes] = {zlib.adler32(_V1): _V1}
#: The dictionary new rows are packed with.
PACK_DICTIONARY = _V1


def pack(otlp: bytes) -> bytes:
    """The stored form of a span's serialized ``ExportTraceServiceRequest``."""
    packer = zlib.compressobj(6, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, PACK_DICTIONARY)
    return packer.compress(otlp) + packer.flush()


def unpack(stored: bytes | memoryview | None) -> bytes:
    """The serialized ``ExportTraceServiceRequest`` of a stored span (any stored form); b"" for none.

    Raises ``zlib.error`` for packed bytes that are damaged or name a dictionary this llmlab lacks.
    """
    if not stored:
        return b""
    data = bytes(stored)
    if data[:1] != b"\x78":
        return data  # plain protobuf
    if not data[1] & 0x20:
        return zlib.decompress(data)  # packed without a dictionary
    dictid = int.from_bytes(data[2:6], "big")
    zdict = DICTIONARIES.get(dictid)
    if zdict is None:
        raise zlib.error(
            f"span bytes packed with an unknown dictionary (id {dictid:#010x}): written by a newer llmlab?"
        )
    unpacker = zlib.decompressobj(15, zdict)
    out = unpacker.decompress(data)
    if not unpacker.eof:
        raise zlib.error("incomplete or truncated packed span")
    return out


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
