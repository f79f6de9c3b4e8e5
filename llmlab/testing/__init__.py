"""Test helpers shipped with llmlab, for its own suite and for yours.

- :class:`FaultServer` — an OpenAI-compatible server on 127.0.0.1 that answers a chosen share of
  requests with 429 + Retry-After, 5xx, a slow first byte or a cut stream, and counts requests per
  call (``python -m llmlab.testing.faultserver`` runs one in the foreground; :class:`FaultProcess`
  starts one in its own process, so serving takes no CPU from the client being tested).
- :class:`JudgeServer` — a scripted judge endpoint with known verdicts (prefers the longer answer,
  or always answers "A" to exhibit position bias), for tests of ``ll.evals.*_judge``.
"""

from __future__ import annotations

from llmlab.testing.faultserver import FaultApp, FaultProcess, Faults, FaultServer, request_key, request_key_for_call
from llmlab.testing.judge import JudgeApp, JudgeServer

__all__ = [
    "FaultApp",
    "FaultProcess",
    "FaultServer",
    "Faults",
    "JudgeApp",
    "JudgeServer",
    "request_key",
    "request_key_for_call",
]
