"""Run provenance: where and with what a sweep ran (git work tree, notebook or script, package versions,
provider endpoints, host and pid), recorded with the sweep's start and its totals at the end.

The runner opens an experiment with :func:`start_experiment` (after :func:`experiment_context` has
gathered what is known before the first call) and closes it with :func:`finish_experiment`; the rows
they write are the store's business (:mod:`llmlab.store.experiments`). Gathering never stops a sweep:
a missing git or an odd shell leaves fields empty.
"""

from __future__ import annotations

import collections
import functools
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llmlab.errors import redact
from llmlab.store import Store, experiments

__all__ = [
    "experiment_context",
    "finish_experiment",
    "package_versions",
    "record_prompt_versions",
    "start_experiment",
]

#: Packages whose versions are recorded with every experiment (what changes a run's behaviour or its spans).
_PACKAGES = ["llmlab", "openai", "traceloop-sdk", "opentelemetry-sdk", "httpx", "pandas"]


def _git_info(cwd: Path) -> dict[str, Any] | None:
    """Commit, branch, top level and dirty flag of the git work tree around ``cwd`` (None without git).

    ``GIT_OPTIONAL_LOCKS=0`` keeps ``git status`` from refreshing the index, so recording never
    takes the repository's index.lock away from someone committing at the same moment. Untracked
    files do not make the tree dirty (a fresh ``.llmlab`` home or scratch notebook would, always).
    """
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0"}
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD", "--abbrev-ref", "HEAD", "--show-toplevel"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if head.returncode != 0:
            return None
        commit, branch, top = (head.stdout.splitlines() + ["", "", ""])[:3]
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):  # no git installed, or it hung
        return None
    return {"commit": commit or None, "branch": branch or None, "root": top or None, "dirty": dirty}


def _run_source() -> dict[str, Any]:
    """Where this sweep runs from: a notebook (JupyterLab/VS Code session), a script, or a shell."""
    shell = None
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        pass
    kernel = None
    notebook = None
    if shell is not None:
        ns = getattr(shell, "user_ns", {}) or {}
        notebook = ns.get("__vsc_ipynb_file__") or ns.get("__session__")
        if type(shell).__name__ == "ZMQInteractiveShell":
            try:
                import ipykernel

                kernel = Path(ipykernel.get_connection_file()).stem.removeprefix("kernel-")
            except Exception:  # not a real kernel (tests, embedded shells)
                kernel = None
    # jupyter_server puts the notebook's path (relative to its root) in the kernel's environment
    notebook = notebook or os.environ.get("JPY_SESSION_NAME")
    if notebook:
        path = Path(str(notebook))
        if not path.is_absolute() and (Path.cwd() / path.name).exists():
            path = Path.cwd() / path.name  # the kernel's cwd is the notebook's folder
        return {"kind": "notebook", "path": str(path), "kernel_id": kernel}
    if kernel is not None or shell is not None:
        return {"kind": "kernel" if kernel else "ipython", "path": None, "kernel_id": kernel}
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0 and argv0 not in ("-c", "-m") and Path(argv0).exists():
        return {"kind": "script", "path": str(Path(argv0).resolve()), "argv": [redact(a) for a in sys.argv[1:20]]}
    return {"kind": "python -c" if argv0 == "-c" else "interactive", "path": None}


@functools.lru_cache(maxsize=1)  # package metadata lookups cost ~0.1 s; versions do not change under a process
def package_versions() -> dict[str, str | None]:
    """Python's version and those of the packages that shape a run (None for one not installed).

    Cached for the process: callers must copy before changing the dict.
    """
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _providers(sweep: Any) -> dict[str, Any]:
    """Endpoint of every provider the sweep uses (never a key; URLs are redacted anyway)."""
    from llmlab.plan.providers import get_provider

    out: dict[str, Any] = {}
    for name in sorted({c.provider for c in getattr(sweep, "calls", [])}):
        try:
            prov = get_provider(name)
        except Exception:
            continue
        url = prov.base_url or (os.environ.get(prov.base_url_env) if prov.base_url_env else None)
        if prov.is_local:
            url = "embedded"
        out[name] = {"base_url": None if url is None else redact(str(url))}
    return out


def experiment_context(sweep: Any = None) -> dict[str, Any]:
    """What is known about a run before it starts: source, git, versions, providers, host, pid.

    Never raises: a missing git or an odd shell just leaves fields empty.

    Args:
        sweep: the Sweep about to run (for its providers); optional.

    Returns:
        A JSON-able dict merged into the sweep's ``info_json``.
    """
    ctx: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "cwd": str(Path.cwd())}
    for key, fn in (
        ("source", _run_source),
        ("git", lambda: _git_info(Path.cwd())),
        ("versions", lambda: dict(package_versions())),
        ("providers", lambda: _providers(sweep)),
    ):
        try:
            ctx[key] = fn()
        except Exception as exc:  # recording must never stop a sweep
            ctx[key] = {"error": redact(f"{type(exc).__name__}: {exc}")}
    return ctx


def start_experiment(store: Store, sweep_id: str, name: str | None, spec: dict[str, Any], info: dict[str, Any]) -> None:
    """Record a starting sweep: its spec and ``info`` (best merged with :func:`experiment_context`), plus the
    searchable columns (source, git commit and dirty flag, llmlab version, planned calls) taken from ``info``."""
    source: dict[str, Any] = info["source"] if isinstance(info.get("source"), dict) else {}
    git: dict[str, Any] = info["git"] if isinstance(info.get("git"), dict) else {}
    versions: dict[str, Any] = info["versions"] if isinstance(info.get("versions"), dict) else {}
    experiments.record_start(
        store,
        sweep_id,
        name,
        spec,
        info,
        source=source.get("path") or source.get("kind"),
        git_commit=git.get("commit"),
        git_dirty=git.get("dirty"),
        llmlab_version=versions.get("llmlab"),
        n_calls=info.get("calls"),
    )


def _skipped_record(call: Any, reason: str) -> dict[str, Any]:
    return {
        "call_id": call.call_id,
        "prompt_id": call.prompt_id,
        "model": call.qualified_model,
        "temperature": call.temperature,
        "top_p": call.top_p,
        "repeat": call.repeat,
        "reason": reason,
    }


def _sum(values: Iterable[Any]) -> float | None:
    known = [float(v) for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
    return sum(known) if known else None


def _columns_of(rows: Sequence[Mapping[str, Any]]) -> Callable[[str], list[Any]]:
    """How to read one column of ``rows`` (None where a row lacks it): the rows' own ``column`` if they
    have one (the runner's :class:`~llmlab.run.rows.ColumnRows`), else a value per dict."""
    column = getattr(rows, "column", None)
    if callable(column):
        return column  # type: ignore[no-any-return]
    return lambda name: [r.get(name) for r in rows]


def finish_experiment(
    store: Store,
    sweep_id: str,
    status: str,
    counts: dict[str, Any],
    rows: Sequence[Mapping[str, Any]],
    skipped: Sequence[tuple[Any, str]],
    wall_s: float,
) -> None:
    """Record a finished sweep: status, counts, skipped calls, token/cost totals and wall time.

    ``rows`` are dicts, or the runner's rows, whose columns are read without a dict per row."""
    col = _columns_of(rows)
    errors = [str(e or "")[:200] for s, e in zip(col("status"), col("error")) if s == "error"]
    totals: dict[str, Any] = {
        "wall_s": round(wall_s, 6),
        "cached": sum(1 for v in col("cached") if v),
        "input_tokens": _sum(col("input_tokens")),
        "output_tokens": _sum(col("output_tokens")),
        "cost_usd": _sum(col("cost_usd")),
        "skipped_calls": [_skipped_record(c, reason) for c, reason in skipped],
        # what the providers answered as (dated model versions), and the commonest failures
        "response_models": sorted({str(m) for m in col("response_model") if m}),
        "error_kinds": collections.Counter(errors).most_common(5),
    }
    n_err = len(errors)
    experiments.record_finish(
        store,
        sweep_id,
        status,
        {**counts, **totals},
        wall_s=totals["wall_s"],
        n_ok=len(rows) - n_err,
        n_errors=n_err,
        n_cached=totals["cached"],
        n_skipped=len(skipped),
        input_tokens=None if totals["input_tokens"] is None else int(totals["input_tokens"]),
        output_tokens=None if totals["output_tokens"] is None else int(totals["output_tokens"]),
        cost_usd=totals["cost_usd"],
    )


def record_prompt_versions(store: Store, sweep_id: str, grid: Any, trace_content: bool = True) -> None:
    """Keep every template/system/messages text this sweep runs as a prompt version (text left out
    when ``trace_content`` is off: the hash still tells versions apart)."""
    from llmlab.store.prompt_versions import record_versions

    record_versions(
        store, sweep_id, [(v.kind, v.name, v.hash, v.text if trace_content else None) for v in grid.variants]
    )
