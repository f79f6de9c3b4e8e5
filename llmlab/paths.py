"""Where llmlab's shipped data lives (corpus, price table, sample prompt sets)."""

from __future__ import annotations

from pathlib import Path

#: The repository's ``data/`` folder (the package is installed editable, flat layout).
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
