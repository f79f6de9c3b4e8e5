"""CLI mirror of the experiment history: ``llmlab sweeps | show | export | import | delete | compare | diff``.

Registered on the main group by ``llmlab.cli`` (one line); the commands are thin wrappers around
:mod:`llmlab.history`, so the terminal and the notebook see the same experiments.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import click

from llmlab.cli.common import configure, friendly, home_option, print_table, safe_text
from llmlab.pricing import format_usd
from llmlab.text import is_na

__all__ = ["register"]


def _fmt(value: Any) -> str:
    if is_na(value):
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


@click.command("sweeps")
@click.option("--name", default=None, help="Only sweeps of this name (* and ? wildcards).")
@click.option("--tag", "tags", multiple=True, help="Only sweeps with this tag (repeatable: all of them).")
@click.option(
    "--since", default=None, help="Only sweeps started since: ISO time, epoch seconds, or an age like 7d / 12h."
)
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@click.option("--all", "show_all", is_flag=True, help="Also list judge runs (tagged judge; hidden by default).")
@home_option
@friendly
def sweeps_cmd(
    name: str | None,
    tags: tuple[str, ...],
    since: str | None,
    limit: int,
    as_json: bool,
    show_all: bool,
    home: str | None,
) -> None:
    """List recorded experiments, newest first (judge runs only with --all)."""
    from llmlab.history import sweeps

    configure(home, datakit=None)
    df = sweeps(name=name, tag=list(tags) or None, since=since, limit=limit, include_judges=show_all)
    if as_json:
        for row in json.loads(df.to_json(orient="records", date_format="iso")):
            click.echo(json.dumps(row))
        return
    view = df[
        [
            "sweep_id",
            "name",
            "status",
            "started_at",
            "wall_s",
            "calls",
            "ok",
            "errors",
            "cached",
            "cost_usd",
            "templates",
            "tags",
            "note",
        ]
    ].copy()
    view["started_at"] = view["started_at"].dt.strftime("%Y-%m-%d %H:%M:%S")
    view["tags"] = view["tags"].map(lambda t: ",".join(t))
    view["templates"] = view["templates"].map(lambda t: ",".join(t) or "-")
    view["note"] = view["note"].map(lambda n: "" if not isinstance(n, str) else (n if len(n) <= 30 else n[:29] + "…"))
    print_table(view)
    click.echo(f"{len(df)} sweeps")


@click.command("show")
@click.argument("sweep_id")
@home_option
@friendly
def show_cmd(sweep_id: str, home: str | None) -> None:
    """Summary of one experiment: metadata, spec and per-setting statistics."""
    from llmlab.history import load, record

    configure(home, datakit=None)
    rec = record(sweep_id)
    info, spec = rec["info"], rec["spec"]
    git = info.get("git") or {}
    source = info.get("source") or {}
    lines = [
        ("sweep", f"{rec['sweep_id']}  ({rec['name'] or 'unnamed'})"),
        ("status", rec["status"]),
        ("started", rec["started_at"]),
        ("finished", rec["finished_at"] or "-"),
        ("wall time", f"{_fmt(rec['wall_s'])} s"),
        ("source", source.get("path") or source.get("kind") or rec["source"] or "-"),
        (
            "git",
            f"{git.get('commit') or rec['git_commit'] or '-'}{' (dirty)' if git.get('dirty') or rec['git_dirty'] else ''}"
            f"{' on ' + git['branch'] if git.get('branch') else ''}",
        ),
        (
            "versions",
            ", ".join(f"{k} {v}" for k, v in (info.get("versions") or {}).items() if v) or rec["llmlab_version"] or "-",
        ),
        (
            "calls",
            f"{_fmt(rec['calls'])} planned: {_fmt(rec['ok'])} ok, {_fmt(rec['errors'])} errors, "
            f"{_fmt(rec['cached'])} cached, {_fmt(rec['skipped'])} skipped",
        ),
        ("tokens", f"{_fmt(rec['input_tokens'])} in, {_fmt(rec['output_tokens'])} out"),
        ("cost", format_usd(rec["cost_usd"]) if rec["cost_usd"] is not None else "-"),
        ("tags", ", ".join(rec["tags"]) or "-"),
        ("note", rec["note"] or "-"),
        ("prompts", f"{_fmt(spec.get('prompt_count'))} (fingerprint {spec.get('prompt_fingerprint') or '-'})"),
        *_variant_lines(spec),
        (
            "grid",
            ", ".join(f"{k}={spec.get(k)}" for k in ("models", "temperature", "top_p", "max_tokens", "seed", "repeats"))
            + "".join(f", {k}={v}" for k, v in (spec.get("params") or {}).items()),
        ),
    ]
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        click.echo(f"{key:<{width}}  {safe_text(value)}")
    res = load(rec["sweep_id"])
    if len(res.df):
        click.echo("")
        print_table(res.summary())


def _variant_lines(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """``template``/``system``/``messages`` lines of ``show``: one text, or one line per named variant."""
    lines: list[tuple[str, str]] = []
    for kind in ("template", "system", "messages"):
        value = spec.get(kind)
        if isinstance(value, dict):
            lines += [(f"{kind} {name}", repr(text)) for name, text in value.items()]
        elif value or kind != "messages":
            lines.append((kind, repr(value) if value else "-"))
    return lines


@click.command("export")
@click.argument("sweep_id")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="FILE.json or FILE.json.gz")
@click.option("--no-cache", is_flag=True, help="Leave out the cached responses of the sweep's calls.")
@home_option
@friendly
def export_cmd(sweep_id: str, out: str, no_cache: bool, home: str | None) -> None:
    """Write one experiment (spec, calls, spans) to a self-contained file."""
    from llmlab.history import export_sweep

    configure(home, datakit=None)
    path = export_sweep(sweep_id, out, include_cache=not no_cache)
    click.echo(f"wrote {path} ({path.stat().st_size} bytes)")


@click.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--replace", is_flag=True, help="Replace the sweep if this home already has it.")
@home_option
@friendly
def import_cmd(file: str, replace: bool, home: str | None) -> None:
    """Load an exported experiment file into this home."""
    from llmlab.history import import_sweep, record

    configure(home, datakit=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sid = import_sweep(Path(file), replace=replace)
    for w in caught:  # e.g. cache entries left out: one plain line, not a Python warning with a source line
        click.echo(f"warning: {safe_text(w.message)}", err=True)
    rec = record(sid)
    click.echo(
        safe_text(f"imported {sid} ({rec['name'] or 'unnamed'}): {_fmt(rec['ok'])} ok, {_fmt(rec['errors'])} errors")
    )


@click.command("delete")
@click.argument("sweep_ids", nargs=-1, required=True)
@click.option("--keep-cache", is_flag=True, help="Keep every cached response (a re-run is then free).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@home_option
@friendly
def delete_cmd(sweep_ids: tuple[str, ...], keep_cache: bool, yes: bool, home: str | None) -> None:
    """Delete experiments with their calls and spans (cache entries other sweeps share stay)."""
    from llmlab.history import delete

    configure(home, datakit=None)
    if not yes:
        click.confirm(f"Delete {', '.join(sweep_ids)}?", abort=True)
    removed = delete(*sweep_ids, keep_cache=keep_cache)
    click.echo(", ".join(f"{v} {k}" for k, v in removed.items()) + " removed")


@click.command("compare")
@click.argument("a")
@click.argument("b")
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    help="Metric column (repeatable); default latency, ttft, tokens, cost, errors.",
)
@home_option
@friendly
def compare_cmd(a: str, b: str, metrics: tuple[str, ...], home: str | None) -> None:
    """Compare experiment B against A over their common cells."""
    from llmlab.history import compare_sweeps

    configure(home, datakit=None)
    click.echo(compare_sweeps(a, b, metric=list(metrics) or None).to_text())


@click.command("diff")
@click.argument("a")
@click.argument("b")
@click.option("--prompt-id", default=None, help="Only this prompt.")
@click.option("--changed", is_flag=True, help="Only cells whose outputs differ.")
@click.option("--limit", type=int, default=20, show_default=True)
@home_option
@friendly
def diff_cmd(a: str, b: str, prompt_id: str | None, changed: bool, limit: int, home: str | None) -> None:
    """Outputs of two experiments side by side with [-removed-]{+added+} word markers."""
    from llmlab.history import diff

    configure(home, datakit=None)
    click.echo(diff(a, b, prompt_id=prompt_id, only_changed=changed, limit=limit).to_text())


@click.command("report")
@click.argument("sweep_id")
@click.option(
    "--out", "out", type=click.Path(dir_okay=False), default=None, help="HTML file to write [default: <sweep_id>.html]."
)
@click.option("--page-size", type=int, default=20, show_default=True, help="Prompt rows per page of the grid.")
@home_option
@friendly
def report_cmd(sweep_id: str, out: str | None, page_size: int, home: str | None) -> None:
    """Write one self-contained HTML report of an experiment: grid, summary, verdicts, charts."""
    from llmlab.history import load

    configure(home, datakit=None)
    result = load(sweep_id)
    path = result.save_report(out or f"{result.sweep_id}.html", page_size=page_size)
    click.echo(f"report written to {Path(path).resolve()}")


def register(group: click.Group) -> None:
    """Add the history commands to the ``llmlab`` group."""
    for command in (sweeps_cmd, show_cmd, export_cmd, import_cmd, delete_cmd, compare_cmd, diff_cmd, report_cmd):
        group.add_command(command)
