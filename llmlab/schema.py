"""Canonical call columns and the span-attribute names they are rebuilt from.

``res.df`` and ``ll.spans()`` share one set of columns (API.md). Spans come from llmlab's own
sweeps (which add ``llmlab.*`` attributes) and from any OpenLLMetry app, in either attribute
generation: current (traceloop-sdk >= 0.55: ``gen_ai.input.messages``, ``gen_ai.usage.input_tokens``)
or legacy (<= 0.54: ``gen_ai.prompt.N.content``, ``gen_ai.usage.prompt_tokens``), and, after a
trip through DataKit, with dots turned into underscores (``customer_tags``). :func:`row_from_span`
reads all of them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

CANONICAL_COLUMNS: list[str] = [
    "sweep_id",
    "call_id",
    "trace_id",
    "span_id",
    "service",
    "start_time",
    "end_time",
    "latency_ms",
    "ttft_ms",
    "tokens_per_s",
    "provider",
    "model",
    "response_model",
    "temperature",
    "top_p",
    "max_tokens",
    "seed",
    "repeat",
    "prompt_id",
    "prompt",
    "completion",
    "finish_reason",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "tokens_estimated",
    "cost_usd",
    "status",
    "error",
    "cached",
]

#: Extra columns llmlab adds after the canonical ones (all optional for other apps' spans).
EXTRA_COLUMNS: list[str] = [
    "queue_ms",
    "attempts",
    "retries",
    "itl_ms",
    "workflow",
    "span_name",
    "parent_id",
    "params",
]

#: Columns of a sweep's calls (``res.df``, ``ll.load``) beyond the canonical ones: the prompt variant
#: (names and short text hashes), what this run paid (``spent_usd``: 0 for a cache hit) and the human rating.
SWEEP_COLUMNS: list[str] = [
    "template_name",
    "system_name",
    "template_hash",
    "system_hash",
    "spent_usd",
    "rating",
    "rating_note",
]

#: Variant columns and the span attributes carrying them.
VARIANT_ATTRS: dict[str, str] = {
    "template_name": "llmlab.template_name",
    "system_name": "llmlab.system_name",
    "template_hash": "llmlab.template_hash",
    "system_hash": "llmlab.system_hash",
}

FLOAT_COLUMNS = {
    "latency_ms",
    "ttft_ms",
    "tokens_per_s",
    "temperature",
    "top_p",
    "cost_usd",
    "spent_usd",
    "queue_ms",
    "itl_ms",
}
INT_COLUMNS = {
    "max_tokens",
    "seed",
    "repeat",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "attempts",
    "retries",
    "rating",
}
BOOL_COLUMNS = {"tokens_estimated", "cached"}
TIME_COLUMNS = {"start_time", "end_time"}

# llmlab's own span attributes (set on every openai.chat span of a sweep).
A_SWEEP_ID = "llmlab.sweep_id"
A_CALL_ID = "llmlab.call_id"
A_PROMPT_ID = "llmlab.prompt_id"
A_REPEAT = "llmlab.repeat"
A_TTFT_MS = "llmlab.ttft_ms"
A_SEED = "llmlab.seed"
A_PROVIDER = "llmlab.provider"
A_ATTEMPTS = "llmlab.attempts"
A_QUEUE_MS = "llmlab.queue_ms"
A_TOKENS_ESTIMATED = "llmlab.tokens_estimated"
A_PARAMS = "llmlab.params"
A_TEMPLATE_NAME = VARIANT_ATTRS["template_name"]
A_SYSTEM_NAME = VARIANT_ATTRS["system_name"]
A_TEMPLATE_HASH = VARIANT_ATTRS["template_hash"]
A_SYSTEM_HASH = VARIANT_ATTRS["system_hash"]
ASSOC_PREFIX = "traceloop.association.properties."
WORKFLOW = "traceloop.workflow.name"
CHUNK_EVENT = "gen_ai.content.completion.chunk"
#: The span attributes that identify an llmlab call, for DataKit's ``customer_tags`` (docs/datakit.md):
#: listed there they become filterable columns (``llmlab_sweep_id``…) and ``ll.spans(sweep_id=…)``
#: filters in DQL instead of reading the sweep's whole time window.
SWEEP_CUSTOMER_TAGS = (
    A_SWEEP_ID,
    A_CALL_ID,
    A_PROMPT_ID,
    A_TEMPLATE_NAME,
    A_SYSTEM_NAME,
    "gen_ai.request.model",
    "traceloop.workflow.name",
)


_PROMPT_KEY = re.compile(r"gen_ai[._]prompt[._](\d+)[._](?:content|role)$")


def _first(attrs: Mapping[str, Any], *names: str) -> Any:
    """The first attribute present under any of ``names`` or their underscore forms."""
    for name in names:
        if name in attrs and attrs[name] not in (None, ""):
            return attrs[name]
        under = name.replace(".", "_")
        if under in attrs and attrs[under] not in (None, ""):
            return attrs[under]
    return None


def _num(value: Any, kind: type = float) -> Any:
    if value is None or value == "":
        return None
    try:
        return kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        return None


def _as_messages(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, list) else None


def message_text(message: Mapping[str, Any]) -> str:
    """The text of one message in either the OpenAI shape (``content``) or the OTel GenAI
    shape (``parts: [{"type": "text", "content": ...}]``)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    parts = message.get("parts") if content is None else content
    if isinstance(parts, list):
        texts = []
        for part in parts:
            if isinstance(part, Mapping):
                texts.append(str(part.get("content") or part.get("text") or ""))
            else:
                texts.append(str(part))
        return "".join(texts)
    return "" if content is None else str(content)


def prompt_and_completion(attrs: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(prompt, completion, finish_reason) from either attribute generation.

    The prompt is the last user message (what a sweep varies); the completion the first choice.
    """
    prompt = completion = finish = None
    msgs = _as_messages(_first(attrs, "gen_ai.input.messages"))
    if msgs:
        users = [m for m in msgs if isinstance(m, Mapping) and m.get("role") == "user"] or msgs
        prompt = message_text(users[-1])
    else:
        # indices may have gaps: DataKit's customer_tags often keep only gen_ai.prompt.1.content
        indices = sorted({int(m.group(1)) for k in attrs for m in [_PROMPT_KEY.match(k)] if m})
        last_user, last_any = None, None
        for i in indices:
            content = _first(attrs, f"gen_ai.prompt.{i}.content")
            role = _first(attrs, f"gen_ai.prompt.{i}.role")
            if content is None:
                continue
            last_any = content
            if role in (None, "user"):
                last_user = content
        prompt = last_user if last_user is not None else last_any
        if isinstance(prompt, str) and prompt.startswith("[") and prompt.endswith("]"):
            parsed = _as_messages(prompt)  # newer legacy emitters put content parts as JSON
            if parsed and all(isinstance(p, Mapping) for p in parsed):
                prompt = message_text({"content": parsed})
    outs = _as_messages(_first(attrs, "gen_ai.output.messages"))
    if outs:
        completion = message_text(outs[0])
        finish = outs[0].get("finish_reason") if isinstance(outs[0], Mapping) else None
    else:
        completion = _first(attrs, "gen_ai.completion.0.content")
        finish = _first(attrs, "gen_ai.completion.0.finish_reason")
    if finish is None:
        reasons = _first(attrs, "gen_ai.response.finish_reasons")
        if isinstance(reasons, (list, tuple)) and reasons:
            finish = reasons[0]
        elif isinstance(reasons, str) and reasons:
            try:
                parsed = json.loads(reasons)
                finish = parsed[0] if isinstance(parsed, list) and parsed else reasons
            except ValueError:
                finish = reasons
    return (
        None if prompt is None else str(prompt),
        None if completion is None else str(completion),
        None if finish is None else str(finish),
    )


def is_llm_span(name: str | None, attrs: Mapping[str, Any]) -> bool:
    """Whether a span is an LLM call (``openai.chat`` and friends) rather than a workflow/task."""
    if _first(attrs, "gen_ai.request.model", "gen_ai.response.model") is not None:
        return True
    kind = _first(attrs, "llm.request.type", "gen_ai.operation.name")
    return kind in ("chat", "completion")


def datakit_times(start_ns: int | None, end_ns: int | None) -> tuple[int | None, int | None]:
    """A span's start and end at DataKit's precision: it stores ``start`` and ``duration`` in
    whole microseconds (truncated), so every source rounds the same way and agrees exactly."""
    if start_ns is None:
        return None, end_ns
    start_us = int(start_ns) // 1000
    if end_ns is None:
        return start_us * 1000, None
    return start_us * 1000, (start_us + (int(end_ns) - int(start_ns)) // 1000) * 1000


def row_from_span(
    attrs: Mapping[str, Any],
    *,
    trace_id: str | None = None,
    span_id: str | None = None,
    parent_id: str | None = None,
    name: str | None = None,
    service: str | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    status: str | None = None,
    error: str | None = None,
    first_chunk_ns: int | None = None,
) -> dict[str, Any]:
    """Rebuild one canonical row (plus extras) from a span's attributes and envelope.

    ``status`` is the OTel status ("ok"/"unset"/"error"); ``first_chunk_ns`` the time of the
    first ``gen_ai.content.completion.chunk`` event, used for TTFT when llmlab did not record it.
    """
    prompt, completion, finish = prompt_and_completion(attrs)
    start_ns, end_ns = datakit_times(start_ns, end_ns)
    latency = (end_ns - start_ns) / 1e6 if start_ns is not None and end_ns is not None else None
    ttft = _num(_first(attrs, A_TTFT_MS))
    if ttft is None and first_chunk_ns is not None and start_ns is not None:
        ttft = (int(first_chunk_ns) // 1000 * 1000 - start_ns) / 1e6  # µs, like the start
    input_tokens = _num(_first(attrs, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"), int)
    output_tokens = _num(_first(attrs, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"), int)
    total_tokens = _num(_first(attrs, "gen_ai.usage.total_tokens", "llm.usage.total_tokens"), int)
    if total_tokens is None and input_tokens is not None and output_tokens is not None:
        total_tokens = input_tokens + output_tokens
    tokens_per_s = None
    if output_tokens and latency is not None:
        gen_ms = latency - (ttft or 0.0)
        if gen_ms > 0:
            tokens_per_s = output_tokens / (gen_ms / 1000.0)
    provider = _first(attrs, A_PROVIDER, "gen_ai.provider.name", "gen_ai.system")
    is_error = (status or "").lower() == "error"
    model = _first(attrs, "gen_ai.request.model")
    own_provider = _first(attrs, A_PROVIDER)
    if model is not None and own_provider not in (None, "openai") and not str(model).startswith(f"{own_provider}/"):
        model = f"{own_provider}/{model}"  # llmlab names models provider/model
    row: dict[str, Any] = {
        "sweep_id": _first(attrs, A_SWEEP_ID, ASSOC_PREFIX + "sweep_id"),
        "call_id": _first(attrs, A_CALL_ID, ASSOC_PREFIX + "call_id"),
        "trace_id": trace_id,
        "span_id": span_id,
        "service": service or _first(attrs, "service.name", "service"),
        "start_time": pd.Timestamp(start_ns, unit="ns", tz="UTC") if start_ns is not None else None,
        "end_time": pd.Timestamp(end_ns, unit="ns", tz="UTC") if end_ns is not None else None,
        "latency_ms": latency,
        "ttft_ms": ttft,
        "tokens_per_s": tokens_per_s,
        "provider": None if provider is None else str(provider).lower(),
        "model": model,
        "response_model": _first(attrs, "gen_ai.response.model"),
        "temperature": _num(_first(attrs, "gen_ai.request.temperature")),
        "top_p": _num(_first(attrs, "gen_ai.request.top_p")),
        "max_tokens": _num(_first(attrs, "gen_ai.request.max_tokens"), int),
        "seed": _num(_first(attrs, A_SEED, "gen_ai.request.seed"), int),
        "repeat": _num(_first(attrs, A_REPEAT, ASSOC_PREFIX + "repeat"), int),
        "prompt_id": _first(attrs, A_PROMPT_ID, ASSOC_PREFIX + "prompt_id"),
        "prompt": prompt,
        "completion": completion,
        "finish_reason": finish,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": total_tokens,
        "tokens_estimated": bool(_first(attrs, A_TOKENS_ESTIMATED) in (True, "true", "True", 1)),
        "cost_usd": None,
        "status": "error" if is_error else "ok",
        "error": (error or "") if is_error else "",
        "cached": False,
        "queue_ms": _num(_first(attrs, A_QUEUE_MS)),
        "attempts": _num(_first(attrs, A_ATTEMPTS), int),
        "retries": None,
        "itl_ms": None,
        "workflow": _first(attrs, WORKFLOW),
        "span_name": name,
        "parent_id": parent_id,
        "params": _first(attrs, A_PARAMS),
    }
    for col, attr in VARIANT_ATTRS.items():
        value = _first(attrs, attr)
        if value is not None:
            row[col] = str(value)
    if row["attempts"] is not None:
        row["retries"] = max(0, row["attempts"] - 1)
    if output_tokens and output_tokens > 1 and latency is not None and ttft is not None:
        row["itl_ms"] = max(0.0, latency - ttft) / (output_tokens - 1)
    for key, value in attrs.items():
        for prefix in (ASSOC_PREFIX, ASSOC_PREFIX.replace(".", "_")):
            if key.startswith(prefix):
                prop = key[len(prefix) :]
                if prop not in ("sweep_id", "call_id", "prompt_id", "repeat"):
                    row[f"assoc.{prop}"] = value
    return row


#: The order of a sweep's frame (``res.df``): what was asked and answered first — the settings that
#: vary, the prompt, the completion and its rating — then outcome and figures, ids and timestamps last.
SWEEP_ORDER: list[str] = [
    "model",
    "template_name",
    "system_name",
    "temperature",
    "top_p",
    "max_tokens",
    "seed",
    "repeat",
    "prompt",
    "completion",
    "rating",
    "rating_note",
    "status",
    "error",
    "finish_reason",
    "latency_ms",
    "ttft_ms",
    "tokens_per_s",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "tokens_estimated",
    "cost_usd",
    "spent_usd",
    "cached",
    "provider",
    "response_model",
    "prompt_id",
    "call_id",
    "sweep_id",
    "template_hash",
    "system_hash",
    "trace_id",
    "span_id",
    "service",
    "start_time",
    "end_time",
]


def sweep_frame(rows: Iterable[Mapping[str, Any]] | pd.DataFrame, params: Iterable[str] = ()) -> pd.DataFrame:
    """A sweep's calls as ``res.df`` shows them: every canonical, sweep and extra column with its dtype,
    ordered by :data:`SWEEP_ORDER` (swept ``params`` right after the settings), the rest after."""
    df = rows.copy() if isinstance(rows, pd.DataFrame) else _frame_of(rows)  # a caller's frame stays as it is
    for col in SWEEP_COLUMNS:
        if col not in df.columns:
            df[col] = pd.NA
    df = coerce(df, copy=False)  # df is this function's own
    for col in ("template_name", "system_name", "template_hash", "system_hash", "rating_note"):
        df[col] = df[col].astype("object").where(df[col].notna(), None)
    swept = [p for p in params if p in df.columns and p not in SWEEP_ORDER]
    first = SWEEP_ORDER[:8] + swept + SWEEP_ORDER[8:]
    return df[first + [c for c in df.columns if c not in first]]


def frame(rows: Iterable[Mapping[str, Any]], extra: bool = True) -> pd.DataFrame:
    """A DataFrame with the canonical columns first, in order, and proper dtypes."""
    return coerce(_frame_of(rows), extra=extra, copy=False)


def _frame_of(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The rows as a new plain DataFrame; rows that build their own frame (the runner's
    :class:`~llmlab.run.rows.ColumnRows`, column-wise over its buffers) are asked for it."""
    build = getattr(rows, "frame", None)
    if callable(build):
        built: pd.DataFrame = build()
        return built
    return pd.DataFrame(list(rows))


_DTYPE_OF = {
    **dict.fromkeys(FLOAT_COLUMNS, "Float64"),
    **dict.fromkeys(INT_COLUMNS, "Int64"),
    **dict.fromkeys(BOOL_COLUMNS, "boolean"),
}


def _is_utc_time(dtype: Any) -> bool:
    return isinstance(dtype, pd.DatetimeTZDtype) and str(dtype.tz) == "UTC" and dtype.unit == "ns"


def coerce(df: pd.DataFrame, extra: bool = True, copy: bool = True) -> pd.DataFrame:
    """Give ``df`` every canonical column (NA where absent), in order, with canonical dtypes.

    ``copy=False`` when ``df`` is the caller's own to change (a frame just built from rows): columns
    are then converted in it. A column that already has its canonical dtype is kept as it is, either
    way (``pd.to_numeric`` and ``pd.to_datetime`` would copy it)."""
    if copy:
        df = df.copy()
    wanted = CANONICAL_COLUMNS + (EXTRA_COLUMNS if extra else [])
    for col in wanted:
        if col not in df.columns:
            df[col] = pd.NA
    for col in df.columns:
        dtype = _DTYPE_OF.get(col)
        if col in TIME_COLUMNS:
            if not _is_utc_time(df[col].dtype):  # already UTC times: to_datetime would copy them
                # ISO8601: each string as written (the format of the first would be imposed on the rest, and a
                # whole second among microseconds failed); nanoseconds always, as spans are
                df[col] = pd.to_datetime(df[col], utc=True, format="ISO8601").dt.as_unit("ns")
        elif dtype is None or str(df[col].dtype) == dtype:
            continue  # not a typed column, or typed already (to_numeric would copy it)
        elif dtype == "boolean":
            df[col] = df[col].astype(dtype)
        else:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(dtype)
    others = [c for c in df.columns if c not in wanted]
    return df[wanted + others].reset_index(drop=True)
