"""Tracing: OpenLLMetry set-up (``setup``) and the span pipeline to the store and DataKit (``export``)."""

from llmlab.tracing.setup import CallTrace, call_context, ensure_tracing, flush

__all__ = ["CallTrace", "call_context", "ensure_tracing", "flush"]
