"""YAML sweep specs for ``llmlab sweep SPEC.yaml``.

Example spec::

    name: summaries
    prompts: prompts.csv          # or a list of strings; relative paths are relative to the spec
    template: "Summarize: {text}"   # or variants: {terse: "...{text}", steps: "..."} or a list (t1, t2, …)
    system: [Be brief., Be kind.]   # the same three forms (s1, s2, …); or messages: [{role: user, content: ...}]
    providers:                      # registered before the sweep is built
      moonshot: {base_url: "https://api.moonshot.cn/v1", api_key_env: MOONSHOT_API_KEY, rpm: 60}
    models: [local/tiny, local/small, moonshot/kimi-k2]
    temperature: [0.0, 0.7]
    top_p: [1.0, 0.9]
    max_tokens: 48
    repeats: 2
    params: {presence_penalty: [0.0, 0.5]}
    run: {concurrency: 8, budget_usd: 0.50, cache: true}   # or cache: replay, cassette: run.json
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from llmlab.errors import ConfigError, ValidationError
from llmlab.plan.providers import provider
from llmlab.sweep import Sweep
from llmlab.text import is_finite_number

#: The largest spec file read (bytes): a spec is settings; long prompt sets belong in a prompts file.
MAX_SPEC_BYTES = 1024 * 1024
#: The most nodes a spec may hold once its aliases are expanded (``*ref`` counted as a copy of what it names).
#: Anchors and aliases stay usable (``temps: &t [0.0, 0.7]`` … ``*t``), but a "billion laughs" spec, whose
#: 9 × 9 aliases expand 633 bytes into 10^9 strings, is refused before it is built.
MAX_SPEC_NODES = 100_000

SWEEP_KEYS = {
    "name",
    "prompts",
    "template",
    "system",
    "messages",
    "models",
    "temperature",
    "top_p",
    "max_tokens",
    "repeats",
    "seed",
    "params",
}
RUN_KEYS = {"concurrency", "budget_usd", "cache", "cassette"}
PROVIDER_KEYS = {"base_url", "api_key_env", "rpm", "tpm", "headers", "timeout"}


@dataclasses.dataclass
class LoadedSpec:
    sweep: Sweep
    run_kwargs: dict[str, Any]


def load_spec(path: Path) -> LoadedSpec:
    """Parse and validate a YAML spec; errors name the file and the bad key or value."""
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ValidationError("spec", str(path), "the top level must be a mapping of keys like prompts:, models:")
    unknown = sorted(set(data) - SWEEP_KEYS - {"run", "providers"}, key=str)  # keys may be numbers, dates, null
    if unknown:
        raise ValidationError(
            f"{path.name}: {unknown[0]}",
            data[unknown[0]],
            f"unknown key; known keys: {', '.join(sorted(SWEEP_KEYS | {'run', 'providers'}))}",
        )
    if "prompts" not in data:
        raise ValidationError(f"{path.name}: prompts", None, "required key is missing")
    _register_providers(path, data.pop("providers", None))
    run = data.pop("run", None) or {}
    if not isinstance(run, dict):
        raise ValidationError(f"{path.name}: run", run, "must be a mapping (concurrency, budget_usd, cache)")
    bad = sorted(set(run) - RUN_KEYS, key=str)
    if bad:
        raise ValidationError(
            f"{path.name}: run.{bad[0]}", run[bad[0]], f"unknown key; known: {', '.join(sorted(RUN_KEYS))}"
        )
    _check_run(path, run)
    if isinstance(run.get("cassette"), str) and not Path(run["cassette"]).is_absolute():
        run["cassette"] = str(path.parent / run["cassette"])  # relative to the spec, like prompts
    prompts = data["prompts"]
    if isinstance(prompts, str):
        candidate = Path(prompts)
        data["prompts"] = candidate if candidate.is_absolute() else (path.parent / candidate)
    try:
        sweep = Sweep(**data)
    except ValidationError as exc:
        raise ValidationError(f"{path.name}: {exc.field}", exc.value, exc.problem) from None
    return LoadedSpec(sweep, run)


def _read_yaml(path: Path) -> Any:
    """The spec's YAML as plain data: a regular UTF-8 file of at most :data:`MAX_SPEC_BYTES`, safe tags only,
    and at most :data:`MAX_SPEC_NODES` nodes with its aliases expanded."""
    if not path.exists():
        raise ValidationError("spec", str(path), "file not found")
    if not path.is_file():  # a FIFO would hang the read, /dev/zero would never end
        raise ValidationError("spec", str(path), "is not a regular file (a directory, a pipe or a device?)")
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise ValidationError("spec", str(path), f"cannot be read: {exc.strerror or exc}") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise ValidationError(
            "spec",
            str(path),
            f"larger than {MAX_SPEC_BYTES // 1024} KiB; put long prompt sets in a prompts file (prompts: file.csv)",
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError("spec", str(path), "not UTF-8 text") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {}, set())
        if size > MAX_SPEC_NODES:
            raise ValidationError(
                "spec",
                str(path),
                f"its aliases (*name) expand it to {size:,}+ values; at most {MAX_SPEC_NODES:,} are "
                "allowed (a 'billion laughs' spec?)",
            )
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValidationError("spec", str(path), f"invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:
        raise ValidationError("spec", str(path), "invalid YAML: nested too deep") from None
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """How many nodes ``node`` stands for once every alias is a copy; stops counting past the cap."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise yaml.composer.ComposerError(
            problem="an alias refers to the mapping or list that contains it (a cycle)", problem_mark=node.start_mark
        )
    open_nodes.add(key)
    total = 1
    if isinstance(node, yaml.SequenceNode):
        children: list[yaml.Node] = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    else:
        children = []
    for child in children:
        total += _expanded_size(child, sizes, open_nodes)
        if total > MAX_SPEC_NODES:
            break
    open_nodes.discard(key)
    sizes[key] = total
    return total


def _register_providers(path: Path, providers: Any) -> None:
    """The ``providers:`` section: name → base_url, api_key_env, rpm, tpm, headers (and timeout),
    each registered with ``ll.provider`` so the sweep's ``models`` can name them."""
    if providers is None:
        return
    if not isinstance(providers, dict):
        raise ValidationError(f"{path.name}: providers", providers, "must be a mapping of name → {base_url: ...}")
    for name, conf in providers.items():
        where = f"{path.name}: providers.{name}"
        if not isinstance(conf, dict):
            raise ValidationError(where, conf, "must be a mapping with base_url (and api_key_env, rpm, tpm, headers)")
        bad = sorted(set(conf) - PROVIDER_KEYS, key=str)
        if bad:
            raise ValidationError(
                f"{where}.{bad[0]}", conf[bad[0]], f"unknown key; known: {', '.join(sorted(PROVIDER_KEYS))}"
            )
        headers = conf.get("headers")
        if headers is not None and not (
            isinstance(headers, dict) and all(isinstance(v, str) for v in headers.values())
        ):
            raise ValidationError(f"{where}.headers", "...", "must be a mapping of header name → text")
        try:
            provider(str(name), **conf)
        except ConfigError as exc:
            raise ValidationError(where, name, str(exc)) from None


def _check_run(path: Path, run: dict[str, Any]) -> None:
    """The ``run:`` values, checked here so that the error names the spec file."""
    conc = run.get("concurrency")
    if conc is not None and (isinstance(conc, bool) or not isinstance(conc, int) or conc <= 0):
        raise ValidationError(f"{path.name}: run.concurrency", conc, "must be a positive integer")
    budget = run.get("budget_usd")
    if budget is not None and (not is_finite_number(budget) or budget < 0):
        raise ValidationError(
            f"{path.name}: run.budget_usd", budget, "must be a non-negative number of US dollars (finite)"
        )
    cache = run.get("cache")
    if cache is not None and not isinstance(cache, bool) and cache not in ("record", "replay"):
        raise ValidationError(f"{path.name}: run.cache", cache, "expected true, false, record or replay")
    cassette = run.get("cassette")
    if cassette is not None and (not isinstance(cassette, str) or not cassette.strip()):
        raise ValidationError(f"{path.name}: run.cassette", cassette, "must be the path of a .json file")
