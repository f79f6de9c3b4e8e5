"""A sweep as one self-contained HTML file a colleague can open without Python (``res.save_report``).

The file holds the grid (every prompt row and setting, paged in the browser, ratings and cell details with
the whole message list sent), the summary table (``ll.summary``), the verdicts of ``ll.compare`` for each
swept setting and the charts (plotly, its JavaScript inlined once from the installed ``plotly`` package).
Nothing in it is fetched from the network. It sits at the results level: it draws on the analysis (stats,
charts) and the view (the grid's HTML), which must not know each other.
"""

from __future__ import annotations

import datetime as _dt
import html
from pathlib import Path
from typing import Any

import pandas as pd

from llmlab.analysis.money import show_money

__all__ = ["render_report", "write_report"]

_PAGE_CSS = """
<style>
body{font:13px/1.4 system-ui,sans-serif;margin:16px 24px;color:#222}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:22px 0 6px;border-bottom:1px solid #ddd}
.llr-meta{color:#555}
table.llr-table{border-collapse:collapse;font-size:12px}
table.llr-table th,table.llr-table td{border:1px solid #ddd;padding:2px 6px;text-align:right}
table.llr-table th{background:#f2f2f2}
.llr-verdict{margin:4px 0 10px;padding:4px 8px;border-left:4px solid #1e88e5;background:#f5f9ff}
.llr-none{color:#777;font-style:italic}
.llr-chart{max-width:1000px}
</style>
"""

#: score columns compared besides latency when they hold numbers (ratings from the grid, judge scores)
_EXTRA_METRICS = ("rating", "score")


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _table(df: pd.DataFrame) -> str:
    if df is None or df.empty:
        return '<p class="llr-none">no rows</p>'
    shown = show_money(df)._display_frame()  # money as format_usd (µ$ for tiny sums), like the notebook shows it
    return shown.to_html(index=False, classes="llr-table", border=0, na_rep="–", float_format=lambda v: f"{v:.4g}")


def _grid_html(result: Any, page_size: int) -> str:
    from llmlab.view.grid_html import GRID_CSS, render_static
    from llmlab.view.grid_state import GridState, specs_from_rows

    records = result.df.to_dict("records")
    skipped = result.skipped.to_dict("records") if result.skipped is not None else []
    specs = specs_from_rows(records + [dict(s, prompt=None) for s in skipped], result.message_lists())
    state = GridState(specs, (result.spec or {}).get("budget_usd"))
    state.load_rows(records, skipped, result.stopped)
    return GRID_CSS + render_static(state, page_size)


def _numeric(df: pd.DataFrame, col: str) -> bool:
    return col in df and pd.to_numeric(df[col], errors="coerce").notna().any()


def _verdicts(result: Any) -> str:
    from llmlab.analysis.stats import compare

    df = result.df
    settings = [c for c in result.setting_columns() if c in df and df[c].nunique(dropna=True) > 1]
    if not settings:
        return '<p class="llr-none">one setting only: nothing to compare</p>'
    metrics = ["latency_ms"] + [m for m in _EXTRA_METRICS if _numeric(df, m)]
    out = []
    for by in settings:
        for metric in metrics:
            try:
                table = compare(df, by=by, metric=metric)
            except Exception as exc:  # too few calls, no values: say so instead of failing the report
                out.append(f'<p class="llr-none">{_esc(by)} / {_esc(metric)}: not compared ({_esc(exc)})</p>')
                continue
            verdict = table.attrs.get("verdict") or "no verdict"
            out.append(f"<h3>{_esc(metric)} by {_esc(by)}</h3>")
            out.append(f'<div class="llr-verdict">{_esc(verdict)}</div>')
            out.append(_table(table))
    return "".join(out)


def _charts(result: Any) -> list[str]:
    from llmlab.analysis import charts

    df = result.df
    settings = [c for c in result.setting_columns() if c in df and df[c].nunique(dropna=True) > 1] or ["model"]
    figures = [charts.latency(df, by=settings[0]), charts.cost(df, by="model")]
    if _numeric(df, "ttft_ms"):
        figures.append(charts.ttft(df, by=settings[0]))
    if len(settings) >= 2:
        figures.append(charts.heatmap(df, x=settings[0], y=settings[1], value="latency_ms"))
    out = []
    for fig in figures:
        try:
            out.append(fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False}))
        except Exception as exc:  # a chart that cannot be drawn is named, the rest still are
            out.append(f'<p class="llr-none">chart not drawn: {_esc(exc)}</p>')
    return out


def render_report(result: Any, page_size: int = 20) -> str:
    """The report of a ``SweepResult`` as one HTML document (see the module docstring)."""
    from plotly.offline import get_plotlyjs

    from llmlab.analysis.stats import summary
    from llmlab.view.grid_html import STATIC_GRID_JS

    df = result.df
    spec = result.spec or {}
    settings = result.setting_columns()
    name = spec.get("name") or result.sweep_id
    meta = [
        f"sweep {result.sweep_id}",
        f"{len(df)} calls",
        f"{int((df['status'] == 'error').sum()) if len(df) else 0} errors",
        f"settings: {', '.join(settings)}",
    ]
    if result.stopped:
        meta.append(f"stopped: {result.stopped} ({len(result.skipped)} not sent)")
    meta.append(f"written {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    try:
        summary_html = _table(summary(df, by=settings))
    except Exception as exc:
        summary_html = f'<p class="llr-none">no summary: {_esc(exc)}</p>'
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>llmlab report: {_esc(name)}</title>",
        _PAGE_CSS,
        # plotly's JavaScript, once, from the installed package: the file opens with no network
        f'<script type="text/javascript">{get_plotlyjs()}</script>',
        "</head><body>",
        f"<h1>llmlab report: {_esc(name)}</h1>",
        f'<div class="llr-meta">{_esc(" · ".join(meta))}</div>',
        '<h2>Grid</h2><div class="llr-grid">',
        _grid_html(result, page_size),
        "</div><h2>Summary</h2>",
        summary_html,
        "<h2>Verdicts</h2>",
        _verdicts(result),
        "<h2>Charts</h2>",
        *(f'<div class="llr-chart">{c}</div>' for c in _charts(result)),
        f"<script>{STATIC_GRID_JS}</script>",
        "</body></html>",
    ]
    return "".join(parts)


def write_report(result: Any, path: str | Path, page_size: int = 20) -> Path:
    """Write :func:`render_report` to ``path`` (UTF-8); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(result, page_size), encoding="utf-8")
    return out
