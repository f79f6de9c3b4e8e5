"""What changed between two sweeps' specs: the grid's settings, and the text of each prompt variant (with its
version in the prompt-version record), for :func:`llmlab.history.compare.compare_sweeps`."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from typing import Any

import pandas as pd

from llmlab.store import get_store

__all__ = ["GRID_FIELDS", "add_versions", "grid_diff", "spec_changes", "variant_diffs"]

#: The spec fields that are the grid's axes.
GRID_FIELDS = ["models", "temperature", "top_p", "max_tokens", "seed", "repeats"]


def json_str(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def spec_changes(sa: Mapping[str, Any], sb: Mapping[str, Any]) -> pd.DataFrame:
    fields = ["name", "template", "system", "messages", *GRID_FIELDS, "params", "prompt_count", "prompt_fingerprint"]
    rows = [{"field": f, "a": sa.get(f), "b": sb.get(f)} for f in fields if json_str(sa.get(f)) != json_str(sb.get(f))]
    return pd.DataFrame(rows, columns=["field", "a", "b"])


def values(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def grid_diff(sa: Mapping[str, Any], sb: Mapping[str, Any]) -> pd.DataFrame:
    """Per grid parameter: the values only in a (removed), only in b (added), and in both."""
    rows = []
    params_a, params_b = sa.get("params") or {}, sb.get("params") or {}
    names = [(f, sa.get(f), sb.get(f)) for f in GRID_FIELDS]
    names += [(f"params.{k}", params_a.get(k), params_b.get(k)) for k in sorted(set(params_a) | set(params_b))]
    for name, va, vb in names:
        if va is None and vb is None and name.startswith("params."):
            continue
        la = [] if va is None and name.startswith("params.") else values(va)
        lb = [] if vb is None and name.startswith("params.") else values(vb)
        ka, kb = [json_str(v) for v in la], [json_str(v) for v in lb]
        removed = [v for v, k in zip(la, ka) if k not in kb]
        added = [v for v, k in zip(lb, kb) if k not in ka]
        kept = [v for v, k in zip(la, ka) if k in kb]
        rows.append(
            {"parameter": name, "removed": removed, "added": added, "kept": kept, "changed": bool(removed or added)}
        )
    return pd.DataFrame(rows, columns=["parameter", "removed", "added", "kept", "changed"])


def variant_texts(spec: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    """(kind, variant name) → text of every template/system/messages variant in a stored spec
    (a plain string is variant ``t1``/``s1``/``m1``, as the grid names it)."""
    out: dict[tuple[str, str], str] = {}
    for kind, prefix in (("template", "t"), ("system", "s"), ("messages", "m")):
        value = spec.get(kind)
        if value is None:
            continue
        single = isinstance(value, str) or (kind == "messages" and isinstance(value, list))
        items = {f"{prefix}1": value} if single else dict(value) if isinstance(value, Mapping) else {}
        for name, text in items.items():
            out[(kind, str(name))] = text if isinstance(text, str) else json.dumps(text, indent=1, ensure_ascii=False)
    return out


def variant_diffs(sa: Mapping[str, Any], sb: Mapping[str, Any], id_a: str, id_b: str) -> pd.DataFrame:
    """Per variant name: ``kind, name, change`` (same/changed/added/removed), both texts and a unified diff."""
    ta, tb = variant_texts(sa), variant_texts(sb)
    rows = []
    for key in list(ta) + [k for k in tb if k not in ta]:
        a_text, b_text = ta.get(key), tb.get(key)
        change = (
            "added" if a_text is None else "removed" if b_text is None else "same" if a_text == b_text else "changed"
        )
        kind, name = key
        diff = text_diff(a_text, b_text, f"{id_a} {kind} {name}", f"{id_b} {kind} {name}")
        rows.append({"kind": kind, "name": name, "change": change, "text_a": a_text, "text_b": b_text, "diff": diff})
    return pd.DataFrame(rows, columns=["kind", "name", "change", "text_a", "text_b", "diff"])


def add_versions(diffs: pd.DataFrame, id_a: str, id_b: str) -> None:
    """``version_a``/``version_b``: each variant's prompt-version number in the store (NA if unknown)."""
    from llmlab.store.prompt_versions import versions_of_sweep

    store = get_store()
    for side, sid in (("a", id_a), ("b", id_b)):
        known = {(v["kind"], v["name"]): v["version"] for v in versions_of_sweep(store, sid)}
        values = [known.get((k, n)) for k, n in zip(diffs["kind"], diffs["name"])]
        diffs[f"version_{side}"] = pd.array(values, dtype="Int64")


def text_diff(a: str | None, b: str | None, label_a: str, label_b: str) -> str:
    if (a or "") == (b or ""):
        return ""
    lines = difflib.unified_diff(
        (a or "").splitlines(keepends=True),
        (b or "").splitlines(keepends=True),
        fromfile=label_a,
        tofile=label_b,
        lineterm="",
    )
    return "\n".join(line.rstrip("\n") for line in lines)
