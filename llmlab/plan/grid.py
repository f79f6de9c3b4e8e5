"""A sweep's grid: the validated settings and the calls they expand to, each with a stable ``call_id``.

Nothing here sends a request: every argument and prompt row is checked when the grid is built,
so a bad value fails before anything is spent. :func:`build_grid` returns a frozen :class:`Grid`
that the estimate (``llmlab.plan.estimate``) and the runner (``llmlab.run.runner``) take as is.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import itertools
import math
import numbers
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from llmlab.errors import ConfigError, ValidationError
from llmlab.plan.calls import (
    CLIENT_OPTIONS,
    Call,
    PlannedCalls,
    RenderedRows,
    RowRenderer,
    Setting,
    VariantRows,
    call_id_for,
    canonical_json,
    plan_calls,
)
from llmlab.plan.prompts import TextRows, check_messages, check_text_value, load_prompts
from llmlab.plan.providers import get_provider, split_model
from llmlab.plan.variants import Variant, fill_messages, parse_variants
from llmlab.text import as_list, is_finite_number

__all__ = ["MAX_PLAN_CALLS", "Call", "Grid", "build_grid", "call_id_for", "canonical_json", "grid_from_spec"]

#: The most calls one sweep may plan. Each planned call holds its messages, settings and id in memory
#: (about 1 KB and 12 µs each), so 250,000 calls take ~0.3 GB and ~3 s to plan before anything is sent; a grid
#: bigger than this is refused, naming its size, before it is expanded (``repeats=10**9`` used to run into a
#: MemoryError after a minute). Split a bigger study into several sweeps.
MAX_PLAN_CALLS = 250_000
#: ``params`` values may nest (a ``logit_bias`` dict, a ``response_format`` schema), but not without end.
MAX_PARAM_DEPTH = 32
#: conversions a template placeholder may carry (``{q!r}``); any other fails at format time
_CONVERSIONS = {"r", "s", "a"}

_RESERVED_PARAMS = {"model", "messages", "stream", "stream_options", "temperature", "top_p", "max_tokens", "seed", "n"}


def _prompt_id_for(messages: Sequence[Mapping[str, Any]]) -> str:
    return "p-" + hashlib.sha256(canonical_json(list(messages)).encode("utf-8")).hexdigest()[:10]


def row_prompt_id(row: Any) -> str:
    """The ``prompt_id`` of one prompt-set row: its ``prompt_id``/``id`` column, else a hash of the
    row itself (not of the rendered prompt), so every variant of one question shares it.

    A plain prompt (``{"prompt": text}``) and a message list keep the id they always had.
    """
    if isinstance(row, list):
        return _prompt_id_for(row)
    given = row.get("prompt_id")
    if given is None or given == "":
        given = row.get("id")
    if given is not None and given != "":
        return str(given)
    if set(row) == {"prompt"}:
        return _prompt_id_for([{"role": "user", "content": str(row["prompt"])}])
    if set(row) == {"messages"} and isinstance(row["messages"], list):
        return _prompt_id_for(row["messages"])
    return "p-" + hashlib.sha256(canonical_json(row).encode("utf-8")).hexdigest()[:10]


def check_unique_prompt_ids(rows: Sequence[Any]) -> list[str]:
    """The prompt id of every row; ValidationError naming the ids that repeat (before anything is sent)."""
    ids = [row_prompt_id(r) for r in rows]
    counts: dict[str, int] = {}
    for pid in ids:
        counts[pid] = counts.get(pid, 0) + 1
    repeated = [pid for pid, n in counts.items() if n > 1]
    if repeated:
        shown = ", ".join(repr(p) for p in repeated[:10]) + (
            f" and {len(repeated) - 10} more" if len(repeated) > 10 else ""
        )
        raise ValidationError(
            "prompts",
            f"{len(rows)} rows",
            f"prompt ids repeat: {shown}; each row needs a unique 'id' (or 'prompt_id'), and identical rows "
            "must be removed, so that every result can be told apart and paired across variants and sweeps",
        )
    return ids


# --- the grid ---------------------------------------------------------------------------------


def _check_number(name: str, value: Any, lo: float, hi: float, lo_open: bool = False) -> float:
    # numbers.Real: numpy's float32/int64 (a DataFrame cell) are numbers too; a bool is not
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValidationError(name, value, "must be a number")
    if not is_finite_number(value):
        raise ValidationError(name, value, "must be a finite number (not NaN or infinity)")
    v = float(value)
    if (v <= lo if lo_open else v < lo) or v > hi:
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise ValidationError(name, value, f"must be in {interval}")
    return v


def _plain(value: Any) -> Any:
    """A numpy number as the Python int/float it stands for; anything else as is."""
    if value is None or type(value) in (int, float):
        return value
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise ValidationError(name, value, "must be a positive integer")
    if isinstance(value, numbers.Integral) and int(value) > 0:
        return int(value)
    if isinstance(value, float) and value.is_integer() and value > 0:
        return int(value)
    raise ValidationError(name, value, "must be a positive integer")


@dataclasses.dataclass(frozen=True)
class Grid:
    """A validated sweep grid: the settings as given (lists), the prompt rows, and the calls they expand to.

    Built by :func:`build_grid`, never by hand: a Grid that exists has passed every check, so
    the estimate and the runner take it without checking again.
    """

    name: str | None
    template: Any  # as given: None, a string, or {name: text} for variants
    system: Any
    models: tuple[str, ...]
    temperature: tuple[float | None, ...]
    top_p: tuple[float | None, ...]
    max_tokens: tuple[int | None, ...]
    seed: tuple[int | None, ...]
    repeats: int
    params: Mapping[str, Any]
    rows: Sequence[Any]  # prompt rows (dicts, or TextRows) or message lists, as load_prompts returned them
    messages: RenderedRows  # (messages, data) per variant and prompt row, rendered when read
    calls: PlannedCalls  # made when read: a big grid holds its calls' ids, not 10,000 Calls
    variants: tuple[Variant, ...] = ()  # every template/system/messages variant, in grid order
    messages_template: Any = None  # messages= as given ({name: message list} for variants)

    def __len__(self) -> int:
        return len(self.calls)

    def spec(self) -> dict[str, Any]:
        """The grid's specification as plain data (stored with every run).

        The prompt rows are kept in full only while small; a fingerprint always identifies them.
        """
        fingerprint, small = self._prompts_digest
        rows = list(self.rows)
        return {
            "name": self.name,
            "template": self.template,
            "system": self.system,
            "messages": self.messages_template,
            "variants": [{"kind": v.kind, "name": v.name, "hash": v.hash} for v in self.variants],
            "models": list(self.models),
            "temperature": list(self.temperature),
            "top_p": list(self.top_p),
            "max_tokens": list(self.max_tokens),
            "seed": list(self.seed),
            "repeats": self.repeats,
            "params": dict(self.params),
            "prompt_count": len(rows),
            "prompt_fingerprint": fingerprint,
            "prompts": rows if small else None,
        }

    @functools.cached_property
    def _prompts_digest(self) -> tuple[str, bool]:
        """The prompt rows' fingerprint, and whether they are small enough to keep in the spec. Worked
        out once: a sweep asks at its start and for its result, and 10,000 rows are a 1 MB text."""
        text = canonical_json(list(self.rows))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16], len(text) <= 256_000


def build_grid(
    prompts: Any,
    template: str | Sequence[str] | Mapping[str, str] | None = None,
    system: str | Sequence[str] | Mapping[str, str] | None = None,
    models: str | Sequence[str] = ("local/tiny",),
    temperature: float | Sequence[float] | None = (0.0, 0.7, 1.0),
    top_p: float | Sequence[float] | None = (1.0,),
    max_tokens: int | Sequence[int] | None = 64,
    repeats: int = 1,
    seed: int | Sequence[int] | None = None,
    name: str | None = None,
    params: Mapping[str, Any] | None = None,
    messages: Any = None,
) -> Grid:
    """Validate a sweep's arguments and expand them into a :class:`Grid` of calls.

    The grid is prompt rows × template/system (or messages) variants × models × temperature × top_p
    × max_tokens × seed × params × repeats; every argument and prompt row is checked first, and the first bad one raises ValidationError
    naming it (``models[1]``, ``prompts[3].text``, ``file.csv:7``), so nothing is ever half-built.
    """
    model_list = [m.strip() if isinstance(m, str) else m for m in as_list(models, "models", none_is_value=True)]
    temperatures = as_list(temperature, "temperature", none_is_value=True)
    top_ps = as_list(top_p, "top_p", none_is_value=True)
    max_tokens_list = as_list(max_tokens, "max_tokens", none_is_value=True)
    seeds = as_list(seed, "seed", none_is_value=True)
    if params is not None and not isinstance(params, Mapping):
        raise ValidationError("params", params, "must be a dict of parameter name to a value or a list of values")
    param_map = dict(params or {})
    templates, systems, message_sets = _check_variants(name, template, system, messages)
    _check_models(model_list)
    for v in temperatures:
        if v is not None:
            _check_number("temperature", v, 0.0, 2.0)
    for v in top_ps:
        if v is not None:
            _check_number("top_p", v, 0.0, 1.0, lo_open=True)
    max_tokens_list = [None if v is None else _check_positive_int("max_tokens", v) for v in max_tokens_list]
    _check_local_max_tokens(model_list, max_tokens_list)
    repeats = _check_positive_int("repeats", repeats)
    for v in seeds:
        if v is not None and (isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral)):
            raise ValidationError("seed", v, "must be an integer or None")
    # numpy scalars as plain numbers (ids hash the JSON of a setting; plain ints and floats stay as given)
    temperatures = [_plain(v) for v in temperatures]
    top_ps = [_plain(v) for v in top_ps]
    seeds = [None if v is None else int(v) for v in seeds]
    _check_params(param_map)
    # a row's conversation is read again when its calls are made: the caller editing it later must not
    # change what is sent under the id computed now
    loaded = load_prompts(prompts)
    rows: Sequence[Any] = loaded if isinstance(loaded, TextRows) else tuple(_own_messages(row) for row in loaded)
    variant_count = len(message_sets) or max(1, len(templates)) * max(1, len(systems))
    axes = {
        "prompts": len(rows),
        "variants": variant_count,
        "models": len(model_list),
        "temperature": len(temperatures),
        "top_p": len(top_ps),
        "max_tokens": len(max_tokens_list),
        "seed": len(seeds),
        **{f"params[{k!r}]": len(as_list(v, k, none_is_value=True)) for k, v in sorted(param_map.items())},
        "repeats": repeats,
    }
    _check_plan_size(axes)
    prompt_ids = check_unique_prompt_ids(rows)
    variants = _render_variants(rows, templates, systems, message_sets)
    settings = _settings(model_list, temperatures, top_ps, max_tokens_list, seeds, param_map)
    return Grid(
        name=name,
        template=_as_given(templates),
        system=_as_given(systems),
        models=tuple(model_list),
        temperature=tuple(temperatures),
        top_p=tuple(top_ps),
        max_tokens=tuple(max_tokens_list),
        seed=tuple(seeds),
        repeats=repeats,
        params=param_map,
        rows=rows,
        messages=RenderedRows(variants, len(rows)),
        calls=plan_calls(prompt_ids, variants, settings, repeats),
        variants=(*templates, *systems, *message_sets),
        messages_template=_as_given(message_sets),
    )


def grid_from_spec(spec: Mapping[str, Any]) -> Grid:
    """The grid a stored :meth:`Grid.spec` describes (its inverse): a past sweep's calls, ids and messages,
    recomputed without sending anything. ValidationError when the spec holds no prompts (never a file path)."""
    if not isinstance(prompts := spec.get("prompts"), list) or not prompts:
        raise ValidationError("prompts", None, "the stored spec does not hold its sweep's prompts")
    keys = ("name", "template", "system", "messages", "models", "temperature", "top_p", "max_tokens", "seed")
    settings = {k: spec[k] for k in keys if k in spec}
    return build_grid(prompts, **settings, repeats=spec.get("repeats", 1), params=spec.get("params") or None)


def _check_plan_size(axes: dict[str, int]) -> None:
    """Refuse a grid of more than :data:`MAX_PLAN_CALLS` calls before a single one is built."""
    total = math.prod(axes.values())
    if total > MAX_PLAN_CALLS:
        factors = " × ".join(f"{n:,} {axis}" for axis, n in axes.items() if n != 1) or "1"
        raise ValidationError(
            "calls",
            total,
            f"the sweep would make {total:,} calls ({factors}); at most {MAX_PLAN_CALLS:,} are planned "
            "at once (llmlab.plan.grid.MAX_PLAN_CALLS): split it into smaller sweeps",
        )


def _check_variants(
    name: Any, template: Any, system: Any, messages: Any
) -> tuple[tuple[Variant, ...], tuple[Variant, ...], tuple[Variant, ...]]:
    """The template, system and messages variants, checked (``messages=`` excludes the other two)."""
    if messages is not None and (template is not None or system is not None):
        raise ValidationError(
            "messages", "...", "messages= carries the whole conversation; pass it or template=/system=, not both"
        )
    # a single text goes through the original checks first (their messages name 'template'/'system')
    _check_text(
        name,
        template if template is None or isinstance(template, str) or not template else None,
        system if system is None or isinstance(system, str) or not system else None,
    )
    return parse_variants("template", template), parse_variants("system", system), parse_variants("messages", messages)


def _as_given(variants: tuple[Variant, ...]) -> Any:
    """A variant axis as stored in the spec: None, the single text, or ``{name: text}``."""
    if not variants:
        return None
    if len(variants) == 1 and variants[0].name[1:] == "1":
        return variants[0].value
    return {v.name: v.value for v in variants}


def _render_variants(
    rows: Sequence[Any], templates: tuple[Variant, ...], systems: tuple[Variant, ...], message_sets: tuple[Variant, ...]
) -> list[VariantRows]:
    """Every template/system (or messages) combination with its row renderer, each row rendered once here
    so that a bad row fails now, naming it; the calls render their rows again when they are read."""
    out: list[VariantRows] = []
    if message_sets:
        for m in message_sets:
            fill_messages(m, rows)  # checks every row
            out.append(VariantRows(_variant_names(m, None), functools.partial(_fill_one, m, rows)))
        return out
    for t in templates or (None,):
        for s in systems or (None,):
            render = _row_renderer(rows, None if t is None else t.value, None if s is None else s.value)
            try:
                for i in range(len(rows)):
                    render(i)
            except ValidationError as exc:
                if exc.field == "template" and t is not None and len(templates) > 1:
                    raise ValidationError(f"template[{t.name!r}]", exc.value, exc.problem) from None
                raise
            out.append(VariantRows(_variant_names(t, s), render))
    return out


def _own_messages(row: Any) -> Any:
    if isinstance(row, dict) and isinstance(row.get("messages"), list):
        return {**row, "messages": copy.deepcopy(row["messages"])}
    return row


def _fill_one(variant: Variant, rows: Sequence[Any], i: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    return fill_messages(variant, [rows[i]])[0]


def _variant_names(t: Variant | None, s: Variant | None) -> dict[str, str | None]:
    return {
        "template_name": None if t is None else t.name,
        "system_name": None if s is None else s.name,
        "template_hash": None if t is None else t.hash,
        "system_hash": None if s is None else s.hash,
    }


def _settings(
    models: list[str],
    temperatures: list[Any],
    top_ps: list[Any],
    max_tokens: list[int | None],
    seeds: list[int | None],
    params: Mapping[str, Any],
) -> list[Setting]:
    """Every combination of model and sampling settings, in grid order; what its calls share is built once."""
    out = []
    for model, temp, top_p, tokens, seed, extra in itertools.product(
        models, temperatures, top_ps, max_tokens, seeds, _param_grid(params)
    ):
        prov, bare = split_model(model)
        out.append(
            Setting(
                key=(temp, top_p, tokens, seed, extra),
                provider=prov,
                model=bare,
                temperature=None if temp is None else float(temp),
                top_p=None if top_p is None else float(top_p),
                max_tokens=tokens,
                params=dict(extra),
            )
        )
    return out


def _check_text(name: Any, template: Any, system: Any) -> None:
    if name is not None and not isinstance(name, str):
        raise ValidationError("name", name, "must be a string")
    if system is not None and (not isinstance(system, str) or not system.strip()):
        raise ValidationError("system", system, "must be a non-empty string, or None for no system message")
    if template is not None and (not isinstance(template, str) or not template.strip()):
        raise ValidationError("template", template, "must be a non-empty string like 'Summarize: {text}'")
    for field, text in (("name", name), ("system", system), ("template", template)):
        if text is not None:
            check_text_value(field, text)


def _check_models(models: list[Any]) -> None:
    for i, model in enumerate(models):
        where = "models" if len(models) == 1 else f"models[{i}]"
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


def _check_local_max_tokens(models: list[str], max_tokens: list[int | None]) -> None:
    if any(split_model(m)[0] == "local" for m in models):
        from llmlab.localmodel.server import MAX_TOKENS_LIMIT

        too_big = next((v for v in max_tokens if v is not None and v > MAX_TOKENS_LIMIT), None)
        if too_big is not None:  # the local server would refuse every call
            raise ValidationError("max_tokens", too_big, f"the local models accept at most {MAX_TOKENS_LIMIT}")


def _check_params(params: dict[str, Any]) -> None:
    for key, values in params.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ValidationError("params", key, "parameter names must be strings like 'presence_penalty'")
        if key in _RESERVED_PARAMS:
            raise ValidationError(
                f"params[{key!r}]", values, f"'{key}' is set by the Sweep itself; use its own argument"
            )
        if key in CLIENT_OPTIONS:
            raise ValidationError(
                f"params[{key!r}]",
                "...",
                f"'{key}' is an option of the openai client, not a request "
                "parameter; pass other parameters by name (unknown ones are sent in the body)",
            )
        for i, value in enumerate(as_list(values, f"params[{key!r}]", none_is_value=True)):
            where = f"params[{key!r}]" if not isinstance(values, (list, tuple)) else f"params[{key!r}][{i}]"
            _check_param_value(where, value, 0)


def _check_param_value(where: str, value: Any, depth: int) -> None:
    """A ``params`` value is sent as JSON: finite numbers, strings, bools, None, and lists/dicts of those."""
    if depth > MAX_PARAM_DEPTH:
        raise ValidationError(where, "...", f"nested more than {MAX_PARAM_DEPTH} levels deep")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        check_text_value(where, value)
    elif isinstance(value, (int, float)):
        if not is_finite_number(value):
            # NaN/inf are not JSON: every call would fail at the provider as "Out of range float values"
            raise ValidationError(where, value, "must be a finite number (NaN and infinity cannot be sent as JSON)")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_param_value(f"{where}[{i}]", item, depth + 1)
    elif isinstance(value, Mapping):
        for k, item in value.items():
            if not isinstance(k, str):
                raise ValidationError(where, k, "keys of a dict value must be strings (JSON object keys)")
            _check_param_value(f"{where}[{k!r}]", item, depth + 1)
    else:
        raise ValidationError(where, value, f"values must be JSON-serialisable (got {type(value).__name__})")


def _row_renderer(rows: Sequence[Any], template: str | None, system: str | None) -> RowRenderer:
    """A function giving (messages, data) of prompt row ``i``: the template filled, the system message added;
    ValidationError naming the row for a value the template cannot take."""
    parsed = _parse_template(template) if template is not None else []
    return _TemplateRows(rows, template, system, parsed, list(dict.fromkeys(f for _, f, _, _ in parsed if f)))


@dataclasses.dataclass(frozen=True)
class _TemplateRows:
    """The renderer of one template/system variant (a class, not a closure: a Sweep and its result pickle)."""

    rows: Sequence[Any]
    template: str | None
    system: str | None
    parsed: list[tuple[str, str | None, str | None, str | None]]
    fields: list[str]

    def __call__(self, i: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        rows, template, system, parsed, fields = self.rows, self.template, self.system, self.parsed, self.fields
        row = rows[i]
        if isinstance(row, list):  # message list
            msgs, data = [dict(m) for m in row], {}
        elif "messages" in row and isinstance(row["messages"], list):
            msgs = check_messages(row["messages"], f"prompts[{i}].messages")
            data = {k: v for k, v in row.items() if k != "messages"}
        else:
            data = dict(row)
            if template is not None:
                missing = [f for f in fields if f not in data]
                if missing:
                    raise ValidationError(
                        "template",
                        template,
                        f"variable {{{missing[0]}}} is missing from prompt row {i} (columns: {', '.join(map(str, data)) or 'none'})",
                    )
                content = _fill(parsed, data, i)
            else:
                if "prompt" not in data:
                    raise ValidationError(
                        f"prompts[{i}]",
                        row,
                        "no 'prompt' column; pass template='...{column}...' to build prompts from the row",
                    )
                content = data["prompt"]
                if content is None or (isinstance(content, float) and math.isnan(content)):
                    raise ValidationError(f"prompts[{i}].prompt", content, "missing value (None/NaN); give the text")
                if not isinstance(content, str):
                    raise ValidationError(
                        f"prompts[{i}].prompt",
                        content,
                        f"must be a string, not {type(content).__name__} (it would be sent as its repr)",
                    )
                check_text_value(f"prompts[{i}].prompt", content)
            if not str(content).strip():
                raise ValidationError(f"prompts[{i}]", content, "empty prompt")
            msgs = [{"role": "user", "content": content}]
        if system is not None and not any(m.get("role") == "system" for m in msgs):
            msgs = [{"role": "system", "content": system}] + msgs
        return msgs, data


def _parse_template(template: str) -> list[tuple[str, str | None, str | None, str | None]]:
    """The template's pieces, each placeholder checked: a plain column name, a known conversion, no nested field."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValidationError("template", template, f"malformed: {exc}") from None
    for _, f, spec, conv in parsed:
        if f is None:
            continue
        shown = "{" + f + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
        if not f:
            raise ValidationError(
                "template",
                template,
                "placeholder {} must name a column, like {text}; write {{ and }} for literal braces",
            )
        if f.isdigit():
            raise ValidationError(
                "template", template, f"placeholder {shown} must be a plain column name, like {{text}}, not a position"
            )
        if not f.isidentifier():
            raise ValidationError(
                "template",
                template,
                f"placeholder {shown} must be a plain column name (no attribute or index access like .x or [0])",
            )
        if conv is not None and conv not in _CONVERSIONS:
            raise ValidationError(
                f"template.{f}", template, f"placeholder {shown}: unknown conversion '!{conv}'; use !r, !s or !a"
            )
        if spec and ("{" in spec or "}" in spec):
            raise ValidationError(
                f"template.{f}", template, f"placeholder {shown}: nested fields in a format spec are not supported"
            )
    return parsed


def _fill(parsed: list[tuple[str, str | None, str | None, str | None]], data: Mapping[str, Any], row: int) -> str:
    """The template filled from one row; a value that is missing, not text-like or that its format spec
    cannot take is refused naming the row and the column."""
    out = []
    for literal, f, spec, conv in parsed:
        out.append(literal)
        if f is None:
            continue
        where = f"prompts[{row}].{f}"
        value = data[f]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            raise ValidationError(where, value, f"empty value for template variable {{{f}}}")
        if isinstance(value, str):
            check_text_value(where, value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if not is_finite_number(value) and not isinstance(value, int):
                raise ValidationError(where, value, f"template variable {{{f}}} must be a finite number or text")
        elif not isinstance(value, bool):
            raise ValidationError(
                where,
                value,
                f"template variable {{{f}}} must be text or a number, not {type(value).__name__} "
                "(it would be sent as its Python repr); join it into a string first",
            )
        if conv is not None:
            convert: dict[str, Callable[[object], str]] = {"r": repr, "s": str, "a": ascii}
            value = convert[conv](value)
        try:
            out.append(format(value, spec or ""))
        except (ValueError, TypeError) as exc:
            raise ValidationError(where, value, f"placeholder {{{f}:{spec}}} cannot format this value: {exc}") from None
    return "".join(out)


def _param_grid(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    keys = sorted(params)
    combos = itertools.product(*[as_list(params[k], k, none_is_value=True) for k in keys])
    return [dict(zip(keys, combo)) for combo in combos]
