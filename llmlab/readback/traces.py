"""A notebook trace view (``ll.traces(df)``): the list of calls, each opening onto its input and
output messages and its span tree, like Guance's trace list and trace detail.

The call list comes from a call frame (``ll.spans()``: one row per LLM span); the rest of each
trace (the ``@workflow``/``@task`` spans around the ``openai.chat`` span, a Flask server span…)
is read with :func:`trace_spans`, from the local store or over DQL, once, when the view is
first rendered. The view renders as plain HTML (``<details>`` rows: click one to open it), so
it works in JupyterLab, in a static notebook and under nbval; :meth:`TraceView.widget` gives an
ipywidgets version (a selection list and a detail pane). All text is HTML-escaped.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from typing import Any

import pandas as pd

from llmlab import schema
from llmlab.config import get_config
from llmlab.errors import ConfigError, ValidationError

__all__ = ["TraceView", "span_tree", "trace_spans", "traces"]

SPAN_COLUMNS = [
    "trace_id",
    "span_id",
    "parent_id",
    "name",
    "service",
    "kind",
    "start_time",
    "end_time",
    "duration_ms",
    "status",
    "error",
    "attributes",
]
_ID_CHUNK = 50
_MAX_TEXT = 4000


def _ids(trace_ids: str | Iterable[str]) -> list[str]:
    ids = [trace_ids] if isinstance(trace_ids, str) else list(trace_ids)
    out = []
    for t in ids:
        if not isinstance(t, str) or not t or any(c not in "0123456789abcdefABCDEF" for c in t):
            raise ValidationError("trace_ids", t, "expected hex trace ids")
        out.append(t.lower())
    return list(dict.fromkeys(out))


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=SPAN_COLUMNS)
    df["start_time"] = pd.to_datetime(df["start_time"], utc=True)
    df["end_time"] = pd.to_datetime(df["end_time"], utc=True)
    df["duration_ms"] = pd.to_numeric(df["duration_ms"], errors="coerce").astype("Float64")
    return df.sort_values(["trace_id", "start_time"], kind="stable").reset_index(drop=True)


def _local_spans(ids: list[str]) -> list[dict[str, Any]]:
    from llmlab.store import get_store
    from llmlab.store.spanbytes import span_attributes

    store = get_store(get_config().home)
    rows: list[dict[str, Any]] = []
    for i in range(0, len(ids), _ID_CHUNK):
        chunk = ids[i : i + _ID_CHUNK]
        sql = (
            "SELECT trace_id, span_id, parent_id, name, service, start_ns, end_ns, row_json, attrs_json, otlp FROM spans"
            f" WHERE trace_id IN ({','.join('?' * len(chunk))}) ORDER BY start_ns"
        )
        for trace_id, span_id, parent_id, name, service, start, end, row_json, attrs_json, otlp in store.read(
            sql, chunk
        ):
            row = json.loads(row_json) if row_json else {}
            start, end = schema.datakit_times(start, end)
            rows.append(
                {
                    "trace_id": trace_id,
                    "span_id": span_id,
                    "parent_id": parent_id or None,
                    "name": name,
                    "service": service,
                    "kind": None,
                    "start_time": pd.Timestamp(start, unit="ns", tz="UTC"),
                    "end_time": pd.Timestamp(end, unit="ns", tz="UTC"),
                    "duration_ms": (end - start) / 1e6 if start is not None and end is not None else None,
                    "status": row.get("status") or "ok",
                    "error": row.get("error") or "",
                    "attributes": span_attributes(attrs_json, otlp),
                }
            )
    return rows


def _datakit_spans(ids: list[str], since_ns: int | None, until_ns: int | None) -> list[dict[str, Any]]:
    import time

    from llmlab.readback.datakit_query import decode_point, iter_points

    config = get_config()
    now_ms = int(time.time() * 1000)
    start_ms = since_ns // 1_000_000 if since_ns is not None else now_ms - 30 * 24 * 3600 * 1000
    end_ms = until_ns // 1_000_000 + 1 if until_ns is not None else now_ms + 60_000
    rows: list[dict[str, Any]] = []
    for i in range(0, len(ids), _ID_CHUNK):
        chunk = ids[i : i + _ID_CHUNK]
        cond = ", ".join(json.dumps(t) for t in chunk)
        # every column: a real DataKit keeps customer_tags attributes and the error text
        # (error_message) outside the message
        query = f"T::re(`.*`) {{ `trace_id` IN [{cond}] }} ORDER BY time ASC"
        for point in iter_points(config, query, (start_ms, end_ms), None):
            p = decode_point(point)
            start, end = schema.datakit_times(p.start_ns, p.end_ns)  # as ll.spans(): whole µs in every source
            rows.append(
                {
                    "trace_id": p.trace_id,
                    "span_id": p.span_id,
                    "parent_id": p.parent_id,
                    "name": p.name,
                    "service": p.service,
                    "kind": p.kind,
                    "start_time": pd.Timestamp(start or 0, unit="ns", tz="UTC"),
                    "end_time": pd.Timestamp(end or start or 0, unit="ns", tz="UTC"),
                    "duration_ms": ((end or 0) - (start or 0)) / 1e6 if end else 0.0,
                    "status": "error" if p.is_error else "ok",
                    "error": p.error,
                    "attributes": p.attrs,
                }
            )
    return rows


def trace_spans(
    trace_ids: str | Iterable[str], source: str | None = None, since: Any = None, until: Any = None
) -> pd.DataFrame:
    """Every span of the given traces (workflow, task, LLM and any other span), one row each.

    Args:
        trace_ids: one trace id (32 hex digits) or several.
        source: ``"local"`` (the local store: llmlab's own sweeps) or ``"datakit"`` (DQL, for
            any app exporting to DataKit or the embedded collector); default as ``ll.spans()``.
        since, until: narrow the DQL time range (default: the last 30 days).

    Returns:
        columns ``trace_id, span_id, parent_id, name, service, kind, start_time, end_time,
        duration_ms, status, error, attributes`` (a dict), ordered by trace and start time.
    """
    from llmlab.readback.frames import SOURCES, to_ns

    ids = _ids(trace_ids)
    config = get_config()
    if source is None:
        source = "local" if config.datakit is None else "datakit"
    if source not in SOURCES:
        raise ConfigError(f"source={source!r}: expected one of {', '.join(SOURCES)}")
    if not ids:
        return _frame([])
    if source == "local":
        return _frame(_local_spans(ids))
    return _frame(_datakit_spans(ids, to_ns(since, "since"), to_ns(until, "until")))


def span_tree(spans: pd.DataFrame) -> list[tuple[int, pd.Series]]:
    """The spans of one trace in tree order: ``[(depth, span_row), ...]``, children by start time.

    A span whose parent is not among ``spans`` (a root, or a parent that was not exported) is
    shown at depth 0.
    """
    ids = set(spans["span_id"])
    children: dict[Any, list[pd.Series]] = {}
    roots: list[pd.Series] = []
    for _, s in spans.sort_values("start_time", kind="stable").iterrows():
        if s["parent_id"] in ids and s["parent_id"] != s["span_id"]:
            children.setdefault(s["parent_id"], []).append(s)
        else:
            roots.append(s)
    out: list[tuple[int, pd.Series]] = []
    seen: set[Any] = set()

    def walk(s: pd.Series, depth: int) -> None:
        if s["span_id"] in seen:  # malformed data with a cycle
            return
        seen.add(s["span_id"])
        out.append((depth, s))
        for c in children.get(s["span_id"], []):
            walk(c, depth + 1)

    for r in roots:
        walk(r, 0)
    return out


def messages(attrs: dict[str, Any]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(input, output) messages of an LLM span as ``[(role, text), ...]``, in either attribute generation."""

    def parse(value: Any) -> list[tuple[str, str]]:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return []
        if not isinstance(value, list):
            return []
        return [(str(m.get("role") or ""), schema.message_text(m)) for m in value if isinstance(m, dict)]

    def legacy(prefix: str) -> list[tuple[str, str]]:
        out, i = [], 0
        while any(f"{prefix}.{i}.{k}" in attrs for k in ("content", "role")):
            out.append(
                (
                    str(attrs.get(f"{prefix}.{i}.role") or ("assistant" if "completion" in prefix else "")),
                    str(attrs.get(f"{prefix}.{i}.content") or ""),
                )
            )
            i += 1
        return out

    inputs = parse(attrs.get("gen_ai.input.messages")) or legacy("gen_ai.prompt")
    outputs = parse(attrs.get("gen_ai.output.messages")) or legacy("gen_ai.completion")
    return inputs, outputs


def _esc(value: Any, limit: int = _MAX_TEXT) -> str:
    if value is None or (not isinstance(value, (str, list, dict)) and pd.isna(value)):
        return ""
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + f"… ({len(text) - limit} more characters)"
    return html.escape(text)


def _text(value: Any) -> str:
    """A cell as text: "" for None/NA (``x or ""`` fails on pandas' NA)."""
    if value is None or (not isinstance(value, (str, list, dict)) and pd.isna(value)):
        return ""
    return str(value)


def _num(value: Any, fmt: str) -> str:
    try:
        if value is None or pd.isna(value):
            return "–"
    except (TypeError, ValueError):
        return "–"
    return format(float(value), fmt)


_GRID = "display:grid;grid-template-columns:13em 16em 10em 9em 6em 7em 8em 4em;gap:0 .8em;font-family:monospace;font-size:12px"
_CELL = "overflow:hidden;text-overflow:ellipsis;white-space:nowrap"


class TraceView:
    """The calls of a frame as an expandable trace list (``ll.traces(df)``).

    Attributes:
        calls: the call rows shown (newest first).
        spans: every span of their traces (:func:`trace_spans`), read on first use.
    """

    def __init__(self, df: pd.DataFrame, source: str | None = None, limit: int = 200) -> None:
        if not isinstance(df, pd.DataFrame):
            raise ValidationError("df", type(df).__name__, "expected a pandas DataFrame")
        missing = [c for c in ("trace_id", "span_id", "start_time") if c not in df.columns]
        if missing:
            raise ValidationError("df", missing, "lacks these columns: pass ll.spans() or res.df")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
            raise ValidationError("limit", limit, "expected a positive integer")
        calls = df[df["trace_id"].notna()].copy()
        calls["start_time"] = pd.to_datetime(calls["start_time"], utc=True)
        self.total = len(calls)
        self.calls = calls.sort_values("start_time", ascending=False, kind="stable").head(limit).reset_index(drop=True)
        self.source = source
        self._spans: pd.DataFrame | None = None

    @property
    def spans(self) -> pd.DataFrame:
        if self._spans is None:
            if self.calls.empty:
                self._spans = _frame([])
            else:
                t = self.calls["start_time"]
                self._spans = trace_spans(
                    self.calls["trace_id"].astype(str).tolist(),
                    source=self.source,
                    since=t.min() - pd.Timedelta("1h"),
                    until=t.max() + pd.Timedelta("1h"),
                )
        return self._spans

    def __len__(self) -> int:
        return len(self.calls)

    def trace(self, i: int) -> pd.DataFrame:
        """All spans of the i-th call's trace."""
        tid = self.calls.loc[i, "trace_id"]
        return self.spans[self.spans["trace_id"] == tid].reset_index(drop=True)

    def tree(self, i: int) -> str:
        """The i-th call's span tree as indented text (``name  duration  status``)."""
        lines = []
        for depth, s in span_tree(self.trace(i)):
            lines.append(f"{'  ' * depth}{s['name']}  {_num(s['duration_ms'], '.1f')} ms  {s['status']}")
        return "\n".join(lines)

    def _llm_attrs(self, i: int) -> dict[str, Any]:
        sid = self.calls.loc[i, "span_id"]
        spans = self.trace(i)
        match = spans[spans["span_id"] == sid]
        return match.iloc[0]["attributes"] if len(match) else {}

    # --- HTML ----------------------------------------------------------------------------------

    def _summary_cells(self, row: pd.Series) -> list[str]:
        t = row["start_time"]
        tokens = f"{_num(row.get('input_tokens'), '.0f')}→{_num(row.get('output_tokens'), '.0f')}"
        status = _text(row.get("status"))
        color = "#c0392b" if status == "error" else "#1e8449"
        return [
            _esc(t.strftime("%Y-%m-%d %H:%M:%S") if pd.notna(t) else ""),
            _esc(row.get("service")),
            _esc(row.get("workflow")),
            _esc(row.get("model")),
            f"{_num(row.get('latency_ms'), '.0f')} ms",
            tokens,
            f"${_num(row.get('cost_usd'), '.6f')}",
            f'<span style="color:{color}">{_esc(status)}</span>',
        ]

    def detail_html(self, i: int) -> str:
        """The detail pane of the i-th call: input and output messages, span tree (waterfall)."""
        row = self.calls.loc[i]
        inputs, outputs = messages(self._llm_attrs(i))
        if not inputs and isinstance(row.get("prompt"), str):
            inputs = [("user", row["prompt"])]
        if not outputs and isinstance(row.get("completion"), str):
            outputs = [("assistant", row["completion"])]
        parts = ['<div style="margin:.4em 0 .8em 1.2em;font-size:12px">']
        if _text(row.get("status")) == "error" and _text(row.get("error")):
            parts.append(f'<div style="color:#c0392b">error: {_esc(row["error"])}</div>')
        for title, msgs in (("input", inputs), ("output", outputs)):
            parts.append(f"<div><b>{title}</b></div>")
            if not msgs:
                parts.append('<div style="color:#888">(not recorded: content tracing off?)</div>')
            for role, text in msgs:
                parts.append(
                    f'<div style="white-space:pre-wrap;border-left:3px solid #ccc;padding-left:.5em;margin:.2em 0">'
                    f'<span style="color:#888">{_esc(role)}</span> {_esc(text)}</div>'
                )
        params = [
            f"{k}={_num(row.get(k), 'g')}" for k in ("temperature", "top_p", "max_tokens") if pd.notna(row.get(k))
        ]
        if pd.notna(row.get("ttft_ms")):
            params.append(f"ttft={_num(row.get('ttft_ms'), '.0f')} ms")
        if params:
            parts.append(f'<div style="color:#555">{_esc(", ".join(params))}</div>')
        parts.append("<div><b>span tree</b></div>")
        spans = self.trace(i)
        if spans.empty:
            parts.append('<div style="color:#888">(no spans found for this trace)</div>')
        else:
            t0 = spans["start_time"].min()
            total = max((spans["end_time"].max() - t0).total_seconds() * 1000, 1e-6)
            parts.append('<div style="font-family:monospace">')
            for depth, s in span_tree(spans):
                left = (s["start_time"] - t0).total_seconds() * 1000 / total * 100
                width = max(float(s["duration_ms"] or 0) / total * 100, 0.5)
                mark = " ◀" if s["span_id"] == row["span_id"] else ""
                color = "#c0392b" if s["status"] == "error" else "#2e86c1"
                parts.append(
                    '<div style="display:flex;align-items:center;gap:.5em">'
                    f'<div style="width:22em;box-sizing:border-box;padding-left:{depth * 1.2}em;white-space:nowrap;overflow:hidden">'
                    f"{_esc(s['name'])}{mark}</div>"
                    f'<div style="width:6em;text-align:right">{_num(s["duration_ms"], ".1f")} ms</div>'
                    f'<div style="flex:1;position:relative;height:.8em;background:#f4f4f4;min-width:12em">'
                    f'<div style="position:absolute;left:{left:.2f}%;width:{width:.2f}%;height:100%;background:{color}"></div>'
                    "</div></div>"
                )
            parts.append("</div>")
        parts.append("</div>")
        return "".join(parts)

    def _repr_html_(self) -> str:
        head = ["time", "service", "workflow", "model", "latency", "tokens", "cost", "status"]
        out = [
            f'<div class="llmlab-traces"><div style="margin-bottom:.3em">{len(self)} call(s)'
            + (f" (newest {len(self)} of {self.total})" if self.total > len(self) else "")
            + " — click a row for its messages and span tree</div>",
            f'<div style="{_GRID};font-weight:bold;margin-left:1.1em">'
            + "".join(f"<div>{h}</div>" for h in head)
            + "</div>",
        ]
        for i in range(len(self)):
            cells = "".join(
                f'<div style="{_CELL}" title="{c}">{c}</div>' if "<" not in c else f"<div>{c}</div>"
                for c in self._summary_cells(self.calls.loc[i])
            )
            out.append(
                f'<details><summary style="cursor:pointer"><div style="{_GRID};display:inline-grid">{cells}</div>'
                f"</summary>{self.detail_html(i)}</details>"
            )
        out.append("</div>")
        return "".join(out)

    def widget(self) -> Any:
        """An ipywidgets view: a list of calls and the selected call's detail pane."""
        import ipywidgets as w

        options = []
        for i in range(len(self)):
            r = self.calls.loc[i]
            t = r["start_time"].strftime("%H:%M:%S") if pd.notna(r["start_time"]) else ""
            options.append(
                (
                    f"{t}  {_text(r.get('workflow'))}  {_text(r.get('model'))}  "
                    f"{_num(r.get('latency_ms'), '.0f')} ms  {_text(r.get('status'))}",
                    i,
                )
            )
        select = w.Select(options=options, rows=min(12, max(len(options), 1)), layout=w.Layout(width="100%"))
        pane = w.HTML(self.detail_html(0) if len(self) else "no calls")

        def on_change(change: dict[str, Any]) -> None:
            if change.get("new") is not None:
                pane.value = self.detail_html(int(change["new"]))

        select.observe(on_change, names="value")
        return w.VBox([select, pane])


def traces(df: pd.DataFrame, source: str | None = None, limit: int = 200) -> TraceView:
    """A notebook trace view of the calls in ``df`` (``ll.spans()`` or ``res.df``).

    Displays as a list of calls (time, service, workflow, model, latency, tokens, cost,
    status); clicking one shows its input and output messages and its span tree (workflow →
    task → ``openai.chat``). ``.widget()`` gives an ipywidgets version, ``.tree(i)`` the tree
    as text, ``.spans`` all spans of the listed traces.

    Args:
        df: the calls (one row per LLM span, with ``trace_id``/``span_id``).
        source: where to read the rest of each trace: ``"local"`` or ``"datakit"``; default as
            ``ll.spans()``.
        limit: list at most this many calls (the newest).
    """
    return TraceView(df, source=source, limit=limit)
