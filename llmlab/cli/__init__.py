"""The ``llmlab`` command line. Errors print one ``Error: …`` line and exit 1
(``LLMLAB_DEBUG=1`` shows the traceback)."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from llmlab.config import LLMLAB_DEBUG
from llmlab.errors import LlmlabError, redact


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except (LlmlabError, OSError, ValueError) as exc:
            if os.environ.get(LLMLAB_DEBUG) == "1":
                raise
            raise click.ClickException(redact(str(exc))) from None
        except Exception as exc:  # a bug or an input nothing checked: still one line, never a traceback
            if os.environ.get(LLMLAB_DEBUG) == "1":
                raise
            raise click.ClickException(
                redact(f"unexpected {type(exc).__name__}: {str(exc)[:300]} (LLMLAB_DEBUG=1 shows the traceback)")
            ) from None

    return wrapper


def _home_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--home", type=click.Path(file_okay=False), default=None, help="Data directory [LLMLAB_HOME].")(
        fn
    )


def _configure(home: str | None, **kwargs: Any) -> Any:
    from llmlab.config import configure

    return configure(home=home, **kwargs) if home else configure(**kwargs)


@click.group()
@click.version_option(package_name="llmlab")
def cli() -> None:
    """llmlab: LLM parameter sweeps, traced to DataKit, analysed in pandas."""


@cli.command()
@_home_option
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
@_friendly
def demo(home: str | None, out: str, delay_ms: float | None) -> None:
    """Offline demo: sweep the embedded models, trace to the embedded collector, chart the spans."""
    from llmlab.demo import run_demo

    run_demo(home=home, out=Path(out), delay_ms=delay_ms)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9529, show_default=True, type=int)
@_home_option
@_friendly
def collector(host: str, port: int, home: str | None) -> None:
    """Run the embedded DataKit-compatible collector in the foreground."""
    from llmlab.collector import serve

    config = _configure(home, datakit=None)
    click.echo(
        f"llmlab collector on http://{host}:{port} (OTLP at /otel/v1/traces, DQL at /v1/query/raw), data in {config.collector_db_path}"
    )
    serve(host, port, config.home)


@cli.command("serve-model")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--delay-ms", type=float, default=None, help="Per-token delay in ms [LLMLAB_LOCAL_DELAY_MS].")
@_friendly
def serve_model(host: str, port: int, delay_ms: float | None) -> None:
    """Run the embedded OpenAI-compatible model server in the foreground."""
    from llmlab.localmodel import MODELS, create_app
    from llmlab.serving import serve_forever

    app = create_app(delay_ms=delay_ms)  # a bad --delay-ms fails before the banner
    click.echo(f"llmlab model server on http://{host}:{port}/v1 (models: {', '.join(MODELS)})")
    serve_forever(app, host, port)


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@_home_option
@click.option("--concurrency", type=int, default=None, help="Override the spec's concurrency.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option(
    "--out", type=click.Path(dir_okay=False), default=None, help="Also write the results (.csv/.parquet/.jsonl)."
)
@_friendly
def sweep(spec: str, home: str | None, concurrency: int | None, no_progress: bool, out: str | None) -> None:
    """Run a sweep described in a YAML file, with a progress bar."""
    from llmlab.cli.specfile import load_spec

    _configure(home)
    loaded = load_spec(Path(spec))
    kwargs = dict(loaded.run_kwargs)
    if concurrency is not None:
        kwargs["concurrency"] = concurrency
    res = loaded.sweep.run(display=not no_progress, **kwargs)  # Ctrl-C: stops, keeps what finished
    click.echo(repr(res))
    _print_table(res.summary())
    if out:
        _write_frame(res.df, Path(out))
        click.echo(f"wrote {len(res.df)} rows to {out}")
    if res.stopped == "cancelled":
        click.echo(
            f"Cancelled: {len(res.df)} of {len(loaded.sweep.calls)} calls finished and are stored; "
            "run the same command again to send only the rest.",
            err=True,
        )
        raise click.exceptions.Exit(130)  # the shell's code for "stopped by Ctrl-C"


@cli.command("spans")
@click.option("--sweep", "sweep_id", default=None, help="Only spans of this sweep id.")
@click.option("--source", type=click.Choice(["local", "datakit"]), default=None)
@click.option("--since", default=None, help="ISO time or epoch seconds.")
@click.option("--limit", type=int, default=None)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="FILE.csv, .parquet or .jsonl")
@_home_option
@_friendly
def spans_cmd(
    sweep_id: str | None, source: str | None, since: str | None, limit: int | None, out: str | None, home: str | None
) -> None:
    """Pull LLM spans back as a table (print, or write CSV/Parquet/JSONL)."""
    from llmlab.readback.spans import spans

    _configure(home)
    if out:
        _check_out(Path(out))
    df = spans(sweep_id=sweep_id, source=source, since=since, limit=limit)
    if out:
        _write_frame(df, Path(out))
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
        _print_table(df[cols].tail(50) if len(df) else df)
        click.echo(f"{len(df)} spans")


@cli.command()
@_home_option
@_friendly
def replay(home: str | None) -> None:
    """Re-send spooled (undelivered) spans to DataKit."""
    from llmlab.errors import ConfigError
    from llmlab.tracing.export import drain

    config = _configure(home)
    if config.datakit is None:
        raise ConfigError("datakit is disabled (LLMLAB_DATAKIT_URL=none): nothing to replay")
    result = drain(config)
    click.echo(f"sent {result['sent']} spans, {result['pending']} pending")
    if result["error"]:
        raise ConfigError(f"DataKit still unreachable: {result['error']} ({result['pending']} spans stay spooled)")


@cli.group()
def store() -> None:
    """Inspect the local store."""


@store.command("path")
@_home_option
def store_path(home: str | None) -> None:
    """Print the path of the local database."""
    click.echo(str(_configure(home, datakit=None).db_path))


@store.command("status")
@_home_option
@_friendly
def store_status(home: str | None) -> None:
    """Counts of sweeps, calls, cached responses, spans and pending exports."""
    from llmlab.store import get_store

    config = _configure(home, datakit=None)
    st = get_store(config.home)
    status = {"path": str(config.db_path)}
    for table in ("sweeps", "calls", "cache", "spans"):
        status[table] = st.read(f"SELECT count(*) FROM {table}")[0][0]
    status["pending_export"] = st.pending_count()
    status["migrations"] = [r[0] for r in st.read("SELECT name FROM _migrations ORDER BY name")]
    click.echo(json.dumps(status, indent=2))


def _check_out(path: Path) -> None:
    from llmlab.errors import ConfigError

    if path.suffix.lower() not in (".csv", ".parquet", ".jsonl"):
        raise ConfigError(f"--out={str(path)!r}: expected a .csv, .parquet or .jsonl file name")


def _write_frame(df: Any, path: Path) -> None:
    _check_out(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        df.to_csv(path, index=False)
    elif suffix == ".parquet":
        out = df.copy()
        for col in out.columns:
            if out[col].dtype == object:
                out[col] = out[col].astype("string")
        out.to_parquet(path, index=False)
    else:
        df.to_json(path, orient="records", lines=True, date_format="iso")


def _print_table(df: Any) -> None:
    import pandas as pd

    with pd.option_context("display.max_columns", 30, "display.width", 200, "display.max_colwidth", 40):
        click.echo(df.to_string(index=False) if len(df) else "(no rows)")


from llmlab.cli.history import register as _register_history  # noqa: E402  (sweeps, show, export, import, ...)

_register_history(cli)


def main(argv: list[str] | None = None) -> int:
    try:
        code = cli.main(args=argv, prog_name="llmlab", standalone_mode=False)
    except click.ClickException as exc:
        click.echo(f"Error: {exc.format_message()}", err=True)
        return 1
    except click.exceptions.Abort:  # Ctrl-C outside a sweep
        click.echo("Aborted.", err=True)
        return 130
    except click.exceptions.Exit as exc:
        return int(exc.exit_code or 0)
    # without standalone mode click returns a command's Exit code instead of raising it
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


if __name__ == "__main__":
    sys.exit(main())
