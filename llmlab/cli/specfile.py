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
    if not path.exists():
        raise ValidationError("spec", str(path), "file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValidationError("spec", str(path), "not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValidationError("spec", str(path), f"invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ValidationError("spec", str(path), "the top level must be a mapping of keys like prompts:, models:")
    unknown = sorted(set(data) - SWEEP_KEYS - {"run", "providers"})
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
    bad = sorted(set(run) - RUN_KEYS)
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
        bad = sorted(set(conf) - PROVIDER_KEYS)
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
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget < 0):
        raise ValidationError(f"{path.name}: run.budget_usd", budget, "must be a non-negative number of US dollars")
    cache = run.get("cache")
    if cache is not None and not isinstance(cache, bool) and cache not in ("record", "replay"):
        raise ValidationError(f"{path.name}: run.cache", cache, "expected true, false, record or replay")
