#!/usr/bin/env bash
# Fresh machine → offline demo: install, then sweep the embedded models with traces to the embedded collector.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/llmlab demo "$@"
