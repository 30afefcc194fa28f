#!/usr/bin/env bash
# Install veriscale into ./.venv and run the main job on its built-in default.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q torch==2.13.0
pip install -q -e . torch==2.13.0
veriscale pretrain --config configs/pretrain.toml
