"""DQL ``M::`` (metrics) over the collector's stored OTLP metric data points, in DataKit's shape.

DataKit's OpenTelemetry input turns every OTLP metric data point into a point of measurement
``otel_service`` (GuanceCloud cliutils ``otlp.ParseResourceMetricsV2``):

- tags: the resource, scope and data-point attributes with dots turned into underscores
  (``service.name`` → ``service_name``, ``gen_ai.token.type`` → ``gen_ai_token_type``) less
  :data:`DROPPED_KEYS` (``telemetry.sdk.*``, ``process.runtime.*``…), ``scope_name``, ``unit``,
  and ``__temporality`` (``cumulative``/``delta``) on sums;
- a gauge or sum is one field named after the metric (``gen_ai.client.generation.choices``);
- a histogram is one point with ``<name>_count``, ``<name>_sum``, ``<name>_min``, ``<name>_max``
  plus one point per bucket with ``<name>_bucket`` (the cumulative count, Prometheus style) and a
  ``le`` tag (the upper bound, ``+Inf`` for the last);
- an exponential histogram is one point with ``_count``/``_sum``/``_min``/``_max``/``_avg``;
- a summary: ``_count``/``_sum`` and one point per quantile (``<name>`` with a ``quantile`` tag).

The embedded collector keeps OTLP data points as rows (see :mod:`.storage`) and builds these
points at query time. It also puts ``__temporality`` on histogram points (DataKit does only on
sums) so a reader can tell cumulative from delta counts. Supported query::

    M::otel_service[:(<columns>)] [{<filter>}] [<time range>] [ORDER BY time [ASC|DESC]] [LIMIT n] [OFFSET n]

Sources: ``otel_service`` or ``re(`…`)`` matched against it (anything else has no points).
Filters are evaluated on the built points with the same rules as ``T::`` (a missing column
matches neither ``=`` nor ``!=``; tags compared with numbers are read as numbers); a top-level
``service_name = '…'`` and conditions that only name metric fields are also pushed down to
SQL so a long-running app's metrics do not all have to be expanded.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

from llmlab.collector.params import DEFAULT_LIMIT, int_param, intersect_ranges, operands, request_range
from llmlab.collector.storage import Storage, compiled_regex
from llmlab.errors import QueryError

__all__ = ["MEASUREMENT", "SUFFIXES", "points_of_row", "run_metrics_query"]

MEASUREMENT = "otel_service"
SUFFIXES = ("_count", "_sum", "_min", "_max", "_avg", "_bucket")
_TEMPORALITY = {1: "delta", 2: "cumulative"}
_SELECT = "SELECT id, service, name, type, unit, attributes, time_ns, data, resource_json FROM metrics"


def _tag(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):  # as Go's FormatFloat(v, 'f', -1, 64): 5 → "5", 0.25 → "0.25"
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return "" if value is None else str(value)


def _anyvalue(v: dict[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in v:
            return v[key]
    if "intValue" in v:
        return int(v["intValue"])
    if "arrayValue" in v or "kvlistValue" in v:
        return v.get("arrayValue") or v.get("kvlistValue")
    return None


#: Attributes DataKit drops from metric tags (cliutils ``droppedMetricAttributeKeys``).
DROPPED_KEYS = frozenset(
    {
        "process.command_line",
        "process.executable.path",
        "process.runtime.description",
        "process.runtime.name",
        "process.runtime.version",
        "telemetry.distro.name",
        "telemetry.distro.version",
        "telemetry.sdk.language",
        "telemetry.sdk.name",
        "telemetry.sdk.version",
    }
)

_RES_CACHE: dict[str, dict[str, str]] = {}


def _resource_tags(resource_json: str) -> dict[str, str]:
    tags = _RES_CACHE.get(resource_json)
    if tags is None:
        try:
            res = json.loads(resource_json or "{}")
        except ValueError:
            res = {}
        tags = {
            kv["key"].replace(".", "_"): _tag(_anyvalue(kv.get("value") or {}))
            for kv in res.get("attributes", [])
            if kv["key"] not in DROPPED_KEYS
        }
        if len(_RES_CACHE) > 256:
            _RES_CACHE.clear()
        _RES_CACHE[resource_json] = tags
    return tags


def points_of_row(row: tuple[Any, ...]) -> list[dict[str, Any]]:
    """DataKit points (dicts of column → value, ``time`` in ms) of one stored data point row.

    ``row`` is ``(id, service, name, type, unit, attributes_json, time_ns, data_json, resource_json)``.
    """
    _id, service, name, kind, unit, attributes, time_ns, data_json, resource_json = row
    data = json.loads(data_json)
    tags: dict[str, Any] = dict(_resource_tags(resource_json))
    tags.setdefault("service_name", service)
    scope = data.get("scope")
    if scope:  # resource, then scope, then data-point attributes, as DataKit merges them
        for key, value in (scope.get("attributes") or {}).items():
            if key not in DROPPED_KEYS:
                tags[key.replace(".", "_")] = _tag(value)
        if scope.get("name"):
            tags["scope_name"] = scope["name"]
    for key, value in json.loads(attributes or "{}").items():
        if key not in DROPPED_KEYS:
            tags[key.replace(".", "_")] = _tag(value)
    tags["unit"] = unit
    temporality = _TEMPORALITY.get(data.get("aggregation_temporality"))
    if temporality is not None:
        tags["__temporality"] = temporality
    base: dict[str, Any] = {"time": time_ns // 1_000_000, **tags}
    if kind in ("gauge", "sum"):
        base[name] = data.get("value")
        return [base]
    for stat in ("count", "sum", "min", "max"):
        if data.get(stat) is not None:
            base[f"{name}_{stat}"] = data[stat]
    points = [base]
    if kind == "histogram":
        bounds = data.get("explicit_bounds") or []
        counts = data.get("bucket_counts") or []
        if len(counts) > 1 and bounds:
            running = 0
            for i, c in enumerate(counts):
                running += int(c)
                le = _tag(float(bounds[i])) if i < len(bounds) else "+Inf"
                points.append({"time": base["time"], **tags, "le": le, f"{name}_bucket": running})
    elif kind == "exponential_histogram":
        if data.get("count"):
            base[f"{name}_avg"] = (data.get("sum") or 0.0) / data["count"]
    elif kind == "summary":
        for q in data.get("quantiles") or []:
            points.append({"time": base["time"], **tags, "quantile": _tag(float(q["quantile"])), name: q["value"]})
    return points


# --- filter evaluation on built points --------------------------------------------------------


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


_CMP = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}


def _compare(point: dict[str, Any], col: str, op: str, literal: Any) -> bool:
    if col == "message":
        raise QueryError("`message` is not a column of metric points")
    value = point.get(col)
    if value is None:
        return False
    if isinstance(literal, bool):
        if op not in ("=", "!="):
            raise QueryError(f"operator {op} is not defined for booleans (`{col}`)")
        return _CMP[op](_tag(value), "true" if literal else "false")
    if isinstance(literal, (int, float)):
        num = _as_number(value)
        return num is not None and bool(_CMP[op](num, float(literal)))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        num = _as_number(literal)
        if num is None:
            raise QueryError(f"cannot compare numeric column `{col}` with string {literal!r}")
        return bool(_CMP[op](float(value), num))
    return bool(_CMP[op](str(value), str(literal)))


def _matches(point: dict[str, Any], node: Any) -> bool:
    kind = node[0]
    if kind == "and":
        return all(_matches(point, n) for n in operands(node))
    if kind == "or":
        return any(_matches(point, n) for n in operands(node))
    if kind == "cmp":
        return _compare(point, node[1], node[2], node[3])
    if kind == "match":  # = re(...) / = wildcard(...); a point without the column matches neither
        _, col, pattern, negated = node
        value = point.get(col)
        return value is not None and (compiled_regex(pattern).search(str(value)) is None) == negated
    _, col, values, negated = node
    if point.get(col) is None:
        return False
    if negated:
        return all(_compare(point, col, "!=", v) for v in values)
    return any(_compare(point, col, "=", v) for v in values)


def _columns_of(node: Any) -> set[str]:
    out: set[str] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if n[0] in ("and", "or"):
            stack += [n[1], n[2]]
        else:
            out.add(n[1])
    return out


def _conjuncts(node: Any) -> list[Any]:
    if node is None:
        return []
    return operands(node) if node[0] == "and" else [node]


def _metric_of(column: str, names: set[str]) -> str | None:
    if column in names:
        return column
    for suffix in SUFFIXES:
        if column.endswith(suffix) and column[: -len(suffix)] in names:
            return column[: -len(suffix)]
    return None


def _pushdown(storage: Storage, where: Any) -> tuple[list[str], list[Any]]:
    """SQL conditions implied by the filter (pruning only: the filter is still evaluated)."""
    sql: list[str] = []
    params: list[Any] = []
    names: set[str] | None = None
    for node in _conjuncts(where):
        if node[0] == "cmp" and node[1] in ("service_name", "service") and node[2] == "=" and isinstance(node[3], str):
            sql.append("service = ?")
            params.append(node[3])
            continue
        # Every leaf fails on a point that lacks its column, and there is no NOT: a point can
        # only pass this conjunct if it has one of the columns it names. If they are all fields
        # of known metrics, only those metrics' rows can match.
        if names is None:
            names = {r[0] for r in storage.reader().execute("SELECT DISTINCT name FROM metrics")}
        metrics = {_metric_of(c, names) for c in _columns_of(node)}
        if metrics and None not in metrics:
            sql.append(f"name IN ({','.join('?' * len(metrics))})")
            params.extend(sorted(m for m in metrics if m is not None))
    return sql, params


def _source_matches(sources: list[tuple[str, str]]) -> bool:
    if not sources:
        return True
    for kind, text in sources:
        if kind == "name" and text == MEASUREMENT:
            return True
        if kind == "re" and compiled_regex(text).search(MEASUREMENT):
            return True
    return False


def _iter_points(storage: Storage, where_sql: list[str], params: list[Any], desc: bool) -> Iterator[dict[str, Any]]:
    sql = _SELECT + (" WHERE " + " AND ".join(where_sql) if where_sql else "")
    sql += f" ORDER BY time_ns {'DESC' if desc else 'ASC'}, id {'DESC' if desc else 'ASC'}"
    cur = storage.reader().execute(sql, params)
    while True:
        storage.check_deadline()
        rows = cur.fetchmany(2000)
        if not rows:
            return
        for row in rows:
            yield from points_of_row(row)


# A reader pages through a result with LIMIT/OFFSET, one request per page; building the points
# again for every page would make reading N points cost O(N^2). The matching points of the last
# few queries are kept while no data point was added (max id unchanged) and for at most 60 s.
_CACHE: dict[tuple[Any, ...], tuple[float, list[dict[str, Any]]]] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_TTL_S = 60.0
_CACHE_SIZE = 4


def _matching_points(
    storage: Storage, where_sql: list[str], params: list[Any], desc: bool, where: Any
) -> list[dict[str, Any]]:
    max_id = storage.reader().execute("SELECT MAX(id) FROM metrics").fetchone()[0]
    key = (id(storage), str(storage.path), max_id, tuple(where_sql), tuple(params), desc, repr(where))
    now = time.monotonic()
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None and now - hit[0] < _CACHE_TTL_S:
            return hit[1]
    matched = [p for p in _iter_points(storage, where_sql, params, desc) if where is None or _matches(p, where)]
    with _CACHE_LOCK:
        for k in [k for k, (t, _) in _CACHE.items() if now - t >= _CACHE_TTL_S]:
            del _CACHE[k]
        while len(_CACHE) >= _CACHE_SIZE:
            del _CACHE[next(iter(_CACHE))]
        _CACHE[key] = (now, matched)
    return matched


def run_metrics_query(storage: Storage, q: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """Evaluate a parsed ``M::`` query → ``{"series": [...], "total_hits": n}``.

    Args:
        storage: the collector's storage.
        q: the parsed :class:`~llmlab.collector.dql.Query` (namespace ``M``).
        spec: the entry of the request's ``queries`` (``time_range``, ``limit``, ``offset``).
    """
    time_range = intersect_ranges(q.time_range, request_range(spec.get("time_range")))
    limit = q.limit if q.limit is not None else int_param(spec, "limit")
    offset = (q.offset if q.offset is not None else int_param(spec, "offset")) or 0
    limit = DEFAULT_LIMIT if limit is None else limit
    for col, _desc in q.order:
        if col != "time":
            raise QueryError(f"ORDER BY `{col}` is not supported for metrics; order by time")
    desc = q.order[0][1] if q.order else True
    if not _source_matches(q.sources):
        return {"series": [], "total_hits": 0}
    where_sql, params = _pushdown(storage, q.where) if q.where is not None else ([], [])
    if time_range is not None:
        if time_range[0] is not None:
            where_sql.append("time_ns >= ?")
            params.append(int(time_range[0]) * 1_000_000)
        if time_range[1] is not None:
            where_sql.append("time_ns < ?")
            params.append((int(time_range[1]) + 1) * 1_000_000)
    matched = _matching_points(storage, where_sql, params, desc, q.where)
    total = len(matched)
    page = matched[offset : offset + limit]
    if not page:
        return {"series": [], "total_hits": total}
    if q.columns is None:
        cols = ["time"] + sorted({k for p in page for k in p} - {"time"})
    else:
        cols = ["time"] + [c for c in q.columns if c != "time"]
    values = [[_json_safe(p.get(c)) for c in cols] for p in page]
    return {"series": [{"name": MEASUREMENT, "columns": cols, "values": values}], "total_hits": total}


def _json_safe(value: Any) -> Any:
    # NaN/inf are not JSON; DataKit would not store them either
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
