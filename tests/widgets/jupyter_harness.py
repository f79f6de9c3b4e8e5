"""Start a real JupyterLab server on 127.0.0.1 for browser tests, and write notebooks for it.

The server runs from this venv's python, so its ``python3`` kernel is this venv (with llmlab
installed editable). It runs in its own process group and is killed as a group at the end, so no
kernel outlives the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_notebook(path: Path, cells: list[str]) -> Path:
    """A notebook with kernelspec metadata (else JupyterLab asks for a kernel and blocks clicks)."""
    nb = {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": f"cell-{i}",
                "metadata": {},
                "outputs": [],
                "source": src,
            }
            for i, src in enumerate(cells)
        ],
        "metadata": {
            "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    return path


class Lab:
    """A running JupyterLab: ``url(path)`` gives a page address with the token."""

    def __init__(self, root: Path, port: int, token: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.root, self.port, self.token, self.proc, self.log = root, port, token, proc, log

    def url(self, notebook: str) -> str:
        return f"http://127.0.0.1:{self.port}/lab/tree/{notebook}?token={self.token}"


@contextlib.contextmanager
def jupyter_lab(root: Path, timeout_s: float = 60.0) -> Iterator[Lab]:
    """Run ``jupyter lab`` on a free 127.0.0.1 port with a token until the block ends."""
    token = secrets.token_hex(16)
    port = free_port()
    log = root.parent / "jupyter.log"
    settings = root.parent / "lab-settings"
    # every cell stays in the DOM (no virtual scrolling), and no saved workspace is restored
    tracker = settings / "user" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True, exist_ok=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}), encoding="utf-8")
    notes = settings / "user" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notes.parent.mkdir(parents=True, exist_ok=True)
    notes.write_text(json.dumps({"fetchNews": "false"}), encoding="utf-8")  # no news toast over the page
    env = {
        **os.environ,
        "JUPYTERLAB_WORKSPACES_DIR": str(settings / "workspaces"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings / "user"),
        "JUPYTER_CONFIG_DIR": str(settings / "config"),
        "PYTHONUNBUFFERED": "1",
    }
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--allow-root",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.news_url=None",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"jupyter lab did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.3)
        yield Lab(root, port, token, proc, log)
    finally:
        # the whole group: the server and every kernel it started
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # kernels that ignored SIGTERM


def have_browser() -> bool:
    """Whether Debian's chromium and the playwright package are both here."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        return False
    return Path(CHROMIUM).exists() or shutil.which("chromium") is not None
