"""The bad-input table: each malformed input gets a clear error naming the input and the problem,
before any request is sent, and leaves the stored data (store and collector) exactly as it was."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

import llmlab as ll
from llmlab.cli.specfile import load_spec
from llmlab.collector import background, create_app
from llmlab.config import get_config
from llmlab.errors import ConfigError, LlmlabError, QueryError, ValidationError
from llmlab.plan.grid import MAX_PLAN_CALLS
from llmlab.plan.prompts import MAX_FIELD_CHARS
from llmlab.readback.datakit_query import raw_query
from llmlab.store import get_store


@dataclasses.dataclass
class Env:
    tmp: Path
    collector_url: str

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return path

    def fifo(self, name: str) -> Path:
        path = self.tmp / name
        os.mkfifo(path)
        return path

    def link(self, name: str, target: str) -> Path:
        path = self.tmp / name
        path.symlink_to(target)
        return path

    def otlp(self, body: bytes, content_type: str = "application/x-protobuf", encoding: str | None = None) -> None:
        headers = {"Content-Type": content_type, **({"Content-Encoding": encoding} if encoding else {})}
        response = httpx.post(self.collector_url + "/otel/v1/traces", content=body, headers=headers)
        if response.status_code != 200:
            raise CollectorRejected(response.status_code, response.json())

    def dql(self, query: str) -> None:
        cfg = dataclasses.replace(get_config(), datakit=self.collector_url)
        raw_query(cfg, query)

    def query_body(self, body: bytes) -> None:
        response = httpx.post(self.collector_url + "/v1/query/raw", content=body)
        if response.status_code != 200:
            raise CollectorRejected(response.status_code, response.json())


class CollectorRejected(Exception):
    def __init__(self, status: int, payload: dict[str, Any]) -> None:
        super().__init__(f"HTTP {status} {payload.get('error_code')}: {payload.get('message')}")
        self.status = status


def sweep(**kw: Any) -> ll.Sweep:
    args = {"prompts": ["What is rain?"], "models": ["fault/tiny"], "temperature": 0.0, "max_tokens": 4, **kw}
    return ll.Sweep(**args)


def spec(env: Env, text: str) -> None:
    load_spec(env.file("spec.yaml", text)).sweep


GOOD_PROMPTS = "prompts: ['What is rain?']\nmodels: [fault/tiny]\n"
#: ~500 bytes that expand to 9^9 (387 million) strings: eight levels of nine aliases over a list of nine
BILLION_LAUGHS = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8))
    + "prompts: *i\nmodels: [fault/tiny]\n"
)

#: (id, action, expected exception, regex the message must match: the input, then the problem)
CASES: list[tuple[str, Callable[[Env], Any], type[BaseException], str]] = [
    # --- sweep arguments -----------------------------------------------------------------------------
    ("prompts-empty-list", lambda e: sweep(prompts=[]), ValidationError, r"prompts=\[\]: .*empty"),
    (
        "prompts-bare-string",
        lambda e: sweep(prompts="What is rain?"),
        ValidationError,
        r"prompts=.*single string is not a prompt set",
    ),
    ("prompt-blank", lambda e: sweep(prompts=["ok", "  "]), ValidationError, r"prompts\[1\]=.*empty prompt"),
    ("prompts-mixed-types", lambda e: sweep(prompts=["a", 3]), ValidationError, r"prompts=.*mix of types"),
    (
        "message-bad-role",
        lambda e: sweep(prompts=[[{"role": "robot", "content": "hi"}]]),
        ValidationError,
        r"prompts\[0\]\[0\]\.role='robot': expected one of",
    ),
    (
        "message-no-content",
        lambda e: sweep(prompts=[[{"role": "user"}]]),
        ValidationError,
        r"prompts\[0\]\[0\]=.*needs 'role' and 'content'",
    ),
    (
        "model-unknown-local",
        lambda e: sweep(models=["local/huge"]),
        ValidationError,
        r"models='local/huge': unknown local model",
    ),
    ("model-empty", lambda e: sweep(models=[""]), ValidationError, r"models='': must be a non-empty string"),
    (
        "temperature-out-of-range",
        lambda e: sweep(temperature=[0.0, 3.0]),
        ValidationError,
        r"temperature=3\.0: must be in \[0, 2\]",
    ),
    (
        "temperature-not-a-number",
        lambda e: sweep(temperature="hot"),
        ValidationError,
        r"temperature='hot': must be a number",
    ),
    (
        "temperature-nan",
        lambda e: sweep(temperature=float("nan")),
        ValidationError,
        r"temperature=nan: must be a finite number",
    ),
    ("top_p-zero", lambda e: sweep(top_p=0), ValidationError, r"top_p=0: must be in \(0, 1\]"),
    ("max_tokens-zero", lambda e: sweep(max_tokens=0), ValidationError, r"max_tokens=0: must be a positive integer"),
    (
        "max_tokens-fraction",
        lambda e: sweep(max_tokens=1.5),
        ValidationError,
        r"max_tokens=1\.5: must be a positive integer",
    ),
    ("repeats-negative", lambda e: sweep(repeats=-1), ValidationError, r"repeats=-1: must be a positive integer"),
    ("seed-string", lambda e: sweep(seed="abc"), ValidationError, r"seed='abc': must be an integer"),
    (
        "params-reserved",
        lambda e: sweep(params={"temperature": [0.1]}),
        ValidationError,
        r"params\['temperature'\]=.*set by the Sweep itself",
    ),
    (
        "params-empty-list",
        lambda e: sweep(params={"presence_penalty": []}),
        ValidationError,
        r"params\['presence_penalty'\]=\[\]: empty list",
    ),
    (
        "params-not-json",
        lambda e: sweep(params={"logit_bias": [object()]}),
        ValidationError,
        r"params\['logit_bias'\]\[0\]=.*JSON-serialisable",
    ),
    (
        "template-missing-variable",
        lambda e: sweep(prompts=[{"q": "rain"}], template="Answer: {question}"),
        ValidationError,
        r"template=.*\{question\} is missing from prompt row 0",
    ),
    (
        "template-malformed",
        lambda e: sweep(prompts=[{"q": "rain"}], template="Answer: {q"),
        ValidationError,
        r"template='Answer: \{q': malformed",
    ),
    (
        "template-positional",
        lambda e: sweep(prompts=[{"q": "rain"}], template="Answer: {0}"),
        ValidationError,
        r"template=.*placeholder \{0\} must be a plain column name",
    ),
    (
        "template-empty-placeholder",
        lambda e: sweep(prompts=[{"q": "rain"}], template="Answer: {}"),
        ValidationError,
        r"template='Answer: \{\}': placeholder \{\} must name a column",
    ),
    (
        "model-unknown-provider",
        lambda e: sweep(models=["moonshoot/kimi-k2"]),
        ValidationError,
        r"models='moonshoot/kimi-k2': provider 'moonshoot' is unknown; known: .*fault",
    ),
    (
        "message-empty-content",
        lambda e: sweep(prompts=[[{"role": "user", "content": " "}]]),
        ValidationError,
        r"prompts\[0\]\[0\]\.content=' ': empty message",
    ),
    (
        "message-null-content",
        lambda e: sweep(prompts=[[{"role": "user", "content": None}]]),
        ValidationError,
        r"prompts\[0\]\[0\]\.content=None: empty message",
    ),
    ("system-empty", lambda e: sweep(system=""), ValidationError, r"system='': must be a non-empty string"),
    (
        "params-not-a-dict",
        lambda e: sweep(params=[("presence_penalty", 0.5)]),
        ValidationError,
        r"params=\[.*\]: must be a dict",
    ),
    (
        "params-key-not-a-name",
        lambda e: sweep(params={1: [0.5]}),
        ValidationError,
        r"params=1: parameter names must be strings",
    ),
    (
        "max_tokens-past-local-limit",
        lambda e: sweep(models=["local/tiny"], max_tokens=10**9),
        ValidationError,
        r"max_tokens=1000000000: the local models accept at most",
    ),
    (
        "run-budget-unbounded-replies",
        lambda e: sweep(max_tokens=None).run(display=False, budget_usd=1.0),
        ValidationError,
        r"budget_usd=1\.0: max_tokens=None leaves",
    ),
    (
        "params-client-option",
        lambda e: sweep(params={"extra_headers": [{"api-key": "k-123"}]}),
        ValidationError,
        r"params\['extra_headers'\]='\.\.\.': 'extra_headers' is an option of the openai client(?!.*k-123)",
    ),
    (
        "run-concurrency-zero",
        lambda e: sweep().run(display=False, concurrency=0),
        ValidationError,
        r"concurrency=0: must be a positive integer",
    ),
    (
        "run-budget-negative",
        lambda e: sweep().run(display=False, budget_usd=-1),
        ValidationError,
        r"budget_usd=-1: must be a non-negative number",
    ),
    (
        "run-cache-unknown",
        lambda e: sweep().run(display=False, cache="sometimes"),
        ValidationError,
        r"cache='sometimes': expected True, False",
    ),
    (
        "run-missing-api-key",
        lambda e: sweep(models=["gpt-4o-mini"]).run(display=False),
        ConfigError,
        r"provider 'openai': API key missing: set the OPENAI_API_KEY",
    ),
    # --- prompt files ---------------------------------------------------------------------------------
    (
        "prompts-path-is-a-directory",
        lambda e: sweep(prompts=e.tmp),
        ValidationError,
        r"prompts=.*: is a directory; pass a \.csv, \.jsonl or \.json file",
    ),
    (
        "prompts-path-wrong-type",
        lambda e: sweep(prompts=e.file("p.txt", "What is rain?\n")),
        ValidationError,
        r"prompts=.*p\.txt': unsupported file type '\.txt'",
    ),
    (
        "csv-missing-file",
        lambda e: sweep(prompts=str(e.tmp / "nope.csv")),
        ValidationError,
        r"prompts=.*nope\.csv': file not found",
    ),
    (
        "csv-row-too-long",
        lambda e: sweep(prompts=e.file("p.csv", "prompt\nrain\nsun,extra\n"), template=None),
        ValidationError,
        r"p\.csv:3': row has more fields than the 1 header",
    ),
    (
        "csv-row-too-short",
        lambda e: sweep(prompts=e.file("p.csv", "q,topic\nrain,weather\nsun\n"), template="{q}"),
        ValidationError,
        r"p\.csv:3': row has fewer fields than the 2 header",
    ),
    (
        "csv-latin1",
        lambda e: sweep(prompts=e.file("p.csv", "prompt\nrain\ncaf\u00e9 cr\u00e8me\n".encode("latin-1"))),
        ValidationError,
        r"p\.csv': not UTF-8 text \(bad byte at line 3\)",
    ),
    (
        "csv-header-only",
        lambda e: sweep(prompts=e.file("p.csv", "prompt\n")),
        ValidationError,
        r"p\.csv': the prompt set is empty",
    ),
    (
        "csv-no-prompt-column",
        lambda e: sweep(prompts=e.file("p.csv", "question\nrain\n")),
        ValidationError,
        r"prompts\[0\]=.*no 'prompt' column",
    ),
    (
        "jsonl-bad-json",
        lambda e: sweep(prompts=e.file("p.jsonl", '{"prompt": "rain"}\n{"prompt": "sun"\n')),
        ValidationError,
        r"p\.jsonl:2': invalid JSON",
    ),
    (
        "jsonl-number-line",
        lambda e: sweep(prompts=e.file("p.jsonl", '{"prompt": "rain"}\n42\n')),
        ValidationError,
        r"p\.jsonl:2': each line must be a JSON object",
    ),
    (
        "jsonl-utf16",
        lambda e: sweep(prompts=e.file("p.jsonl", '{"prompt": "rain"}\n'.encode("utf-16"))),
        ValidationError,
        r"p\.jsonl': not UTF-8 text",
    ),
    # --- YAML specs -----------------------------------------------------------------------------------
    (
        "yaml-syntax",
        lambda e: spec(e, "prompts: [a, b\nmodels: x\n"),
        ValidationError,
        r"spec=.*spec\.yaml': invalid YAML at line",
    ),
    (
        "yaml-unknown-key",
        lambda e: spec(e, GOOD_PROMPTS + "modles: [x]\n"),
        ValidationError,
        r"spec\.yaml: modles=.*unknown key",
    ),
    (
        "yaml-missing-prompts",
        lambda e: spec(e, "models: [fault/tiny]\n"),
        ValidationError,
        r"spec\.yaml: prompts=None: required key is missing",
    ),
    (
        "yaml-top-level-list",
        lambda e: spec(e, "- a\n- b\n"),
        ValidationError,
        r"spec\.yaml': the top level must be a mapping",
    ),
    (
        "yaml-bad-value",
        lambda e: spec(e, GOOD_PROMPTS + "temperature: hot\n"),
        ValidationError,
        r"spec\.yaml: temperature='hot': must be a number",
    ),
    (
        "yaml-run-unknown-key",
        lambda e: spec(e, GOOD_PROMPTS + "run: {concurency: 4}\n"),
        ValidationError,
        r"spec\.yaml: run\.concurency=4: unknown key",
    ),
    (
        "yaml-run-bad-budget",
        lambda e: spec(e, GOOD_PROMPTS + "run: {budget_usd: ten}\n"),
        ValidationError,
        r"spec\.yaml: run\.budget_usd='ten': must be a non-negative number",
    ),
    (
        "yaml-prompt-file-missing",
        lambda e: spec(e, "prompts: missing.csv\n"),
        ValidationError,
        r"spec\.yaml: prompts=.*missing\.csv': file not found",
    ),
    # --- hostile input (#16): non-finite numbers, plan and file sizes, bad prompt values, templates ---------
    (
        "run-budget-nan",
        lambda e: sweep().run(display=False, budget_usd=float("nan")),
        ValidationError,
        r"budget_usd=nan: must be a non-negative number of US dollars \(finite",
    ),
    (
        "run-budget-inf",
        lambda e: sweep().run(display=False, budget_usd=float("inf")),
        ValidationError,
        r"budget_usd=inf: must be a non-negative number",
    ),
    (
        "yaml-run-budget-nan",
        lambda e: spec(e, GOOD_PROMPTS + "run: {budget_usd: .nan}\n"),
        ValidationError,
        r"spec\.yaml: run\.budget_usd=nan: must be a non-negative number of US dollars \(finite\)",
    ),
    (
        "temperature-inf",
        lambda e: sweep(temperature=float("inf")),
        ValidationError,
        r"temperature=inf: must be a finite",
    ),
    ("top_p-nan", lambda e: sweep(top_p=[1.0, float("nan")]), ValidationError, r"top_p=nan: must be a finite"),
    (
        "temperature-int-past-float",
        lambda e: sweep(temperature=10**400),
        ValidationError,
        r"temperature=1000.*: must be a finite number",
    ),
    (
        "temperature-int-past-repr-limit",
        lambda e: sweep(temperature=10**5000),
        ValidationError,
        r"temperature=<int>: must be a finite number",
    ),
    (
        "max_tokens-inf",
        lambda e: sweep(max_tokens=float("inf")),
        ValidationError,
        r"max_tokens=inf: must be a positive",
    ),
    ("repeats-nan", lambda e: sweep(repeats=float("nan")), ValidationError, r"repeats=nan: must be a positive integer"),
    ("seed-nan", lambda e: sweep(seed=float("nan")), ValidationError, r"seed=nan: must be an integer"),
    (
        "params-nan",
        lambda e: sweep(params={"presence_penalty": [0.0, float("nan")]}),
        ValidationError,
        r"params\['presence_penalty'\]\[1\]=nan: must be a finite number \(NaN and infinity cannot be sent as JSON\)",
    ),
    (
        "params-nested-inf",
        lambda e: sweep(params={"logit_bias": [{"50256": float("-inf")}]}),
        ValidationError,
        r"params\['logit_bias'\]\[0\]\['50256'\]=-inf: must be a finite number",
    ),
    (
        "params-nested-too-deep",
        lambda e: sweep(params={"x": [eval("[" * 200 + "]" * 200)]}),
        ValidationError,
        r"params\['x'\]\[0\].*nested more than 32 levels",
    ),
    (
        "provider-rpm-nan",
        lambda e: ll.provider("p6", base_url="http://x/v1", rpm=float("nan")),
        ConfigError,
        r"provider 'p6': rpm=nan must be a positive number \(finite",
    ),
    (
        "provider-tpm-inf",
        lambda e: ll.provider("p7", base_url="http://x/v1", tpm=float("inf")),
        ConfigError,
        r"provider 'p7': tpm=inf must be a positive number \(finite; omit it for no limit\)",
    ),
    (
        "provider-timeout-nan",
        lambda e: ll.provider("p8", base_url="http://x/v1", timeout=float("nan")),
        ConfigError,
        r"provider 'p8': timeout=nan must be a positive number",
    ),
    (
        "provider-rpm-int-past-float",
        lambda e: ll.provider("p9", base_url="http://x/v1", rpm=10**400),
        ConfigError,
        r"provider 'p9': rpm=1000.* must be a positive number \(finite",
    ),
    (
        "plan-repeats-billion",
        lambda e: sweep(repeats=10**9),
        ValidationError,
        rf"calls=1000000000: the sweep would make 1,000,000,000 calls \(1,000,000,000 repeats\); at most "
        rf"{MAX_PLAN_CALLS:,} are planned",
    ),
    (
        "plan-params-product",
        lambda e: sweep(params={"a": list(range(1000)), "b": list(range(1000))}),
        ValidationError,
        r"would make 1,000,000 calls \(1,000 params\['a'\] × 1,000 params\['b'\]\)",
    ),
    (
        "yaml-repeats-huge",
        lambda e: spec(e, GOOD_PROMPTS + "repeats: 1000000000000\n"),
        ValidationError,
        r"spec\.yaml: calls=3000000000000: the sweep would make 3,000,000,000,000 calls \(3 temperature × "
        r"1,000,000,000,000 repeats\)",
    ),
    (
        "yaml-billion-laughs",
        lambda e: spec(e, BILLION_LAUGHS),
        ValidationError,
        r"spec=.*spec\.yaml': its aliases \(\*name\) expand it to [\d,]+\+ values; at most 100,000",
    ),
    (
        "yaml-alias-cycle",
        lambda e: spec(e, "prompts: &p [*p]\nmodels: [fault/tiny]\n"),
        ValidationError,
        r"spec\.yaml': invalid YAML at line 1: an alias refers to the mapping or list that contains it",
    ),
    (
        "yaml-too-large",
        lambda e: spec(e, GOOD_PROMPTS + "#" + "x" * (1024 * 1024) + "\n"),
        ValidationError,
        r"spec\.yaml': larger than 1024 KiB; put long prompt sets in a prompts file",
    ),
    (
        "yaml-is-a-fifo",
        lambda e: load_spec(e.fifo("spec.yaml")),
        ValidationError,
        r"spec=.*spec\.yaml': is not a regular file",
    ),
    (
        "yaml-is-dev-zero",
        lambda e: load_spec(Path("/dev/zero")),
        ValidationError,
        r"spec='/dev/zero': is not a regular",
    ),
    (
        "yaml-deeply-nested",
        lambda e: spec(e, "prompts: " + "[" * 5000 + "]" * 5000 + "\n"),
        ValidationError,
        r"spec\.yaml': invalid YAML: nested too deep",
    ),
    (
        "yaml-non-string-keys",
        lambda e: spec(e, "1: a\nfoo: 2\n" + GOOD_PROMPTS),
        ValidationError,
        r"spec\.yaml: 1='a': unknown key",
    ),
    (
        "yaml-run-non-string-keys",
        lambda e: spec(e, GOOD_PROMPTS + "run: {1: 2, x: 3}\n"),
        ValidationError,
        r"spec\.yaml: run\.1=2: unknown key",
    ),
    (
        "yaml-run-cassette-not-a-path",
        lambda e: spec(e, GOOD_PROMPTS + "run: {cache: replay, cassette: 5}\n"),
        ValidationError,
        r"spec\.yaml: run\.cassette=5: must be the path of a \.json file",
    ),
    (
        "yaml-prompts-dict",
        lambda e: spec(e, "prompts: {a: 1}\nmodels: [fault/tiny]\n"),
        ValidationError,
        r"spec\.yaml: prompts=\{'a': 1\}: a dict is not a prompt set",
    ),
    (
        "csv-field-over-cap",
        lambda e: sweep(prompts=e.file("p.csv", "prompt\nrain\n" + "x" * (MAX_FIELD_CHARS + 1) + "\n")),
        ValidationError,
        r"p\.csv:3': a field is longer than 16,777,216 characters",
    ),
    (
        "jsonl-line-over-cap",
        lambda e: sweep(prompts=e.file("p.jsonl", '{"prompt": "' + "x" * MAX_FIELD_CHARS + '"}\n')),
        ValidationError,
        r"p\.jsonl:1': line of 16,777,2\d\d characters; at most 16,777,216",
    ),
    (
        "csv-unclosed-quote",
        lambda e: sweep(prompts=e.file("p.csv", 'prompt\nrain\n"sun\n')),
        ValidationError,
        r"p\.csv:3': malformed CSV \(unexpected end of data\)",
    ),
    (
        "csv-duplicate-columns",
        lambda e: sweep(prompts=e.file("p.csv", "prompt,prompt\nrain,sun\n")),
        ValidationError,
        r"p\.csv:1': duplicate column 'prompt' in the header row",
    ),
    (
        "csv-zero-bytes",
        lambda e: sweep(prompts=e.file("p.csv", b"")),
        ValidationError,
        r"p\.csv': CSV has no header row",
    ),
    ("csv-is-a-fifo", lambda e: sweep(prompts=e.fifo("p.csv")), ValidationError, r"p\.csv': is not a regular file"),
    (
        "csv-links-to-dev-zero",
        lambda e: sweep(prompts=e.link("p.csv", "/dev/zero")),
        ValidationError,
        r"p\.csv': is not a regular file",
    ),
    (
        "json-nested-too-deep",
        lambda e: sweep(prompts=e.file("p.json", "[" * 100_000 + "]" * 100_000)),
        ValidationError,
        r"p\.json': invalid JSON",
    ),
    (
        "jsonl-lone-surrogate",
        lambda e: sweep(prompts=e.file("p.jsonl", '{"prompt": "rain \\ud800"}\n')),
        ValidationError,
        r"prompts\[0\]\.prompt='rain \\ud800': holds a lone surrogate",
    ),
    (
        "jsonl-nan-prompt",
        lambda e: sweep(prompts=e.file("p.jsonl", '{"prompt": NaN}\n')),
        ValidationError,
        r"prompts\[0\]\.prompt=nan: missing value",
    ),
    (
        "prompts-dict",
        lambda e: sweep(prompts={"a": 1}),
        ValidationError,
        r"prompts=\{'a': 1\}: a dict is not a prompt set \(its keys would be sent",
    ),
    ("prompts-set", lambda e: sweep(prompts={"rain"}), ValidationError, r"prompts=\{'rain'\}: a set has no order"),
    ("prompts-bytes", lambda e: sweep(prompts=b"rain"), ValidationError, r"prompts=b'rain': expected a list"),
    (
        "prompts-list-of-none",
        lambda e: sweep(prompts=[None]),
        ValidationError,
        r"prompts\[0\]=None: a prompt must be a string, a dict \(row\) or a message list, not NoneType",
    ),
    (
        "prompt-value-nan",
        lambda e: sweep(prompts=[{"prompt": float("nan")}]),
        ValidationError,
        r"prompts\[0\]\.prompt=nan: missing value \(None/NaN\)",
    ),
    (
        "prompt-value-none",
        lambda e: sweep(prompts=[{"prompt": "rain"}, {"prompt": None}]),
        ValidationError,
        r"prompts\[1\]\.prompt=None: missing value",
    ),
    (
        "prompt-value-int",
        lambda e: sweep(prompts=[{"prompt": 42}]),
        ValidationError,
        r"prompts\[0\]\.prompt=42: must be a string, not int",
    ),
    (
        "prompt-lone-surrogate",
        lambda e: sweep(prompts=["rain \udc80"]),
        ValidationError,
        r"prompts\[0\]\.prompt=.*holds a lone surrogate '\\udc80' at position 5",
    ),
    (
        "system-lone-surrogate",
        lambda e: sweep(system="be brief \ud800"),
        ValidationError,
        r"system=.*holds a lone surrogate",
    ),
    (
        "template-var-nan",
        lambda e: sweep(prompts=[{"q": "rain"}, {"q": float("nan")}], template="Q: {q}"),
        ValidationError,
        r"prompts\[1\]\.q=nan: empty value for template variable \{q\}",
    ),
    (
        "template-var-inf-in-dataframe",
        lambda e: sweep(prompts=pd.DataFrame({"q": [float("inf")]}), template="Q: {q}"),
        ValidationError,
        r"prompts\[0\]\.q=inf: template variable \{q\} must be a finite number or text",
    ),
    (
        "template-var-list",
        lambda e: sweep(prompts=[{"q": ["a", "b"]}], template="Q: {q}"),
        ValidationError,
        r"prompts\[0\]\.q=\['a', 'b'\]: template variable \{q\} must be text or a number, not list",
    ),
    (
        "dataframe-duplicate-columns",
        lambda e: sweep(prompts=pd.DataFrame([["a", "b"]], columns=["prompt", "prompt"])),
        ValidationError,
        r"prompts='DataFrame': duplicate column 'prompt'",
    ),
    (
        "message-content-parts-not-dicts",
        lambda e: sweep(prompts=[[{"role": "user", "content": [1, 2]}]]),
        ValidationError,
        r"prompts\[0\]\[0\]\.content=\[1, 2\]: content parts must be dicts",
    ),
    (
        "template-format-spec",
        lambda e: sweep(prompts=[{"q": "rain"}], template="Q: {q:d}"),
        ValidationError,
        r"prompts\[0\]\.q='rain': placeholder \{q:d\} cannot format this value: Unknown format code 'd'",
    ),
    (
        "template-conversion",
        lambda e: sweep(prompts=[{"q": "rain"}], template="Q: {q!z}"),
        ValidationError,
        r"template\.q=.*placeholder \{q!z\}: unknown conversion '!z'; use !r, !s or !a",
    ),
    (
        "template-attribute",
        lambda e: sweep(prompts=[{"q": "rain"}], template="Q: {q.upper}"),
        ValidationError,
        r"template=.*placeholder \{q\.upper\} must be a plain column name \(no attribute or index access",
    ),
    (
        "template-index",
        lambda e: sweep(prompts=[{"q": "rain"}], template="Q: {q[0]}"),
        ValidationError,
        r"template=.*placeholder \{q\[0\]\} must be a plain column name",
    ),
    (
        "template-nested-spec",
        lambda e: sweep(prompts=[{"q": "rain", "w": "5"}], template="Q: {q:{w}}"),
        ValidationError,
        r"template\.q=.*nested fields in a format spec are not supported",
    ),
    # --- configuration --------------------------------------------------------------------------------
    (
        "config-datakit-scheme",
        lambda e: ll.configure(datakit="ftp://example.com"),
        ConfigError,
        r"datakit='ftp://example\.com': expected 'embedded', None, or an http",
    ),
    (
        "config-env-datakit",
        lambda e: _env_configure(LLMLAB_DATAKIT_URL="localhost:9529"),
        ConfigError,
        r"LLMLAB_DATAKIT_URL='localhost:9529': expected",
    ),
    (
        "config-env-trace-content",
        lambda e: _env_configure(TRACELOOP_TRACE_CONTENT="maybe"),
        ConfigError,
        r"TRACELOOP_TRACE_CONTENT='maybe': expected true or false",
    ),
    (
        "config-env-headers",
        lambda e: _env_configure(TRACELOOP_HEADERS="x-token"),
        ConfigError,
        r"TRACELOOP_HEADERS: entry 'x-token' has no '=value'",
    ),
    (
        "config-env-headers-colon",
        lambda e: _env_configure(TRACELOOP_HEADERS="x-api-key: tok-9f8e7d6c5b4a"),
        ConfigError,
        r"TRACELOOP_HEADERS: entry 'x-api-key' has no '=value'(?!.*tok-9f8e)",
    ),
    (
        "config-home-is-a-file",
        lambda e: ll.configure(home=e.file("afile", "x")),
        ConfigError,
        r"home=.*afile': exists and is not a directory",
    ),
    (
        "config-trace-content-type",
        lambda e: ll.configure(trace_content="yes"),
        ConfigError,
        r"trace_content='yes': must be True or False",
    ),
    (
        "provider-bad-name",
        lambda e: ll.provider("my provider", base_url="http://x/v1"),
        ConfigError,
        r"provider name='my provider': use letters",
    ),
    (
        "provider-url-no-scheme",
        lambda e: ll.provider("p2", base_url="localhost:8000/v1"),
        ConfigError,
        r"provider 'p2': base_url='localhost:8000/v1' must start with http",
    ),
    (
        "provider-rpm-zero",
        lambda e: ll.provider("p3", base_url="http://x/v1", rpm=0),
        ConfigError,
        r"provider 'p3': rpm=0 must be a positive number",
    ),
    (
        "provider-key-as-env-name",
        lambda e: ll.provider("p4", base_url="http://x/v1", api_key_env="k3y-pasted-by-mistake-0042"),
        ConfigError,
        r"provider 'p4': api_key_env must be the name of an environment variable(?!.*k3y-pasted)",
    ),
    (
        "provider-headers-not-a-dict",
        lambda e: ll.provider("p5", base_url="http://x/v1", headers="api-key=t0k"),
        ConfigError,
        r"provider 'p5': headers must be a dict(?!.*t0k)",
    ),
    ("config-home-empty", lambda e: ll.configure(home=""), ConfigError, r"home='': must be a directory path"),
    (
        "config-headers-not-strings",
        lambda e: ll.configure(headers={"x-token": 12345}),
        ConfigError,
        r"headers: expected a dict of header name to string value(?!.*12345)",
    ),
    # --- OTLP bodies sent to the collector ------------------------------------------------------------
    (
        "otlp-content-type",
        lambda e: e.otlp(b"{}", "text/plain"),
        CollectorRejected,
        r"HTTP 400 otel\.bad_content_type: Content-Type must be application/x-protobuf",
    ),
    ("otlp-garbage-protobuf", lambda e: e.otlp(b"\xff\x00garbage"), CollectorRejected, r"HTTP 400 otel\.bad_body"),
    (
        "otlp-bad-json",
        lambda e: e.otlp(b'{"resourceSpans": [', "application/json"),
        CollectorRejected,
        r"HTTP 400 otel\.bad_body",
    ),
    (
        "otlp-not-gzip",
        lambda e: e.otlp(b"plain bytes", encoding="gzip"),
        CollectorRejected,
        r"HTTP 400 otel\.bad_gzip: body is not valid gzip",
    ),
    (
        "otlp-encoding",
        lambda e: e.otlp(b"x", encoding="br"),
        CollectorRejected,
        r"HTTP 400 otel\.bad_content_encoding: unsupported Content-Encoding 'br'",
    ),
    (
        "otlp-gzip-bomb",
        lambda e: e.otlp(gzip.compress(b"\0" * (17 * 1024 * 1024)), encoding="gzip"),
        CollectorRejected,
        r"HTTP 413 otel\.body_too_large",
    ),
    # --- DQL queries ----------------------------------------------------------------------------------
    ("dql-syntax", lambda e: e.dql("T::re(`.*`) {service = }"), QueryError, r"HTTP 400: .*"),
    ("dql-namespace", lambda e: e.dql("X::opentelemetry"), QueryError, r"HTTP 400: .*namespace"),
    ("dql-message-filter", lambda e: e.dql("T::re(`.*`) {message = 'x'}"), QueryError, r"HTTP 400: .*message"),
    (
        "dql-body-not-json",
        lambda e: e.query_body(b"queries please"),
        CollectorRejected,
        r"HTTP 400 query\.bad_json: body is not JSON",
    ),
    (
        "dql-body-no-queries",
        lambda e: e.query_body(b'{"q": 1}'),
        CollectorRejected,
        r'HTTP 400 query\.invalid_dql: body must be \{"queries"',
    ),
]


def _env_configure(**env: str) -> None:
    import os

    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        ll.configure()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _fingerprint(path: Path) -> str:
    import sqlite3

    digest = hashlib.sha256()
    with sqlite3.connect(path) as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        for table in tables:
            # sorted in Python: some tables have no rowid (the cache is WITHOUT ROWID)
            for row in sorted(repr(r) for r in con.execute(f"SELECT * FROM {table}")):
                digest.update(row.encode())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    db = tmp_path_factory.mktemp("collector") / "collector.db"
    app = create_app(db)
    server = background(app).start()
    # one good span, so "nothing harmed" compares real content
    good = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "s"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "0" * 31 + "1",
                                "spanId": "0" * 15 + "1",
                                "name": "x",
                                "kind": 3,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000001000000000",
                            }
                        ]
                    }
                ],
            }
        ]
    }
    assert httpx.post(server.url + "/otel/v1/traces", json=good).status_code == 200
    yield server.url, db
    server.stop()


@pytest.fixture(scope="module")
def fault():
    """One fault server (no faults: it only counts requests) for the whole table."""
    from llmlab.plan import providers
    from llmlab.testing import FaultServer

    server = FaultServer().start()
    ll.provider("fault", base_url=server.base_url, api_key_env=None)
    yield server
    server.stop()
    providers._registry.pop("fault", None)


@pytest.fixture(scope="module")
def seeded_home(tmp_path_factory):
    """A home whose store holds a finished sweep, shared by the cases (each checks it is unchanged)."""
    home = tmp_path_factory.mktemp("seeded") / "home"
    ll.configure(home=home, datakit=None)
    good = ll.Sweep(prompts=["What is rain?"], models=["local/tiny"], temperature=0.0, max_tokens=4).run(display=False)
    assert (good.df["status"] == "ok").all()
    return home


def test_the_table_has_at_least_30_cases():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error_sends_nothing_and_harms_nothing(case, fault, collector, seeded_home, tmp_path):
    name, action, expected, pattern = case
    collector_url, collector_db = collector
    ll.configure(home=seeded_home, datakit=None)
    ll.provider("fault", base_url=fault.base_url, api_key_env=None)
    fault.app.reset()
    store_before = _fingerprint(get_store().path)
    collector_before = _fingerprint(collector_db)

    with pytest.raises(expected) as info:
        action(Env(tmp_path, collector_url))

    message = str(info.value)
    assert re.search(pattern, message), f"{name}: unclear error {message!r}"
    assert "Traceback" not in message and len(message) < 600
    assert isinstance(info.value, (LlmlabError, CollectorRejected))  # one catchable tree, or the HTTP answer
    assert fault.stats()["requests"] == 0, f"{name}: a request was sent"
    assert _fingerprint(get_store().path) == store_before, f"{name}: the store changed"
    assert _fingerprint(collector_db) == collector_before, f"{name}: the collector's data changed"
