"""Provider registry and the one place where ``openai`` clients are built (the I/O seam).

A model is named ``"provider/model"``; a bare name means provider ``openai``. Built in:
``openai`` (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``) and ``local`` (the embedded model server,
started on demand). Users add any OpenAI-compatible endpoint with :func:`provider`.

Keys are read from the environment at call time and never stored, logged or put in spans.
Every client is built on the ``openai`` package's own HTTP stack (httpx2 in openai 3.x; its
aiohttp transport when the ``openai[aiohttp]`` extra is installed: in a raw loop on a fast
server it measured ~1.5× the httpx2 default and ~2× a legacy ``httpx.AsyncClient``, see docs/benchmarks.md). Tests, cassettes and
advanced users pass ``transport=`` (an ``httpx2.AsyncBaseTransport``: ``httpx2.MockTransport``,
``httpx2.ASGITransport``, :class:`llmlab.run.cassette.CassetteTransport`) to drive the real
``openai`` client without a socket. Chat answers are parsed by pydantic's compiled validator, with openai's own
lenient parser as the fallback (see :func:`_client_class`): ~11× less CPU per streamed chunk.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
from typing import Any

import httpx2

from llmlab.errors import ConfigError, register_secret
from llmlab.text import is_finite_number

__all__ = ["Provider", "get_provider", "http_stack", "make_client", "provider", "providers", "split_model"]


@dataclasses.dataclass(frozen=True)
class Provider:
    """An OpenAI-compatible endpoint.

    Attributes:
        name: registry name, the part before ``/`` in a model name.
        base_url: endpoint base URL (``…/v1``); None means "resolve at call time" (openai, local).
        api_key_env: environment variable holding the key (None: no key needed).
        base_url_env: environment variable that may override ``base_url``.
        rpm: requests per minute allowed (None: unlimited).
        tpm: tokens per minute allowed (None: unlimited).
        timeout: per-request timeout in seconds.
        default_headers: extra HTTP headers sent with every request (not shown in the repr).
    """

    name: str
    base_url: str | None = None
    api_key_env: str | None = None
    base_url_env: str | None = None
    rpm: float | None = None
    tpm: float | None = None
    timeout: float = 60.0
    # header values may be credentials: kept out of the repr a notebook would display
    default_headers: tuple[tuple[str, str], ...] = dataclasses.field(default=(), repr=False)

    @property
    def is_local(self) -> bool:
        return self.name == "local"

    def resolve_base_url(self) -> str:
        """The endpoint URL to send to; starts the embedded model server for ``local``."""
        if self.is_local:
            from llmlab.localmodel import ensure_server

            return ensure_server()
        if self.base_url_env and os.environ.get(self.base_url_env):
            return os.environ[self.base_url_env]
        if self.base_url:
            return self.base_url
        return "https://api.openai.com/v1"

    def api_key(self) -> str:
        """The key from the environment; raises ConfigError naming the variable if it is missing."""
        if self.is_local or self.api_key_env is None:
            return "llmlab-local"
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ConfigError(
                f"provider {self.name!r}: API key missing: set the {self.api_key_env} environment variable"
            )
        register_secret(key)
        return key


_lock = threading.Lock()
_registry: dict[str, Provider] = {
    "openai": Provider("openai", None, "OPENAI_API_KEY", "OPENAI_BASE_URL"),
    "local": Provider("local", None, None, None, timeout=30.0),
}


def provider(
    name: str,
    base_url: str | None = None,
    api_key_env: str | None = None,
    *,
    rpm: float | None = None,
    tpm: float | None = None,
    timeout: float = 60.0,
    headers: dict[str, str] | None = None,
) -> Provider:
    """Register (or replace) an OpenAI-compatible provider; returns it.

    Registering a name again replaces that provider: ``rpm``, ``tpm``, ``timeout`` and
    ``headers`` are exactly what this call passes (omitted means no limit, the default timeout,
    no extra headers), so dropping ``rpm=`` from a re-run notebook cell really removes the
    limit. Only the endpoint's identity, ``base_url`` and ``api_key_env``, is kept when omitted
    (``ll.provider("openai", rpm=500)`` limits the built-in provider without restating it).
    A sweep already running picks up the new limits at its next request. Header values are
    treated as secrets: masked in the provider's repr and in every error message.

    Example:
        >>> import llmlab as ll
        >>> p = ll.provider("moonshot", base_url="https://api.moonshot.cn/v1", api_key_env="MOONSHOT_API_KEY")
        >>> p.name
        'moonshot'
    """
    if not name or "/" in name or not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"provider name={name!r}: use letters, digits, '-' or '_'")
    existing = _registry.get(name)
    if base_url is None and existing is None:
        raise ConfigError(f"provider {name!r}: base_url is required for a new provider")
    if base_url is not None and not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"provider {name!r}: base_url={base_url!r} must start with http:// or https://")
    for label, value in (("rpm", rpm), ("tpm", tpm), ("timeout", timeout)):
        if value is not None and (not is_finite_number(value) or not value > 0):
            # NaN/inf would make the limit (or the timeout) never apply; omit it for "no limit"
            raise ConfigError(
                f"provider {name!r}: {label}={value!r} must be a positive number (finite"
                + ("; omit it for no limit)" if label != "timeout" else ")")
            )
    if api_key_env is not None and (
        not isinstance(api_key_env, str) or not api_key_env.replace("_", "a").isalnum() or api_key_env[0].isdigit()
    ):
        register_secret(str(api_key_env))  # often the key itself, pasted by mistake: never echo it
        raise ConfigError(
            f"provider {name!r}: api_key_env must be the name of an environment variable, like "
            "'MOONSHOT_API_KEY', not the key itself (the value given is not shown)"
        )
    if headers is not None and (
        not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
    ):
        # named by type only: the values are credentials
        raise ConfigError(f"provider {name!r}: headers must be a dict of header name to string value")
    for header_value in (headers or {}).values():
        register_secret(header_value)  # e.g. an Azure "api-key" header: never echoed in an error
    base = existing or Provider(name)
    new = dataclasses.replace(
        base,
        base_url=base_url if base_url is not None else base.base_url,
        api_key_env=api_key_env if api_key_env is not None else base.api_key_env,
        rpm=rpm,
        tpm=tpm,
        timeout=timeout,
        default_headers=tuple((headers or {}).items()),
    )
    with _lock:
        _registry[name] = new
    return new


def providers() -> dict[str, Provider]:
    """A copy of the registry."""
    with _lock:
        return dict(_registry)


def split_model(model: str) -> tuple[str, str]:
    """``"moonshot/kimi-k2"`` → ``("moonshot", "kimi-k2")``; a bare name means ``openai``.

    Only the first ``/`` splits. A prefix that is not a registered provider is an error (a typo
    like ``moonshoot/kimi-k2`` must not be sent to OpenAI as a model name); a model whose own
    name has a ``/``, like vLLM's ``meta-llama/Llama-3-8B``, is named with its provider:
    ``openai/meta-llama/Llama-3-8B``, or ``vllm/meta-llama/Llama-3-8B`` after ``ll.provider("vllm", ...)``.
    """
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(f"model={model!r}: must be a non-empty string like 'local/tiny' or 'gpt-4o-mini'")
    if "/" not in model:
        return "openai", model
    head, tail = model.split("/", 1)
    with _lock:
        known = sorted(_registry)
    if head not in known:
        raise ConfigError(
            f"model={model!r}: provider {head!r} is unknown; known: {', '.join(known)} (register it with "
            f"ll.provider({head!r}, base_url=...), or write 'openai/{model}' for a model of that name "
            "on the openai provider)"
        )
    if not tail:
        raise ConfigError(f"model={model!r}: missing the model name after '{head}/'")
    return head, tail


def get_provider(name: str) -> Provider:
    """The registered provider ``name``; ConfigError listing the known ones otherwise."""
    with _lock:
        found = _registry.get(name)
        known = sorted(_registry)
    if found is None:
        raise ConfigError(f"provider={name!r} is unknown; known: {', '.join(known)} (register with ll.provider())")
    return found


@functools.cache
def http_stack() -> str:
    """Which HTTP stack provider clients use: ``"aiohttp"`` (openai's ``DefaultAioHttpClient``,
    when the ``openai[aiohttp]`` extra is installed) or ``"httpx2"`` (openai's default)."""
    import openai

    try:
        openai.DefaultAioHttpClient(transport=httpx2.MockTransport(lambda request: httpx2.Response(200)))
    except RuntimeError:  # the extra is missing: openai's stub raises on construction
        return "httpx2"
    return "aiohttp"


def make_client(prov: Provider, transport: httpx2.AsyncBaseTransport | None = None, max_connections: int = 100) -> Any:
    """Build an ``openai.AsyncOpenAI`` for ``prov`` on the openai package's own HTTP stack.

    openai's own retries are off (``max_retries=0``): the runner retries with tenacity so that
    every attempt is counted, traced and excluded from latency.

    Args:
        prov: the provider.
        transport: an ``httpx2.AsyncBaseTransport`` that does the I/O instead of a socket pool
            (tests, cassettes); None uses openai's default transport.
        max_connections: size of the connection pool (the sweep's concurrency, with headroom).

    Returns:
        An ``openai.AsyncOpenAI`` (see :func:`_client_class` for how it parses answers); close it with
        ``await client.close()``.
    """
    import openai

    limits = httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    options: dict[str, Any] = {
        "limits": limits,
        "timeout": httpx2.Timeout(prov.timeout, connect=10.0),
        "trust_env": not prov.is_local,  # no proxy between a notebook and its own local model server
    }
    if transport is not None:
        options["transport"] = transport
    factory = openai.DefaultAioHttpClient if http_stack() == "aiohttp" else openai.DefaultAsyncHttpx2Client
    return _client_class()(
        api_key=prov.api_key(),
        base_url=prov.resolve_base_url(),
        max_retries=0,
        timeout=prov.timeout,
        http_client=factory(**options),
        default_headers=dict(prov.default_headers) or None,
    )


#: After this many answers of one type fail validation, a client stops trying validation for that type
#: (a provider whose chunks are always off-spec would otherwise pay validation *and* construction).
_LENIENT_AFTER = 16


@functools.cache
def _client_class() -> type:
    """``openai.AsyncOpenAI`` that builds chat answers with pydantic's validator, falling back to openai's parser.

    openai builds every streamed chunk with ``construct_type``, a pure-Python walk of the model's type hints
    (~68 µs per chunk on this machine against ~6 µs for ``model_validate``, pydantic-core's compiled
    validator); at 17 chunks a call that walk was a quarter of a sweep's CPU. Validation yields the same
    model, values and declared fields set, for every on-spec answer (it may only make a value better typed:
    ``"17"`` in an int field becomes 17, and extra keys count as set); an answer that fails it (a provider's
    own finish reason, a missing field) is built by openai's lenient parser exactly as before, so nothing a
    provider sends is refused that openai would accept. The override is openai's
    ``BaseClient._process_response_data`` seam, which both its streams and its plain responses call; if a
    future openai stops calling it, answers are simply parsed the old way.
    """
    import openai
    import pydantic
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    validated_types: frozenset[type] = frozenset({ChatCompletionChunk, ChatCompletion})

    class AsyncOpenAI(openai.AsyncOpenAI):
        @functools.cached_property
        def _failed_validations(self) -> dict[type, int]:
            return {}

        def _process_response_data(self, *, data: object, cast_to: Any, response: Any) -> Any:
            if cast_to in validated_types and isinstance(data, dict) and not self._strict_response_validation:
                failed = self._failed_validations
                if failed.get(cast_to, 0) < _LENIENT_AFTER:
                    try:
                        return cast_to.model_validate(data)
                    except pydantic.ValidationError:
                        failed[cast_to] = failed.get(cast_to, 0) + 1
            return super()._process_response_data(data=data, cast_to=cast_to, response=response)

    return AsyncOpenAI
