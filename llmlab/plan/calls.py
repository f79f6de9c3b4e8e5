"""One planned request (:class:`Call`) and a grid's calls, made when they are read (:class:`PlannedCalls`).

A sweep of 10,000 calls used to build every ``Call`` up front (its messages, settings and id: about
1.1 KB each) and hold them all until it returned. :class:`PlannedCalls` keeps what calls share (one
renderer per prompt variant over the prompt rows, one :class:`Setting` per combination of model and
sampling settings) and each call's id (20 bytes); a ``Call`` is made when it is read, so the runner
holds only the calls in flight. Every call is still rendered and its id computed once when the grid
is planned: a bad row, or two calls that would send the same request, fail before anything is sent.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, overload

from llmlab.errors import ValidationError

__all__ = [
    "CLIENT_OPTIONS",
    "Call",
    "PlannedCalls",
    "RenderedRows",
    "RowRenderer",
    "Setting",
    "VariantRows",
    "call_id_for",
    "canonical_json",
    "plan_calls",
]

#: options of the openai client, not of the request: headers may hold credentials, and a spec is stored
CLIENT_OPTIONS = frozenset({"extra_headers", "extra_query", "extra_body", "timeout"})
#: characters of a call id (a hex prefix of a SHA-256)
ID_WIDTH = 20

#: prompt row index -> (the messages sent, the row's values)
RowRenderer = Callable[[int], tuple[list[dict[str, Any]], dict[str, Any]]]


@functools.lru_cache(maxsize=1)
def _openai_chat_params() -> frozenset[str]:
    """The request parameters the installed ``openai`` client takes as keywords; others (vLLM's
    ``top_k``, ``repetition_penalty``, …) travel in ``extra_body``, as OpenAI-compatible servers expect."""
    from openai.resources.chat.completions import AsyncCompletions

    return frozenset(inspect.signature(AsyncCompletions.create).parameters) - {"self"} - CLIENT_OPTIONS


def canonical_json(value: Any) -> str:
    """Compact, key-sorted JSON: the same value always gives the same text (ids and fingerprints hash it)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def call_id_for(messages: Sequence[Mapping[str, Any]], model: str, params: Mapping[str, Any], repeat: int) -> str:
    """Stable id of one request: the same messages, model, parameters and repeat index always
    give the same id (it is also the response-cache key)."""
    payload = canonical_json({"messages": list(messages), "model": model, "params": dict(params), "repeat": repeat})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:ID_WIDTH]


@dataclasses.dataclass(frozen=True, slots=True)
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
    template_name: str | None = None  # the variant names (template/messages and system) and their text hashes
    system_name: str | None = None
    template_hash: str | None = None
    system_hash: str | None = None

    @property
    def variant_columns(self) -> dict[str, str | None]:
        """``template_name``, ``system_name``, ``template_hash``, ``system_hash`` of this call."""
        return {
            "template_name": self.template_name,
            "system_name": self.system_name,
            "template_hash": self.template_hash,
            "system_hash": self.system_hash,
        }

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


@dataclasses.dataclass(frozen=True, slots=True)
class Setting:
    """One combination of model and sampling settings, shared by every call made with it.

    ``key`` holds the values as given (``1`` stays ``1``, not ``1.0``): a call id hashes them, so ids
    stay what they always were.
    """

    key: tuple[Any, Any, int | None, int | None, dict[str, Any]]  # temperature, top_p, max_tokens, seed, params
    provider: str
    model: str
    temperature: float | None
    top_p: float | None
    max_tokens: int | None
    params: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class VariantRows:
    """One prompt variant (a template/messages and system combination): its names and its row renderer."""

    names: dict[str, str | None]  # template_name, system_name, template_hash, system_hash
    render: RowRenderer


class RenderedRows(Sequence[tuple[list[dict[str, Any]], dict[str, Any]]]):
    """(messages, data) for every variant and prompt row, variant by variant, rendered when read."""

    def __init__(self, variants: Sequence[VariantRows], rows: int) -> None:
        self._variants, self._rows = tuple(variants), rows

    def __len__(self) -> int:
        return len(self._variants) * self._rows

    @overload
    def __getitem__(self, index: int) -> tuple[list[dict[str, Any]], dict[str, Any]]: ...
    @overload
    def __getitem__(self, index: slice) -> list[tuple[list[dict[str, Any]], dict[str, Any]]]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        v, p = divmod(_position(index, len(self)), self._rows)
        return self._variants[v].render(p)


class PlannedCalls(Sequence[Call]):
    """A grid's calls in grid order (prompt row, then variant, then setting, then repeat), each made when read.

    Reading ``calls[i]`` renders its prompt row; iterating renders each row once per variant and shares the
    messages among that row's calls. Two reads give equal calls (not the same object). Built by
    :func:`plan_calls`, which checks every call once.
    """

    def __init__(
        self,
        prompt_ids: Sequence[str],
        variants: Sequence[VariantRows],
        settings: Sequence[Setting],
        repeats: int,
        ids: bytes,
    ) -> None:
        self._prompt_ids = tuple(prompt_ids)
        self._variants = tuple(variants)
        self._settings = tuple(settings)
        self._repeats = repeats
        self._ids = ids  # every call's id, ID_WIDTH ASCII characters each, in grid order
        self._per_row = len(self._variants) * len(self._settings) * repeats
        self._index: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self._prompt_ids) * self._per_row

    @overload
    def __getitem__(self, index: int) -> Call: ...
    @overload
    def __getitem__(self, index: slice) -> list[Call]: ...
    def __getitem__(self, index: int | slice) -> Call | list[Call]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = _position(index, len(self))
        p, rest = divmod(i, self._per_row)
        v, rest = divmod(rest, len(self._settings) * self._repeats)
        s, r = divmod(rest, self._repeats)
        variant = self._variants[v]
        return self._make(i, p, variant, self._shared(variant, p), self._settings[s], r)

    def __iter__(self) -> Iterator[Call]:
        i = 0
        for p in range(len(self._prompt_ids)):
            for variant in self._variants:
                shared = self._shared(variant, p)
                for setting in self._settings:
                    for r in range(self._repeats):
                        yield self._make(i, p, variant, shared, setting, r)
                        i += 1

    def call_ids(self) -> Iterator[str]:
        """Every call's id in grid order, without making the calls."""
        ids = self._ids
        return (ids[i : i + ID_WIDTH].decode("ascii") for i in range(0, len(ids), ID_WIDTH))

    def index_of(self, call_id: str) -> int | None:
        """The position of the call with ``call_id`` (None if the grid has none); the first lookup builds an index."""
        if self._index is None:
            self._index = {cid: i for i, cid in enumerate(self.call_ids())}
        return self._index.get(call_id)

    def messages_by_id(self) -> Mapping[str, Sequence[Mapping[str, Any]]]:
        """call_id -> the messages that call sends, rendered when looked up."""
        return _MessagesById(self)

    def _shared(self, variant: VariantRows, p: int) -> tuple[tuple[dict[str, Any], ...], dict[str, Any]]:
        msgs, data = variant.render(p)
        return tuple(msgs), {k: v for k, v in data.items() if k != "prompt"}

    def _make(
        self,
        i: int,
        p: int,
        variant: VariantRows,
        shared: tuple[tuple[dict[str, Any], ...], dict[str, Any]],
        setting: Setting,
        r: int,
    ) -> Call:
        seed = setting.key[3]
        return Call(
            self._ids[i * ID_WIDTH : (i + 1) * ID_WIDTH].decode("ascii"),
            self._prompt_ids[p],
            p,
            shared[0],
            setting.provider,
            setting.model,
            setting.temperature,
            setting.top_p,
            setting.max_tokens,
            None if seed is None else seed + r,  # a seeded sweep with repeats gets one seed per repeat
            r,
            setting.params,
            shared[1],
            **variant.names,
        )


class _MessagesById(Mapping[str, Sequence[Mapping[str, Any]]]):
    def __init__(self, calls: PlannedCalls) -> None:
        self._calls = calls

    def __getitem__(self, call_id: str) -> Sequence[Mapping[str, Any]]:
        index = self._calls.index_of(call_id)
        if index is None:
            raise KeyError(call_id)
        return self._calls[index].messages

    def __iter__(self) -> Iterator[str]:
        return self._calls.call_ids()

    def __len__(self) -> int:
        return len(self._calls)


def plan_calls(
    prompt_ids: Sequence[str], variants: Sequence[VariantRows], settings: Sequence[Setting], repeats: int
) -> PlannedCalls:
    """The grid's calls, each rendered once here to compute its id; ValidationError if two calls would send
    the same request (identical rendered prompts), before anything is sent."""
    ids = bytearray()
    first: dict[str, str] = {}  # call id -> the prompt id of the first call that has it
    for p, prompt_id in enumerate(prompt_ids):
        for variant in variants:
            msgs = variant.render(p)[0]
            for setting in settings:
                temp, top_p, max_tokens, seed, extra = setting.key
                model = f"{setting.provider}/{setting.model}"
                for r in range(repeats):
                    eff_seed = None if seed is None else seed + r
                    key = {"temperature": temp, "top_p": top_p, "max_tokens": max_tokens, "seed": eff_seed, **extra}
                    cid = call_id_for(msgs, model, key, r)
                    other = first.setdefault(cid, prompt_id)
                    if len(first) * ID_WIDTH == len(ids):  # seen before: the same request twice
                        raise ValidationError(
                            "prompts",
                            f"{other} / {prompt_id}",
                            "two calls of this grid would send the same request (identical rendered prompts); "
                            "make the rows or variants differ",
                        )
                    ids += cid.encode("ascii")
    return PlannedCalls(prompt_ids, variants, settings, repeats, bytes(ids))


def _position(index: int, length: int) -> int:
    index = operator.index(index)
    i = index + length if index < 0 else index
    if not 0 <= i < length:
        raise IndexError("call index out of range")
    return i
