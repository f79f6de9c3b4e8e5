"""Prompt sets: a list, a DataFrame or a .csv/.jsonl/.json file, read into rows and checked.

Every bad row fails here with the file and line (or list index) named, before anything is sent.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from llmlab.errors import ValidationError

__all__ = ["MESSAGE_ROLES", "check_messages", "load_prompts"]

MESSAGE_ROLES = {"system", "user", "assistant", "developer", "tool"}


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
            out.append(check_messages(list(msgs), f"prompts[{i}]"))
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


def check_messages(msgs: list[Any], where: str) -> list[dict[str, Any]]:
    """Check one message list (roles known, text present) and return plain-dict copies.

    ``where`` names the list in the error (``prompts[3]``, ``file.jsonl:7``), so a bad message
    points at the row it came from.
    """
    if not msgs:
        raise ValidationError(where, msgs, "empty message list")
    for j, m in enumerate(msgs):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise ValidationError(f"{where}[{j}]", m, "each message needs 'role' and 'content'")
        if m["role"] not in MESSAGE_ROLES:
            raise ValidationError(f"{where}[{j}].role", m["role"], f"expected one of {sorted(MESSAGE_ROLES)}")
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
                obj = {"messages": check_messages(obj, f"{path}:{lineno}")}
            if not isinstance(obj, dict):
                raise ValidationError(
                    "prompts", f"{path}:{lineno}", "each line must be a JSON object, string or message list"
                )
            rows.append(obj)
    if not rows:
        raise ValidationError("prompts", str(path), "the prompt set is empty")
    return rows
