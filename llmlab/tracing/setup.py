"""OpenLLMetry set-up that llmlab owns, re-runnable inside a live kernel.

``Traceloop.init`` is a process singleton that, inside Jupyter, would export synchronously on
every span. llmlab calls it once with OpenAI instrumentation only and with ONE stable processor
of its own (:class:`LlmlabProcessor`). That processor never does I/O on the caller's path: it
enriches each ``openai.chat`` span with the llmlab attributes of the call being made (read from
a context variable set by the runner task that makes the call), and hands finished spans to the
store's writer thread, which is also the export outbox (``llmlab.tracing.export``). Re-running
``ll.configure()`` swaps the processor's targets; the instrumentation stays.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import io
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.trace import Span

from llmlab import schema
from llmlab.config import Config, get_config, on_configure
from llmlab.tracing.export import SpanSink

log = logging.getLogger("llmlab.tracing")


@dataclasses.dataclass
class CallTrace:
    """The llmlab attributes of the call being made in the current task, and its span."""

    attributes: dict[str, Any]
    span: Span | None = None

    def set(self, key: str, value: Any) -> None:
        """Set an attribute on the live span (if it is still open) and remember it."""
        self.attributes[key] = value
        if self.span is not None and self.span.is_recording():
            self.span.set_attribute(key, value)

    def ids(self) -> tuple[str | None, str | None]:
        if self.span is None:
            return None, None
        ctx = self.span.get_span_context()
        return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


_CURRENT_CALL: contextvars.ContextVar[CallTrace | None] = contextvars.ContextVar("llmlab_call", default=None)


@contextlib.contextmanager
def call_context(attributes: dict[str, Any]) -> Iterator[CallTrace]:
    """Mark the LLM span started inside this block as the given llmlab call."""
    trace_ = CallTrace(dict(attributes))
    token = _CURRENT_CALL.set(trace_)
    try:
        yield trace_
    finally:
        _CURRENT_CALL.reset(token)


class _ChunkCounter:
    """Stands in for ``add_event`` on an llmlab call's span: keeps OpenLLMetry's first
    ``gen_ai.content.completion.chunk`` event and counts the others instead of recording them.

    The stored span folds them into the first anyway (``export.compact_chunks``); not creating one
    event object per streamed token saves the instrumentation's largest per-chunk cost.
    """

    __slots__ = ("add_event", "count")

    def __init__(self, add_event: Any) -> None:
        self.add_event = add_event
        self.count = 0

    def __call__(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        if name == schema.CHUNK_EVENT:
            self.count += 1
            if self.count > 1:
                return
        self.add_event(name, attributes, timestamp)


class LlmlabProcessor(SpanProcessor):
    """The one span processor llmlab installs; its targets change with ``configure()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.config: Config | None = None
        self.resource: Resource | None = None
        self.sink: SpanSink | None = None
        #: True when llmlab joined a provider the app set up (its Traceloop.init or OTel SDK): the
        #: app's processors export every span of that provider, llmlab's calls included, so
        #: llmlab neither renames the app's spans nor exports any span itself (it keeps its own
        #: calls' spans in the local store, for ``source="local"``).
        self.joined = False
        #: the chunk counters of the llmlab calls' spans still open, by span id
        self._chunks: dict[int, _ChunkCounter] = {}

    def retarget(self, config: Config) -> None:
        with self._lock:
            old = self.sink
            self.config = config
            self.resource = Resource.create({"service.name": config.app_name, "telemetry.sdk.name": "llmlab"})
            self.sink = SpanSink(config)
        if old is not None:
            old.close()

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        if self.resource is not None and not self.joined:
            # our own provider's resource is fixed at creation; keep service.name in step with
            # configure(). Never on a joined provider: those spans are the app's.
            span._resource = self.resource  # type: ignore[attr-defined]
        call = _CURRENT_CALL.get()
        if call is not None and call.span is None and getattr(span, "name", "").startswith("openai."):
            call.span = span
            span.set_attributes({k: v for k, v in call.attributes.items() if v is not None})
            if not self.joined:  # a joined app's exporter sends this span as its instrumentation made it
                counter = _ChunkCounter(span.add_event)
                span.add_event = counter  # type: ignore[method-assign]
                self._chunks[span.get_span_context().span_id] = counter

    def on_end(self, span: ReadableSpan) -> None:
        counter = self._chunks.pop(span.context.span_id, None) if span.context is not None else None
        sink = self.sink
        if sink is None:
            return
        if self.joined:  # (no counters then: see on_start)
            # the app's exporter sends this span; store llmlab's own calls locally, export nothing
            if schema.A_SWEEP_ID in (span.attributes or {}) or schema.A_CALL_ID in (span.attributes or {}):
                sink.submit(span, export=False)
            return
        sink.submit(span, chunks=None if counter is None else counter.count)

    def shutdown(self) -> None:
        if self.sink is not None:
            self.sink.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        if self.sink is not None:
            self.sink.flush(timeout_millis / 1000)
        return True


_processor = LlmlabProcessor()
_init_lock = threading.Lock()
_initialised = False


def _init_traceloop(config: Config) -> None:
    """Call Traceloop.init once, OpenAI instrumentation only, with llmlab's processor."""
    from traceloop.sdk import Traceloop
    from traceloop.sdk.instruments import Instruments
    from traceloop.sdk.tracing.tracing import TracerWrapper

    os.environ.setdefault("TRACELOOP_TELEMETRY", "false")
    os.environ.setdefault("TRACELOOP_METRICS_ENABLED", "false")
    provider = trace.get_tracer_provider()
    if hasattr(TracerWrapper, "instance"):
        # the app (or a notebook cell) already called Traceloop.init: join its provider, whose
        # own processors export every span (ours included) once
        if hasattr(provider, "add_span_processor"):
            _processor.joined = True
            provider.add_span_processor(_processor)
        return
    if isinstance(provider, SdkTracerProvider):
        # the app set up OpenTelemetry itself (no Traceloop): Traceloop.init could not replace its
        # global provider, so join it and instrument OpenAI on it
        _processor.joined = True
        provider.add_span_processor(_processor)
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor

        instrumentor = OpenAIInstrumentor()
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=provider)
        return
    with contextlib.redirect_stdout(io.StringIO()):  # Traceloop prints coloured banners
        Traceloop.init(
            app_name=config.app_name,
            api_endpoint="http://127.0.0.1:9/llmlab-unused",  # our processor does all exporting
            processor=[_processor],
            instruments={Instruments.OPENAI},
            telemetry_enabled=False,
            resource_attributes={"service.name": config.app_name},
        )


def _usage_details_tolerant(set_response_attributes: Any) -> Any:
    """Wrap OpenLLMetry's ``_set_response_attributes`` so that a usage without ``prompt_tokens_details``
    reads as one with no details.

    OpenLLMetry 0.62 does ``dict(usage.get("prompt_tokens_details", {}))``; the openai client parses a
    usage chunk that lacks the field (vLLM, llama.cpp, Ollama and llmlab's local model send none) into
    ``None``, so every such call raised inside the instrumentation, which formatted a traceback
    (~1.5 ms) and lost the ``gen_ai.usage.cache_read.input_tokens`` attribute (the last one it sets;
    OpenAI's answers get 0). Handing it ``{}`` instead gives those spans the attribute an OpenAI
    answer without cached tokens gets, and no exception is raised per call.
    """

    @functools.wraps(set_response_attributes)
    def wrapper(span: Any, response: Any) -> Any:
        usage = response.get("usage") if isinstance(response, dict) else None
        if usage is not None and not isinstance(usage, dict):
            usage = getattr(usage, "__dict__", None)
        if isinstance(usage, dict) and "prompt_tokens_details" in usage and usage["prompt_tokens_details"] is None:
            response = {**response, "usage": {**usage, "prompt_tokens_details": {}}}
        return set_response_attributes(span, response)

    wrapper.__llmlab_tolerant__ = True  # type: ignore[attr-defined]
    return wrapper


def _patch_openllmetry() -> None:
    """Apply :func:`_usage_details_tolerant` to the chat wrappers (once; a later version without the
    function is left alone)."""
    try:
        from opentelemetry.instrumentation.openai.shared import chat_wrappers
    except ImportError:
        return
    original = getattr(chat_wrappers, "_set_response_attributes", None)
    if original is not None and not getattr(original, "__llmlab_tolerant__", False):
        chat_wrappers._set_response_attributes = _usage_details_tolerant(original)


def _constant_version_checks() -> None:
    """OpenLLMetry asks ``is_openai_v1()`` about 23 times per streamed call (once per chunk, and more),
    and each answer parses two version strings with ``packaging``; the installed openai cannot change
    while the process runs, so every module that imported the check gets its answer, computed once."""
    import importlib

    try:
        from opentelemetry.instrumentation.openai import utils
    except ImportError:
        return
    original = getattr(utils, "is_openai_v1", None)
    if original is None or getattr(original, "__llmlab_constant__", False):
        return
    answer = bool(original())

    def is_openai_v1() -> bool:
        return answer

    is_openai_v1.__llmlab_constant__ = True  # type: ignore[attr-defined]
    for name in (
        "utils",
        "",
        "shared",
        "shared.chat_wrappers",
        "shared.completion_wrappers",
        "shared.embeddings_wrappers",
        "shared.image_gen_wrappers",
    ):
        try:
            module = importlib.import_module("opentelemetry.instrumentation.openai" + ("." + name if name else ""))
        except ImportError:
            continue
        if getattr(module, "is_openai_v1", None) is original:
            module.is_openai_v1 = is_openai_v1  # type: ignore[attr-defined]


def _apply(config: Config) -> None:
    # the openai instrumentation reads this at call time; our processor strips content too
    os.environ["TRACELOOP_TRACE_CONTENT"] = "true" if config.trace_content else "false"
    _processor.retarget(config)


def ensure_tracing(config: Config | None = None) -> LlmlabProcessor:
    """Set tracing up for ``config`` (the active one by default); cheap when already done."""
    global _initialised
    config = config or get_config()
    with _init_lock:
        if not _initialised:
            _initialised = True
            _init_traceloop(config)
            _patch_openllmetry()
            _constant_version_checks()
            on_configure(_on_configure)
        if _processor.config != config:
            _apply(config)
    return _processor


def _on_configure(config: Config) -> None:
    with _init_lock:
        if _processor.config != config:
            _apply(config)


def flush(timeout: float = 30.0) -> None:
    """Wait until every finished span is in the store (export continues in the background)."""
    if _processor.sink is not None:
        _processor.sink.flush(timeout)


def processor() -> LlmlabProcessor:
    return _processor


def schema_attrs_for_call(**values: Any) -> dict[str, Any]:
    """Build the llmlab.* attribute dict for a call (None values dropped)."""
    mapping = {
        "sweep_id": schema.A_SWEEP_ID,
        "call_id": schema.A_CALL_ID,
        "prompt_id": schema.A_PROMPT_ID,
        "repeat": schema.A_REPEAT,
        "seed": schema.A_SEED,
        "provider": schema.A_PROVIDER,
        "attempts": schema.A_ATTEMPTS,
        "queue_ms": schema.A_QUEUE_MS,
        "params": schema.A_PARAMS,
        **schema.VARIANT_ATTRS,
    }
    return {mapping[k]: v for k, v in values.items() if v is not None and k in mapping}
