"""Prompt variants: ``template=``, ``system=`` and ``messages=`` as an axis of the grid.

Each of the three takes one text (a string; for ``messages`` one message list), a list of them
(named ``t1, t2, …`` / ``s1, s2, …`` / ``m1, m2, …``) or a dict ``{name: text}``. A
:class:`Variant` carries its name, its text and a short hash of the text, which every call
records (``template_name``, ``template_hash``, …) so summaries, comparisons and the grid can
group by the wording and not only by the rendered prompt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import string
from collections.abc import Mapping, Sequence
from typing import Any

from llmlab.errors import ValidationError
from llmlab.plan.prompts import check_messages

__all__ = ["KINDS", "Variant", "fill_messages", "parse_variants", "text_hash"]

#: kind → (argument name, prefix of generated names)
KINDS = {"template": "t", "system": "s", "messages": "m"}


def text_hash(text: str) -> str:
    """Short, stable hash of a variant's text (12 hex digits of SHA-256)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class Variant:
    """One named variant of a template, system message or message list.

    ``value`` is what was given (a string, or a message list for ``messages``); ``text`` its
    canonical text (the string itself, or compact JSON of the message list), which ``hash`` digests.
    """

    kind: str
    name: str
    value: Any

    @property
    def text(self) -> str:
        """The variant's text as stored in prompt versions (JSON for a message list)."""
        if isinstance(self.value, str):
            return self.value
        return json.dumps(self.value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @property
    def hash(self) -> str:
        """Short hash of :attr:`text`."""
        return text_hash(self.text)


def _is_message_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(m, Mapping) for m in value)


def parse_variants(kind: str, value: Any) -> tuple[Variant, ...]:
    """The variants of one argument (``kind`` is ``template``, ``system`` or ``messages``); () for None.

    Raises ValidationError naming the argument (``template['terse']``, ``system[1]``) for an empty
    or non-string text, a bad name, an empty list or dict, and two variants with the same text
    (they would send the same requests twice).
    """
    if value is None:
        return ()
    prefix = KINDS[kind]
    single = isinstance(value, str) or (kind == "messages" and _is_message_list(value))
    if single:
        items: list[tuple[str, Any, str]] = [(f"{prefix}1", value, kind)]
    elif isinstance(value, Mapping):
        if not value:
            raise ValidationError(kind, value, "empty dict; give at least one {name: text} variant")
        items = []
        for key, text in value.items():
            if not isinstance(key, str) or not key.strip() or key != key.strip():
                raise ValidationError(kind, key, "variant names must be non-empty strings without outer spaces")
            items.append((key, text, f"{kind}[{key!r}]"))
    elif isinstance(value, (list, tuple)):
        if not value:
            raise ValidationError(kind, value, "empty list; give at least one variant")
        items = [(f"{prefix}{i + 1}", text, f"{kind}[{i}]") for i, text in enumerate(value)]
    else:
        expected = "a message list, a list of them or a dict {name: message list}"
        if kind != "messages":
            expected = "a string, a list of strings or a dict {name: text}"
        raise ValidationError(kind, value, f"must be {expected}")
    out: list[Variant] = []
    seen: dict[str, str] = {}
    for name, text, where in items:
        out.append(Variant(kind, name, _check_value(kind, text, where)))
        digest = out[-1].hash
        if digest in seen:
            raise ValidationError(
                where, name, f"has the same text as variant {seen[digest]!r}; each variant must differ"
            )
        seen[digest] = name
    return tuple(out)


def _check_value(kind: str, text: Any, where: str) -> Any:
    if kind == "messages":
        if not _is_message_list(text):
            raise ValidationError(where, text, "must be a list of {'role': ..., 'content': ...} messages")
        msgs = check_messages(list(text), where)
        for j, m in enumerate(msgs):
            if isinstance(m.get("content"), str):
                placeholders(m["content"], f"{where}[{j}].content")
        return msgs
    if not isinstance(text, str) or not text.strip():
        example = "'Summarize: {text}'" if kind == "template" else "'You are terse.'"
        raise ValidationError(where, text, f"must be a non-empty string like {example}")
    return text


def placeholders(text: str, where: str) -> list[str]:
    """The ``{column}`` fields of a text; ValidationError for a malformed or positional one."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        raise ValidationError(where, text, f"malformed: {exc}") from None
    for f in fields:
        if not f or not f.isidentifier():
            raise ValidationError(
                where, text, "placeholders must name a column, like {text}; write {{ and }} for literal braces"
            )
    return fields


def fill_messages(variant: Variant, rows: Sequence[Any]) -> list[tuple[list[dict[str, Any]], dict[str, Any]]]:
    """(messages, data) per prompt row for a ``messages=`` variant: each message's text filled from the row."""
    where = "messages" if variant.name == "m1" else f"messages[{variant.name!r}]"
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or "messages" in row:
            raise ValidationError(
                f"prompts[{i}]",
                row,
                "messages= fills its {placeholders} from prompt rows; give rows, not message lists",
            )
        data = dict(row)
        msgs = []
        for m in variant.value:
            content = m.get("content")
            if isinstance(content, str):
                fields = placeholders(content, where)
                missing = [f for f in fields if f not in data]
                if missing:
                    raise ValidationError(
                        where,
                        content,
                        f"variable {{{missing[0]}}} is missing from prompt row {i} "
                        f"(columns: {', '.join(map(str, data)) or 'none'})",
                    )
                empty = [f for f in fields if data[f] is None]
                if empty:
                    raise ValidationError(
                        f"prompts[{i}].{empty[0]}", None, f"empty value for template variable {{{empty[0]}}}"
                    )
                content = content.format(**{f: data[f] for f in fields})
            msgs.append({**m, "content": content})
        out.append((msgs, data))
    return out
