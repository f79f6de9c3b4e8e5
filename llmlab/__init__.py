"""llmlab: sweep prompts × models × parameters, trace every call with OpenLLMetry to DataKit,
and analyse the spans in pandas — all offline on embedded defaults.

The public surface is exactly what ``shared/API.md`` names (plus a few additions listed in
``__all__``); everything else is internal.
"""

from __future__ import annotations

from typing import Any

from . import charts, evals
from .checks import expect, report, save_baseline
from .config import Config, configure
from .errors import (
    BudgetError,
    CheckFailed,
    ConfigError,
    ExportError,
    LlmlabError,
    ProviderError,
    QueryError,
    ReplayMissError,
    StoreError,
    ValidationError,
)
from .history import compare_sweeps, delete, diff, load, sweeps
from .pricing import price
from .providers import provider
from .results import SweepResult
from .metrics import metrics
from .spans import spans
from .stats import compare, summary
from .sweep import Sweep
from .traces import traces

__version__ = "0.1.0"


def pending_exports() -> int:
    """Number of spans spooled locally that DataKit has not acknowledged yet."""
    from .tracing.export import pending

    return pending()


def replay() -> dict[str, Any]:
    """Send every spooled span to the configured DataKit now; returns ``{sent, pending, error}``."""
    from .config import get_config
    from .tracing.export import drain

    config = get_config()
    if config.datakit is None:
        raise ConfigError("datakit=None: export is disabled, nothing to replay (configure datakit=...)")
    return drain(config)


__all__ = sorted([
    "BudgetError", "CheckFailed", "Config", "ConfigError", "ExportError", "LlmlabError", "ProviderError",
    "QueryError", "ReplayMissError", "StoreError", "Sweep", "SweepResult", "ValidationError",
    "charts", "compare", "compare_sweeps", "configure", "delete", "diff", "evals", "expect", "load", "metrics",
    "pending_exports", "price", "provider", "replay", "report", "save_baseline", "spans", "summary", "sweeps",
    "traces",
])  # fmt: skip
