#!/usr/bin/env bash
# Install veriscale with its test dependencies into ./.venv and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh test,llm
python -m pytest -q "$@"
