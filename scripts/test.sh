#!/usr/bin/env bash
# The full test suite: lint (ruff), format check, types (mypy), then unit/integration tests, the real-browser
# JupyterLab test and the notebooks (nbval).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] && . .venv/bin/activate
export PYTHONHASHSEED=0
echo "== ruff check" && ruff check llmlab tests bench scripts examples
echo "== ruff format --check" && ruff format --check llmlab tests bench scripts examples
echo "== mypy" && mypy
echo "== pytest"
exec python -m pytest -q "$@"
