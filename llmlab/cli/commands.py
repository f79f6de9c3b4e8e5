"""The ``llmlab`` commands that run things: the demo, the collector and model servers, a sweep from a spec file,
reading spans back, re-sending spooled spans, and a look at the local store.

Registered on the main group by :mod:`llmlab.cli`; each command imports what it runs when it runs, so that
``llmlab --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from llmlab.cli.common import check_out, configure, friendly, home_option, print_table, safe_text, write_frame

__all__ = ["register"]


@click.command()
@home_option
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="llmlab-demo",
    show_default=True,
    help="Folder for the HTML charts.",
)
@click.option(
    "--delay-ms", type=float, default=None, help="Per-token delay of the embedded model [LLMLAB_LOCAL_DELAY_MS; 4]."
)
@friendly
def demo(home: str | None, out: str, delay_ms: float | None) -> None:
    """Offline demo: sweep the embedded models, trace to the embedded collector, chart the spans."""
    from llmlab.demo import run_demo

    run_demo(home=home, out=Path(out), delay_ms=delay_ms)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9529, show_default=True, type=int)
@home_option
@friendly
def collector(host: str, port: int, home: str | None) -> None:
    """Run the embedded DataKit-compatible collector in the foreground."""
    from llmlab.collector import serve

    config = configure(home, datakit=None)
    click.echo(
        f"llmlab collector on http://{host}:{port} (OTLP at /otel/v1/traces, DQL at /v1/query/raw), data in {config.collector_db_path}"
    )
    serve(host, port, config.home)


@click.command("serve-model")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--delay-ms", type=float, default=None, help="Per-token delay in ms [LLMLAB_LOCAL_DELAY_MS].")
@friendly
def serve_model(host: str, port: int, delay_ms: float | None) -> None:
    """Run the embedded OpenAI-compatible model server in the foreground."""
    from llmlab.localmodel import MODELS, create_app
    from llmlab.serving import serve_forever

    app = create_app(delay_ms=delay_ms)  # a bad --delay-ms fails before the banner
    click.echo(f"llmlab model server on http://{host}:{port}/v1 (models: {', '.join(MODELS)})")
    serve_forever(app, host, port)


@click.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@home_option
@click.option("--concurrency", type=int, default=None, help="Override the spec's concurrency.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option(
    "--out", type=click.Path(dir_okay=False), default=None, help="Also write the results (.csv/.parquet/.jsonl)."
)
@friendly
def sweep(spec: str, home: str | None, concurrency: int | None, no_progress: bool, out: str | None) -> None:
    """Run a sweep described in a YAML file, with a progress bar."""
    from llmlab.cli.specfile import load_spec

    configure(home)
    loaded = load_spec(Path(spec))
    kwargs = dict(loaded.run_kwargs)
    if concurrency is not None:
        kwargs["concurrency"] = concurrency
    res = loaded.sweep.run(display=not no_progress, **kwargs)  # Ctrl-C: stops, keeps what finished
    click.echo(repr(res))
    print_table(res.summary())
    if out:
        write_frame(res.df, Path(out))
        click.echo(f"wrote {len(res.df)} rows to {out}")
    failed = res.df[res.df["status"] == "error"] if "status" in res.df else res.df.iloc[0:0]
    if len(failed):
        # the summary only counts them: say why, the commonest reasons first
        reasons = failed["error"].fillna("").astype(str).str.slice(0, 300).value_counts()
        click.echo(f"{len(failed)} of {len(res.df)} calls failed:", err=True)
        for reason, n in reasons.head(3).items():
            click.echo(f"  {n} × {safe_text(reason)}", err=True)
        if len(failed) == len(res.df):
            raise click.exceptions.Exit(1)  # nothing succeeded: a script or CI job must see it
    if res.stopped == "cancelled":
        click.echo(
            f"Cancelled: {len(res.df)} of {len(loaded.sweep.calls)} calls finished and are stored; "
            "run the same command again to send only the rest.",
            err=True,
        )
        raise click.exceptions.Exit(130)  # the shell's code for "stopped by Ctrl-C"


@click.command("spans")
@click.option("--sweep", "sweep_id", default=None, help="Only spans of this sweep (id, unique id prefix or name).")
@click.option("--source", type=click.Choice(["local", "datakit"]), default=None)
@click.option("--since", default=None, help="ISO time or epoch seconds.")
@click.option("--limit", type=int, default=None)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="FILE.csv, .parquet or .jsonl")
@home_option
@friendly
def spans_cmd(
    sweep_id: str | None, source: str | None, since: str | None, limit: int | None, out: str | None, home: str | None
) -> None:
    """Pull LLM spans back as a table (print, or write CSV/Parquet/JSONL)."""
    from llmlab.readback.spans import spans

    configure(home)
    if out:
        check_out(Path(out))
    if sweep_id is not None:
        from llmlab.history.catalog import resolve_sweep

        sweep_id = resolve_sweep(sweep_id)  # a name or prefix → its id; "no sweep named …" otherwise
    df = spans(sweep_id=sweep_id, source=source, since=since, limit=limit)
    if out:
        write_frame(df, Path(out))
        click.echo(f"wrote {len(df)} spans to {out}")
    else:
        cols = [
            "start_time",
            "service",
            "model",
            "temperature",
            "top_p",
            "latency_ms",
            "ttft_ms",
            "output_tokens",
            "status",
        ]
        print_table(df[cols].tail(50) if len(df) else df)
        click.echo(f"{len(df)} spans")


@click.command()
@home_option
@click.option("--rejected", is_flag=True, help="Also re-send the spans DataKit rejected as malformed (400).")
@friendly
def replay(home: str | None, rejected: bool) -> None:
    """Re-send spooled (undelivered) spans to DataKit."""
    from llmlab.errors import ConfigError
    from llmlab.tracing.export import drain, requeue_rejected

    config = configure(home)
    if config.datakit is None and not config.otlp_endpoint:
        raise ConfigError("datakit is disabled (LLMLAB_DATAKIT_URL=none): nothing to replay")
    if rejected:
        click.echo(f"{requeue_rejected(config)} rejected spans queued again")
    result = drain(config, on_wait=lambda message: click.echo(message, err=True))
    click.echo(f"sent {result['sent']} spans, {result['pending']} pending")
    if result["error"]:
        raise ConfigError(f"DataKit still unreachable: {result['error']} ({result['pending']} spans stay spooled)")


@click.group()
def store() -> None:
    """Inspect the local store."""


@store.command("path")
@home_option
def store_path(home: str | None) -> None:
    """Print the path of the local database."""
    click.echo(str(configure(home, datakit=None).db_path))


@store.command("status")
@home_option
@friendly
def store_status(home: str | None) -> None:
    """Counts of sweeps, calls, cached responses, spans and pending exports."""
    from llmlab.store import get_store

    config = configure(home, datakit=None)
    st = get_store(config.home)
    status: dict[str, Any] = {"path": str(config.db_path)}
    for table in ("sweeps", "calls", "cache", "spans"):
        status[table] = st.read(f"SELECT count(*) FROM {table}")[0][0]
    status["pending_export"] = st.pending_count()
    status["pending_otlp_export"] = st.pending_count("otlp_state")
    from llmlab.tracing.export import export_problem, rejected

    status["rejected_export"] = [f"{r['trace_id']}/{r['span_id']} {r['name']}" for r in rejected(config)]
    problem = export_problem(config)
    status["export_problem"] = problem["message"] if problem else None
    status["migrations"] = [r[0] for r in st.read("SELECT name FROM _migrations ORDER BY name")]
    click.echo(json.dumps(status, indent=2))


def register(group: click.Group) -> None:
    """Add these commands to the ``llmlab`` group."""
    for command in (demo, collector, serve_model, sweep, spans_cmd, replay, store):
        group.add_command(command)
