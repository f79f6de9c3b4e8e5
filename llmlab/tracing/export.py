"""Finished spans → local store (durable outbox) → OTLP/HTTP protobuf (gzip) → DataKit.

Every finished span is written to the store by the store's writer thread, in the same queue as
the call rows, so a call reported finished has its span on disk too: a killed process loses no
span of a finished call. Spans to export carry ``export_state = 0`` (pending); the
:class:`OutboxExporter` thread leases batches of up to 512 spans and 4 MiB, POSTs them to
``<datakit>/otel/v1/traces`` and marks them delivered (1) on success. Connection errors,
timeouts, 429 and 5xx leave them pending and back off; they go out automatically once DataKit
answers again, or on ``llmlab replay``; so do 401/403/404 (DataKit's set-up, not the spans). A
413 splits the batch; another 4xx (the body itself refused) marks the spans rejected (2) with a
warning. Delivery is at-least-once; the embedded collector stores each span once.
"""

from __future__ import annotations

import atexit
import gzip
import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Status

from llmlab import schema
from llmlab.config import EMBEDDED, Config
from llmlab.errors import redact
from llmlab.store import get_store
from llmlab.store.migrations import SPAN_VALUE_COLUMNS

log = logging.getLogger("llmlab.export")

PENDING, DELIVERED, REJECTED = 0, 1, 2
BATCH = 512
#: Spans of one request add up to at most this many protobuf bytes (a single larger span goes
#: alone): DataKit refuses bodies over 16 MiB, and spans carrying long prompts get there.
BATCH_BYTES = 4 * 1024 * 1024
LEASE_S = 60.0


def otlp_traces_url(config: Config) -> str | None:
    """The OTLP traces endpoint for ``config`` (starting the embedded collector if needed)."""
    if config.datakit is None:
        return None
    if config.datakit == EMBEDDED:
        from llmlab.collector import ensure_embedded

        return ensure_embedded(config) + "/otel/v1/traces"
    return config.datakit + "/otel/v1/traces"


def _status(span: ReadableSpan) -> tuple[str, str]:
    code = span.status.status_code.name.lower() if span.status is not None else "unset"
    return code, (span.status.description or "") if span.status is not None else ""


#: Attributes that carry prompt or completion text (OpenLLMetry's names, old and new conventions).
_CONTENT_PREFIXES = (
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.prompt.",
    "gen_ai.completion.",
    "traceloop.entity.input",
    "traceloop.entity.output",
)


def strip_content(attrs: dict[str, Any]) -> dict[str, Any]:
    """``attrs`` without the prompt/completion text attributes, for ``trace_content=False``.

    Applied here, where a finished span becomes its stored record, so that neither the store nor DataKit
    receives the text whichever instrumentation made the span.
    """
    return {k: v for k, v in attrs.items() if not k.startswith(_CONTENT_PREFIXES)}


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (list, tuple)):
        return tuple(_scrub(v) for v in value)
    return value


def _scrub_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: _scrub(v) if isinstance(v, (str, list, tuple)) else v for k, v in attrs.items()}


def span_record(span: ReadableSpan, config: Config) -> tuple[Any, ...]:
    """The store row of one finished span (its canonical row is precomputed for fast read-back)."""
    attrs = dict(span.attributes or {})
    events, status_ = list(span.events), span.status
    if not config.trace_content:
        attrs = strip_content(attrs)
        events = [Event(e.name, strip_content(dict(e.attributes or {})), e.timestamp) for e in events]
    # the instrumentation records exceptions (event attributes, status text) with the provider's error
    # body, which may quote the API key back: scrub every string before it is stored or exported
    clean = _scrub_attrs(attrs)
    clean_events = [Event(e.name, _scrub_attrs(dict(e.attributes or {})), e.timestamp) for e in events]
    clean_status = (
        Status(status_.status_code, redact(status_.description))
        if status_ is not None and status_.description
        else status_
    )
    if (
        not config.trace_content
        or clean != attrs
        or clean_status is not status_
        or any(c.attributes != e.attributes for c, e in zip(clean_events, events))
    ):
        attrs = clean
        span = ReadableSpan(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=attrs,
            events=clean_events,
            links=span.links,
            kind=span.kind,
            status=clean_status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )
    ctx = span.context
    trace_id = format(ctx.trace_id, "032x")
    span_id = format(ctx.span_id, "016x")
    parent_id = format(span.parent.span_id, "016x") if span.parent is not None else None
    service = str(span.resource.attributes.get("service.name", "")) if span.resource is not None else ""
    status, description = _status(span)
    first_chunk = next((e.timestamp for e in span.events if e.name == schema.CHUNK_EVENT), None)
    is_llm = schema.is_llm_span(span.name, attrs)
    row = schema.row_from_span(
        attrs,
        trace_id=trace_id,
        span_id=span_id,
        parent_id=parent_id,
        name=span.name,
        service=service,
        start_ns=span.start_time,
        end_ns=span.end_time,
        status=status,
        error=description,
        first_chunk_ns=first_chunk,
    )
    otlp = encode_spans([span]).SerializeToString()
    # association properties and a sweep's variant names have no column of their own: they ride in row_json
    extras = {k: v for k, v in row.items() if k.startswith("assoc.") or (k in schema.VARIANT_ATTRS and v is not None)}
    values = tuple(_sql_value(row.get(name)) for name, _ in SPAN_VALUE_COLUMNS)
    return (
        trace_id,
        span_id,
        parent_id,
        span.name,
        service,
        row.get("sweep_id"),
        row.get("call_id"),
        span.start_time or 0,
        span.end_time or 0,
        int(is_llm),
        json.dumps(extras, default=str) if extras else "{}",
        json.dumps(attrs, default=str),
        otlp,
        PENDING if config.datakit is not None else None,
    ) + values


def _sql_value(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if value is None or isinstance(value, (int, float, str)):
        return value
    return str(value)


class SpanSink:
    """Where llmlab's processor sends finished spans for one configuration."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = get_store(config.home)
        self.exporter = OutboxExporter(config) if config.datakit is not None else None
        self._last = None

    def submit(self, span: ReadableSpan) -> None:
        try:
            record = span_record(span, self.config)
        except Exception:  # a span we cannot encode must not break the caller
            log.exception("could not record span %s", getattr(span, "name", "?"))
            return
        self._last = self.store.put_spans([record])
        if self.exporter is not None:
            self.exporter.wake()

    def flush(self, timeout: float = 30.0) -> None:
        self.store.flush(timeout)

    def close(self) -> None:
        if self.exporter is not None:
            self.exporter.stop()


class OutboxExporter:
    """Background thread delivering pending spans of one home to one DataKit."""

    def __init__(self, config: Config, interval: float = 1.0, timeout: float = 10.0) -> None:
        self.config = config
        self.store = get_store(config.home)
        self.interval = interval
        self.timeout = timeout
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._backoff = 0.0
        self.last_error: str | None = None
        self.delivered = 0
        self._thread = threading.Thread(target=self._loop, name="llmlab-exporter", daemon=True)
        self._thread.start()
        atexit.register(self._at_exit)

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _at_exit(self) -> None:
        # deliver what we can quickly; the rest stays spooled for the next run or `llmlab replay`
        if not self._stop.is_set():
            self._stop.set()
            self._wake.set()
            self._thread.join(2.0)
            try:
                drain(self.config, deadline_s=2.0)
            except Exception:
                pass

    def _loop(self) -> None:
        with httpx.Client(timeout=self.timeout, trust_env=False) as client:
            while not self._stop.is_set():
                if self._backoff:
                    # a failing DataKit is retried on the backoff clock, not at every new span: each
                    # try leases and settles a batch on the store's writer, which the sweep also uses
                    self._stop.wait(self._backoff)
                else:
                    self._wake.wait(self.interval)
                self._wake.clear()
                if self._stop.is_set():
                    break
                time.sleep(0.05)  # let a burst of spans accumulate into one batch
                try:
                    while not self._stop.is_set():
                        sent = send_pending_batch(self.config, client)
                        if sent is None:
                            break
                        self.delivered += sent
                        self._backoff = 0.0
                        self.last_error = None
                except DeliveryFailed as exc:
                    self.last_error = str(exc)
                    self._backoff = min(10.0, max(0.5, self._backoff * 2))
                    log.info("DataKit export failed (%s); spans stay spooled, retry in %.1fs", exc, self._backoff)
                except Exception:
                    log.exception("exporter error")
                    self._backoff = min(30.0, max(0.5, self._backoff * 2))


class DeliveryFailed(Exception):
    """A batch could not be delivered now (it stays pending)."""


def _claim(store: Any, limit: int, max_bytes: int = BATCH_BYTES) -> list[tuple[str, str, bytes]]:
    now = time.time()

    def fn(db: Any) -> list[tuple[str, str, bytes]]:
        # the first-written pending spans, up to `limit` of them and `max_bytes` in all (at least
        # one); rowid order walks the partial index of pending spans without sorting a backlog
        return db.execute(
            "UPDATE spans SET lease_until = ? WHERE rowid IN (SELECT rowid FROM (SELECT rowid, size, sum(size) OVER "
            "(ORDER BY rowid ROWS UNBOUNDED PRECEDING) AS total FROM (SELECT rowid, length(otlp) AS size FROM spans "
            "WHERE export_state = 0 AND (lease_until IS NULL OR lease_until < ?) ORDER BY rowid LIMIT ?)) "
            "WHERE total <= ? OR total = size) RETURNING trace_id, span_id, otlp",
            (now + LEASE_S, now, limit, max_bytes),
        ).fetchall()

    return store.write(fn)


def _settle(store: Any, keys: Sequence[tuple[str, str]], state: int | None) -> None:
    def fn(db: Any) -> None:
        if state is None:  # release the lease, stay pending
            db.executemany("UPDATE spans SET lease_until = NULL WHERE trace_id = ? AND span_id = ?", keys)
        else:
            db.executemany(
                "UPDATE spans SET export_state = ?, lease_until = NULL WHERE trace_id = ? AND span_id = ?",
                [(state, t, s) for t, s in keys],
            )

    store.write(fn)


def send_pending_batch(config: Config, client: httpx.Client) -> int | None:
    """Deliver one batch of pending spans; returns how many, or None when nothing is pending.

    Raises DeliveryFailed (spans stay pending) when DataKit is down, slow or answers 401/403/404/408/429/5xx.
    """
    store = get_store(config.home)
    rows = _claim(store, BATCH, BATCH_BYTES)
    if not rows:
        return None
    outcome: dict[int, list[tuple[str, str]]] = {DELIVERED: [], REJECTED: []}
    try:
        _post(config, client, rows, outcome)
    finally:
        # what was answered is settled; the rest (a failure stopped us) stays pending
        done = set(outcome[DELIVERED]) | set(outcome[REJECTED])
        for state in (DELIVERED, REJECTED):
            if outcome[state]:
                _settle(store, outcome[state], state)
        rest = [(r[0], r[1]) for r in rows if (r[0], r[1]) not in done]
        if rest:
            _settle(store, rest, None)
    return len(outcome[DELIVERED])


def _post(
    config: Config, client: httpx.Client, rows: list[tuple[str, str, bytes]], outcome: dict[int, list[tuple[str, str]]]
) -> None:
    """POST ``rows`` as one request, recording each span's outcome; a 413 splits the batch in two.

    Raises DeliveryFailed when DataKit is down, slow or answers 401/403/404/408/429/5xx.
    """
    keys = [(r[0], r[1]) for r in rows]
    # concatenated serialized ExportTraceServiceRequests are one valid request (repeated fields merge)
    body = gzip.compress(b"".join(bytes(r[2]) for r in rows), compresslevel=5)
    headers = {**config.headers, "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
    try:
        url = otlp_traces_url(config)
        assert url is not None
        response = client.post(url, content=body, headers=headers)
    except Exception as exc:
        raise DeliveryFailed(redact(f"{type(exc).__name__}: {exc}")) from None
    if response.status_code < 300:
        outcome[DELIVERED] += keys
        return
    if response.status_code in (408, 429) or response.status_code >= 500:
        raise DeliveryFailed(f"HTTP {response.status_code}")
    if response.status_code in (401, 403, 404):
        # DataKit's set-up, not the spans: no OpenTelemetry input (404) or a token/header it wants
        # (401/403); they go out once it is fixed
        raise DeliveryFailed(
            redact(
                f"HTTP {response.status_code} from {url}: check DataKit's opentelemetry input and "
                f"TRACELOOP_HEADERS ({response.text[:120]})"
            )
        )
    if response.status_code == 413 and len(rows) > 1:  # this DataKit takes smaller bodies: halve the batch
        half = len(rows) // 2
        _post(config, client, rows[:half], outcome)
        _post(config, client, rows[half:], outcome)
        return
    outcome[REJECTED] += keys
    log.warning(
        "DataKit rejected %d spans with HTTP %d: %s", len(keys), response.status_code, redact(response.text[:200])
    )


def drain(config: Config, deadline_s: float | None = 60.0) -> dict[str, Any]:
    """Send every pending span now (``llmlab replay``); returns counts and the last error.

    Batches the background exporter is sending at this moment are waited for, not sent twice.
    """
    sent, error = 0, None
    start = time.monotonic()
    store = get_store(config.home)
    # with a short deadline (at exit), a hanging DataKit must not hold the process much beyond it
    timeout = 10.0 if deadline_s is None else max(0.5, min(10.0, deadline_s))
    with httpx.Client(timeout=timeout, trust_env=False) as client:
        while deadline_s is None or time.monotonic() - start < deadline_s:
            try:
                n = send_pending_batch(config, client)
            except DeliveryFailed as exc:
                error = str(exc)
                break
            if n is None:
                in_flight = store.read(
                    "SELECT count(*) FROM spans WHERE export_state = 0 AND lease_until > ?", (time.time(),)
                )[0][0]
                if not in_flight:
                    break
                time.sleep(0.05)
                continue
            sent += n
    return {"sent": sent, "pending": store.pending_count(), "error": error}


def pending(config: Config | None = None) -> int:
    """How many spans wait to be delivered to DataKit (spooled)."""
    from llmlab.config import get_config

    config = config or get_config()
    return get_store(config.home).pending_count()
