"""What every ``llmlab`` command shares: the ``--home`` option, error wording, configuring, and table/file output.

Public so that each command module (:mod:`llmlab.cli.commands`, :mod:`llmlab.cli.history`) imports it from here
and the package's ``__init__`` only assembles the group.
"""

from __future__ import annotations

import functools
import os
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from llmlab.config import LLMLAB_DEBUG
from llmlab.errors import LlmlabError, redact
from llmlab.text import is_na

__all__ = ["check_out", "configure", "friendly", "home_option", "print_table", "safe_text", "write_frame"]


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command so that an llmlab, OS or value error prints one ``Error: …`` line (secrets redacted)
    instead of a traceback; ``LLMLAB_DEBUG=1`` lets the exception through."""

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


def home_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--home`` option (the data directory; default ``LLMLAB_HOME``) of a command."""
    return click.option("--home", type=click.Path(file_okay=False), default=None, help="Data directory [LLMLAB_HOME].")(
        fn
    )


def configure(home: str | None, **kwargs: Any) -> Any:
    """``llmlab.configure(**kwargs)`` with ``home`` when the command was given ``--home``; returns the config."""
    from llmlab.config import configure as configure_llmlab

    return configure_llmlab(home=home, **kwargs) if home else configure_llmlab(**kwargs)


def check_out(path: Path) -> None:
    """Raise :class:`~llmlab.errors.ConfigError` unless ``path`` names a .csv, .parquet or .jsonl file."""
    from llmlab.errors import ConfigError

    if path.suffix.lower() not in (".csv", ".parquet", ".jsonl"):
        raise ConfigError(f"--out={str(path)!r}: expected a .csv, .parquet or .jsonl file name")


def write_frame(df: Any, path: Path) -> None:
    """Write ``df`` to ``path`` as CSV, Parquet or JSON lines, chosen by the suffix (folders created)."""
    check_out(path)
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


def safe_text(text: Any, keep: str = "") -> str:
    """``text`` for a terminal: control and format characters (ESC sequences, BEL, bidi overrides,
    NUL) shown as ``\\x1b``/``\\u202e`` escapes, so a stored name or completion cannot drive the
    terminal; characters in ``keep`` (say ``"\\n"``) pass through."""
    return "".join(
        ch if ch in keep or unicodedata.category(ch) not in ("Cc", "Cf") else ascii(ch)[1:-1] for ch in str(text)
    )


def _round(value: Any) -> str:
    """A float as a table shows it: rounded to what a reader compares, never in e-notation."""
    if is_na(value):
        return "-"
    v = float(value)
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    if abs(v) >= 100:
        return f"{v:.1f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}" if abs(v) >= 0.001 else f"{v:.2e}"


def rounded(df: Any) -> Any:
    """A display copy of ``df``: money columns (``*usd*``) through ``format_usd``, other floats rounded."""
    import pandas as pd

    from llmlab.pricing import format_usd

    out = df.copy()
    for col in out.columns:
        series = out[col]
        if not (pd.api.types.is_float_dtype(series.dtype) or pd.api.types.is_integer_dtype(series.dtype)):
            continue
        if "usd" in str(col):
            out[col] = [format_usd(float(v)) if pd.notna(v) else "-" for v in series]
        elif pd.api.types.is_float_dtype(series.dtype):
            out[col] = [_round(v) if pd.notna(v) else "-" for v in series]
    return out


def print_table(df: Any) -> None:
    """Echo ``df`` as a plain-text table (``(no rows)`` when empty): floats rounded, money as ``format_usd``, control characters escaped."""
    import pandas as pd

    with pd.option_context("display.max_columns", 30, "display.width", 200, "display.max_colwidth", 40):
        click.echo(safe_text(rounded(df).to_string(index=False), keep="\n") if len(df) else "(no rows)")
