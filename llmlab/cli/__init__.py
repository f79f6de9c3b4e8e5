"""The ``llmlab`` command line. Errors print one ``Error: …`` line and exit 1
(``LLMLAB_DEBUG=1`` shows the traceback).

This module assembles the click group from the command modules (:mod:`llmlab.cli.commands`,
:mod:`llmlab.cli.history`) and holds :func:`main`, the ``llmlab`` script and ``python -m llmlab``.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import click

from llmlab.cli import commands, history
from llmlab.errors import redact

__all__ = ["cli", "main"]


@click.group()
@click.version_option(package_name="llmlab")
def cli() -> None:
    """llmlab: LLM parameter sweeps, traced to DataKit, analysed in pandas."""


commands.register(cli)  # demo, collector, serve-model, sweep, spans, replay, store
history.register(cli)  # sweeps, show, export, import, delete, compare, diff, report


def _one_line_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    click.echo(f"warning: {redact(str(message))}", err=True)


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``) and return the exit code instead of exiting."""
    shown = warnings.showwarning
    warnings.showwarning = _one_line_warning  # a PriceWarning is advice for the user, not a source line
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
    finally:
        warnings.showwarning = shown
    # without standalone mode click returns a command's Exit code instead of raising it
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


if __name__ == "__main__":
    sys.exit(main())
