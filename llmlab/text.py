"""Ground-floor text helpers shared by the stages that show a piece of text in a narrow place."""

from __future__ import annotations

from typing import Any

__all__ = ["snip"]


def snip(text: Any, width: int) -> str:
    """``text`` on one line (runs of whitespace become one space), cut to ``width`` characters with a
    trailing ``…`` when longer; anything that is not a string (None, NA, NaN) gives ``""``."""
    if not isinstance(text, str):
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
