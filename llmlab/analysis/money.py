"""Money shown as money: the frames ``ll.summary`` and ``ll.compare`` return display dollars with
:func:`llmlab.pricing.format_usd` (``5.88 µ$``, ``$0.0123``), never ``5.88e-06``.

Only the *display* changes. :class:`MoneyFrame` is a plain :class:`pandas.DataFrame` subclass whose
``repr`` (the text a terminal or ``print`` shows) and ``_repr_html_`` (what Jupyter shows) render a
copy with the money columns formatted; the values themselves stay floats, so sums, sorting,
``.to_csv()``, ``.to_string()``, ``.to_html()`` and comparisons see the numbers. Frames derived from
it (a column selection, a filter, a merge) keep the money display; ``pd.DataFrame(frame)`` gives a
frame that shows the raw floats.

Which columns are money: every numeric column whose name ends in ``_usd`` (``cost_usd``,
``spent_usd``), and, in a comparison of a money metric (``.attrs["metric"]`` ending in ``_usd``),
its estimate, interval and difference columns. Negative differences keep their sign
(``-1.2 µ$``); NA shows as ``-``.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from llmlab.pricing import format_usd

__all__ = ["COMPARE_MONEY_COLUMNS", "MoneyFrame", "money_columns", "show_money", "signed_usd"]

#: The columns of an ``ll.compare`` frame that are in the metric's unit.
COMPARE_MONEY_COLUMNS = ("estimate", "ci_low", "ci_high", "diff", "diff_low", "diff_high")


def signed_usd(value: Any) -> str:
    """:func:`~llmlab.pricing.format_usd` with a sign for negative amounts (a difference) and ``-`` for NA."""
    try:
        if value is None or pd.isna(value):
            return "-"
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "-" + format_usd(-number) if number < 0 else format_usd(number)


def _plain_float(value: float) -> str:
    """Other numbers as a reader compares them: four significant digits, whole numbers without a fraction."""
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value)}"
    return f"{value:,.4g}" if abs(value) >= 1e-3 else f"{value:.3g}"


def money_columns(frame: pd.DataFrame) -> list[str]:
    """The columns of ``frame`` that hold dollars (see the module docstring)."""
    metric = frame.attrs.get("metric")
    compared = isinstance(metric, str) and metric.endswith("_usd")
    out = []
    for col in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[col]) or pd.api.types.is_bool_dtype(frame[col]):
            continue
        if (isinstance(col, str) and col.endswith("_usd")) or (compared and col in COMPARE_MONEY_COLUMNS):
            out.append(col)
    return out


class MoneyFrame(pd.DataFrame):
    """A DataFrame that *shows* its money columns with :func:`~llmlab.pricing.format_usd` (values stay floats)."""

    @property
    def _constructor(self) -> type[MoneyFrame]:
        return MoneyFrame

    def _display_frame(self) -> pd.DataFrame:
        """A plain copy with the money columns turned into their display strings."""
        shown = pd.DataFrame(self).copy()
        cols = money_columns(self)
        for col in cols:
            shown[col] = pd.Series([signed_usd(v) for v in self[col].tolist()], index=shown.index, dtype=object)
        for col in shown.columns:
            if col not in cols and pd.api.types.is_float_dtype(shown[col]):
                shown[col] = pd.Series(
                    ["-" if pd.isna(v) else _plain_float(float(v)) for v in shown[col].tolist()],
                    index=shown.index,
                    dtype=object,
                )
        return shown

    def __repr__(self) -> str:
        return repr(self._display_frame())

    def _repr_html_(self) -> str | None:
        return self._display_frame()._repr_html_()


def show_money(frame: pd.DataFrame) -> MoneyFrame:
    """``frame`` as a :class:`MoneyFrame` (same data, index and ``.attrs``; no copy of the values is needed)."""
    out = MoneyFrame(frame)
    out.attrs.update(frame.attrs)
    return out
