"""The DQL subset of the embedded collector: parse with lark, evaluate as parametrized SQL.

Supported (everything else is a :class:`~llmlab.errors.QueryError`, i.e. HTTP 400 with the reason —
never a silently different answer)::

    T::<sources>[:(<columns>)] [{<filter>}] [<time range>] [ORDER BY col [ASC|DESC], ...]
        [LIMIT n] [OFFSET n]

- namespace ``T`` (tracing); ``M`` (metrics, measurement ``otel_service``) is evaluated by
  :mod:`llmlab.collector.metrics_query`.
- sources: ``re(`regex`)`` (matched against ``service``; ``.*`` = everything), ``opentelemetry``
  (the measurement: everything), or a service name; several separated by commas (OR).
- columns: ``*`` or a list of names, backticks optional. ``time`` is always the first result column.
- filter: ``=`` (``==``), ``!=`` (``<>``), ``<``, ``>``, ``<=``, ``>=``, ``IN [..]``, ``NOT IN [..]``,
  ``= re('regex')`` / ``!= re(..)`` (regex search) and ``= wildcard('a*b?')`` / ``!= wildcard(..)``
  (whole value, ``*`` any run, ``?`` one character), ``AND`` (``&&``), ``OR`` (``||``),
  parentheses; a top-level ``,`` means AND with the lowest precedence (``{a=1 OR b=2, c=3}`` = ``(a=1 OR b=2) AND c=3``). Literals: '…' or "…" strings,
  numbers, ``true``/``false``. Columns: point tags and fields, customer-tag columns (any other
  name is looked up among the customer tags; a missing one is NULL and matches neither ``=`` nor
  ``!=``). Tags are strings; compared with a number they are read as numbers (non-numeric → no
  match). ``message`` cannot be filtered on.
- time: ``[1h]`` (last hour; units ms, s, m, h, d, w), ``[start_ms:end_ms]``, ``[2h:1h]``, open ends
  ``[start_ms:]``; intersected with the request's ``time_range`` ([ms, ms]); both ends inclusive.
- ``ORDER BY`` (default direction DESC; default order ``time DESC``), ``LIMIT`` (else the request's
  ``limit``, else 1000), ``OFFSET``. ``SLIMIT``/``SOFFSET``, ``BY`` grouping and functions are rejected.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from lark import Lark, Token, Transformer_NonRecursive, v_args
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from llmlab.collector.ingest import build_message
from llmlab.collector.metrics_query import run_metrics_query
from llmlab.collector.params import (
    DEFAULT_LIMIT,
    MAX_CONDITIONS,
    MAX_IN_VALUES,
    MAX_QUERIES,
    MAX_QUERY_CHARS,
    bounded_int,
    bounded_number,
    check_time,
    int_param,
    intersect_ranges,
    operands,
    request_range,
)
from llmlab.collector.regex import compile_regex, wildcard_regex
from llmlab.collector.storage import Storage
from llmlab.errors import QueryError

__all__ = ["DEFAULT_LIMIT", "Query", "parse", "run_query", "run_request"]

MEASUREMENT = "opentelemetry"

GRAMMAR = r"""
start: namespace "::" sources? columns? where? timerange? by_clause? order? limit? offset? slimit? soffset?

namespace: NAME

sources: source ("," source)*
source: RE "(" text ")"       -> source_re
      | name                  -> source_name

columns: ":" "(" collist ")"
collist: STAR                 -> all_columns
       | colitem ("," colitem)*
colitem: name                 -> col
       | NAME "(" [farg ("," farg)*] ")"  -> func
farg: name | STAR | value

where: "{" [cond] "}"
?cond: cond "," orx           -> and_
     | orx
?orx: orx OR andx             -> or_
    | andx
?andx: andx AND atom          -> and_
     | atom
?atom: cmp
     | "(" cond ")"
cmp: name OP value            -> compare
   | name OP PATTERN_FN "(" STRING ")"  -> compare_pattern
   | name IN vlist            -> in_
   | name NOT IN vlist        -> not_in
vlist: "[" [value ("," value)*] "]"
     | "(" [value ("," value)*] ")"

value: STRING                 -> string
     | NUMBER                 -> number
     | TRUE                   -> true
     | FALSE                  -> false

timerange: "[" tpoint "]"                 -> range_last
         | "[" [tpoint] ":" [tpoint] "]"  -> range_between
tpoint: DURATION | INT

by_clause: BY name ("," name)*
order: ORDER BY oitem ("," oitem)*
oitem: name [DIRECTION]
limit: LIMIT INT
offset: OFFSET INT
slimit: SLIMIT INT
soffset: SOFFSET INT

name: NAME | BACKTICK
text: BACKTICK | STRING

RE: "re"
PATTERN_FN.2: /(re|wildcard)(?=\s*\()/i
AND: "AND"i | "&&"
OR: "OR"i | "||"
NOT: "NOT"i
IN: "IN"i
ORDER: "ORDER"i
BY: "BY"i
LIMIT: "LIMIT"i
OFFSET: "OFFSET"i
SLIMIT: "SLIMIT"i
SOFFSET: "SOFFSET"i
DIRECTION: "ASC"i | "DESC"i
TRUE: "true"i
FALSE: "false"i
STAR: "*"
OP: "==" | "=" | "!=" | "<>" | "<=" | ">=" | "<" | ">"
DURATION.2: /[0-9]+(ms|s|m|h|d|w)(?![A-Za-z0-9_])/i
INT: /[0-9]+/
NUMBER: /[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?/
NAME: /[A-Za-z_][A-Za-z0-9_.\-]*/
BACKTICK: /`[^`]*`/
STRING: /'(?:[^'\\]|\\.)*'/ | /"(?:[^"\\]|\\.)*"/

%import common.WS
%ignore WS
"""

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}

# point column → (SQL expression, kind); kind: num | str | const
_COLUMNS: dict[str, tuple[str, str]] = {
    "time": ("time_ms", "num"),
    "start": ("start_us", "num"),
    "duration": ("duration_us", "num"),
    "trace_id": ("trace_id", "str"),
    "span_id": ("span_id", "str"),
    "parent_id": ("parent_id", "str"),
    "service": ("service", "str"),
    "status": ("status", "str"),
    "span_kind": ("span_kind", "str"),
    "resource": ("resource", "str"),
    "operation": ("resource", "str"),
    "source": ("?", "const"),
}
ALL_COLUMNS = [
    "time",
    "trace_id",
    "span_id",
    "parent_id",
    "service",
    "status",
    "span_kind",
    "source",
    "resource",
    "operation",
    "start",
    "duration",
    "message",
]
_SQL_OPS = {"=": "=", "==": "=", "!=": "!=", "<>": "!=", "<": "<", ">": ">", "<=": "<=", ">=": ">="}


@dataclass
class Query:
    """A parsed DQL query (the supported subset)."""

    namespace: str
    sources: list[tuple[str, str]] = field(default_factory=list)  # ("re"|"name", text)
    columns: list[str] | None = None  # None: all
    where: Any = None  # ("and"|"or", a, b) | ("cmp", col, op, value) | ("in", col, values, negated)
    time_range: tuple[int | None, int | None] | None = None  # resolved ms bounds
    order: list[tuple[str, bool]] = field(default_factory=list)  # (column, descending)
    limit: int | None = None
    offset: int | None = None


def _unquote(tok: str) -> str:
    if tok[0] == "`":
        return tok[1:-1]
    body = tok[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m.group(1), m.group(1)), body)


class _Unsupported(Exception):
    pass


@v_args(inline=True)
class _ToQuery(Transformer_NonRecursive):  # type: ignore[misc]
    """The parse tree as a :class:`Query`; iterative, so a filter of 2000 conditions does not exhaust the stack."""

    def __init__(self, now_ms: int) -> None:
        super().__init__()
        self.now_ms = now_ms

    # leaves
    def name(self, tok: Token) -> str:
        return _unquote(tok) if tok.type == "BACKTICK" else str(tok)

    def text(self, tok: Token) -> str:
        return _unquote(tok)

    def string(self, tok: Token) -> str:
        return _unquote(tok)

    def number(self, tok: Token) -> int | float:
        text = str(tok)
        value: int | float
        try:
            value = int(text)
        except ValueError:  # a decimal, or an int of more than 4300 digits (float: inf, refused below)
            value = float(text)
        try:
            return bounded_number(value)
        except QueryError as exc:
            raise _Unsupported(str(exc)) from None

    def true(self, _tok: Token) -> bool:
        return True

    def false(self, _tok: Token) -> bool:
        return False

    def namespace(self, tok: Token) -> str:
        ns = str(tok)
        if ns.upper() not in ("T", "M"):
            raise _Unsupported(
                f"namespace {ns!r} is not supported by the embedded collector; only T (tracing) and M (metrics) are"
            )
        return ns.upper()

    def source_re(self, _re: Token, pattern: str) -> tuple[str, str]:
        try:
            compile_regex(pattern)
        except QueryError as exc:
            raise _Unsupported(str(exc)) from None
        return ("re", pattern)

    def source_name(self, name: str) -> tuple[str, str]:
        return ("name", name)

    def sources(self, *items: tuple[str, str]) -> tuple[str, list[tuple[str, str]]]:
        return ("sources", list(items))

    def all_columns(self, _star: Token) -> None:
        return None

    def col(self, name: str) -> str:
        return name

    def func(self, fname: Token, *_args: Any) -> str:
        raise _Unsupported(f"functions such as {fname}() are not supported; list plain columns")

    def collist(self, *cols: str) -> list[str]:
        return list(cols)

    def columns(self, cols: list[str] | None) -> tuple[str, list[str] | None]:
        return ("columns", cols)

    def where(self, cond: Any = None) -> tuple[str, Any]:
        return ("where", cond)

    def and_(self, a: Any, *rest: Any) -> Any:
        b = rest[-1]
        return ("and", a, b)

    def or_(self, a: Any, _op: Token, b: Any) -> Any:
        return ("or", a, b)

    def compare(self, col: str, op: Token, value: Any) -> Any:
        return ("cmp", col, _SQL_OPS[str(op)], value)

    def compare_pattern(self, col: str, op: Token, fn: Token, text: Token) -> Any:
        if str(op) not in ("=", "==", "!=", "<>"):
            raise _Unsupported(f"{fn}() can only be used with = or != (`{col}` {op} {fn}(...))")
        pattern = _unquote(text)
        if str(fn).lower() == "wildcard":
            # DQL wildcard: * any run of characters, ? one character, matched against the whole value
            pattern = wildcard_regex(pattern)
        try:
            compile_regex(pattern)
        except QueryError as exc:
            raise _Unsupported(str(exc)) from None
        return ("match", col, pattern, _SQL_OPS[str(op)] == "!=")

    def vlist(self, *values: Any) -> list[Any]:
        if len(values) > MAX_IN_VALUES:
            raise _Unsupported(f"an IN list of {len(values)} values; at most {MAX_IN_VALUES}")
        return [v for v in values if v is not None]

    def in_(self, col: str, _in: Token, values: list[Any]) -> Any:
        return ("in", col, values, False)

    def not_in(self, col: str, _not: Token, _in: Token, values: list[Any]) -> Any:
        return ("in", col, values, True)

    def tpoint(self, tok: Token) -> int:
        if tok.type == "DURATION":
            m = re.fullmatch(r"([0-9]+)([A-Za-z]+)", str(tok))
            assert m is not None
            ago = int(m.group(1)) * _UNITS_MS[m.group(2).lower()]
            try:
                return check_time(self.now_ms - ago, f"time range [{tok}]")
            except QueryError as exc:
                raise _Unsupported(str(exc)) from None
        try:
            return check_time(int(tok), "time range bound")
        except QueryError as exc:
            raise _Unsupported(str(exc)) from None

    def range_last(self, start: int) -> tuple[str, tuple[int | None, int | None]]:
        return ("time", (start, self.now_ms))

    def range_between(self, start: int | None, end: int | None) -> tuple[str, tuple[int | None, int | None]]:
        return ("time", (start, end))

    def by_clause(self, *_items: Any) -> Any:
        raise _Unsupported("BY grouping is not supported by the embedded collector; query raw points")

    def oitem(self, name: str, direction: Token | None = None) -> tuple[str, bool]:
        return (name, direction is None or str(direction).upper() == "DESC")

    def order(self, _order: Token, _by: Token, *items: tuple[str, bool]) -> tuple[str, list[tuple[str, bool]]]:
        return ("order", list(items))

    def limit(self, _kw: Token, n: Token) -> tuple[str, int]:
        try:
            return ("limit", bounded_int(int(n), "LIMIT"))
        except QueryError as exc:
            raise _Unsupported(str(exc)) from None

    def offset(self, _kw: Token, n: Token) -> tuple[str, int]:
        try:
            return ("offset", bounded_int(int(n), "OFFSET"))
        except QueryError as exc:
            raise _Unsupported(str(exc)) from None

    def slimit(self, *_a: Any) -> Any:
        raise _Unsupported("SLIMIT is not supported (no series grouping); use LIMIT")

    def soffset(self, *_a: Any) -> Any:
        raise _Unsupported("SOFFSET is not supported (no series grouping); use OFFSET")

    def start(self, namespace: str, *parts: tuple[str, Any]) -> Query:
        q = Query(namespace=namespace)
        for key, value in parts:
            if key == "sources":
                q.sources = value
            elif key == "columns":
                q.columns = value
            elif key == "where":
                q.where = value
            elif key == "time":
                q.time_range = value
            elif key == "order":
                q.order = value
            elif key == "limit":
                q.limit = value
            elif key == "offset":
                q.offset = value
        return q


_parser: Lark | None = None
_parser_lock = threading.Lock()


def _get_parser() -> Lark:
    global _parser
    with _parser_lock:
        if _parser is None:
            _parser = Lark(GRAMMAR, parser="lalr", maybe_placeholders=True)
        return _parser


def warm_up() -> None:
    """Build the parser now (the first query would otherwise pay for it)."""
    _get_parser()


def parse(text: str, now_ms: int | None = None) -> Query:
    """Parse a DQL query of the supported subset.

    Raises:
        QueryError: the query is malformed or uses an unsupported feature; the message says which.
    """
    if not isinstance(text, str) or not text.strip():
        raise QueryError("empty query")
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(f"query of {len(text)} characters; at most {MAX_QUERY_CHARS}")
    _check_nesting(text)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    try:
        tree = _get_parser().parse(text)
        return _ToQuery(now).transform(tree)  # type: ignore[no-any-return]
    except VisitError as exc:
        if isinstance(exc.orig_exc, _Unsupported):
            raise QueryError(str(exc.orig_exc)) from None
        raise QueryError(f"cannot evaluate query: {exc.orig_exc}") from None
    except UnexpectedInput as exc:
        raise QueryError(_syntax_message(text, exc)) from None
    except LarkError as exc:  # pragma: no cover - other parser failures
        raise QueryError(f"invalid DQL: {exc}") from None


#: Deepest nesting of (), [] and {} in a query (the parser and the evaluators recurse on it).
MAX_NESTING = 32


def _check_nesting(text: str) -> None:
    """Refuse a query nested deeper than :data:`MAX_NESTING` before it reaches the parser (a RecursionError)."""
    depth = 0
    quote = ""
    escaped = False
    for ch in text:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\" and quote != "`":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "'\"`":
            quote = ch
        elif ch in "([{":
            depth += 1
            if depth > MAX_NESTING:
                raise QueryError(f"query nested more than {MAX_NESTING} levels deep")
        elif ch in ")]}":
            depth -= 1


def _syntax_message(text: str, exc: UnexpectedInput) -> str:
    pos = getattr(exc, "pos_in_stream", None)
    where = f" at column {exc.column}" if getattr(exc, "column", None) not in (None, -1) else ""
    if isinstance(exc, UnexpectedEOF):
        return "invalid DQL: the query ends too early"
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        if tok.type == "$END":
            return "invalid DQL: the query ends too early"
        return f"invalid DQL: unexpected {str(tok)!r}{where} (unsupported syntax or a typo)"
    if isinstance(exc, UnexpectedCharacters):
        ch = text[pos] if pos is not None and pos < len(text) else "?"
        return f"invalid DQL: unexpected character {ch!r}{where} (unsupported syntax or a typo)"
    return f"invalid DQL{where}"


# --- evaluation ------------------------------------------------------------------------------


def _column(name: str) -> tuple[str, str, list[Any]]:
    """SQL expression, kind and parameters of a column."""
    if name == "message":
        raise QueryError("filtering or ordering on `message` is not supported; filter on tags and fields")
    spec = _COLUMNS.get(name)
    if spec is not None:
        expr, kind = spec
        return expr, kind, ([MEASUREMENT] if kind == "const" else [])
    if not name or '"' in name or "\\" in name:
        raise QueryError(f"invalid column name {name!r}")
    return "json_extract(tags, ?)", "str", [f'$."{name}"']


def _cmp_sql(col: str, op: str, value: Any) -> tuple[str, list[Any]]:
    expr, kind, params = _column(col)
    if kind == "num":
        if isinstance(value, bool):
            raise QueryError(f"cannot compare numeric column `{col}` with {str(value).lower()}")
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise QueryError(f"cannot compare numeric column `{col}` with string {value!r}") from None
        return f"{expr} {op} ?", [*params, value]
    # string-valued column (tags, ids, names)
    if isinstance(value, bool):
        if op not in ("=", "!="):
            raise QueryError(f"operator {op} is not defined for booleans (`{col}`)")
        return f"{expr} {op} ?", [*params, "true" if value else "false"]
    if isinstance(value, (int, float)):
        return f"dql_num({expr}) {op} ?", [*params, value]
    return f"{expr} {op} ?", [*params, value]


def _count_conditions(node: Any) -> int:
    count = 0
    stack = [node]
    while stack:
        n = stack.pop()
        if n[0] in ("and", "or"):
            stack += [n[1], n[2]]
        else:
            count += 1
    return count


def _where_sql(node: Any) -> tuple[str, list[Any]]:
    kind = node[0]
    if kind in ("and", "or"):
        # flat (a AND b AND c): SQLite's parser overflows its stack on ~100 nested parentheses
        parts: list[str] = []
        params: list[Any] = []
        for operand in operands(node):
            sql, p = _where_sql(operand)
            parts.append(sql)
            params += p
        return "(" + f" {kind.upper()} ".join(parts) + ")", params
    if kind == "cmp":
        return _cmp_sql(node[1], node[2], node[3])
    if kind == "match":
        _, col, pattern, negated = node
        expr, ckind, params = _column(col)
        if ckind == "const":
            expr = "?"
        # != re(...) keeps points that have the column and do not match, as != does for values
        return (f"({expr} IS NOT NULL AND NOT {expr} REGEXP ?)" if negated else f"{expr} REGEXP ?"), (
            [*params, *params, pattern] if negated else [*params, pattern]
        )
    _, col, values, negated = node
    if not values:
        _column(col)
        return ("1" if negated else "0"), []
    # one SQL IN per form of the comparison (a tag against strings, against numbers...): a chain of 1000 ORs
    # is deeper than SQLite's expression tree allows
    groups: dict[tuple[str, tuple[Any, ...]], list[Any]] = {}
    for v in values:
        sql, p = _cmp_sql(col, "=", v)
        groups.setdefault((sql.removesuffix(" = ?"), tuple(p[:-1])), []).append(p[-1])
    in_parts: list[str] = []
    in_params: list[Any] = []
    for (expr, col_params), group in groups.items():
        in_parts.append(f"{expr} {'NOT IN' if negated else 'IN'} ({','.join('?' * len(group))})")
        in_params += [*col_params, *group]
    return "(" + (" AND " if negated else " OR ").join(in_parts) + ")", in_params


def run_query(storage: Storage, spec: dict[str, Any], now_ms: int | None = None) -> dict[str, Any]:
    """Evaluate one entry of ``queries`` → ``{"series": [...], "total_hits": n}``."""
    if not isinstance(spec, dict) or not isinstance(spec.get("query"), str):
        raise QueryError('each query must be an object with a "query" string')
    q = parse(spec["query"], now_ms)
    if q.where is not None and (n := _count_conditions(q.where)) > MAX_CONDITIONS:
        raise QueryError(f"a filter of {n} conditions; at most {MAX_CONDITIONS}")
    if q.namespace == "M":
        return run_metrics_query(storage, q, spec)
    where: list[str] = []
    params: list[Any] = []

    sources = q.sources
    if sources and not any((k == "re" and v in (".*", "")) or (k == "name" and v == MEASUREMENT) for k, v in sources):
        parts = []
        for k, v in sources:
            parts.append("service REGEXP ?" if k == "re" else "service = ?")
            params.append(v)
        where.append("(" + " OR ".join(parts) + ")")

    rng = intersect_ranges(q.time_range, request_range(spec.get("time_range")))
    if rng is not None:
        if rng[0] is not None:
            where.append("time_ms >= ?")
            params.append(rng[0])
        if rng[1] is not None:
            where.append("time_ms <= ?")
            params.append(rng[1])
    if q.where is not None:
        sql, p = _where_sql(q.where)
        where.append(sql)
        params += p
    where_sql = (" WHERE " + " AND ".join(where)) if where else ""

    order_sql: list[str] = []
    order_params: list[Any] = []
    for col, desc in q.order or [("time", True)]:
        expr, _kind, p = _column(col)
        order_sql.append(f"{expr} {'DESC' if desc else 'ASC'}")
        order_params += p
    first_desc = (q.order or [("time", True)])[0][1]
    order_sql.append(f"id {'DESC' if first_desc else 'ASC'}")

    limit = q.limit if q.limit is not None else int_param(spec, "limit")
    offset = q.offset if q.offset is not None else int_param(spec, "offset")
    limit = DEFAULT_LIMIT if limit is None else limit
    offset = offset or 0

    db = storage.reader()
    total = db.execute(f"SELECT COUNT(*) FROM spans{where_sql}", params).fetchone()[0]
    if limit == 0 or total <= offset:
        return {"series": [], "total_hits": total}

    all_cols = q.columns is None
    cols = list(ALL_COLUMNS) if all_cols else list(q.columns or [])
    if "time" not in cols:
        cols.insert(0, "time")
    elif cols[0] != "time":
        cols.remove("time")
        cols.insert(0, "time")
    select = [
        "id",
        "ctx_id",
        "time_ms",
        "trace_id",
        "span_id",
        "parent_id",
        "service",
        "status",
        "span_kind",
        "resource",
        "start_us",
        "duration_us",
        "tags",
    ]
    want_message = "message" in cols
    if want_message:
        select.append("span_pb")
    sql = f"SELECT {', '.join(select)} FROM spans{where_sql} ORDER BY {', '.join(order_sql)} LIMIT ? OFFSET ?"
    rows = db.execute(sql, [*params, *order_params, limit, offset]).fetchall()

    tag_rows = [json.loads(r[12]) if r[12] else {} for r in rows]
    if all_cols:
        extra = sorted({k for t in tag_rows for k in t} - set(cols))
        cols += extra
    contexts: dict[int, tuple[str, str]] = {}
    getters: list[Any] = []
    for c in cols:
        if c in _FIELD_INDEX:
            getters.append(_FIELD_INDEX[c])
        elif c == "source":
            getters.append(-1)
        elif c == "message":
            getters.append(-2)
        else:
            getters.append(c)
    values = []
    for r, tags in zip(rows, tag_rows):
        out: list[Any] = []
        for g in getters:
            if isinstance(g, str):
                out.append(tags.get(g))
            elif g >= 0:
                out.append(r[g])
            elif g == -1:
                out.append(MEASUREMENT)
            else:
                ctx = contexts.get(r[1])
                if ctx is None:
                    ctx = contexts[r[1]] = storage.context(r[1])
                out.append(build_message(r[13], ctx[0], ctx[1]))
        values.append(out)
    return {"series": [{"name": MEASUREMENT, "columns": cols, "values": values}], "total_hits": total}


_FIELD_INDEX = {
    "time": 2,
    "trace_id": 3,
    "span_id": 4,
    "parent_id": 5,
    "service": 6,
    "status": 7,
    "span_kind": 8,
    "resource": 9,
    "operation": 9,
    "start": 10,
    "duration": 11,
}


def run_request(storage: Storage, payload: Any, now_ms: int | None = None) -> list[dict[str, Any]]:
    """Evaluate a ``/v1/query/raw`` body → the ``content`` list (one entry per query)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("queries"), list) or not payload["queries"]:
        raise QueryError('body must be {"queries": [{"query": "T::...", ...}, ...]}')
    if len(payload["queries"]) > MAX_QUERIES:
        raise QueryError(f"{len(payload['queries'])} queries in one request; at most {MAX_QUERIES}")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return [run_query(storage, spec, now) for spec in payload["queries"]]
