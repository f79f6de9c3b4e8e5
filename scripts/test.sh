#!/usr/bin/env bash
# The full test suite: unit/integration tests, the real-browser JupyterLab test and the notebooks (nbval).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] && . .venv/bin/activate
export PYTHONHASHSEED=0
exec python -m pytest -q "$@"
