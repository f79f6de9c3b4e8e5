"""Prompt sets: a list, a DataFrame or a .csv/.jsonl/.json file, read into rows and checked.

Every bad row fails here with the file and line (or list index) named, before anything is sent.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, overload

import pandas as pd

from llmlab.errors import ValidationError

__all__ = [
    "MAX_FIELD_CHARS",
    "MAX_PROMPT_FILE_BYTES",
    "MESSAGE_ROLES",
    "TextRows",
    "check_messages",
    "check_text_value",
    "load_prompts",
]

MESSAGE_ROLES = {"system", "user", "assistant", "developer", "tool"}
#: The longest text one prompt field may hold (a CSV field, a JSONL line, a string value): 16 Mi characters.
#: Long documents are a normal prompt input (Python's csv module stops at 131,072 characters by default);
#: beyond this a field is refused with its file and line named.
MAX_FIELD_CHARS = 16 * 1024 * 1024
#: The largest prompt file read (bytes). A FIFO, a device (``/dev/zero``) or a bigger file is refused
#: before it is read, so a prompt path can neither hang a sweep nor fill memory.
MAX_PROMPT_FILE_BYTES = 512 * 1024 * 1024
#: how deep the values of a prompt row may nest (message lists, content parts)
_MAX_DEPTH = 32


def check_text_value(where: str, text: str) -> None:
    """Refuse a string that cannot be sent: longer than :data:`MAX_FIELD_CHARS`, or holding a lone surrogate
    (``"\\ud800"``: not Unicode text, it cannot be encoded as UTF-8 for the request or the store)."""
    if len(text) > MAX_FIELD_CHARS:
        raise ValidationError(
            where, text[:40], f"{len(text):,} characters; a field may hold at most {MAX_FIELD_CHARS:,}"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(
            where,
            text,
            f"holds a lone surrogate {text[exc.start]!r} at position {exc.start}, which is not Unicode text "
            "and cannot be sent; fix the text's encoding",
        ) from None


def _check_strings(where: str, value: Any, depth: int = 0) -> None:
    """Every string inside a prompt row (values, message contents, content parts) checked by :func:`check_text_value`."""
    if depth > _MAX_DEPTH:
        raise ValidationError(where, "...", f"nested more than {_MAX_DEPTH} levels deep")
    if isinstance(value, str):
        check_text_value(where, value)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            _check_strings(f"{where}.{k}" if isinstance(k, str) else f"{where}[{k!r}]", v, depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_strings(f"{where}[{i}]", v, depth + 1)


class TextRows(Sequence[dict[str, Any]]):
    """A prompt set given as plain strings, kept as the strings: row ``i`` reads as ``{"prompt": text}``.

    Each read gives a new dict, so no caller can change a row another reads. A big sweep's prompts are
    often plain strings, and a dict per row cost 0.18 KiB on top of the text (10,000 rows: 1.8 MB).

    >>> rows = TextRows(["Why is the sky blue?"]); rows[0], len(rows)
    ({'prompt': 'Why is the sky blue?'}, 1)
    """

    __slots__ = ("texts",)

    def __init__(self, texts: Iterable[str]) -> None:
        self.texts: tuple[str, ...] = tuple(texts)

    def __len__(self) -> int:
        return len(self.texts)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [{"prompt": text} for text in self.texts[index]]
        return {"prompt": self.texts[index]}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return ({"prompt": text} for text in self.texts)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TextRows):
            return self.texts == other.texts
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # rows compare like a list of dicts, which is unhashable

    def __repr__(self) -> str:
        return f"TextRows({len(self.texts)} prompts)"


def load_prompts(prompts: Any) -> Sequence[dict[str, Any]] | list[list[dict[str, Any]]]:
    """Normalise a prompt set into rows (dicts) or a list of message lists.

    Accepts a list of strings (read as :class:`TextRows`, ``{"prompt": text}`` rows), a list of message
    lists, a list of dicts (rows), a pandas DataFrame, or a path to a ``.csv`` / ``.jsonl`` file (UTF-8).
    Raises ValidationError naming the file and line of any bad row.
    """
    rows = _load(prompts)
    for i, row in enumerate(rows):
        _check_strings(f"prompts[{i}]", row)
    return rows


def _load(prompts: Any) -> Sequence[dict[str, Any]] | list[list[dict[str, Any]]]:
    if isinstance(prompts, (str, Path)) and (
        isinstance(prompts, Path) or Path(str(prompts)).suffix.lower() in (".csv", ".jsonl", ".json")
    ):
        return _load_prompt_file(Path(prompts))
    if isinstance(prompts, pd.DataFrame):
        if prompts.empty:
            raise ValidationError("prompts", "DataFrame(0 rows)", "the prompt set is empty")
        dupes = sorted({str(c) for c in prompts.columns[prompts.columns.duplicated()]})
        if dupes:  # to_dict() would keep one of them and silently drop the others
            raise ValidationError("prompts", "DataFrame", f"duplicate column {dupes[0]!r}; rename or drop one")
        return [{str(k): _clean_value(v) for k, v in row.items()} for row in prompts.to_dict(orient="records")]
    if isinstance(prompts, str):
        raise ValidationError(
            "prompts", prompts, "a single string is not a prompt set; pass a list, a DataFrame or a .csv/.jsonl path"
        )
    if isinstance(prompts, Mapping):
        raise ValidationError(
            "prompts",
            prompts,
            "a dict is not a prompt set (its keys would be sent as prompts); pass a list of strings, a list "
            "of dicts (rows, like [{'prompt': ...}]), a list of message lists, a DataFrame or a .csv/.jsonl path",
        )
    if isinstance(prompts, (set, frozenset)):
        raise ValidationError(
            "prompts", prompts, "a set has no order; pass a list (or a DataFrame, or a .csv/.jsonl path)"
        )
    if isinstance(prompts, (bytes, bytearray)) or not isinstance(prompts, Iterable):
        raise ValidationError("prompts", prompts, "expected a list, a DataFrame or a .csv/.jsonl path")
    items = list(prompts)
    if not items:
        raise ValidationError("prompts", items, "the prompt set is empty")
    if all(isinstance(p, str) for p in items):
        for i, p in enumerate(items):
            if not p.strip():
                raise ValidationError(f"prompts[{i}]", p, "empty prompt")
        return TextRows(items)
    if all(isinstance(p, Mapping) for p in items):
        return [dict(p) for p in items]
    if all(isinstance(p, (list, tuple)) for p in items):
        out = []
        for i, msgs in enumerate(items):
            out.append(check_messages(list(msgs), f"prompts[{i}]"))
        return out
    kinds = sorted({type(p).__name__ for p in items})
    if len(kinds) == 1:
        raise ValidationError(
            "prompts[0]", items[0], f"a prompt must be a string, a dict (row) or a message list, not {kinds[0]}"
        )
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
        if isinstance(content, list) and not all(isinstance(part, Mapping) and "type" in part for part in content):
            raise ValidationError(
                f"{where}[{j}].content",
                content,
                "content parts must be dicts with a 'type', like {'type': 'text', 'text': '...'}",
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
    if not path.is_file():  # a FIFO would hang the read, a device like /dev/zero would never end
        raise ValidationError("prompts", str(path), "is not a regular file (a pipe or a device?); pass a file")
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_PROMPT_FILE_BYTES + 1)
    except OSError as exc:
        raise ValidationError("prompts", str(path), f"cannot be read: {exc.strerror or exc}") from None
    if len(raw) > MAX_PROMPT_FILE_BYTES:
        raise ValidationError(
            "prompts", str(path), f"larger than {MAX_PROMPT_FILE_BYTES // 2**20} MiB; split it into smaller files"
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line_no = raw[: exc.start].count(b"\n") + 1
        raise ValidationError(
            "prompts", str(path), f"not UTF-8 text (bad byte at line {line_no}); re-save the file as UTF-8"
        ) from None
    suffix = path.suffix.lower()
    rows: list[dict[str, Any]] = []
    if suffix == ".csv":
        return _read_csv(path, text)
    if suffix == ".json":
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ValidationError("prompts", str(path), f"invalid JSON: {str(exc)[:200]}") from None
        if not isinstance(data, list):
            raise ValidationError("prompts", str(path), "a .json prompt file must hold a list")
        return _load(data)  # type: ignore[return-value]
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if len(line) > MAX_FIELD_CHARS:
            raise ValidationError(
                "prompts", f"{path}:{lineno}", f"line of {len(line):,} characters; at most {MAX_FIELD_CHARS:,}"
            )
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise ValidationError(
                "prompts", f"{path}:{lineno}", f"invalid JSON ({getattr(exc, 'msg', 'nested too deep')})"
            ) from None
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


def _read_csv(path: Path, text: str) -> list[dict[str, Any]]:
    """Rows of a CSV file (header row first); a field over :data:`MAX_FIELD_CHARS` names its line."""
    # the limit is process-wide: only ever raised, never lowered under another reader's feet
    if csv.field_size_limit() < MAX_FIELD_CHARS:
        csv.field_size_limit(MAX_FIELD_CHARS)
    rows: list[dict[str, Any]] = []
    reader = csv.DictReader(io.StringIO(text), strict=True)  # strict: an unclosed quote is an error
    start = 1  # the line the record being read starts on (a quoted field may span lines)
    try:
        fieldnames = reader.fieldnames
        if not fieldnames:
            raise ValidationError("prompts", str(path), "CSV has no header row")
        dupes = sorted({f for f in fieldnames if fieldnames.count(f) > 1})
        if dupes:
            raise ValidationError("prompts", f"{path}:1", f"duplicate column {dupes[0]!r} in the header row")
        width = len(fieldnames)
        while True:
            start = reader.line_num + 1
            row = next(reader, None)
            if row is None:
                break
            if None in row or len(row) != width:
                raise ValidationError(
                    "prompts", f"{path}:{start}", f"row has more fields than the {width} header columns"
                )
            if any(v is None for v in row.values()):
                raise ValidationError(
                    "prompts", f"{path}:{start}", f"row has fewer fields than the {width} header columns"
                )
            rows.append(dict(row))
    except csv.Error as exc:
        problem = (
            f"a field is longer than {MAX_FIELD_CHARS:,} characters (the most one prompt field may hold)"
            if "field larger than field limit" in str(exc)
            else f"malformed CSV ({exc})"
        )
        raise ValidationError("prompts", f"{path}:{start}", problem) from None
    if not rows:
        raise ValidationError("prompts", str(path), "the prompt set is empty")
    return rows
