#!/usr/bin/env bash
# Install veriscale with its test dependencies into ./.venv and run the whole test suite.
# torch is pinned exactly: 2.13.0 (CPU build) lies on this machine's disk; a looser pin would
# download a multi-GB CUDA build. pyproject.toml keeps the range loose for users.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q torch==2.13.0
pip install -q -e '.[test,llm]' torch==2.13.0
python -m pytest -q "$@"
