#!/usr/bin/env bash
# Install veriscale into ./.venv and run the main job on its built-in default: the quick
# VF-vs-VB study (studies/didactic-quick.toml); its report lands in runs/didactic-quick/report.html.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh ""
veriscale reproduce --quick "$@"
