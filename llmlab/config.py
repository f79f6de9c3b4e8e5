"""Configuration: argument > environment variable > default, resolved in one place.

Each environment variable llmlab reads is named once below, with what it means.
:func:`configure` resolves them into one frozen :class:`Config`; calling it again in the same
kernel replaces the active config and re-wires tracing (see ``llmlab.tracing.setup``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from llmlab.errors import ConfigError, register_secret

#: Local data directory (store, cache, spool, collector data). Default ``./.llmlab``.
LLMLAB_HOME = "LLMLAB_HOME"
#: ``embedded``, a DataKit base URL (``http://localhost:9529``), or ``none``.
LLMLAB_DATAKIT_URL = "LLMLAB_DATAKIT_URL"
#: Guance/DataKit token sent with DQL queries (``token`` field) and never logged.
LLMLAB_DATAKIT_TOKEN = "LLMLAB_DATAKIT_TOKEN"
#: OTel service.name of llmlab's own spans.
LLMLAB_APP_NAME = "LLMLAB_APP_NAME"
#: ``1`` re-raises errors in the CLI with a traceback.
LLMLAB_DEBUG = "LLMLAB_DEBUG"
#: Per-token delay of the embedded model server, in milliseconds (demo realism).
LLMLAB_LOCAL_DELAY_MS = "LLMLAB_LOCAL_DELAY_MS"
#: A plain OTLP/HTTP collector to export spans to as well (``http://localhost:4318``; spans go to
#: ``<endpoint>/v1/traces``), alongside DataKit or, with ``LLMLAB_DATAKIT_URL=none``, instead of it.
LLMLAB_OTLP_ENDPOINT = "LLMLAB_OTLP_ENDPOINT"
#: Headers for that endpoint, ``k1=v1,k2=v2`` (as ``OTEL_EXPORTER_OTLP_HEADERS``); never logged.
LLMLAB_OTLP_HEADERS = "LLMLAB_OTLP_HEADERS"
#: Default judge model of ``ll.evals.llm_judge`` / ``pairwise_judge``, ``provider/model``.
LLMLAB_JUDGE = "LLMLAB_JUDGE"
#: OpenLLMetry's exporter base URL (``<datakit>/otel``); honoured when LLMLAB_DATAKIT_URL is unset.
TRACELOOP_BASE_URL = "TRACELOOP_BASE_URL"
#: OpenLLMetry's exporter headers, ``k1=v1,k2=v2`` (URL-encoded values allowed).
TRACELOOP_HEADERS = "TRACELOOP_HEADERS"
#: ``false`` keeps prompt and completion text out of spans and the store.
TRACELOOP_TRACE_CONTENT = "TRACELOOP_TRACE_CONTENT"

EMBEDDED = "embedded"
DEFAULT_HOME = ".llmlab"
DEFAULT_APP_NAME = "llmlab"
_UNSET: Any = object()


@dataclasses.dataclass(frozen=True)
class Config:
    """The resolved, immutable llmlab configuration.

    Attributes:
        home: local data directory (absolute).
        datakit: ``"embedded"``, a DataKit base URL without ``/otel``, or ``None`` (no export).
        app_name: OTel ``service.name`` of llmlab's spans.
        trace_content: whether prompt/completion text goes into spans and the store.
        headers: extra HTTP headers for OTLP export (from ``TRACELOOP_HEADERS``); never logged.
        datakit_token: token for DataKit's DQL API, if any; never logged.
        otlp_endpoint: a plain OTLP/HTTP collector's base URL (spans to ``<endpoint>/v1/traces``), or None.
        otlp_headers: HTTP headers for ``otlp_endpoint``; never logged.
        judge: default judge model (``provider/model``) of ``ll.evals.llm_judge`` and
            ``ll.evals.pairwise_judge``; None: those need ``model=``.
    """

    home: Path
    datakit: str | None
    app_name: str
    trace_content: bool
    headers: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)
    datakit_token: str | None = dataclasses.field(default=None, repr=False)
    otlp_endpoint: str | None = None
    otlp_headers: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)
    judge: str | None = None

    @property
    def db_path(self) -> Path:
        """Path of the local SQLite store."""
        return self.home / "llmlab.db"

    @property
    def collector_db_path(self) -> Path:
        """Path of the embedded collector's SQLite database."""
        return self.home / "collector.db"


_lock = threading.RLock()
_active: Config | None = None
_listeners: list[Callable[[Config], None]] = []


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r}: expected true or false")


def normalize_otlp(value: str | None) -> str | None:
    """An OTLP/HTTP base URL (``http://host:4318``), without a trailing ``/v1/traces``; None for none."""
    if value is None:
        return None
    text = str(value).strip()
    if text.lower() in ("", "none", "off", "false", "0"):
        return None
    parsed = urlparse(text)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"otlp_endpoint={text!r}: expected an http(s) URL like http://localhost:4318")
    text = text.rstrip("/")
    if text.endswith("/v1/traces"):
        text = text[: -len("/v1/traces")]
    return text


def _parse_headers(raw: str, source: str = TRACELOOP_HEADERS) -> dict[str, str]:
    from urllib.parse import unquote

    headers: dict[str, str] = {}
    for part in raw.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            # name the entry by its header-name-like prefix only: the rest may be a token ("k: secret")
            name = re.match(r"[A-Za-z0-9_.-]*", part.strip()).group(0)  # type: ignore[union-attr]
            raise ConfigError(f"{source}: entry {name or '?'!r} has no '=value' (expected k1=v1,k2=v2)")
        key, value = part.split("=", 1)
        headers[unquote(key.strip())] = unquote(value.strip())
    return headers


def normalize_datakit(value: str | None, source: str = "datakit") -> str | None:
    """Turn a user's DataKit setting into ``"embedded"``, a base URL, or ``None``.

    A trailing ``/otel`` (the TRACELOOP_BASE_URL form) is removed, so both
    ``http://localhost:9529`` and ``http://localhost:9529/otel`` mean the same DataKit.
    """
    if value is None:
        return None
    text = str(value).strip()
    if text.lower() in ("", "none", "off", "false", "0"):
        return None
    if text.lower() == EMBEDDED:
        return EMBEDDED
    parsed = urlparse(text)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"{source}={text!r}: expected 'embedded', None, or an http(s) URL like http://localhost:9529")
    text = text.rstrip("/")
    if text.endswith("/otel"):
        text = text[: -len("/otel")]
    return text


def configure(
    home: str | os.PathLike[str] | None = _UNSET,
    datakit: str | None = _UNSET,
    app_name: str | None = _UNSET,
    trace_content: bool | None = _UNSET,
    *,
    datakit_token: str | None = _UNSET,
    headers: dict[str, str] | None = _UNSET,
    otlp_endpoint: str | None = _UNSET,
    otlp_headers: dict[str, str] | None = _UNSET,
    judge: str | None = _UNSET,
) -> Config:
    """Resolve and activate llmlab's configuration; returns the active :class:`Config`.

    Every argument is optional; an omitted one comes from its environment variable, else the
    default. ``judge="provider/model"`` [LLMLAB_JUDGE] is the default judge of
    ``ll.evals.llm_judge``/``pairwise_judge``. Calling it again replaces the configuration and takes effect at once (tracing is
    re-wired, the store re-opened under the new home).

    Example:
        >>> import llmlab as ll
        >>> cfg = ll.configure(home="/tmp/llmlab-doc", datakit=None)
        >>> cfg.datakit is None
        True
    """
    env = os.environ
    if home is _UNSET or home is None:
        home = env.get(LLMLAB_HOME) or DEFAULT_HOME
    elif not isinstance(home, (str, os.PathLike)) or not str(home).strip():
        raise ConfigError(f"home={home!r}: must be a directory path like '.llmlab'")
    home_path = Path(home).expanduser().resolve()
    if home_path.exists() and not home_path.is_dir():
        raise ConfigError(f"home={str(home)!r}: exists and is not a directory")

    if datakit is _UNSET:
        if LLMLAB_DATAKIT_URL in env:
            datakit = normalize_datakit(env[LLMLAB_DATAKIT_URL], LLMLAB_DATAKIT_URL)
        elif env.get(TRACELOOP_BASE_URL):
            datakit = normalize_datakit(env[TRACELOOP_BASE_URL], TRACELOOP_BASE_URL)
        else:
            datakit = EMBEDDED
    else:
        datakit = normalize_datakit(datakit)

    if app_name is _UNSET or app_name is None:
        app_name = env.get(LLMLAB_APP_NAME) or DEFAULT_APP_NAME
    if not isinstance(app_name, str) or not app_name.strip():
        raise ConfigError(f"app_name={app_name!r}: must be a non-empty string")

    if trace_content is _UNSET or trace_content is None:
        raw = env.get(TRACELOOP_TRACE_CONTENT)
        trace_content = True if raw is None else _parse_bool(TRACELOOP_TRACE_CONTENT, raw)
    elif not isinstance(trace_content, bool):
        raise ConfigError(f"trace_content={trace_content!r}: must be True or False")

    if headers is _UNSET or headers is None:
        headers = _parse_headers(env.get(TRACELOOP_HEADERS, ""))
    elif not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        # named by type only: the values are tokens
        raise ConfigError(f"headers: expected a dict of header name to string value, got {type(headers).__name__}")
    if datakit_token is _UNSET:
        datakit_token = env.get(LLMLAB_DATAKIT_TOKEN) or None
    elif datakit_token is not None and not isinstance(datakit_token, str):
        raise ConfigError(f"datakit_token: expected a string, got {type(datakit_token).__name__}")
    if judge is _UNSET:
        judge = env.get(LLMLAB_JUDGE) or None
    if judge is not None and (not isinstance(judge, str) or not judge.strip()):
        raise ConfigError(f"judge={judge!r}: expected a model name like 'openai/gpt-4o-mini', or None")
    judge = judge.strip() if judge else None
    if otlp_endpoint is _UNSET:
        otlp_endpoint = env.get(LLMLAB_OTLP_ENDPOINT) or None
    otlp_endpoint = normalize_otlp(otlp_endpoint)
    if otlp_headers is _UNSET or otlp_headers is None:
        otlp_headers = _parse_headers(env.get(LLMLAB_OTLP_HEADERS, ""), LLMLAB_OTLP_HEADERS)
    elif not isinstance(otlp_headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in otlp_headers.items()
    ):
        raise ConfigError(
            f"otlp_headers: expected a dict of header name to string value, got {type(otlp_headers).__name__}"
        )
    for secret in list(headers.values()) + list(otlp_headers.values()) + [datakit_token or ""]:
        register_secret(secret)

    cfg = Config(
        home=home_path,
        datakit=datakit,
        app_name=app_name,
        trace_content=trace_content,
        headers=dict(headers),
        datakit_token=datakit_token,
        otlp_endpoint=otlp_endpoint,
        otlp_headers=dict(otlp_headers),
        judge=judge,
    )
    global _active
    with _lock:
        _active = cfg
        listeners = list(_listeners)
    for listener in listeners:
        listener(cfg)
    return cfg


def get_config() -> Config:
    """The active config, resolving it from the environment on first use."""
    with _lock:
        cfg = _active
    return cfg if cfg is not None else configure()


def on_configure(listener: Callable[[Config], None]) -> None:
    """Call ``listener(cfg)`` after every :func:`configure` (tracing and the store re-wire this way)."""
    with _lock:
        _listeners.append(listener)


def reset_for_tests() -> None:
    """Forget the active config (tests only)."""
    global _active
    with _lock:
        _active = None
