"""Sweep specification → validated grid of calls (the plan), each with a stable ``call_id``.

Nothing here sends a request: every argument and prompt row is checked when the Sweep is
built, so a bad value fails before anything is spent. ``run()``/``arun()`` hand the plan to
``llmlab.runner``.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import inspect
import io
import itertools
import json
import math
import string
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from llmlab.errors import ConfigError, ValidationError
from llmlab.plan.providers import get_provider, split_model

__all__ = ["Call", "Sweep", "call_id_for", "load_prompts"]

_RESERVED_PARAMS = {"model", "messages", "stream", "stream_options", "temperature", "top_p", "max_tokens", "seed", "n"}
#: options of the openai client, not of the request: headers may hold credentials, and a spec is stored
_CLIENT_OPTIONS = {"extra_headers", "extra_query", "extra_body", "timeout"}


@functools.lru_cache(maxsize=1)
def _openai_chat_params() -> frozenset[str]:
    """The request parameters the installed ``openai`` client takes as keywords; others (vLLM's
    ``top_k``, ``repetition_penalty``, …) travel in ``extra_body``, as OpenAI-compatible servers expect."""
    from openai.resources.chat.completions import AsyncCompletions

    return frozenset(inspect.signature(AsyncCompletions.create).parameters) - {"self"} - _CLIENT_OPTIONS


_MESSAGE_ROLES = {"system", "user", "assistant", "developer", "tool"}


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def call_id_for(messages: Sequence[Mapping[str, Any]], model: str, params: Mapping[str, Any], repeat: int) -> str:
    """Stable id of one request: the same messages, model, parameters and repeat index always
    give the same id (it is also the response-cache key)."""
    payload = _canonical_json({"messages": list(messages), "model": model, "params": dict(params), "repeat": repeat})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:20]


def _prompt_id_for(messages: Sequence[Mapping[str, Any]]) -> str:
    return "p-" + hashlib.sha256(_canonical_json(list(messages)).encode("utf-8")).hexdigest()[:10]


@dataclasses.dataclass(frozen=True)
class Call:
    """One planned request."""

    call_id: str
    prompt_id: str
    prompt_index: int
    messages: tuple[dict[str, Any], ...]
    provider: str
    model: str  # the model name sent to the provider (without the provider prefix)
    temperature: float | None
    top_p: float | None
    max_tokens: int | None
    seed: int | None
    repeat: int
    params: dict[str, Any]
    data: dict[str, Any]

    @property
    def qualified_model(self) -> str:
        """The model as users name it: ``local/tiny``, ``moonshot/kimi-k2``; bare for openai."""
        return self.model if self.provider == "openai" else f"{self.provider}/{self.model}"

    @property
    def prompt(self) -> str:
        """The text of the last user message (what the grid shows as the prompt)."""
        users = [m for m in self.messages if m.get("role") == "user"] or list(self.messages)
        content = users[-1].get("content", "") if users else ""
        return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)

    @property
    def max_output_tokens(self) -> int | None:
        """The most tokens the reply may have: ``max_tokens``, else a swept ``max_completion_tokens``;
        None when nothing bounds it (then its cost has no upper bound either)."""
        if self.max_tokens is not None:
            return self.max_tokens
        bound = self.params.get("max_completion_tokens")
        return bound if isinstance(bound, int) and not isinstance(bound, bool) and bound > 0 else None

    def request_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``client.chat.completions.create`` (without stream options)."""
        kwargs: dict[str, Any] = {"model": self.model, "messages": [dict(m) for m in self.messages]}
        if self.temperature is not None:
            kwargs["temperature"] = self.temperature
        if self.top_p is not None:
            kwargs["top_p"] = self.top_p
        if self.max_tokens is not None:
            kwargs["max_tokens"] = self.max_tokens
        if self.seed is not None:
            kwargs["seed"] = self.seed
        known = _openai_chat_params()
        kwargs.update({k: v for k, v in self.params.items() if k in known})
        extra = {k: v for k, v in self.params.items() if k not in known}
        if extra:
            kwargs["extra_body"] = extra
        return kwargs


# --- prompt sets ------------------------------------------------------------------------------


def load_prompts(prompts: Any) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
    """Normalise a prompt set into a list of rows (dicts) or a list of message lists.

    Accepts a list of strings, a list of message lists, a list of dicts (rows), a pandas
    DataFrame, or a path to a ``.csv`` / ``.jsonl`` file (UTF-8). Raises ValidationError naming
    the file and line of any bad row.
    """
    if isinstance(prompts, (str, Path)) and (
        isinstance(prompts, Path) or Path(str(prompts)).suffix.lower() in (".csv", ".jsonl", ".json")
    ):
        return _load_prompt_file(Path(prompts))
    if isinstance(prompts, pd.DataFrame):
        if prompts.empty:
            raise ValidationError("prompts", "DataFrame(0 rows)", "the prompt set is empty")
        return [{str(k): _clean_value(v) for k, v in row.items()} for row in prompts.to_dict(orient="records")]
    if isinstance(prompts, str):
        raise ValidationError(
            "prompts", prompts, "a single string is not a prompt set; pass a list, a DataFrame or a .csv/.jsonl path"
        )
    if not isinstance(prompts, Iterable):
        raise ValidationError("prompts", prompts, "expected a list, a DataFrame or a .csv/.jsonl path")
    items = list(prompts)
    if not items:
        raise ValidationError("prompts", items, "the prompt set is empty")
    if all(isinstance(p, str) for p in items):
        for i, p in enumerate(items):
            if not p.strip():
                raise ValidationError(f"prompts[{i}]", p, "empty prompt")
        return [{"prompt": p} for p in items]
    if all(isinstance(p, Mapping) for p in items):
        return [dict(p) for p in items]
    if all(isinstance(p, (list, tuple)) for p in items):
        out = []
        for i, msgs in enumerate(items):
            out.append(_check_messages(list(msgs), f"prompts[{i}]"))
        return out
    kinds = sorted({type(p).__name__ for p in items})
    raise ValidationError(
        "prompts", f"list of {'/'.join(kinds)}", "mix of types; use all strings, all message lists or all dicts"
    )


def _clean_value(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value


def _check_messages(msgs: list[Any], where: str) -> list[dict[str, Any]]:
    if not msgs:
        raise ValidationError(where, msgs, "empty message list")
    for j, m in enumerate(msgs):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise ValidationError(f"{where}[{j}]", m, "each message needs 'role' and 'content'")
        if m["role"] not in _MESSAGE_ROLES:
            raise ValidationError(f"{where}[{j}].role", m["role"], f"expected one of {sorted(_MESSAGE_ROLES)}")
        content = m["content"]
        # an assistant turn may carry only tool calls; any other message needs text (or content parts)
        if not (m["role"] == "assistant" and content is None) and not (
            (isinstance(content, str) and content.strip()) or (isinstance(content, list) and content)
        ):
            raise ValidationError(
                f"{where}[{j}].content", content, "empty message; give text or a list of content parts"
            )
    return [dict(m) for m in msgs]


def _load_prompt_file(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise ValidationError("prompts", str(path), "file not found")
    if path.is_dir():
        raise ValidationError("prompts", str(path), "is a directory; pass a .csv, .jsonl or .json file")
    if path.suffix.lower() not in (".csv", ".jsonl", ".json"):
        raise ValidationError(
            "prompts", str(path), f"unsupported file type {path.suffix or '(none)'!r}; use .csv, .jsonl or .json"
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValidationError("prompts", str(path), f"cannot be read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ValidationError(
            "prompts", str(path), f"not UTF-8 text (bad byte at line {line}); re-save the file as UTF-8"
        ) from None
    suffix = path.suffix.lower()
    rows: list[dict[str, Any]] = []
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames:
            raise ValidationError("prompts", str(path), "CSV has no header row")
        width = len(reader.fieldnames)
        for lineno, row in enumerate(reader, start=2):
            if None in row or len(row) != width:
                raise ValidationError(
                    "prompts", f"{path}:{lineno}", f"row has more fields than the {width} header columns"
                )
            if any(v is None for v in row.values()):
                raise ValidationError(
                    "prompts", f"{path}:{lineno}", f"row has fewer fields than the {width} header columns"
                )
            rows.append(dict(row))
    else:
        if suffix == ".json":
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise ValidationError("prompts", str(path), f"invalid JSON: {exc}") from None
            if not isinstance(data, list):
                raise ValidationError("prompts", str(path), "a .json prompt file must hold a list")
            return load_prompts(data)  # type: ignore[return-value]
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise ValidationError("prompts", f"{path}:{lineno}", f"invalid JSON ({exc.msg})") from None
            if isinstance(obj, str):
                obj = {"prompt": obj}
            if isinstance(obj, list):
                obj = {"messages": _check_messages(obj, f"{path}:{lineno}")}
            if not isinstance(obj, dict):
                raise ValidationError(
                    "prompts", f"{path}:{lineno}", "each line must be a JSON object, string or message list"
                )
            rows.append(obj)
    if not rows:
        raise ValidationError("prompts", str(path), "the prompt set is empty")
    return rows


# --- the spec ---------------------------------------------------------------------------------


def _as_list(name: str, value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValidationError(name, value, "empty list; give at least one value")
        return list(value)
    return [value]


def _check_number(name: str, value: Any, lo: float, hi: float, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(float(value)):
        raise ValidationError(name, value, "must be a number")
    v = float(value)
    if (v <= lo if lo_open else v < lo) or v > hi:
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise ValidationError(name, value, f"must be in {interval}")
    return v


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        if isinstance(value, float) and value.is_integer() and value > 0:
            return int(value)
        raise ValidationError(name, value, "must be a positive integer")
    return value


class Sweep:
    """A grid of LLM calls: prompt set × models × temperature × top_p × params × repeats.

    Every argument is validated here, before anything is sent. ``plan()`` shows the calls;
    ``run()`` sends them (blocking, also inside Jupyter), ``arun()`` is the awaitable form.

    Example:
        >>> import llmlab as ll
        >>> sweep = ll.Sweep(prompts=["What is a rainbow?"], models=["local/tiny"], temperature=[0.0, 0.7])
        >>> len(sweep.plan())
        2
    """

    def __init__(
        self,
        prompts: Any,
        template: str | None = None,
        system: str | None = None,
        models: str | Sequence[str] = ("local/tiny",),
        temperature: float | Sequence[float] | None = (0.0, 0.7, 1.0),
        top_p: float | Sequence[float] | None = (1.0,),
        max_tokens: int | Sequence[int] | None = 64,
        repeats: int = 1,
        seed: int | Sequence[int] | None = None,
        name: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.template = template
        self.system = system
        self.prompts_input = prompts
        self.models = [m.strip() if isinstance(m, str) else m for m in _as_list("models", models)]
        self.temperature = _as_list("temperature", temperature)
        self.top_p = _as_list("top_p", top_p)
        self.max_tokens = _as_list("max_tokens", max_tokens)
        self.seed = _as_list("seed", seed)
        self.repeats = repeats
        if params is not None and not isinstance(params, Mapping):
            raise ValidationError("params", params, "must be a dict of parameter name to a value or a list of values")
        self.params = dict(params or {})
        self._validate_scalars()
        self.rows = load_prompts(prompts)
        self.messages = self._build_messages()
        self.calls: list[Call] = self._expand()

    # validation -------------------------------------------------------------------------------
    def _validate_scalars(self) -> None:
        if self.name is not None and not isinstance(self.name, str):
            raise ValidationError("name", self.name, "must be a string")
        if self.system is not None and (not isinstance(self.system, str) or not self.system.strip()):
            raise ValidationError("system", self.system, "must be a non-empty string, or None for no system message")
        if self.template is not None and (not isinstance(self.template, str) or not self.template.strip()):
            raise ValidationError("template", self.template, "must be a non-empty string like 'Summarize: {text}'")
        for i, model in enumerate(self.models):
            where = "models" if len(self.models) == 1 else f"models[{i}]"
            try:
                prov, bare = split_model(model)
                get_provider(prov)
            except ConfigError as exc:
                raise ValidationError(where, model, str(exc).split(": ", 1)[-1]) from None
            if prov == "local":
                from llmlab.localmodel import MODELS

                if bare not in MODELS:
                    raise ValidationError(
                        where, model, f"unknown local model; local models: {', '.join('local/' + m for m in MODELS)}"
                    )
        for v in self.temperature:
            if v is not None:
                _check_number("temperature", v, 0.0, 2.0)
        for v in self.top_p:
            if v is not None:
                _check_number("top_p", v, 0.0, 1.0, lo_open=True)
        self.max_tokens = [None if v is None else _check_positive_int("max_tokens", v) for v in self.max_tokens]
        if any(split_model(m)[0] == "local" for m in self.models):
            from llmlab.localmodel.server import MAX_TOKENS_LIMIT

            too_big = next((v for v in self.max_tokens if v is not None and v > MAX_TOKENS_LIMIT), None)
            if too_big is not None:  # the local server would refuse every call
                raise ValidationError("max_tokens", too_big, f"the local models accept at most {MAX_TOKENS_LIMIT}")
        self.repeats = _check_positive_int("repeats", self.repeats)
        for v in self.seed:
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise ValidationError("seed", v, "must be an integer or None")
        for key, values in self.params.items():
            if not isinstance(key, str) or not key.isidentifier():
                raise ValidationError("params", key, "parameter names must be strings like 'presence_penalty'")
            if key in _RESERVED_PARAMS:
                raise ValidationError(
                    f"params[{key!r}]", values, f"'{key}' is set by the Sweep itself; use its own argument"
                )
            if key in _CLIENT_OPTIONS:
                raise ValidationError(
                    f"params[{key!r}]",
                    "...",
                    f"'{key}' is an option of the openai client, not a request "
                    "parameter; pass other parameters by name (unknown ones are sent in the body)",
                )
            _as_list(f"params[{key!r}]", values)
            try:
                json.dumps(values)
            except TypeError:
                raise ValidationError(f"params[{key!r}]", values, "values must be JSON-serialisable") from None

    def _build_messages(self) -> list[tuple[list[dict[str, Any]], dict[str, Any]]]:
        """(messages, data) per prompt row, with the template filled and the system message added."""
        out = []
        fields: list[str] = []
        if self.template is not None:
            try:
                fields = [f for _, f, _, _ in string.Formatter().parse(self.template) if f is not None]
            except ValueError as exc:
                raise ValidationError("template", self.template, f"malformed: {exc}") from None
            for f in fields:
                if not f:
                    raise ValidationError(
                        "template",
                        self.template,
                        "placeholder {} must name a column, like {text}; write {{ and }} for literal braces",
                    )
                if not f.isidentifier():
                    raise ValidationError("template", self.template, f"placeholder {{{f}}} must be a plain column name")
        for i, row in enumerate(self.rows):
            if isinstance(row, list):  # message list
                msgs, data = [dict(m) for m in row], {}
            elif "messages" in row and isinstance(row["messages"], list):
                msgs = _check_messages(row["messages"], f"prompts[{i}].messages")
                data = {k: v for k, v in row.items() if k != "messages"}
            else:
                data = dict(row)
                if self.template is not None:
                    missing = [f for f in fields if f not in data]
                    if missing:
                        raise ValidationError(
                            "template",
                            self.template,
                            f"variable {{{missing[0]}}} is missing from prompt row {i} (columns: {', '.join(map(str, data)) or 'none'})",
                        )
                    empty = [f for f in fields if data[f] is None]
                    if empty:
                        raise ValidationError(
                            f"prompts[{i}].{empty[0]}", None, f"empty value for template variable {{{empty[0]}}}"
                        )
                    content = self.template.format(**{f: data[f] for f in fields})
                else:
                    content = data.get("prompt")
                    if content is None:
                        raise ValidationError(
                            f"prompts[{i}]",
                            row,
                            "no 'prompt' column; pass template='...{column}...' to build prompts from the row",
                        )
                    content = str(content)
                if not str(content).strip():
                    raise ValidationError(f"prompts[{i}]", content, "empty prompt")
                msgs = [{"role": "user", "content": content}]
            if self.system is not None and not any(m.get("role") == "system" for m in msgs):
                msgs = [{"role": "system", "content": self.system}] + msgs
            out.append((msgs, data))
        return out

    def _param_grid(self) -> list[dict[str, Any]]:
        keys = sorted(self.params)
        combos = itertools.product(*[_as_list(k, self.params[k]) for k in keys])
        return [dict(zip(keys, combo)) for combo in combos]

    def _expand(self) -> list[Call]:
        calls = []
        grids = list(
            itertools.product(self.models, self.temperature, self.top_p, self.max_tokens, self.seed, self._param_grid())
        )
        for p_index, (msgs, data) in enumerate(self.messages):
            prompt_id = str(data.get("prompt_id") or data.get("id") or _prompt_id_for(msgs))
            for model, temp, top_p, max_tokens, seed, extra in grids:
                prov, bare = split_model(model)
                for r in range(self.repeats):
                    # a seeded sweep with repeats gets one seed per repeat, else repeats are copies
                    eff_seed = None if seed is None else seed + r
                    key_params = {
                        "temperature": temp,
                        "top_p": top_p,
                        "max_tokens": max_tokens,
                        "seed": eff_seed,
                        **extra,
                    }
                    cid = call_id_for(msgs, f"{prov}/{bare}", key_params, r)
                    calls.append(
                        Call(
                            cid,
                            prompt_id,
                            p_index,
                            tuple(msgs),
                            prov,
                            bare,
                            None if temp is None else float(temp),
                            None if top_p is None else float(top_p),
                            max_tokens,
                            eff_seed,
                            r,
                            dict(extra),
                            {k: v for k, v in data.items() if k not in ("prompt",)},
                        )
                    )
        return calls

    # public -----------------------------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        """The sweep's specification as plain data (stored with every run)."""
        rows = self.rows
        fingerprint = hashlib.sha256(_canonical_json(rows).encode("utf-8")).hexdigest()[:16]
        small = len(_canonical_json(rows)) <= 256_000
        return {
            "name": self.name,
            "template": self.template,
            "system": self.system,
            "models": self.models,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "repeats": self.repeats,
            "params": self.params,
            "prompt_count": len(rows),
            "prompt_fingerprint": fingerprint,
            "prompts": rows if small else None,
        }

    def plan(self) -> pd.DataFrame:
        """One row per call, before anything is sent: ids, settings, prompt, estimated tokens and cost.

        ``plan().attrs`` holds the totals: ``calls``, ``est_cost_usd`` (NA if a model has no
        price) and ``est_seconds`` (a rough figure at the default concurrency).
        """
        from llmlab.plan.estimate import estimate_plan

        return estimate_plan(self)

    def __len__(self) -> int:
        return len(self.calls)

    def __repr__(self) -> str:
        return f"Sweep(name={self.name!r}, calls={len(self.calls)}, models={self.models})"

    def run(
        self,
        concurrency: int = 8,
        display: bool | None = None,
        budget_usd: float | None = None,
        cache: bool | str = True,
        **kwargs: Any,
    ) -> SweepResult:  # noqa: F821
        """Send every call and wait; works in scripts and inside a running Jupyter kernel.

        Args:
            concurrency: calls in flight at once.
            display: live grid (Jupyter) / progress bar (terminal); default: on in Jupyter and TTYs.
            budget_usd: stop dispatching before the estimated spend would pass this.
            cache: True reuses stored responses (a re-run sends nothing); False always sends;
                ``"record"`` / ``"replay"`` with ``cassette=path`` records responses to a cassette
                file, or answers every call from it with no model, key or network.
        """
        from llmlab.run.runner import run_sync

        return run_sync(self, concurrency=concurrency, display=display, budget_usd=budget_usd, cache=cache, **kwargs)

    async def arun(
        self,
        concurrency: int = 8,
        display: bool | None = None,
        budget_usd: float | None = None,
        cache: bool | str = True,
        **kwargs: Any,
    ) -> SweepResult:  # noqa: F821
        """Awaitable form of :meth:`run`."""
        from llmlab.run.runner import run_async

        return await run_async(
            self, concurrency=concurrency, display=display, budget_usd=budget_usd, cache=cache, **kwargs
        )
