"""Read spans back from DataKit (or the embedded collector) through its DQL raw-query API.

DataKit keeps nothing itself: ``/v1/query/raw`` forwards DQL to the Guance workspace, which
returns points in DataKit's tracing shape. The ``gen_ai.*``/``llmlab.*`` attributes live inside
the ``message`` JSON (the span as protojson) unless DataKit's ``customer_tags`` promoted some
of them to columns, with dots turned into underscores; both are read.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import time
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd

from llmlab import schema
from llmlab.config import EMBEDDED, Config
from llmlab.errors import ConfigError, QueryError, redact
from llmlab.readback.frames import rows_to_frame

PAGE = 1000
_STANDARD = {
    "time",
    "trace_id",
    "span_id",
    "parent_id",
    "resource",
    "operation",
    "start",
    "duration",
    "message",
    "service",
    "status",
    "span_kind",
    "source",
    "error_message",
    "error_type",
    "error_stack",
}


def base_url(config: Config) -> str:
    if config.datakit is None:
        raise ConfigError("datakit=None: there is no DataKit to query; use source='local' or configure datakit=...")
    if config.datakit == EMBEDDED:
        from llmlab.collector import ensure_embedded

        return ensure_embedded(config)
    return config.datakit


def raw_query(
    config: Config,
    query: str,
    time_range: tuple[int, int] | None = None,
    limit: int | None = None,
    offset: int | None = None,
    client: httpx.Client | None = None,
) -> dict[str, Any]:
    """Run one DQL query; returns ``content[0]`` (``series`` and ``total_hits``)."""
    q: dict[str, Any] = {"query": query}
    if time_range is not None:
        q["time_range"] = list(time_range)
    if limit is not None:
        q["limit"] = limit
    if offset is not None:
        q["offset"] = offset
    body: dict[str, Any] = {"queries": [q]}
    if config.datakit_token:
        body["token"] = config.datakit_token
    url = base_url(config) + "/v1/query/raw"
    own = client is None
    client = client or httpx.Client(timeout=30.0, trust_env=False)
    try:
        response = client.post(url, json=body)
    except httpx.HTTPError as exc:
        raise QueryError(
            redact(f"DataKit at {config.datakit} is unreachable for DQL: {type(exc).__name__}: {exc}")
        ) from None
    finally:
        if own:
            client.close()
    if response.status_code != 200:
        try:
            reason = response.json().get("message") or response.text
        except ValueError:
            reason = response.text
        raise QueryError(redact(f"DQL query failed with HTTP {response.status_code}: {reason[:300]}"))
    try:
        answer = response.json()
    except ValueError:
        raise QueryError(redact(f"DataKit answered DQL with a non-JSON body: {response.text[:300]}")) from None
    if not isinstance(answer, dict):
        raise QueryError(redact(f"DataKit answered DQL with {type(answer).__name__}, not an object"))
    if answer.get("error_code") or ("content" not in answer and answer.get("message")):
        # DataKit 1.84 passes the Guance backend's error body through with HTTP 200
        # (internal/httpapi/api_query.go + wrap.go): a top-level error_code/message, no content
        # (the shape internal/cmds/dql.go reads)
        raise QueryError(redact(f"DQL error {answer.get('error_code') or ''}: {answer.get('message') or ''}".strip()))
    content = answer.get("content")
    if not isinstance(content, list) or not content:
        raise QueryError(redact(f"DataKit answered DQL without content: {response.text[:300]}"))
    first = content[0] or {}
    if first.get("error"):
        raise QueryError(redact(f"DQL error: {first['error']}"))
    return first


def dql_string(value: str) -> str:
    """``value`` as a DQL string literal: single quotes, the text itself (non-ASCII kept literal).

    ``json.dumps`` would send ``"\\u667a…"`` for a Chinese service name, which DataKit's DQL
    parser does not decode, so the filter never matched; only ``\\`` and ``'`` are escaped.
    """
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _anyvalue(v: dict[str, Any]) -> Any:
    if not isinstance(v, dict):
        return v
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in v:
            return v[key]
    if "intValue" in v:
        return int(v["intValue"])
    if "arrayValue" in v:
        return tuple(_anyvalue(x) for x in v["arrayValue"].get("values", []))
    if "kvlistValue" in v:
        return {kv["key"]: _anyvalue(kv.get("value", {})) for kv in v["kvlistValue"].get("values", [])}
    if "bytesValue" in v:  # protojson writes bytes as base64
        try:
            raw = base64.b64decode(v["bytesValue"])
        except (ValueError, binascii.Error):
            return v["bytesValue"]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return v["bytesValue"]
    return None


def tag_value(value: Any) -> Any:
    """A ``customer_tags`` column value: DataKit writes a list attribute as the JSON string
    ``{"values":[…]}`` (the protojson of its ArrayValue, ``inputs/opentelemetry/helper.go``); that
    becomes a tuple again, as a list attribute read from ``message`` does."""
    if isinstance(value, str) and value.startswith('{"values":'):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        if isinstance(parsed, dict) and isinstance(parsed.get("values"), list) and len(parsed) == 1:
            return tuple(_anyvalue(x) for x in parsed["values"])
    return value


def _hex_id(value: Any) -> str | None:
    """A span/trace id from a ``message``: OTLP/JSON writes hex, Go's protojson base64."""
    if not isinstance(value, str) or not value:
        return None
    if len(value) in (16, 32) and all(c in "0123456789abcdefABCDEF" for c in value):
        return value.lower()
    try:
        return base64.b64decode(value, validate=True).hex()
    except (ValueError, binascii.Error):
        return value


@dataclasses.dataclass
class DecodedPoint:
    """One DataKit tracing point with its ``message`` JSON unpacked."""

    trace_id: str | None
    span_id: str | None
    parent_id: str | None
    name: str | None
    service: str | None
    kind: str | None
    start_ns: int | None
    end_ns: int | None
    is_error: bool
    error: str
    attrs: dict[str, Any]
    first_chunk_ns: int | None


def decode_point(point: dict[str, Any]) -> DecodedPoint:
    """Unpack a point: attributes from ``message`` (protojson) plus DataKit's underscore tag columns;
    times from the message in ns, else from ``start``/``duration`` in µs."""
    message: dict[str, Any] = {}
    raw = point.get("message")
    if isinstance(raw, str) and raw:
        try:
            message = json.loads(raw)
        except ValueError:
            message = {}
    elif isinstance(raw, dict):
        message = raw
    attrs: dict[str, Any] = {kv["key"]: _anyvalue(kv.get("value", {})) for kv in message.get("attributes", [])}
    for key, value in point.items():  # customer_tags columns (underscore form)
        if key not in _STANDARD and value is not None and key not in attrs:
            attrs[key] = tag_value(value)
    start_ns = (
        int(message["startTimeUnixNano"])
        if message.get("startTimeUnixNano")
        else (int(point["start"]) * 1000 if point.get("start") is not None else None)
    )
    end_ns = (
        int(message["endTimeUnixNano"])
        if message.get("endTimeUnixNano")
        else (
            start_ns + int(point["duration"]) * 1000
            if start_ns is not None and point.get("duration") is not None
            else None
        )
    )
    first_chunk = next(
        (
            int(e["timeUnixNano"])
            for e in message.get("events", [])
            if e.get("name") == schema.CHUNK_EVENT and e.get("timeUnixNano")
        ),
        None,
    )
    status_obj = message.get("status") or {}
    resource_attrs = {
        kv["key"]: _anyvalue(kv.get("value", {})) for kv in (message.get("resource") or {}).get("attributes", [])
    }
    # DataKit's hex id columns first: its message writes ids in base64 (Go protojson), or not at
    # all (clean_message, the default)
    parent = point.get("parent_id") or _hex_id(message.get("parentSpanId"))
    return DecodedPoint(
        trace_id=point.get("trace_id") or _hex_id(message.get("traceId")),
        span_id=point.get("span_id") or _hex_id(message.get("spanId")),
        parent_id=None if parent in (None, "", "0") else parent,
        name=message.get("name") or point.get("resource") or point.get("operation"),
        service=point.get("service") or resource_attrs.get("service.name"),
        kind=point.get("span_kind"),
        start_ns=start_ns,
        end_ns=end_ns,
        is_error=point.get("status") == "error" or status_obj.get("code") in ("STATUS_CODE_ERROR", 2),
        # with clean_message DataKit drops the status and keeps the exception's text as error_message
        error=status_obj.get("message") or point.get("error_message") or "",
        attrs=attrs,
        first_chunk_ns=first_chunk,
    )


def point_to_row(point: dict[str, Any]) -> dict[str, Any] | None:
    """One DataKit tracing point → canonical row (None if it is not an LLM span)."""
    p = decode_point(point)
    if not schema.is_llm_span(p.name, p.attrs):
        return None
    return schema.row_from_span(
        p.attrs,
        trace_id=p.trace_id,
        span_id=p.span_id,
        parent_id=p.parent_id,
        name=p.name,
        service=p.service,
        start_ns=p.start_ns,
        end_ns=p.end_ns,
        status="error" if p.is_error else "ok",
        error=p.error,
        first_chunk_ns=p.first_chunk_ns,
    )


_ORDER_ASC = " ORDER BY time ASC"


def iter_points(
    config: Config, query: str, time_range: tuple[int, int] | None, limit: int | None
) -> Iterator[dict[str, Any]]:
    """Page through a query's points in time order, yielding dicts of column → value.

    Pages move a time cursor (``time_range`` starts at the last page's last ``time``), with an
    ``OFFSET`` only over the points already read in that one millisecond: no deep ``OFFSET``,
    whose cost grows with every page on the backend. ``query`` is ``T::…``/``M::…`` with its
    filters (a trailing ``ORDER BY time ASC`` is accepted); ``limit`` caps the points read.
    """
    if query.endswith(_ORDER_ASC):
        query = query[: -len(_ORDER_ASC)]
    now_ms = int(time.time() * 1000)
    cursor, end = time_range if time_range is not None else (now_ms - 30 * 24 * 3600 * 1000, now_ms + 60_000)
    at_cursor = 0  # points already yielded whose time is `cursor`
    read = 0
    seen_at_cursor: set[tuple[Any, Any]] = set()
    with httpx.Client(timeout=60.0, trust_env=False) as client:
        while True:
            page = PAGE if limit is None else min(PAGE, limit - read)
            if page <= 0:
                return
            text = f"{query}{_ORDER_ASC} LIMIT {page}" + (f" OFFSET {at_cursor}" if at_cursor else "")
            content = raw_query(config, text, (cursor, end), client=client)
            got = 0
            for s in content.get("series") or []:
                columns = s.get("columns") or []
                for values in s.get("values") or []:
                    got += 1
                    point = dict(zip(columns, values))
                    t = point.get("time")
                    key = (point.get("trace_id"), point.get("span_id"))
                    if t == cursor:
                        if key[1] is not None and key in seen_at_cursor:
                            continue  # a point that arrived meanwhile shifted the ms's offset
                        at_cursor += 1
                    elif isinstance(t, int) and t > cursor:
                        cursor, at_cursor = t, 1
                        seen_at_cursor.clear()
                    if key[1] is not None:
                        seen_at_cursor.add(key)
                    read += 1
                    yield point
            if got < page:
                return


SWEEP_CUSTOMER_TAGS = schema.SWEEP_CUSTOMER_TAGS
#: The snippet for DataKit's ``conf.d/opentelemetry/opentelemetry.conf`` (``[inputs.opentelemetry]``).
CUSTOMER_TAGS_SNIPPET = "customer_tags = [" + ", ".join(f'"{t}"' for t in SWEEP_CUSTOMER_TAGS) + "]"
_SOURCE = "`source` = 'opentelemetry'"
_warned_slow: set[str] = set()


class SlowSweepQueryWarning(UserWarning):
    """``ll.spans(sweep_id=…)`` had to read the sweep's whole time window: DataKit lacks the tag."""


def _has_sweep_tag(config: Config, sweep_id: str, time_range: tuple[int, int]) -> bool:
    """Whether DataKit has ``llmlab_sweep_id`` as a column (its customer_tags list it): one point."""
    query = f"T::re(`.*`):(`span_id`) {{ {_SOURCE} AND `llmlab_sweep_id` = {dql_string(sweep_id)} }} LIMIT 1"
    content = raw_query(config, query, time_range)
    return any(s.get("values") for s in content.get("series") or [])


def query_spans(
    config: Config,
    sweep_id: str | None = None,
    since_ns: int | None = None,
    until_ns: int | None = None,
    limit: int | None = None,
    service: str | None = None,
) -> pd.DataFrame:
    """``ll.spans(source="datakit")``: LLM spans over DQL as a canonical frame.

    Always restricted to source ``opentelemetry`` and the time window (a sweep's comes from the
    local store). A sweep is filtered in DQL (``llmlab_sweep_id = '…'``) when DataKit's
    ``customer_tags`` list ``llmlab.sweep_id``; otherwise its window is read and filtered here,
    with one :class:`SlowSweepQueryWarning` naming the ``customer_tags`` to add.
    """
    exact = (since_ns, until_ns)  # the DQL time range is whole ms; rows are filtered exactly below
    if sweep_id is not None and since_ns is None:
        since_ns, until_ns = _sweep_window(config, sweep_id, until_ns)
    now_ms = int(time.time() * 1000)
    start_ms = since_ns // 1_000_000 if since_ns is not None else now_ms - 30 * 24 * 3600 * 1000
    end_ms = until_ns // 1_000_000 + 1 if until_ns is not None else now_ms + 60_000
    conds = [_SOURCE]
    if service:
        conds.append(f"`service` = {dql_string(service)}")
    slow = False
    if sweep_id is not None:
        if _has_sweep_tag(config, sweep_id, (start_ms, end_ms)):
            conds.append(f"`llmlab_sweep_id` = {dql_string(sweep_id)}")
        else:
            slow = True  # said below, once the sweep's spans are found without the column
    query = f"T::re(`.*`) {{ {' AND '.join(conds)} }}"
    rows: list[dict[str, Any]] = []
    # limit counts LLM rows, not points (workflow/task spans are filtered out here); past it, the
    # rest of the last millisecond is read too, so the cut is by (µs start, span_id) as locally
    last_ms = None
    for point in iter_points(config, query, (start_ms, end_ms), None):
        if last_ms is not None and point.get("time") != last_ms:
            break
        row = point_to_row(point)
        if row is None or (sweep_id is not None and row.get("sweep_id") != sweep_id):
            continue
        start = row.get("start_time")
        if start is not None and (
            (exact[0] is not None and start.value < exact[0]) or (exact[1] is not None and start.value >= exact[1])
        ):
            continue
        rows.append(row)
        if limit is not None and len(rows) >= limit and last_ms is None:
            last_ms = point.get("time")
    if limit is not None and len(rows) > limit:
        rows = sorted(rows, key=lambda r: (r["start_time"].value, r["span_id"] or ""))[:limit]
    # only when the sweep's spans are there without the column: an unknown sweep, or one not exported yet,
    # is not a DataKit set-up problem
    if slow and rows and str(config.datakit) not in _warned_slow:
        _warned_slow.add(str(config.datakit))
        warnings.warn(
            f"DataKit at {config.datakit} has no llmlab_sweep_id column, so ll.spans(sweep_id=...) reads every "
            "span of the sweep's time window and filters here. For the fast path add to the "
            f"[inputs.opentelemetry] section of DataKit's opentelemetry.conf: {CUSTOMER_TAGS_SNIPPET} "
            "(see docs/datakit.md)",
            SlowSweepQueryWarning,
            stacklevel=3,
        )
    return rows_to_frame(rows)


def _sweep_window(config: Config, sweep_id: str, until_ns: int | None) -> tuple[int | None, int | None]:
    """The sweep's time window from the local store, to narrow the DQL time range."""
    try:
        from llmlab.store import get_store

        record = get_store(config.home).sweep_record(sweep_id)
    except Exception:
        record = None
    if not record:
        return None, until_ns
    start = pd.Timestamp(record["created_at"]).value - 60 * 10**9
    end = pd.Timestamp(record["finished_at"]).value + 60 * 10**9 if record.get("finished_at") else until_ns
    return start, end
