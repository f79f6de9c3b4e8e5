"""llmlab: sweep prompts × models × parameters, trace every call with OpenLLMetry to DataKit,
and analyse the spans in pandas — all offline on embedded defaults.

The public surface is exactly what ``shared/API.md`` names (plus a few additions listed in
``__all__``); everything else is internal.
"""

from __future__ import annotations

from typing import Any

from llmlab.analysis import charts, evals
from llmlab.analysis.checks import expect, report, save_baseline
from llmlab.analysis.stats import compare, summary
from llmlab.config import Config, configure
from llmlab.errors import (
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
from llmlab.errors import install_log_redaction as _install_log_redaction
from llmlab.history import compare_sweeps, delete, diff, load, prompt_versions, ratings, sweeps
from llmlab.plan.providers import provider
from llmlab.pricing import price
from llmlab.readback.metrics import metrics
from llmlab.readback.spans import spans
from llmlab.readback.traces import traces
from llmlab.results import SweepResult
from llmlab.sweep import Sweep

__version__ = "0.1.0"

# no API key in any log line of this process, whichever library writes it (see errors.install_log_redaction)
_install_log_redaction()


def pending_exports() -> int:
    """Number of spans spooled locally that DataKit has not acknowledged yet."""
    from llmlab.tracing.export import pending

    return pending()


def replay() -> dict[str, Any]:
    """Send every spooled span to the configured DataKit now; returns ``{sent, pending, error}``."""
    from llmlab.config import get_config
    from llmlab.tracing.export import drain

    config = get_config()
    if config.datakit is None:
        raise ConfigError("datakit=None: export is disabled, nothing to replay (configure datakit=...)")
    return drain(config)


__all__ = [
    "BudgetError",
    "CheckFailed",
    "Config",
    "ConfigError",
    "ExportError",
    "LlmlabError",
    "ProviderError",
    "QueryError",
    "ReplayMissError",
    "StoreError",
    "Sweep",
    "SweepResult",
    "ValidationError",
    "charts",
    "compare",
    "compare_sweeps",
    "configure",
    "delete",
    "diff",
    "evals",
    "expect",
    "load",
    "metrics",
    "pending_exports",
    "price",
    "prompt_versions",
    "provider",
    "ratings",
    "replay",
    "report",
    "save_baseline",
    "spans",
    "summary",
    "sweeps",
    "traces",
]
