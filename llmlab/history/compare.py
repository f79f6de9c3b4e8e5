"""Comparing two experiments: :func:`compare_sweeps` (metrics over their common cells, with paired
bootstrap intervals, and what changed in the spec) and :func:`diff` (their outputs side by side with
word-level differences).

A cell is one prompt at one setting; both functions pair the two sweeps' cells the same way, by
``prompt_id`` or, when a template/system change gave every prompt a new id, by prompt row.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from llmlab.errors import ValidationError
from llmlab.history.catalog import _resolve, load
from llmlab.history.specdiff import add_versions, grid_diff, spec_changes, text_diff, variant_diffs
from llmlab.results import SweepResult
from llmlab.store import experiments, get_store
from llmlab.text import snip

__all__ = ["CELL_SETTINGS", "DEFAULT_METRICS", "SweepComparison", "SweepDiff", "compare_sweeps", "diff"]

#: The setting columns that, with the prompt, identify one cell of a sweep's grid.
CELL_SETTINGS = ["model", "template_name", "system_name", "temperature", "top_p", "max_tokens", "params", "repeat"]
#: Cell settings an older sweep may lack (recorded from #13 on): part of the key only when both sides have them.
_VARIANT_SETTINGS = ("template_name", "system_name")
DEFAULT_METRICS = ["latency_ms", "ttft_ms", "output_tokens", "cost_usd", "error"]


class _Side:
    """One side of a comparison: its id, frame, spec and (if stored) call_id → plan position."""

    def __init__(self, ref: Any, label: str) -> None:
        store = get_store()
        if isinstance(ref, SweepResult):
            # keep the caller's frame: it may carry evaluator columns (scores) added after the run
            self.sweep_id, self.df, self.spec = ref.sweep_id, ref.df, dict(ref.spec or {})
        else:
            res = load(_resolve(store, ref, field=label))
            self.sweep_id, self.df, self.spec = res.sweep_id, res.df, dict(res.spec or {})
        self.seq = experiments.call_seqs(store, self.sweep_id)
        self.label = label

    def prompt_index(self) -> pd.Series | None:
        """The prompt row each call came from, from its position in the plan (None if unknown)."""
        per = _calls_per_prompt(self.spec)
        if not per or not self.seq or "call_id" not in self.df:
            return None
        seqs = self.df["call_id"].map(self.seq)
        if seqs.isna().any():
            return None
        return (seqs.astype(int) // per).astype(str)


def _calls_per_prompt(spec: Mapping[str, Any]) -> int | None:
    """Calls per prompt row in the plan (grid size × repeats), from the stored spec."""
    if not spec:
        return None
    n = 1
    for field in ("models", "temperature", "top_p", "max_tokens", "seed"):
        value = spec.get(field)
        n *= len(value) if isinstance(value, list) and value else 1
    for value in (spec.get("params") or {}).values():
        n *= len(value) if isinstance(value, list) and value else 1
    variants = [v for v in spec.get("variants") or [] if isinstance(v, Mapping)]
    for kinds in (("template", "messages"), ("system",)):
        n *= max(1, sum(1 for v in variants if v.get("kind") in kinds))
    try:
        n *= int(spec.get("repeats") or 1)
    except (TypeError, ValueError):
        return None
    return n


def _norm(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    return str(value)


def _cell_keys(df: pd.DataFrame, prompt_key: pd.Series, settings: Sequence[str] = tuple(CELL_SETTINGS)) -> pd.Series:
    parts = [prompt_key.astype(str).reset_index(drop=True)]
    for col in settings:
        values = df[col] if col in df.columns else pd.Series([None] * len(df))
        parts.append(values.reset_index(drop=True).map(_norm).astype(str))
    key = parts[0]
    for p in parts[1:]:
        key = key + "\x1f" + p
    return key


def _pair(a: _Side, b: _Side, match: str) -> tuple[pd.DataFrame, str, int, int]:
    """Common cells of two sweeps: (frame with ``ia``/``ib`` row positions + key columns, how, only_a, only_b)."""
    if match not in ("auto", "prompt_id", "prompt_index"):
        raise ValidationError("match", match, "expected 'auto', 'prompt_id' or 'prompt_index'")
    how = match
    if match == "auto":
        shared = set(a.df["prompt_id"].dropna().astype(str)) & set(b.df["prompt_id"].dropna().astype(str))
        same_prompts = a.spec.get("prompt_fingerprint") is not None and a.spec.get("prompt_fingerprint") == b.spec.get(
            "prompt_fingerprint"
        )
        how = "prompt_id"
        if not shared and same_prompts and a.prompt_index() is not None and b.prompt_index() is not None:
            how = "prompt_index"  # same prompt rows, but template/system changed every prompt_id
    if how == "prompt_index":
        pa, pb = a.prompt_index(), b.prompt_index()
        if pa is None or pb is None:
            raise ValidationError(
                "match", match, "prompt positions are unknown for one sweep (not in this home's store)"
            )
    else:
        pa, pb = a.df["prompt_id"].astype("string").fillna(""), b.df["prompt_id"].astype("string").fillna("")
    settings = [
        c
        for c in CELL_SETTINGS
        if c not in _VARIANT_SETTINGS or all(c in s.df and s.df[c].notna().any() for s in (a, b))
    ]
    ka, kb = _cell_keys(a.df, pa, settings), _cell_keys(b.df, pb, settings)
    first_b: dict[str, int] = {}
    for i, k in enumerate(kb):
        first_b.setdefault(k, i)
    seen: set[str] = set()
    pairs = []
    for i, k in enumerate(ka):
        if k in seen:
            continue  # duplicate prompts in one set: the first occurrence stands for the cell
        seen.add(k)
        j = first_b.get(k)
        if j is not None:
            pairs.append((i, j))
    out = pd.DataFrame(pairs, columns=["ia", "ib"], dtype="int64")
    for col in ["prompt_id"] + CELL_SETTINGS:
        if col in a.df.columns:
            out[col] = (
                a.df[col].iloc[out["ia"].to_numpy()].reset_index(drop=True) if len(out) else pd.Series(dtype=object)
            )
    if how == "prompt_index" and len(out):
        out.insert(1, "prompt_id_b", b.df["prompt_id"].iloc[out["ib"].to_numpy()].reset_index(drop=True))
    return out, how, len(seen) - len(out), len(set(kb)) - len(out)


class SweepComparison:
    """The result of :func:`compare_sweeps` (prints as a report; renders as HTML in a notebook).

    Attributes:
        a, b: the two sweep ids (``b`` is compared against ``a``).
        match: how cells were matched: ``"prompt_id"``, or ``"prompt_index"`` when the prompt rows
            are the same but a template/system change gave every prompt a new id.
        cells: one row per common cell: prompt_id, the settings, and ``<metric>_a``/``<metric>_b``.
        metrics: one row per metric: ``metric, n`` (common prompts: the unit), ``n_cells`` (common
            cells behind them), ``a, b`` (the statistic over per-prompt means), ``diff`` (b − a),
            ``diff_low, diff_high`` (paired interval resampling prompts; none from a single prompt),
            ``p_value`` (two-sided), ``rel_diff``, ``better`` (``"a"``, ``"b"`` or ``"neither"``;
            always ``"neither"`` with fewer than ``llmlab.stats.MIN_N`` common prompts), ``verdict``.
        spec_changes: spec fields that differ (``field, a, b``).
        template_diff, system_diff: unified diffs (empty when unchanged; with variants, one per changed name).
        variant_diffs: per template/system/messages variant name: ``kind, name, change``
            (same/changed/added/removed), ``text_a``, ``text_b``, its unified ``diff`` and the prompt-version
            numbers ``version_a``/``version_b`` (see ``ll.prompt_versions``).
        grid_diff: per grid parameter, values ``removed``/``added``/``kept``.
        only_a, only_b: cells found in one sweep only.
        verdict: one plain-language paragraph.
    """

    def __init__(self, **fields: Any) -> None:
        self.a: str = fields["a"]
        self.b: str = fields["b"]
        self.match: str = fields["match"]
        self.cells: pd.DataFrame = fields["cells"]
        self.metrics: pd.DataFrame = fields["metrics"]
        self.spec_changes: pd.DataFrame = fields["spec_changes"]
        self.template_diff: str = fields["template_diff"]
        self.system_diff: str = fields["system_diff"]
        self.template_words: str = fields["template_words"]
        self.grid_diff: pd.DataFrame = fields["grid_diff"]
        self.only_a: int = fields["only_a"]
        self.only_b: int = fields["only_b"]
        self.ci: float = fields["ci"]
        self.verdict: str = fields["verdict"]
        self._templates: tuple[str | None, str | None] = fields.get("templates", (None, None))
        self.variant_diffs: pd.DataFrame = fields.get("variant_diffs", pd.DataFrame())

    def to_text(self) -> str:
        """The report as plain text."""
        lines = [
            f"compare {self.a} (a) → {self.b} (b): {len(self.cells)} common cells "
            f"(matched by {self.match}; {self.only_a} only in a, {self.only_b} only in b)",
            "",
        ]
        lines.append(self.verdict)
        if len(self.metrics):
            lines += [
                "",
                self.metrics[["metric", "n", "a", "b", "diff", "diff_low", "diff_high", "better"]].to_string(
                    index=False
                ),
            ]
        if len(self.spec_changes):
            lines += ["", "spec changes: " + ", ".join(self.spec_changes["field"])]
        if self.template_words:
            lines += ["template: " + self.template_words]
        if self.system_diff:
            lines += ["system message:", self.system_diff]
        if len(self.variant_diffs) and not self.template_words:
            for row in self.variant_diffs[self.variant_diffs["change"] != "same"].itertuples():
                lines.append(f"{row.kind} {row.name}: {row.change}")
                if row.change == "changed" and row.kind != "system":
                    lines.append(row.diff)
        changed = self.grid_diff[self.grid_diff["changed"]] if len(self.grid_diff) else self.grid_diff
        for row in changed.itertuples():
            lines.append(f"grid {row.parameter}: removed {row.removed}, added {row.added}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        parts = [
            f"<div><b>{html.escape(self.a)}</b> (a) → <b>{html.escape(self.b)}</b> (b): {len(self.cells)} common cells "
            f"(matched by {html.escape(self.match)}; {self.only_a} only in a, {self.only_b} only in b)</div>",
            f"<p>{html.escape(self.verdict)}</p>",
        ]
        if len(self.metrics):
            parts.append(
                self.metrics.drop(columns=["verdict"]).to_html(
                    index=False, na_rep="NA", float_format=lambda v: f"{v:.4g}"
                )
            )
        if self.template_words:
            from llmlab.analysis.diffing import html_pair

            ta, tb = html_pair(*self._templates)
            parts.append(f"<div>template a: <code>{ta}</code><br>template b: <code>{tb}</code></div>")
        elif len(self.variant_diffs) and (self.variant_diffs["change"] != "same").any():
            shown = self.variant_diffs[self.variant_diffs["change"] != "same"]
            parts.append(shown.drop(columns=["text_a", "text_b"]).to_html(index=False, na_rep=""))
        changed = self.grid_diff[self.grid_diff["changed"]] if len(self.grid_diff) else self.grid_diff
        if len(changed):
            parts.append(changed.drop(columns=["changed"]).to_html(index=False))
        return "\n".join(parts)


def _paired_metric(
    va: np.ndarray,
    vb: np.ndarray,
    prompts: np.ndarray,
    metric: str,
    stat: str,
    n_boot: int,
    ci: float,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Estimate of ``metric`` on both sides over the cells where both have a value, and the paired
    interval of the difference with the prompt as the unit: a prompt's cells (repeats, settings)
    are averaged per side, and prompts are resampled (so prompt difficulty cancels and repeats are
    not counted as independent evidence)."""
    from llmlab.analysis.paired import paired_diff
    from llmlab.analysis.stats import MIN_N, format_metric, higher_is_better

    both = ~np.isnan(va) & ~np.isnan(vb)
    codes, _ = pd.factorize(pd.Series(prompts[both], dtype="string").fillna(""))
    n_cells = int(both.sum())
    n = int(codes.max()) + 1 if n_cells else 0
    counts = np.bincount(codes, minlength=n) if n else np.array([])
    x = np.bincount(codes, weights=va[both], minlength=n) / counts if n else np.array([])
    y = np.bincount(codes, weights=vb[both], minlength=n) / counts if n else np.array([])
    hib = higher_is_better(metric)
    row: dict[str, Any] = {
        "metric": metric,
        "n": n,
        "n_cells": n_cells,
        "a": np.nan,
        "b": np.nan,
        "diff": np.nan,
        "diff_low": np.nan,
        "diff_high": np.nan,
        "p_value": np.nan,
        "rel_diff": np.nan,
        "better": "neither",
    }
    if not n:
        row["verdict"] = f"{metric}: no cell has a value in both sweeps" + (
            " (timings leave out errors and cache hits)" if metric.endswith("_ms") else ""
        )
        return row
    from llmlab.analysis.estimates import stat_fn

    _, fn = stat_fn(stat)
    ea, eb = float(fn(x[None, :])[0]), float(fn(y[None, :])[0])
    _, lo, hi, p = paired_diff(x, y, stat, n_boot, ci, rng)
    row.update(
        a=ea,
        b=eb,
        diff=eb - ea,
        diff_low=lo,
        diff_high=hi,
        p_value=p,
        rel_diff=(eb - ea) / abs(ea) if ea else np.nan,
    )
    level = f"{ci:.0%}"
    if n < MIN_N:
        row["verdict"] = (
            f"{metric}: too few common prompts to tell (n={n} prompts, fewer than {MIN_N}; "
            f"a {format_metric(metric, ea)}, b {format_metric(metric, eb)})."
        )
    elif lo > 0 or hi < 0:
        b_better = (lo > 0) == hib
        row["better"] = "b" if b_better else "a"
        word = "higher" if lo > 0 else "lower"
        row["verdict"] = (
            f"{metric}: b is {word} (a {format_metric(metric, ea)} → b {format_metric(metric, eb)}, diff b−a {format_metric(metric, eb - ea)}, "
            f"{level} CI {format_metric(metric, lo)} to {format_metric(metric, hi)}, p = {p:.2g}, n={n} prompts) — "
            f"{'better' if b_better else 'worse'}."
        )
    else:
        row["verdict"] = (
            f"{metric}: no clear difference (a {format_metric(metric, ea)} → b {format_metric(metric, eb)}; {level} CI of the "
            f"difference {format_metric(metric, lo)} to {format_metric(metric, hi)} includes 0, n={n} prompts)."
        )
    return row


def compare_sweeps(
    a: Any,
    b: Any,
    metric: str | Sequence[str] | None = None,
    *,
    match: str = "auto",
    stat: str = "mean",
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int | None = 0,
) -> SweepComparison:
    """Compare experiment ``b`` against ``a`` over their common cells, and what changed in the spec.

    A cell is one prompt at one setting: the same prompt (``prompt_id``) and the same model,
    temperature, top_p, max_tokens, swept params and repeat index. When the two sweeps share no
    prompt_id but ran the same prompt rows (same prompt-set fingerprint: the template or system
    message changed, so every prompt got a new id), cells are matched by prompt row instead
    (``match="prompt_index"``). Each metric is compared over the cells where both sweeps have a
    value, paired by prompt: a prompt's common cells (its repeats and settings) are averaged on each
    side, and the interval of the difference resamples prompts (an expanded percentile interval,
    see :func:`llmlab.analysis.paired.paired_diff`), so repeats are not counted as independent
    evidence and prompt difficulty cancels (``llmlab.stats`` conventions: timings leave out errors
    and cache hits; ``"error"`` compares error rates).

    Args:
        a: the baseline: a sweep id, id prefix, name (newest run) or SweepResult (its ``.df`` is
            used as is, so evaluator score columns can be compared).
        b: the sweep compared against it.
        metric: a column or list of columns; default latency_ms, ttft_ms, output_tokens, cost_usd, error.
        match: ``"auto"``, ``"prompt_id"`` or ``"prompt_index"``.
        stat: ``"mean"``, ``"median"`` or ``"pNN"``.
        n_boot: bootstrap resamples.
        ci: confidence level.
        seed: random seed (same inputs and seed → same numbers).

    Returns:
        A :class:`SweepComparison`.
    """
    from llmlab.analysis.stats import metric_values

    if not 0 < ci < 1:
        raise ValidationError("ci", ci, "expected a confidence level between 0 and 1, e.g. 0.95")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValidationError("n_boot", n_boot, "expected a positive number of resamples")
    metrics = list(DEFAULT_METRICS) if metric is None else ([metric] if isinstance(metric, str) else list(metric))
    if not metrics:
        raise ValidationError("metric", metric, "name at least one metric")
    sa, sb = _Side(a, "a"), _Side(b, "b")
    for m in metrics:
        for side in (sa, sb):
            if m not in ("error", "error_rate", "errors") and m not in side.df.columns:
                raise ValidationError("metric", m, f"no such column in sweep {side.label} ({side.sweep_id})")
    cells, how, only_a, only_b = _pair(sa, sb, match)
    rng = np.random.default_rng(seed)
    ia, ib = cells["ia"].to_numpy(), cells["ib"].to_numpy()
    prompts = cells["prompt_id"].astype("string").fillna("").to_numpy() if "prompt_id" in cells else ia.astype(str)
    rows = []
    for m in metrics:
        va = metric_values(sa.df, m).to_numpy(dtype=float)[ia] if len(sa.df) else np.array([])
        vb = metric_values(sb.df, m).to_numpy(dtype=float)[ib] if len(sb.df) else np.array([])
        cells[f"{m}_a"], cells[f"{m}_b"] = va, vb
        rows.append(_paired_metric(va, vb, prompts, m, stat, n_boot, ci, rng))
    metrics_df = pd.DataFrame(
        rows,
        columns=[
            "metric",
            "n",
            "n_cells",
            "a",
            "b",
            "diff",
            "diff_low",
            "diff_high",
            "p_value",
            "rel_diff",
            "better",
            "verdict",
        ],
    )
    for col in ("a", "b", "diff", "diff_low", "diff_high", "p_value", "rel_diff"):
        metrics_df[col] = pd.array(metrics_df[col].astype(float), dtype="Float64")
    spec_a, spec_b = sa.spec, sb.spec
    from llmlab.analysis.diffing import mark_plain

    t_a, t_b = spec_a.get("template"), spec_b.get("template")
    plain = all(t is None or isinstance(t, str) for t in (t_a, t_b))
    template_words = mark_plain(t_a, t_b) if plain and (t_a or "") != (t_b or "") else ""
    variants = variant_diffs(spec_a, spec_b, sa.sweep_id, sb.sweep_id)
    add_versions(variants, sa.sweep_id, sb.sweep_id)

    def kind_diff(kind: str) -> str:
        a_val, b_val = spec_a.get(kind), spec_b.get(kind)
        if all(v is None or isinstance(v, str) for v in (a_val, b_val)):
            return text_diff(a_val, b_val, f"{sa.sweep_id} {kind}", f"{sb.sweep_id} {kind}")
        return "\n".join(d for d in variants.loc[variants["kind"] == kind, "diff"] if d)

    changes = spec_changes(spec_a, spec_b)
    if not len(cells):
        why = (
            "the prompt sets differ"
            if spec_a.get("prompt_fingerprint") != spec_b.get("prompt_fingerprint")
            else "no setting is shared"
        )
        verdict = f"No common cells: {why}; nothing to compare pairwise."
    else:
        decided = [r["verdict"] for r in rows]
        verdict = " ".join(decided)
        if len(changes):
            verdict = f"Changed: {', '.join(changes['field'])}. " + verdict
    return SweepComparison(
        a=sa.sweep_id,
        b=sb.sweep_id,
        match=how,
        cells=cells.drop(columns=["ia", "ib"]),
        metrics=metrics_df,
        spec_changes=changes,
        template_diff=kind_diff("template"),
        system_diff=kind_diff("system"),
        variant_diffs=variants,
        template_words=template_words,
        grid_diff=grid_diff(spec_a, spec_b),
        only_a=only_a,
        only_b=only_b,
        ci=ci,
        verdict=verdict,
        templates=(t_a, t_b) if plain else (None, None),
    )


# --- side-by-side output diff -------------------------------------------------------------------


class SweepDiff:
    """Outputs of two sweeps side by side with word-level differences (from :func:`diff`).

    ``cells`` holds one row per common cell: prompt_id, settings, ``prompt`` (a's), ``completion_a``,
    ``completion_b``, ``same``, ``similarity`` (0..1, word level) and ``marked`` (plain text with
    ``[-removed-]{+added+}`` markers). Printing gives plain text; a notebook renders a table with
    removed words struck through in red (left) and added words in green (right).
    """

    def __init__(self, a: str, b: str, match: str, cells: pd.DataFrame, limit: int | None) -> None:
        self.a, self.b, self.match, self.cells, self.limit = a, b, match, cells, limit

    def _shown(self) -> pd.DataFrame:
        return self.cells if self.limit is None else self.cells.head(self.limit)

    def _setting(self, row: Any) -> str:
        parts = [f"{c}={_norm(row[c])}" for c in CELL_SETTINGS if c in row.index and _norm(row[c]) not in ("",)]
        return ", ".join(parts)

    @staticmethod
    def _prompt(row: Any, quote: bool = False) -> str:
        """The start of the cell's prompt (a's text), so a reader knows what was asked."""
        from llmlab.analysis.charts import SNIPPET  # same cut as the charts' hover text; plotly loads lazily

        text = snip(row.get("prompt"), SNIPPET)
        return (f' "{text}"' if quote else text) if text else ""

    def to_text(self) -> str:
        """Plain text: per cell, both outputs and the marked word diff."""
        shown = self._shown()
        head = f"diff {self.a} (a) → {self.b} (b): {len(self.cells)} cells, {int((~self.cells['same']).sum()) if len(self.cells) else 0} differ"
        lines = [head]
        for _, row in shown.iterrows():
            lines.append("")
            lines.append(
                f"── {row['prompt_id']}{self._prompt(row, quote=True)}  {self._setting(row)}  (similarity {row['similarity']:.2f})"
            )
            lines.append(f"a: {_shown_text(row['completion_a'])}")
            lines.append(f"b: {_shown_text(row['completion_b'])}")
            if not row["same"]:
                lines.append(f"Δ: {row['marked']}")
        if len(shown) < len(self.cells):
            lines.append(f"\n… {len(self.cells) - len(shown)} more cells (see .cells)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        from llmlab.analysis.diffing import html_pair

        shown = self._shown()
        out = [
            f"<div>diff <b>{html.escape(self.a)}</b> (a) → <b>{html.escape(self.b)}</b> (b): {len(self.cells)} cells, "
            f"{int((~self.cells['same']).sum()) if len(self.cells) else 0} differ</div>",
            '<table class="llmlab-diff"><thead><tr><th>prompt / setting</th><th>a</th><th>b</th><th>sim.</th></tr></thead><tbody>',
        ]
        for _, row in shown.iterrows():
            ha, hb = html_pair(row["completion_a"], row["completion_b"])
            out.append(
                f"<tr><td style='text-align:left;vertical-align:top'><code>{html.escape(str(row['prompt_id']))}</code><br>"
                f"{html.escape(self._prompt(row))}<br>"
                f"<small>{html.escape(self._setting(row))}</small></td>"
                f"<td style='text-align:left;vertical-align:top;white-space:pre-wrap'>{ha}</td>"
                f"<td style='text-align:left;vertical-align:top;white-space:pre-wrap'>{hb}</td>"
                f"<td style='vertical-align:top'>{row['similarity']:.2f}</td></tr>"
            )
        out.append("</tbody></table>")
        if len(shown) < len(self.cells):
            out.append(f"<div>… {len(self.cells) - len(shown)} more cells (see <code>.cells</code>)</div>")
        return "\n".join(out)


def _shown_text(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return "(not stored)"
    return str(value)


def diff(
    a: Any,
    b: Any,
    prompt_id: str | Sequence[str] | None = None,
    *,
    match: str = "auto",
    only_changed: bool = False,
    limit: int | None = 20,
    **where: Any,
) -> SweepDiff:
    """Outputs of two sweeps side by side, word-level differences highlighted (``ll.diff``).

    Cells are matched like :func:`compare_sweeps` (same prompt and setting). In a notebook the
    result renders as a table (removed words red and struck through, added words green); printed,
    it is plain text with ``[-removed-]{+added+}`` markers.

    Args:
        a: the baseline sweep (id, id prefix, name, or SweepResult).
        b: the other sweep.
        prompt_id: only this prompt (or these); with prompt-row matching either side's id works.
        match: ``"auto"``, ``"prompt_id"`` or ``"prompt_index"``.
        only_changed: leave out cells whose outputs are identical.
        limit: cells shown when rendering (``.cells`` always has all); None shows all.
        **where: setting filters, e.g. ``model="local/tiny", temperature=0.7``.

    Returns:
        A :class:`SweepDiff`.
    """
    from llmlab.analysis.diffing import mark_plain
    from llmlab.analysis.similarity import word_ratio as similarity

    unknown = [k for k in where if k not in CELL_SETTINGS]
    if unknown:
        raise ValidationError(
            unknown[0], where[unknown[0]], f"not a setting; filter on one of {', '.join(CELL_SETTINGS)}"
        )
    sa, sb = _Side(a, "a"), _Side(b, "b")
    cells, how, _, _ = _pair(sa, sb, match)
    ia, ib = cells["ia"].to_numpy(), cells["ib"].to_numpy()
    prompts = cells["prompt_id"].astype("string").fillna("").to_numpy() if "prompt_id" in cells else ia.astype(str)
    prompts = sa.df["prompt"] if "prompt" in sa.df else pd.Series([None] * len(sa.df), index=sa.df.index)
    cells["prompt"] = prompts.iloc[ia].to_numpy(dtype=object) if len(cells) else []
    cells["completion_a"] = sa.df["completion"].iloc[ia].to_numpy(dtype=object) if len(cells) else []
    cells["completion_b"] = sb.df["completion"].iloc[ib].to_numpy(dtype=object) if len(cells) else []
    mask = pd.Series(True, index=cells.index)
    if prompt_id is not None:
        wanted = {prompt_id} if isinstance(prompt_id, str) else set(prompt_id)
        hit = cells["prompt_id"].astype(str).isin(wanted)
        if "prompt_id_b" in cells:
            hit |= cells["prompt_id_b"].astype(str).isin(wanted)
        if not hit.any():
            raise ValidationError(
                "prompt_id",
                prompt_id,
                f"not among the {cells['prompt_id'].nunique() if len(cells) else 0} prompts common to both sweeps",
            )
        mask &= hit
    for key, value in where.items():
        mask &= cells[key].map(_norm) == _norm(value)
    cells = cells[mask].drop(columns=["ia", "ib"]).reset_index(drop=True)
    texts = list(zip(cells["completion_a"], cells["completion_b"]))
    cells["same"] = [_text_or_none(x) == _text_or_none(y) for x, y in texts]
    cells["similarity"] = [similarity(_text_or_none(x), _text_or_none(y)) for x, y in texts]
    cells["marked"] = [mark_plain(_text_or_none(x), _text_or_none(y)) for x, y in texts]
    if only_changed:
        cells = cells[~cells["same"]].reset_index(drop=True)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise ValidationError("limit", limit, "expected a positive integer or None")
    return SweepDiff(sa.sweep_id, sb.sweep_id, how, cells, limit)


def _text_or_none(value: Any) -> str | None:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value)
