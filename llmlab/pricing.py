"""Price table and re-pricing of call frames.

Costs are computed here, after the fact, from token counts and a price table, so that a sweep
can be re-priced when prices change (or for a model you are thinking of switching to) without
re-running it. The table is layered, later layers winning per model (an entry is replaced
whole, not merged field by field):

1. the shipped table ``data/prices.json`` (list prices with a ``source`` per entry),
2. the user's ``<LLMLAB_HOME>/prices.json`` (same shape, or just ``{model: entry}``),
3. the ``prices=`` argument of :func:`price` / ``extra=`` of :func:`load_prices`.

Prices are USD per million tokens. A missing ``cached_input`` price means cached input is billed
like input. Nothing is ever downloaded.

Rules of :func:`price` (documented because they decide what a number means):

- ``cost_usd = (input_tokens - cached) * input/1e6 + cached * cached_input/1e6
  + output_tokens * output/1e6``, where ``cached`` is the provider's ``cached_input_tokens``
  column if the frame has one (prompt-cache hits), else 0.
- Rows with ``cached=True`` were served from llmlab's own response cache and were not paid
  again: they cost 0.
- Error rows without token counts cost 0 (a failed request is not billed); error rows with
  token counts are priced like any other row.
- Successful rows whose token counts are missing get NA, never 0.
- A model with no price gets NA, and one :class:`PriceWarning` names every such model.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmlab.errors import ConfigError
from llmlab.paths import DATA_DIR
from llmlab.text import is_na

__all__ = ["SHIPPED_PRICES", "PriceWarning", "cost_for", "load_prices", "lookup", "price", "price_table"]

#: The shipped price table.
SHIPPED_PRICES = DATA_DIR / "prices.json"


class PriceWarning(UserWarning):
    """Some rows could not be priced (their model is not in the price table)."""


def _read_table(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"price file {str(path)!r} cannot be read: {exc}") from exc
    return _models_of(data, str(path))


def _models_of(data: Any, where: str) -> dict[str, dict[str, Any]]:
    """The ``{model: entry}`` mapping of a full table or of a bare mapping, validated."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: a price table must be a JSON object / dict")
    models = data["models"] if isinstance(data.get("models"), Mapping) else data
    out: dict[str, dict[str, Any]] = {}
    for name, entry in models.items():
        if name in ("version", "currency", "unit", "fx", "notes"):
            continue
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: price of {name!r} must be a dict with 'input' and 'output'")
        for key in ("input", "output", "cached_input"):
            if key == "cached_input" and entry.get(key) is None:
                continue
            value = entry.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(
                    f"{where}: price {name!r} field {key!r}={value!r}: expected a number >= 0 (USD per 1M tokens)"
                )
        out[str(name)] = dict(entry)
    return out


def load_prices(extra: Mapping[str, Any] | str | Path | None = None) -> dict[str, Any]:
    """The merged price table: shipped < ``<home>/prices.json`` < ``extra``.

    Args:
        extra: ``{model: {"input": usd_per_1M, "output": usd_per_1M, "cached_input": ...}}``,
            a full table (``{"models": {...}}``), or the path of a JSON file of either shape.

    Returns:
        ``{"version", "currency", "models": {name: entry}}``; entries of later layers replace
        earlier ones whole.

    Raises:
        ConfigError: a price file or entry is malformed (names the file and the field).
    """
    shipped = json.loads(SHIPPED_PRICES.read_text(encoding="utf-8"))
    models: dict[str, Any] = {}
    for _, _, layer in _layers(extra):
        models.update(layer)
    return {"version": shipped.get("version"), "currency": shipped.get("currency", "USD"), "models": models}


def _layers(extra: Mapping[str, Any] | str | Path | None) -> list[tuple[str, str, dict[str, Any]]]:
    """``(layer, where, {model: entry})`` in precedence order: shipped, home file, ``extra``."""
    from llmlab.config import get_config

    out = [("shipped", str(SHIPPED_PRICES), _read_table(SHIPPED_PRICES))]
    user_file = get_config().home / "prices.json"
    if user_file.is_file():
        out.append(("home", str(user_file), _read_table(user_file)))
    if isinstance(extra, (str, Path)):
        out.append(("code", str(extra), _read_table(Path(extra))))
    elif extra is not None:
        out.append(("code", "prices= argument", _models_of(extra, "prices")))
    return out


def price_table(prices: Mapping[str, Any] | str | Path | None = None) -> pd.DataFrame:
    """The merged price table as a DataFrame, one row per model, saying where each price comes from.

    Args:
        prices: extra prices, as for :func:`price` (shown as the ``code`` layer).

    Returns:
        Columns ``model, input, cached_input, output`` (USD per 1M tokens; ``cached_input`` NA
        means billed like input), ``effective`` (the date the price applies from), ``source``,
        ``layer`` (``shipped``, ``home`` for ``<LLMLAB_HOME>/prices.json`` or ``code`` for
        ``prices=``; the later layer won). Sorted by model.
    """
    rows: dict[str, dict[str, Any]] = {}
    for layer, where, models in _layers(prices):
        for name, entry in models.items():
            rows[name] = {
                "model": name,
                "input": float(entry["input"]),
                "cached_input": None if entry.get("cached_input") is None else float(entry["cached_input"]),
                "output": float(entry["output"]),
                "effective": entry.get("effective"),
                "source": entry.get("source") or where,
                "layer": layer,
            }
    out = pd.DataFrame(
        sorted(rows.values(), key=lambda r: r["model"]),
        columns=["model", "input", "cached_input", "output", "effective", "source", "layer"],
    )
    out["cached_input"] = pd.array(out["cached_input"].astype(float), dtype="Float64")
    return out


_SUFFIX = re.compile(r"^(-(\d{4}-\d{2}-\d{2}|\d{8}|\d{6}|\d{4}|latest|preview|v\d+(\.\d+)*))+$")


def _models(table: Mapping[str, Any]) -> Mapping[str, Any]:
    inner = table.get("models") if isinstance(table, Mapping) else None
    return inner if isinstance(inner, Mapping) else table


def lookup(model: str | None, table: Mapping[str, Any] | None = None, provider: str | None = None) -> str | None:
    """The price-table key for ``model``, or None.

    Tried in order: the exact name (also ``provider/model`` when ``provider`` is given and the
    model has no ``/``); the name without its ``provider/`` prefix; then a dated or versioned
    snapshot name reduced to the longest known prefix followed only by version suffixes
    (``gpt-4o-mini-2024-07-18`` → ``gpt-4o-mini``, ``-20250514``, ``-0613``, ``-latest``,
    ``-preview``). Matching ignores case.

    Args:
        model: the model name as sent or recorded.
        table: a table from :func:`load_prices` (or a bare ``{model: entry}``); default the merged one.
        provider: the row's provider, if known.
    """
    if model is None or (not isinstance(model, str)) or not model.strip():
        return None
    models = _models(table if table is not None else load_prices())
    lower = {k.lower(): k for k in models}
    name = model.strip()
    candidates = []
    if provider and "/" not in name:
        candidates.append(f"{provider}/{name}")
    candidates.append(name)
    if "/" in name:
        candidates.append(name.split("/", 1)[1])
    for cand in candidates:
        if cand in models:
            return cand
        if cand.lower() in lower:
            return lower[cand.lower()]
    for cand in candidates:
        c = cand.lower()
        best = None
        for key_l, key in lower.items():
            if c.startswith(key_l) and _SUFFIX.match(c[len(key_l) :]) and (best is None or len(key_l) > len(best[0])):
                best = (key_l, key)
        if best:
            return best[1]
    return None


def _rates(entry: Mapping[str, Any]) -> tuple[float, float, float]:
    inp = float(entry["input"])
    cin = entry.get("cached_input")
    return inp, inp if cin is None else float(cin), float(entry["output"])


def cost_for(
    model: str,
    input_tokens: int | float,
    output_tokens: int | float,
    table: Mapping[str, Any] | None = None,
    cached_input_tokens: int | float = 0,
) -> float | None:
    """Cost in USD of one call, or None when the model has no price (budget estimates)."""
    key = lookup(model, table if table is not None else load_prices())
    if key is None:
        return None
    inp, cin, out = _rates(_models(table if table is not None else load_prices())[key])
    cached = min(max(float(cached_input_tokens or 0), 0.0), float(input_tokens))
    return (float(input_tokens) - cached) * inp / 1e6 + cached * cin / 1e6 + float(output_tokens) * out / 1e6


def _num(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df.columns:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[col], errors="coerce").astype("Float64").to_numpy(dtype=float, na_value=np.nan)


def _flag(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df.columns:
        return np.zeros(len(df), dtype=bool)
    return df[col].astype("boolean").fillna(False).to_numpy(dtype=bool)


def price(df: pd.DataFrame, prices: Mapping[str, Any] | str | Path | None = None) -> pd.DataFrame:
    """A re-priced copy of a call frame (public as ``ll.price``).

    Args:
        df: any frame with the canonical columns (``res.df``, ``ll.spans()``).
        prices: extra prices merged over the shipped and user tables (see :func:`load_prices`).

    Returns:
        A copy with ``cost_usd`` (Float64) recomputed by the rules in the module docstring:
        llmlab-cache hits cost 0, token-less errors cost 0, missing tokens or prices give NA.

    Warns:
        PriceWarning: once, naming every model that has no price.
    """
    table = load_prices(prices)
    models = _models(table)
    out = df.copy()
    n = len(out)
    model_col = out["model"] if "model" in out.columns else pd.Series([None] * n, index=out.index)
    prov_col = out["provider"] if "provider" in out.columns else pd.Series([None] * n, index=out.index)
    resp_col = out["response_model"] if "response_model" in out.columns else pd.Series([None] * n, index=out.index)
    inp_rate = np.full(n, np.nan)
    cin_rate = np.full(n, np.nan)
    out_rate = np.full(n, np.nan)
    # price each distinct (model, provider, response_model) once, then broadcast by code
    key = (
        model_col.astype("string").fillna("")
        + "\x1f"
        + prov_col.astype("string").fillna("")
        + "\x1f"
        + resp_col.astype("string").fillna("")
    )
    codes, uniques = pd.factorize(key, use_na_sentinel=False)
    rates = np.full((len(uniques), 3), np.nan)
    for j, joined in enumerate(uniques):
        m, p, r = (part or None for part in str(joined).split("\x1f"))
        found = lookup(m, models, p) if m is not None else None
        if found is None and r:
            found = lookup(r, models, p)
        if found is not None:
            rates[j] = _rates(models[found])
    if n:
        inp_rate, cin_rate, out_rate = rates[codes, 0], rates[codes, 1], rates[codes, 2]
    tin = _num(out, "input_tokens")
    tout = _num(out, "output_tokens")
    cached_tok = np.nan_to_num(_num(out, "cached_input_tokens"), nan=0.0)
    is_error = (
        out["status"].astype("string").fillna("").str.lower().eq("error").to_numpy(dtype=bool)
        if "status" in out.columns
        else np.zeros(n, dtype=bool)
    )
    from_cache = _flag(out, "cached")
    tokenless_error = is_error & np.isnan(tin) & np.isnan(tout)
    # an error that did report some usage: treat the missing half as 0
    tin_e = np.where(is_error & ~tokenless_error, np.nan_to_num(tin, nan=0.0), tin)
    tout_e = np.where(is_error & ~tokenless_error, np.nan_to_num(tout, nan=0.0), tout)
    cached_tok = np.clip(cached_tok, 0.0, np.where(np.isnan(tin_e), 0.0, tin_e))
    with np.errstate(invalid="ignore"):
        cost = (tin_e - cached_tok) * inp_rate / 1e6 + cached_tok * cin_rate / 1e6 + tout_e * out_rate / 1e6
    free = from_cache | tokenless_error
    cost = np.where(free, 0.0, cost)
    unpriced = ~free & np.isnan(inp_rate)
    if unpriced.any():
        names = sorted({"(no model)" if not isinstance(m, str) else m for m in model_col[unpriced].tolist()})
        warnings.warn(
            f"no price for model(s) {', '.join(names)}: their cost_usd is NA. "
            "Add them with ll.price(df, prices={'<model>': {'input': usd_per_1M, 'output': usd_per_1M}}) "
            "or in <LLMLAB_HOME>/prices.json.",
            PriceWarning,
            stacklevel=2,
        )
    series = pd.Series(cost, index=out.index, dtype="Float64")
    out["cost_usd"] = series.mask(np.isnan(cost))
    return out


def format_usd(value: float) -> str:
    """Dollars for display, one format everywhere (grid, progress bar, CLI tables, summaries).

    Sums under a tenth of a cent are shown in micro-dollars with 3 significant digits (``5.88 µ$``,
    never ``5.88222e-06``); larger ones with at least 4 decimals and 3 significant digits.

    Example:
        >>> format_usd(0.00000588222), format_usd(0.0123), format_usd(1.5)
        ('5.88 µ$', '$0.0123', '$1.5000')
    """
    if is_na(value):  # nothing known
        return "-"
    if not 0 < value < math.inf:
        return "$0.0000"
    if value < 0.001:
        micro = value * 1e6
        return f"{micro:.3g} µ$" if micro < 1000 else f"{micro:.0f} µ$"
    decimals = max(4, 2 - math.floor(math.log10(value)))
    return f"${value:.{decimals}f}"
