"""Finished spans → local store (durable outbox) → OTLP/HTTP protobuf (gzip) → DataKit.

Every finished span is written to the store by the store's writer thread, in the same queue as
the call rows, so a call reported finished has its span on disk too: a killed process loses no
span of a finished call. Spans to export carry ``export_state = 0`` (pending); the
:class:`OutboxExporter` thread leases batches of up to 512 spans and 4 MiB, POSTs them to
``<datakit>/otel/v1/traces`` and marks them delivered (1) on success. Connection errors,
timeouts, 429 and 5xx leave them pending and back off; they go out automatically once DataKit
answers again, or on ``llmlab replay``; so do 401/403/404/405/415 ("wrong place / not set up":
DataKit's set-up, not the spans), remembered and reported at the next sweep and by ``llmlab store
status``. A 413 splits the batch; a 400 (a body DataKit refuses as malformed) splits it down to
single spans, and only a single span refused is set aside as rejected (2): kept, listed, sent
again by ``llmlab replay --rejected``, never deleted. Delivery is at-least-once; the embedded
collector stores each span once.
"""

from __future__ import annotations

import atexit
import dataclasses
import gzip
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Status

from llmlab import schema, sqlkit
from llmlab.config import EMBEDDED, Config
from llmlab.errors import redact
from llmlab.store import get_store
from llmlab.store.migrations import SPAN_VALUE_COLUMNS
from llmlab.store.spanbytes import pack, unpack

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


@dataclasses.dataclass(frozen=True)
class Target:
    """One export destination with its own outbox state and lease columns in the store."""

    name: str
    state: str
    lease: str
    owner: str  # who holds the lease (host:pid), so a dead process's leases are taken over at once

    def url(self, config: Config) -> str | None:
        """Where this target's traces go for ``config`` (None: not configured)."""
        if self.name == "otlp":
            return config.otlp_endpoint + "/v1/traces" if config.otlp_endpoint else None
        return otlp_traces_url(config)

    @property
    def gzip(self) -> bool:
        """DataKit takes gzip; a plain OTLP endpoint gets the OTel SDK's default (no compression),
        which every receiver decodes (some do not inflate gzip)."""
        return self.name != "otlp"

    def headers(self, config: Config) -> dict[str, str]:
        extra = config.otlp_headers if self.name == "otlp" else config.headers
        headers = {**extra, "Content-Type": "application/x-protobuf"}
        if self.gzip:
            headers["Content-Encoding"] = "gzip"
        return headers

    def label(self, config: Config) -> str:
        return f"the OTLP endpoint {config.otlp_endpoint}" if self.name == "otlp" else "DataKit"


#: DataKit (``<datakit>/otel/v1/traces``) and a plain OTLP/HTTP collector (``<endpoint>/v1/traces``).
DATAKIT = Target("datakit", "export_state", "lease_until", "lease_owner")
OTLP = Target("otlp", "otlp_state", "otlp_lease_until", "otlp_lease_owner")


def targets(config: Config) -> list[Target]:
    """The destinations ``config`` exports to."""
    out = []
    if config.datakit is not None:
        out.append(DATAKIT)
    if config.otlp_endpoint:
        out.append(OTLP)
    return out


def exports(config: Config) -> bool:
    """Whether ``config`` sends spans anywhere (DataKit or a plain OTLP endpoint)."""
    return bool(targets(config))


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


#: Attribute of the one chunk event a stored span keeps: how many chunk events the instrumentation recorded.
CHUNKS_ATTR = "llmlab.chunks"


def compact_chunks(events: Sequence[Event], counted: int | None = None) -> list[Event]:
    """``events`` with OpenLLMetry's per-token ``gen_ai.content.completion.chunk`` events folded into the
    first one (its time is the first token's; :data:`CHUNKS_ATTR` counts them all).

    One event per token was 40 % of a short answer's span bytes, stored and exported; llmlab records TTFT
    and the inter-token latency (``itl_ms``) itself, and readers need only the first chunk's time.
    ``counted``: how many chunk events there were when only the first was recorded (llmlab's own
    calls count them as they stream: ``tracing.setup._ChunkCounter``).
    """
    chunks = [e for e in events if e.name == schema.CHUNK_EVENT]
    total = max(len(chunks), counted or 0)
    if total < 2:
        return list(events)
    first = chunks[0]
    kept = Event(first.name, {**dict(first.attributes or {}), CHUNKS_ATTR: total}, first.timestamp)
    return [kept if e is first else e for e in events if e is first or e.name != schema.CHUNK_EVENT]


def span_record(span: ReadableSpan, config: Config, export: bool = True, chunks: int | None = None) -> tuple[Any, ...]:
    """The store row of one finished span (its canonical row is precomputed for fast read-back).

    ``export=False``: kept locally only (someone else's exporter delivers it); ``chunks``: the
    chunk events counted instead of recorded (see :func:`compact_chunks`)."""
    attrs = dict(span.attributes or {})
    events, status_ = compact_chunks(span.events, chunks), span.status
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
        or len(events) != len(span.events)
        or any(a is not b for a, b in zip(events, span.events))  # the chunk events were folded
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
    first_chunk = next((e.timestamp for e in events if e.name == schema.CHUNK_EVENT), None)
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
    otlp = pack(encode_spans([span]).SerializeToString())
    # association properties and a sweep's variant names have no column of their own: they ride in row_json
    extras = {k: v for k, v in row.items() if k.startswith("assoc.") or (k in schema.VARIANT_ATTRS and v is not None)}
    values = tuple(_sql_value(row.get(name)) for name, _ in SPAN_VALUE_COLUMNS)
    return (
        (
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
            "{}",  # the attributes live once, in the span's bytes (see llmlab.store.spanbytes.span_attributes)
            otlp,
            PENDING if export and config.datakit is not None else None,
        )
        + values
        + (PENDING if export and config.otlp_endpoint else None,)
    )


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
        self.exporter = OutboxExporter(config) if exports(config) else None
        self._last: Any = None  # the future of the last write (flush waits on it)

    def submit(self, span: ReadableSpan, export: bool = True, chunks: int | None = None) -> None:
        config = self.config

        def record() -> tuple[Any, ...] | None:
            try:
                return span_record(span, config, export, chunks)
            except Exception:  # a span we cannot encode must not break the writer
                log.exception("could not record span %s", getattr(span, "name", "?"))
                return None

        # encoded on the store's writer thread, not on the caller's (the sweep's event loop)
        self._last = self.store.put_span_later(record)
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
                failed = False
                for target in targets(self.config):
                    try:
                        while not self._stop.is_set():
                            sent = send_pending_batch(self.config, client, target)
                            if sent is None:
                                break
                            self.delivered += sent
                    except DeliveryFailed as exc:
                        failed = True
                        self.last_error = str(exc)
                        log.info("export to %s failed (%s); spans stay spooled", target.label(self.config), exc)
                    except Exception:
                        failed = True
                        log.exception("exporter error")
                if failed:
                    self._backoff = min(10.0, max(0.5, self._backoff * 2))
                else:
                    self._backoff = 0.0
                    self.last_error = None


class DeliveryFailed(Exception):
    """A batch could not be delivered now (it stays pending)."""


def lease_owner() -> str:
    """This process as an outbox lease holder: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_gone(owner: str) -> bool:
    """True when ``owner`` (``host:pid``) is a process of this host that no longer runs; a lease
    held on another host, or by a live process, is never taken over before it expires."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: alive, another user's
        return False
    return False


def _holders(db: Any, now: float, target: Target) -> list[tuple[str | None, int, float]]:
    return db.execute(
        f"SELECT {target.owner}, count(*), max({target.lease}) FROM spans WHERE {target.state} = 0 "
        f"AND {target.lease} >= ? GROUP BY {target.owner}",
        (now,),
    ).fetchall()


def _claim(
    store: Any, limit: int, max_bytes: int = BATCH_BYTES, target: Target = DATAKIT
) -> list[tuple[str, str, bytes]]:
    now = time.time()
    state, lease, owner = target.state, target.lease, target.owner

    def fn(db: Any) -> list[tuple[str, str, bytes]]:
        # leases of a process that died on this host (a killed replay or notebook) are free at once
        dead = [(o,) for o, _, _ in _holders(db, now, target) if o and _owner_gone(o)]
        if dead:
            log.info("taking over the outbox leases of %s (process gone)", ", ".join(o for (o,) in dead))
            db.executemany(
                f"UPDATE spans SET {lease} = NULL, {owner} = NULL WHERE {state} = 0 AND {owner} = ?",
                dead,
            )
        # the first-written pending spans, up to `limit` of them and `max_bytes` in all (at least
        # one); rowid order walks the partial index of pending spans without sorting a backlog
        return db.execute(
            f"UPDATE spans SET {lease} = ?, {owner} = ? WHERE rowid IN (SELECT rowid FROM (SELECT rowid, size, "
            "sum(size) OVER (ORDER BY rowid ROWS UNBOUNDED PRECEDING) AS total FROM (SELECT rowid, length(otlp) AS size "
            f"FROM spans WHERE {state} = 0 AND ({lease} IS NULL OR {lease} < ?) ORDER BY rowid LIMIT ?)) "
            "WHERE total <= ? OR total = size) RETURNING trace_id, span_id, otlp",
            (now + LEASE_S, lease_owner(), now, limit, max_bytes),
        ).fetchall()

    return store.write(fn)


def leases_held(config: Config, target: Target = DATAKIT) -> list[dict[str, Any]]:
    """Spans being sent by someone at this moment: ``[{owner, spans, until}]`` (``until`` in epoch seconds)."""
    store = get_store(config.home)
    return [
        {"owner": o or "unknown", "spans": n, "until": u}
        for o, n, u in store.read(
            f"SELECT {target.owner}, count(*), max({target.lease}) FROM spans WHERE {target.state} = 0 "
            f"AND {target.lease} >= ? GROUP BY {target.owner}",
            (time.time(),),
        )
    ]


def _settle(store: Any, keys: Sequence[tuple[str, str]], state: int | None, target: Target = DATAKIT) -> None:
    column, lease, owner = target.state, target.lease, target.owner

    sets = f"{lease} = NULL, {owner} = NULL" if state is None else f"{column} = ?, {lease} = NULL, {owner} = NULL"
    head = [] if state is None else [state]  # None: release the lease, stay pending

    def fn(db: Any) -> None:
        # a few multi-row statements, not one per span (each is a trip through SQLite for the store's writer)
        for chunk in sqlkit.shaped_chunks(keys, 2):
            db.execute(
                f"UPDATE spans SET {sets} WHERE rowid IN (SELECT s.rowid FROM (VALUES "
                f"{','.join(['(?,?)'] * len(chunk))}) AS k JOIN spans s ON s.trace_id = k.column1 AND s.span_id = k.column2)",
                head + [v for key in chunk for v in key],
            )

    store.write(fn)


def send_pending_batch(config: Config, client: httpx.Client, target: Target = DATAKIT) -> int | None:
    """Deliver one batch of pending spans; returns how many, or None when nothing is pending.

    Raises DeliveryFailed (spans stay pending) when DataKit is down, slow or answers 401/403/404/408/429/5xx.
    """
    store = get_store(config.home)
    rows = _claim(store, BATCH, BATCH_BYTES, target)
    if not rows:
        return None
    # stored packed: the claim bounded the packed bytes, _post bounds the request's own
    rows = [(r[0], r[1], unpack(r[2])) for r in rows]
    outcome: dict[int, list[tuple[str, str]]] = {DELIVERED: [], REJECTED: []}
    try:
        _post(config, client, rows, outcome, target)
    finally:
        # what was answered is settled; the rest (a failure stopped us) stays pending
        done = set(outcome[DELIVERED]) | set(outcome[REJECTED])
        for state in (DELIVERED, REJECTED):
            if outcome[state]:
                _settle(store, outcome[state], state, target)
        rest = [(r[0], r[1]) for r in rows if (r[0], r[1]) not in done]
        if rest:
            _settle(store, rest, None, target)
    return len(outcome[DELIVERED])


def _post(
    config: Config,
    client: httpx.Client,
    rows: list[tuple[str, str, bytes]],
    outcome: dict[int, list[tuple[str, str]]],
    target: Target = DATAKIT,
) -> None:
    """POST ``rows`` (plain span bytes) as one request, recording each span's outcome; rows over
    :data:`BATCH_BYTES` in all, or a 413, split the batch in two.

    Raises DeliveryFailed when DataKit is down, slow or answers 401/403/404/408/429/5xx.
    """
    keys = [(r[0], r[1]) for r in rows]
    if len(rows) > 1 and sum(len(r[2]) for r in rows) > BATCH_BYTES:  # spans that packed well: two requests
        half = len(rows) // 2
        _post(config, client, rows[:half], outcome, target)
        _post(config, client, rows[half:], outcome, target)
        return
    # concatenated serialized ExportTraceServiceRequests are one valid request (repeated fields merge)
    body = b"".join(bytes(r[2]) for r in rows)
    if target.gzip:
        body = gzip.compress(body, compresslevel=5)
    headers = target.headers(config)
    try:
        url = target.url(config)
        assert url is not None
        response = client.post(url, content=body, headers=headers)
    except Exception as exc:
        raise DeliveryFailed(redact(f"{type(exc).__name__}: {exc}")) from None
    if response.status_code < 300:
        outcome[DELIVERED] += keys
        clear_problem(config, target)
        return
    if response.status_code in (408, 429) or response.status_code >= 500:
        raise DeliveryFailed(f"HTTP {response.status_code}")
    if response.status_code in SETUP_STATUSES:
        # DataKit's set-up, not the spans: no OpenTelemetry input (404/405), a token/header it wants
        # (401/403), a content type it does not take (415). Every span stays pending until it is fixed.
        message = redact(
            f"HTTP {response.status_code} from {url}: check DataKit's opentelemetry input and "
            f"TRACELOOP_HEADERS ({response.text[:120]})"
        )
        note_problem(config, response.status_code, message, target)
        raise DeliveryFailed(message)
    if response.status_code == 413 and len(rows) > 1:  # this DataKit takes smaller bodies: halve the batch
        half = len(rows) // 2
        _post(config, client, rows[:half], outcome, target)
        _post(config, client, rows[half:], outcome, target)
        return
    if len(rows) > 1:
        # a malformed batch (400): find the span(s) DataKit refuses, one at a time at the end
        half = len(rows) // 2
        _post(config, client, rows[:half], outcome, target)
        _post(config, client, rows[half:], outcome, target)
        return
    outcome[REJECTED] += keys
    log.warning(
        "%s rejected span %s/%s with HTTP %d: %s. It is kept (llmlab store status lists it; "
        "`llmlab replay --rejected` sends it again)",
        target.label(config),
        keys[0][0],
        keys[0][1],
        response.status_code,
        redact(response.text[:200]),
    )


#: Answers that mean "wrong place / not set up": the whole outbox waits, nothing is set aside.
SETUP_STATUSES = frozenset({401, 403, 404, 405, 415})
_PROBLEM_FILE = "export_problem.json"


def _problem_path(config: Config, target: Target) -> Any:
    return config.home / (_PROBLEM_FILE if target is DATAKIT else f"export_problem_{target.name}.json")


def note_problem(config: Config, status: int, message: str, target: Target = DATAKIT) -> None:
    """Remember a set-up problem of an export target (shown at the next sweep and in ``store status``)."""
    try:
        _problem_path(config, target).write_text(
            json.dumps({"status": status, "message": message, "target": target.name, "at": time.time()}),
            encoding="utf-8",
        )
    except OSError:
        pass


def clear_problem(config: Config, target: Target = DATAKIT) -> None:
    """Forget the remembered set-up problem of ``target`` (a delivery succeeded)."""
    try:
        _problem_path(config, target).unlink(missing_ok=True)
    except OSError:
        pass


def export_problem(config: Config) -> dict[str, Any] | None:
    """The last set-up problem of an export target, or None (cleared by its next delivery)."""
    for target in (DATAKIT, OTLP):
        try:
            return json.loads(_problem_path(config, target).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    return None


def warn_if_stuck(config: Config) -> None:
    """At the start of a sweep: say so when spans wait because the export target is not set up."""
    problem = export_problem(config)
    if problem is None:
        return
    waiting = sum(get_store(config.home).pending_count(t.state) for t in (DATAKIT, OTLP))
    if waiting:
        log.warning(
            "%d spans are waiting to be exported: the last attempt got %s. They are kept and go out once "
            "this is fixed (or run `llmlab replay`).",
            waiting,
            problem.get("message"),
        )


def rejected(config: Config) -> list[dict[str, Any]]:
    """Spans DataKit refused one by one as malformed (400): kept, never deleted."""
    rows = get_store(config.home).read(
        "SELECT trace_id, span_id, name, service, start_ns FROM spans WHERE export_state = ? OR otlp_state = ? "
        "ORDER BY rowid",
        (REJECTED, REJECTED),
    )
    return [dict(zip(("trace_id", "span_id", "name", "service", "start_ns"), r)) for r in rows]


def requeue_rejected(config: Config) -> int:
    """Mark every rejected span pending again (``llmlab replay --rejected``); returns how many."""

    def fn(db: Any) -> int:
        n = 0
        for t in (DATAKIT, OTLP):
            n += db.execute(
                f"UPDATE spans SET {t.state} = ?, {t.lease} = NULL, {t.owner} = NULL WHERE {t.state} = ?",
                (PENDING, REJECTED),
            ).rowcount
        return n

    return int(get_store(config.home).write(fn))


def drain(
    config: Config, deadline_s: float | None = 60.0, on_wait: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Send every pending span now (``llmlab replay``) to every configured target; returns counts
    (summed over targets) and the last error.

    Batches another live process is sending at this moment are waited for, not sent twice, and
    ``on_wait`` is told which process holds them and until when; the leases of a process that died
    on this host are taken over at once.
    """
    sent, error = 0, None
    start = time.monotonic()
    store = get_store(config.home)
    told: set[str] = set()
    # with a short deadline (at exit), a hanging DataKit must not hold the process much beyond it
    timeout = 10.0 if deadline_s is None else max(0.5, min(10.0, deadline_s))
    with httpx.Client(timeout=timeout, trust_env=False) as client:
        for target in targets(config):
            while deadline_s is None or time.monotonic() - start < deadline_s:
                try:
                    n = send_pending_batch(config, client, target)
                except DeliveryFailed as exc:
                    error = str(exc)
                    break
                if n is None:
                    held = leases_held(config, target)
                    if not held:
                        break
                    for h in held:
                        if h["owner"] not in told and h["owner"] != lease_owner():
                            told.add(h["owner"])
                            until = time.strftime("%H:%M:%S", time.localtime(h["until"]))
                            message = (
                                f"waiting for {h['spans']} spans being sent to {target.label(config)} by process "
                                f"{h['owner']} (host:pid), leased until {until}"
                            )
                            log.info(message)
                            if on_wait is not None:
                                on_wait(message)
                    time.sleep(0.05)
                    continue
                sent += n
    pending_n = sum(store.pending_count(t.state) for t in targets(config)) if targets(config) else store.pending_count()
    return {"sent": sent, "pending": pending_n, "error": error}


def pending(config: Config | None = None) -> int:
    """How many spans wait to be delivered to DataKit (spooled)."""
    from llmlab.config import get_config

    config = config or get_config()
    return get_store(config.home).pending_count()
