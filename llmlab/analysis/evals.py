"""Evaluators: add 0..1 score columns to a call frame (``ll.evals.*``).

Every evaluator takes a frame, returns a *copy* with one new Float64 column (named after the
evaluator unless ``name=`` says otherwise) and leaves the input alone. Shared rules:

- error rows (``status="error"``) score NA: there is no output to judge;
- a missing (NA) completion scores NA (e.g. spans recorded with ``trace_content=False``);
  an empty completion ``""`` is a real answer and is scored;
- bad arguments (an invalid regex, an invalid JSON schema, a missing reference column) raise
  :class:`~llmlab.errors.ValidationError` before any row is looked at.

Chain them with :func:`evaluate` (a list of evaluators) or :func:`score` (named callables on the
completion), e.g. ``evaluate(df, [exact_match, partial(contains, substring="Paris")])``.
"""

from __future__ import annotations

import json
import re
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from llmlab.analysis.judges import JudgeWarning, pairwise_judge, preference_scores, resolve_judge, run_judge
from llmlab.analysis.similarity import measure
from llmlab.analysis.stats import is_error
from llmlab.errors import LlmlabError, ValidationError
from llmlab.text import is_na, normalize_text

__all__ = [
    "DEFAULT_RUBRIC",
    "JudgeWarning",
    "contains",
    "custom",
    "evaluate",
    "exact_match",
    "json_schema",
    "llm_judge",
    "normalize_text",
    "pairwise_judge",
    "parse_judge_score",
    "preference_scores",
    "regex",
    "score",
    "similarity",
    "valid_json",
]

Evaluator = Callable[[pd.DataFrame], pd.DataFrame]


# --- plumbing ----------------------------------------------------------------------------------


def _column(df: pd.DataFrame, column: str, field: str = "column") -> pd.Series:
    if column not in df.columns:
        raise ValidationError(field, column, f"no such column; the frame has {list(df.columns)[:12]}...")
    return df[column]


def _reference(df: pd.DataFrame, reference: str | Sequence[Any] | pd.Series) -> pd.Series:
    """The reference answers: a column name, or a sequence/Series as long as the frame."""
    if isinstance(reference, str):
        if reference not in df.columns:
            raise ValidationError(
                "reference", reference, "no such column; pass a column name or a list of references (one per row)"
            )
        return df[reference]
    if isinstance(reference, pd.Series):
        if len(reference) != len(df):
            raise ValidationError("reference", f"<{len(reference)} values>", f"expected {len(df)} values, one per row")
        return pd.Series(reference.to_numpy(), index=df.index)
    values = list(reference)
    if len(values) != len(df):
        raise ValidationError("reference", f"<{len(values)} values>", f"expected {len(df)} values, one per row")
    return pd.Series(values, index=df.index, dtype=object)


def _apply(
    df: pd.DataFrame, name: str, fn: Callable[[Any, int], Any], column: str = "completion", need_text: bool = True
) -> pd.DataFrame:
    """Score every non-error row whose ``column`` is not NA with ``fn(value, position)``."""
    if not isinstance(name, str) or not name:
        raise ValidationError("name", name, "expected a non-empty column name")
    texts = _column(df, column).tolist() if need_text else [None] * len(df)
    errors = is_error(df).to_numpy()
    scores: list[float | None] = []
    for pos, (text, err) in enumerate(zip(texts, errors)):
        if err or (need_text and is_na(text)):
            scores.append(None)
            continue
        value = fn(text if not need_text else str(text), pos)
        scores.append(None if value is None else float(value))
    out = df.copy()
    out[name] = pd.array(scores, dtype="Float64")
    return out


# --- evaluators ----------------------------------------------------------------------------------


def exact_match(
    df: pd.DataFrame,
    reference: str | Sequence[Any] | pd.Series = "reference",
    column: str = "completion",
    normalize: bool = True,
    name: str = "exact_match",
) -> pd.DataFrame:
    """1.0 when the completion equals the reference, else 0.0 (NA reference → NA).

    Args:
        reference: a column name, or one reference per row.
        normalize: compare after :func:`normalize_text` (else byte-exact).
    """
    refs = _reference(df, reference).tolist()

    def fn(text: str, pos: int) -> float | None:
        ref = refs[pos]
        if is_na(ref):
            return None
        a, b = (normalize_text(text), normalize_text(str(ref))) if normalize else (text, str(ref))
        return float(a == b)

    return _apply(df, name, fn, column)


def contains(
    df: pd.DataFrame,
    substring: str | Sequence[str],
    mode: str = "any",
    case: bool = False,
    column: str = "completion",
    name: str = "contains",
) -> pd.DataFrame:
    """1.0 when the completion contains the substring(s) — ``mode="any"`` or ``"all"`` of a list.

    Matching ignores case unless ``case=True`` (Unicode case-folding, NFKC-normalised).
    """
    subs = [substring] if isinstance(substring, str) else list(substring)
    if not subs or not all(isinstance(s, str) and s for s in subs):
        raise ValidationError("substring", substring, "expected a non-empty string or a list of them")
    if mode not in ("any", "all"):
        raise ValidationError("mode", mode, "expected 'any' or 'all'")

    def prep(s: str) -> str:
        s = unicodedata.normalize("NFKC", s)
        return s if case else s.casefold()

    wanted = [prep(s) for s in subs]
    agg = any if mode == "any" else all
    return _apply(df, name, lambda text, pos: float(agg(w in prep(text) for w in wanted)), column)


def regex(
    df: pd.DataFrame,
    pattern: str | re.Pattern[str],
    column: str = "completion",
    flags: int = 0,
    fullmatch: bool = False,
    name: str = "regex",
) -> pd.DataFrame:
    """1.0 when ``pattern`` is found in the completion (``re.search``; ``fullmatch=True`` for the whole).

    Raises:
        ValidationError: the pattern does not compile (raised before any row is scored).
    """
    try:
        compiled = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern, flags)
    except (re.error, TypeError) as exc:
        raise ValidationError("pattern", pattern, f"invalid regular expression: {exc}") from exc
    match = compiled.fullmatch if fullmatch else compiled.search
    return _apply(df, name, lambda text, pos: float(match(text) is not None), column)


_FENCE = re.compile(r"^\s*```[\w-]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


def _parse_json(text: str, strip_fences: bool) -> tuple[bool, Any]:
    if strip_fences:
        m = _FENCE.match(text)
        if m:
            text = m.group(1)
    try:
        return True, json.loads(text)
    except ValueError:
        return False, None


def valid_json(
    df: pd.DataFrame, column: str = "completion", strip_fences: bool = True, name: str = "valid_json"
) -> pd.DataFrame:
    """1.0 when the completion parses as JSON (a surrounding Markdown code fence is allowed)."""
    return _apply(df, name, lambda text, pos: float(_parse_json(text, strip_fences)[0]), column)


def json_schema(
    df: pd.DataFrame,
    schema: Mapping[str, Any],
    column: str = "completion",
    strip_fences: bool = True,
    name: str = "json_schema",
) -> pd.DataFrame:
    """1.0 when the completion is JSON valid against ``schema`` (0.0 if invalid JSON or invalid data).

    Uses the ``jsonschema`` package, with the validator class the schema's ``$schema`` asks for.

    Raises:
        LlmlabError: ``jsonschema`` is not installed.
        ValidationError: the schema itself is invalid.
    """
    try:
        import jsonschema
        from jsonschema.exceptions import SchemaError
    except ImportError as exc:  # pragma: no cover - jsonschema is a dev dependency here
        raise LlmlabError("json_schema needs the 'jsonschema' package: pip install jsonschema") from exc
    if not isinstance(schema, Mapping):
        raise ValidationError("schema", schema, "expected a JSON schema (a dict)")
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise ValidationError("schema", dict(schema), f"invalid JSON schema: {exc.message}") from exc
    validator = cls(schema)

    def fn(text: str, pos: int) -> float:
        ok, data = _parse_json(text, strip_fences)
        return float(ok and validator.is_valid(data))

    return _apply(df, name, fn, column)


def custom(df: pd.DataFrame, fn: Callable[[Any], Any], name: str = "custom", on: str = "completion") -> pd.DataFrame:
    """Score with your own function.

    Args:
        fn: called with the completion text (``on="completion"``) or with the whole row as a
            ``pandas.Series`` (``on="row"``); returns a bool, a number in [0, 1], or None (NA).
        name: the score column.
        on: ``"completion"`` or ``"row"``.

    Raises:
        ValidationError: ``fn`` is not callable, or returns something that is not a score.
        LlmlabError: ``fn`` raised (the message names the row).
    """
    if not callable(fn):
        raise ValidationError("fn", fn, "expected a callable")
    if on not in ("completion", "row"):
        raise ValidationError("on", on, "expected 'completion' or 'row'")
    rows = list(df.iterrows()) if on == "row" else None

    def run(text: Any, pos: int) -> float | None:
        arg = rows[pos][1] if rows is not None else text
        try:
            value = fn(arg)
        except Exception as exc:
            raise LlmlabError(f"custom scorer {name!r} failed on row {df.index[pos]!r}: {exc!r}") from exc
        if is_na(value):
            return None
        if isinstance(value, (bool, np.bool_)):
            return float(value)
        if isinstance(value, (int, float, np.integer, np.floating)) and 0.0 <= float(value) <= 1.0:
            return float(value)
        raise ValidationError(
            name,
            value,
            f"scorer returned this for row {df.index[pos]!r}; scores must be bool, a number in [0, 1] or None",
        )

    return _apply(df, name, run, "completion", need_text=on == "completion")


def similarity(
    df: pd.DataFrame,
    reference: str | Sequence[Any] | pd.Series = "reference",
    column: str = "completion",
    method: str = "f1",
    name: str = "similarity",
) -> pd.DataFrame:
    """Offline similarity of completion and reference, 0..1 (no embeddings, nothing downloaded; the
    measures are those of :mod:`llmlab.analysis.similarity`).

    Methods:
        ``"f1"`` (default): SQuAD-style token F1 over case-folded word tokens (each CJK character
        a token) — rewards shared words regardless of order.
        ``"cosine"``: cosine similarity of the word-count vectors.
        ``"difflib"``: ``difflib.SequenceMatcher(...).ratio()`` of the normalised strings —
        character-level, order-sensitive.
        Two empty texts are identical (1.0); one empty text scores 0.0.
    """
    sim = measure(method)
    refs = _reference(df, reference).tolist()

    def fn(text: str, pos: int) -> float | None:
        ref = refs[pos]
        return None if is_na(ref) else float(sim(text, str(ref)))

    return _apply(df, name, fn, column)


# --- LLM judge -----------------------------------------------------------------------------------

DEFAULT_RUBRIC = (
    "Rate how well the answer responds to the question: correct, complete, concise. "
    "{reference_hint}Reply with only a number from {lo} (worst) to {hi} (best)."
)

_JUDGE_TEMPLATE = "{rubric}\n\nQuestion:\n{prompt}\n\n{reference_block}Answer:\n{completion}\n\nScore ({lo}-{hi}):"

_FRACTION = re.compile(r"(-?\d+(?:\.\d+)?)\s*(?:/|out of)\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_LABELLED = re.compile(
    r"(?:score|rating|grade|评分|得分|分数)\s*(?:is|=|:|：)?\s*\**\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE
)
_NUMBER = re.compile(r"(?<![\w.\-])(-?\d+(?:\.\d+)?)(?!\w)")


def _scale(scale: int | tuple[int, int]) -> tuple[float, float]:
    if isinstance(scale, tuple):
        lo, hi = scale
    elif scale == 5:
        lo, hi = 1, 5
    elif scale == 10:
        lo, hi = 0, 10
    else:
        raise ValidationError("scale", scale, "expected 10 (0-10), 5 (1-5) or a (low, high) tuple")
    if not hi > lo:
        raise ValidationError("scale", scale, "high must be greater than low")
    return float(lo), float(hi)


def parse_judge_score(text: Any, scale: int | tuple[int, int] = 10) -> float | None:
    """The judge's score in ``text`` normalised to 0..1, or None when there is none.

    Looked for, in order: a fraction (``8/10``, ``4 out of 5`` — scaled by its own
    denominator), a labelled number (``Score: 7``, ``**Rating:** 4``), then the first standalone
    number. The value must lie in the scale (``10`` → 0..10, ``5`` → 1..5, or ``(lo, hi)``);
    it maps linearly to 0..1 (``(x - lo) / (hi - lo)``).
    """
    if not isinstance(text, str) or not text.strip():
        return None
    lo, hi = _scale(scale)
    cleaned = text.replace("*", "")
    m = _FRACTION.search(cleaned)
    if m:
        value, denom = float(m.group(1)), float(m.group(2))
        if denom > 0 and 0 <= value <= denom:
            if denom == hi:
                return (value - lo) / (hi - lo) if lo <= value else None
            return value / denom
    m = _LABELLED.search(cleaned) or _NUMBER.search(cleaned)
    if not m:
        return None
    value = float(m.group(1))
    if not lo <= value <= hi:
        return None
    return (value - lo) / (hi - lo)


def judge_prompt(
    prompt: Any, completion: str, rubric: str = DEFAULT_RUBRIC, scale: int | tuple[int, int] = 10, reference: Any = None
) -> str:
    """The prompt sent to the judge model for one row."""
    lo, hi = _scale(scale)
    fmt = {"lo": f"{lo:g}", "hi": f"{hi:g}"}
    has_ref = not is_na(reference)
    body = (
        rubric.format(reference_hint="Compare it with the reference answer. " if has_ref else "", **fmt)
        if "{" in rubric
        else rubric
    )
    return _JUDGE_TEMPLATE.format(
        rubric=body,
        prompt="" if is_na(prompt) else str(prompt),
        completion=completion,
        reference_block=f"Reference answer:\n{reference}\n\n" if has_ref else "",
        **fmt,
    )


def llm_judge(
    df: pd.DataFrame,
    model: str | None = None,
    rubric: str = DEFAULT_RUBRIC,
    scale: int | tuple[int, int] = 10,
    reference: str | Sequence[Any] | pd.Series | None = None,
    column: str = "completion",
    name: str = "judge",
    max_tokens: int = 8,
    concurrency: int = 8,
    **run_kwargs: Any,
) -> pd.DataFrame:
    """Score each completion with a judge model (a small grid of calls at temperature 0).

    One judge prompt per scoreable row (identical prompts are sent once); the reply is read with
    :func:`parse_judge_score`. Adds ``name`` (0..1) and ``{name}_raw`` (the judge's reply).

    Args:
        model: the judge, ``provider/model``; default the one set with ``ll.configure(judge=...)``
            (env ``LLMLAB_JUDGE``). A local n-gram model (``local/tiny``, ``local/small``) is
            refused: it cannot follow a rubric, so its replies hold no score.
        rubric: instructions; ``{lo}``, ``{hi}`` and ``{reference_hint}`` are filled in.
        scale: 10 (0-10), 5 (1-5) or ``(lo, hi)``.
        reference: optional reference answers (column name or one per row), shown to the judge.
        max_tokens, concurrency, run_kwargs: passed to the judge grid / its run (``retry=``, ``cache=``, …).

    Warns:
        JudgeWarning: how many replies had no parseable score (those rows are NA).

    Raises:
        ValidationError: no judge model is named or configured, or it is a local n-gram model.
    """
    model = resolve_judge(model)
    _scale(scale)
    texts = _column(df, column).tolist()
    refs = _reference(df, reference).tolist() if reference is not None else [None] * len(df)
    prompts_col = df["prompt"].tolist() if "prompt" in df.columns else [None] * len(df)
    errors = is_error(df).to_numpy()
    per_row: list[str | None] = []
    for text, err, prompt, ref in zip(texts, errors, prompts_col, refs):
        per_row.append(None if err or is_na(text) else judge_prompt(prompt, str(text), rubric, scale, ref))
    unique = list(dict.fromkeys(p for p in per_row if p is not None))
    replies, failures = run_judge(unique, model, name, max_tokens, concurrency, **run_kwargs)
    raw = [None if p is None else replies.get(p) for p in per_row]
    scores = [None if p is None else parse_judge_score(r, scale) for p, r in zip(per_row, raw)]
    failed = sum(1 for p in per_row if p is not None and p in failures)
    bad = sum(1 for p, s in zip(per_row, scores) if p is not None and s is None and p not in failures)
    if failed:
        first = next(iter(failures.values()))
        warnings.warn(
            f"{failed} of {sum(p is not None for p in per_row)} judge calls to {model} failed "
            f"(e.g. {first}); those rows score NA",
            JudgeWarning,
            stacklevel=2,
        )
    if bad:
        lo, hi = _scale(scale)
        warnings.warn(
            f"{bad} of {sum(p is not None for p in per_row)} judge replies had no score on the "
            f"{lo:g}-{hi:g} scale; "
            f"those rows score NA (see the {name}_raw column)",
            JudgeWarning,
            stacklevel=2,
        )
    out = df.copy()
    out[name] = pd.array(scores, dtype="Float64")
    out[f"{name}_raw"] = pd.array([None if r is None or is_na(r) else str(r) for r in raw], dtype="string")
    return out


# --- chaining ------------------------------------------------------------------------------------


def evaluate(df: pd.DataFrame, evaluators: Iterable[Evaluator]) -> pd.DataFrame:
    """Apply evaluators in order (each a function frame → frame, e.g. ``partial(contains, substring="x")``)."""
    out = df
    for ev in evaluators:
        if not callable(ev):
            raise ValidationError("evaluators", ev, "expected callables taking and returning a DataFrame")
        out = ev(out)
        if not isinstance(out, pd.DataFrame):
            raise ValidationError("evaluators", ev, "an evaluator must return a DataFrame")
    return out


def score(df: pd.DataFrame, **scorers: Callable[[str], Any]) -> pd.DataFrame:
    """Add one score column per keyword: ``score(df, has_paris=lambda c: "Paris" in c)``.

    Each value is a function of the completion text, as for :func:`custom` (bool, a number in
    [0, 1], or None). For frame-level evaluators use :func:`evaluate`.
    """
    out = df
    for name, fn in scorers.items():
        out = custom(out, fn, name=name)
    return out
