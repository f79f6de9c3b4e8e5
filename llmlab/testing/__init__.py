"""Test helpers shipped with llmlab, for its own suite and for yours.

- :class:`FaultServer` — an OpenAI-compatible server on 127.0.0.1 that answers a chosen share of
  requests with 429 + Retry-After, 5xx, a slow first byte or a cut stream, and counts requests per
  call (``python -m llmlab.testing.faultserver`` runs one in the foreground).
"""

from __future__ import annotations

from llmlab.testing.faultserver import FaultApp, Faults, FaultServer, request_key, request_key_for_call

__all__ = ["FaultApp", "FaultServer", "Faults", "request_key", "request_key_for_call"]
