"""The collector's HTTP surface (Starlette): OTLP/HTTP ingest, ping, DQL raw query.

Bodies are read with a size cap (16 MiB) and gzip is inflated in one pass (:func:`inflate`): an
oversize body or a gzip bomb is answered 413 after at most 16 MiB of output, a body of more than
:data:`MAX_GZIP_MEMBERS` gzip members 400. Decoding and SQLite work run in the thread pool, so one
client sending a large batch (or garbage) never blocks the event loop that serves the others.
Queries run on their own small pool (:data:`QUERY_WORKERS` threads) with a time limit, so a costly
query holds up neither ingest nor ``/v1/ping``; whatever a query body makes go wrong is a 400 with
the reason, never a 500.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import threading
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from google.protobuf.message import Message
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llmlab.collector import dql
from llmlab.collector.ingest import (
    EMBEDDED_CUSTOMER_TAGS,
    REQUEST_TYPES,
    DecodeFailed,
    decode,
    log_rows,
    metric_rows,
    span_groups,
)
from llmlab.collector.storage import QueryTimeout, Storage
from llmlab.errors import QueryError, StoreError

__all__ = ["MAX_BODY_BYTES", "MAX_GZIP_MEMBERS", "QUERY_TIMEOUT_S", "QUERY_WORKERS", "create_app", "inflate", "version"]

#: Largest accepted request body, before and after gzip inflation.
MAX_BODY_BYTES = 16 * 1024 * 1024
#: Most gzip members in one body (an exporter sends one; each member costs a decompressor).
MAX_GZIP_MEMBERS = 64
#: Input fed to the decompressor at a time: what is left over after a member ends is copied, so this bounds the
#: copying per member (feeding the whole body made N members cost N × body size: quadratic).
_GZIP_CHUNK = 16 * 1024
#: Time limit of one query request (seconds); past it the query is stopped and answered 400.
QUERY_TIMEOUT_S = 10.0
#: Threads that evaluate queries, and queries allowed in flight at once (more are answered 503 at once).
QUERY_WORKERS = 2
MAX_QUERIES_IN_FLIGHT = 16

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def version() -> str:
    try:
        from importlib.metadata import version as _v

        return _v("llmlab")
    except Exception:  # not installed (source checkout)
        return "0.1.0"


class _TooLarge(Exception):
    pass


class _BadRequest(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error_code": code, "message": message}, status_code=status)


async def _read_body(request: Request, cap: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > cap:
                raise _TooLarge()
        except ValueError:
            raise _BadRequest("http.bad_content_length", f"invalid Content-Length {declared[:40]!r}") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise _TooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def inflate(data: bytes, cap: int = MAX_BODY_BYTES, max_members: int = MAX_GZIP_MEMBERS) -> bytes:
    """Gunzip ``data`` (possibly several members) in one pass, producing at most ``cap`` bytes.

    The input is fed in chunks of ``_GZIP_CHUNK`` bytes, so the work is linear in the body size whatever the
    number of members; trailing NUL padding after the last member is ignored (as ``gzip.decompress``).

    Raises:
        _TooLarge: the inflated body would exceed ``cap``.
        _BadRequest: the data is not gzip, is truncated, or has more than ``max_members`` members.
    """
    view = memoryview(data)
    pos = 0
    out: list[bytes] = []
    size = 0
    members = 0
    pending: bytes | memoryview = b""  # input read past the end of the previous member
    while True:
        # start of a member: skip NUL padding; nothing but NULs left means the body ended
        if not pending:
            while pos < len(view) and view[pos] == 0:
                pos += 1
            if pos >= len(view):
                break
        elif not bytes(pending).strip(b"\x00"):
            pending = b""
            continue
        members += 1
        if members > max_members:
            raise _BadRequest("otel.bad_gzip", f"gzip body of more than {max_members} members")
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        while not d.eof:
            if pending:
                piece_in, pending = pending, b""
            elif pos < len(view):
                piece_in = view[pos : pos + _GZIP_CHUNK]
                pos += len(piece_in)
            else:
                raise _BadRequest("otel.bad_gzip", "gzip body is truncated")
            try:
                piece = d.decompress(piece_in, cap + 1 - size)
            except zlib.error as exc:
                raise _BadRequest("otel.bad_gzip", f"body is not valid gzip: {exc}") from None
            size += len(piece)
            if size > cap or d.unconsumed_tail:
                raise _TooLarge()
            out.append(piece)
        pending = d.unused_data
    if members == 0 and data:
        raise _BadRequest("otel.bad_gzip", "gzip body holds only NUL bytes")
    return b"".join(out)


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))  # as JSONResponse


def _render(obj: Any, depth: int = 6) -> str:
    """JSON of a query response, each row encoded by its own call: one C-level ``json`` call over 48 MB of rows
    holds the GIL for 0.3 s, stalling ping and ingest; between rows other threads run."""
    if depth and isinstance(obj, dict):
        return "{" + ",".join(f"{_ENCODER.encode(k)}:{_render(v, depth - 1)}" for k, v in obj.items()) + "}"
    if depth and isinstance(obj, list):
        return "[" + ",".join(_render(v, depth - 1) for v in obj) + "]"
    return _ENCODER.encode(obj)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


class _Collector:
    def __init__(self, storage: Storage, customer_tags: Sequence[str], max_body: int, query_timeout: float) -> None:
        self.storage = storage
        self.customer_tags = tuple(customer_tags)
        self.max_body = max_body
        self.query_timeout = query_timeout
        self.queries = ThreadPoolExecutor(QUERY_WORKERS, thread_name_prefix="llmlab-dql")
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self.started = time.monotonic()
        self.stats = {"requests": 0, "spans_received": 0, "spans_stored": 0, "rejected": 0}

    # --- OTLP ------------------------------------------------------------------------------

    def _ingest(self, kind: str, body: bytes, json_body: bool, gzip: bool) -> int:
        if gzip:
            body = inflate(body, self.max_body)
        msg = decode(kind, body, json_body)
        try:
            if kind == "traces":
                groups = span_groups(msg, self.customer_tags)  # type: ignore[arg-type]
                self.stats["spans_received"] += sum(len(g.rows) for g in groups)
                stored = self.storage.insert_spans(groups) if groups else 0
                self.stats["spans_stored"] += stored
                return stored
            if kind == "metrics":
                rows = metric_rows(msg)  # type: ignore[arg-type]
                return self.storage.insert_metrics(rows) if rows else 0
            rows = log_rows(msg)  # type: ignore[arg-type]
            return self.storage.insert_logs(rows) if rows else 0
        except OverflowError as exc:  # e.g. time_unix_nano = 2^64-1: SQLite integers are int64 (nothing stored)
            raise _BadRequest("otel.bad_body", f"a value of the request does not fit a 64-bit integer: {exc}") from None
        except (ValueError, TypeError, RecursionError, UnicodeError) as exc:
            raise _BadRequest("otel.bad_body", f"cannot convert the OTLP {kind} request: {exc}") from None

    async def otlp(self, request: Request) -> Response:
        kind = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        self.stats["requests"] += 1
        media = _media_type(request)
        if media not in (PROTOBUF, JSON):
            self.stats["rejected"] += 1
            return _error(
                400, "otel.bad_content_type", f"Content-Type must be {PROTOBUF} or {JSON}, got {media or 'nothing'!r}"
            )
        encoding = request.headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity", "gzip"):
            self.stats["rejected"] += 1
            return _error(400, "otel.bad_content_encoding", f"unsupported Content-Encoding {encoding!r}")
        try:
            body = await _read_body(request, self.max_body)
            await run_in_threadpool(self._ingest, kind, body, media == JSON, encoding == "gzip")
        except _TooLarge:
            self.stats["rejected"] += 1
            return _error(413, "otel.body_too_large", f"request body exceeds {self.max_body} bytes (after inflation)")
        except _BadRequest as exc:
            self.stats["rejected"] += 1
            return _error(400, exc.code, str(exc))
        except DecodeFailed as exc:
            self.stats["rejected"] += 1
            return _error(400, "otel.bad_body", str(exc))
        except StoreError as exc:
            return _error(503, "otel.store_unavailable", str(exc))
        except ClientDisconnect:
            return Response(status_code=400)
        if media == JSON:
            return Response(b"{}", media_type=JSON)
        return Response(_RESPONSES[kind]().SerializeToString(), media_type=PROTOBUF)

    # --- ping and DQL ----------------------------------------------------------------------

    async def ping(self, request: Request) -> Response:
        return JSONResponse(
            {
                "content": {
                    "version": f"llmlab-{version()}",
                    "uptime": f"{time.monotonic() - self.started:.3f}s",
                    "host": socket.gethostname(),
                    "commit": "",
                    "build_at": "",
                }
            }
        )

    def _run_query(self, raw: bytes) -> bytes:
        """Parse and evaluate a query body on a query worker, within the time limit; returns the response body
        (rendered here too: encoding megabytes of JSON on the event loop would stall every other request)."""
        try:
            payload = json.loads(raw or b"null")
        except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested 100k deep
            raise _BadRequest("query.bad_json", f"body is not JSON: {type(exc).__name__}: {str(exc)[:200]}") from None
        with self.storage.deadline(self.query_timeout):
            content = dql.run_request(self.storage, payload)
        return _render({"content": content}).encode()

    async def query_raw(self, request: Request) -> Response:
        try:
            raw = await _read_body(request, self.max_body)
        except _TooLarge:
            return _error(413, "query.body_too_large", "query body too large")
        except _BadRequest as exc:
            return _error(400, exc.code, str(exc))
        except ClientDisconnect:
            return Response(status_code=400)
        with self._in_flight_lock:
            if self._in_flight >= MAX_QUERIES_IN_FLIGHT:
                return _error(503, "query.busy", f"{self._in_flight} queries are running; try again later")
            self._in_flight += 1
        try:
            future = asyncio.get_running_loop().run_in_executor(self.queries, self._run_query, raw)
            # the worker stops itself at the deadline; this is the backstop if Python code in it does not
            content = await asyncio.wait_for(asyncio.shield(future), self.query_timeout + 5)
        except _BadRequest as exc:
            return _error(400, exc.code, str(exc))
        except QueryTimeout as exc:
            return _error(400, "query.timeout", f"{exc} ({self.query_timeout:g} s)")
        except QueryError as exc:
            return _error(400, "query.invalid_dql", str(exc))
        except StoreError as exc:
            return _error(503, "query.store_unavailable", str(exc))
        except asyncio.TimeoutError:
            return _error(503, "query.timeout", f"the query did not finish within {self.query_timeout + 5:g} s")
        except sqlite3.OperationalError as exc:
            if "interrupted" in str(exc):
                return _error(400, "query.timeout", f"the query ran past its time limit ({self.query_timeout:g} s)")
            return _error(400, "query.invalid_dql", f"cannot evaluate the query: {exc}")
        except (sqlite3.Error, OverflowError, RecursionError, ValueError, TypeError, KeyError, IndexError) as exc:
            # whatever else a query can make go wrong is the query's fault: 400 with the reason, never a 500
            return _error(400, "query.invalid_dql", f"cannot evaluate the query: {type(exc).__name__}: {exc}")
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1
        return Response(content, media_type=JSON)


def _response_types() -> dict[str, type[Message]]:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    return {
        "traces": ExportTraceServiceResponse,
        "metrics": ExportMetricsServiceResponse,
        "logs": ExportLogsServiceResponse,
    }


_RESPONSES = _response_types()


def create_app(
    db_path: str | Path,
    customer_tags: Sequence[str] | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    query_timeout_s: float = QUERY_TIMEOUT_S,
) -> Starlette:
    """The embedded DataKit-compatible collector as a Starlette app.

    Args:
        db_path: SQLite file of the points (created with its directory if missing).
        customer_tags: span attributes turned into tags (dots → underscores); default: the seed's
            DataKit ``customer_tags`` list plus llmlab's call attributes
            (:data:`llmlab.collector.ingest.EMBEDDED_CUSTOMER_TAGS`).
        max_body_bytes: body size limit, before and after gzip inflation (413 beyond it).
        query_timeout_s: time limit of one ``/v1/query/raw`` request (400 ``query.timeout`` past it).

    Returns:
        the app; ``app.state.storage`` is its :class:`~llmlab.collector.storage.Storage`,
        ``app.state.collector.stats`` its counters.
    """
    storage = Storage(db_path)
    # building the LALR tables takes ~0.5 s: do it now, off the request path
    import threading

    threading.Thread(target=dql.warm_up, name="llmlab-dql-warmup", daemon=True).start()
    col = _Collector(
        storage, EMBEDDED_CUSTOMER_TAGS if customer_tags is None else customer_tags, max_body_bytes, query_timeout_s
    )
    app = Starlette(
        routes=[
            *(Route(f"/otel/v1/{kind}", col.otlp, methods=["POST"]) for kind in REQUEST_TYPES),
            Route("/v1/ping", col.ping, methods=["GET"]),
            Route("/v1/query/raw", col.query_raw, methods=["POST"]),
        ]
    )
    app.state.storage = storage
    app.state.collector = col
    return app
