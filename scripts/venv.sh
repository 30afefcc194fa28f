# Sourced by the set-up scripts: make ./.venv and install veriscale into it with the extras
# given as "$1" (e.g. "test,llm"). torch is pinned exactly: 2.13.0 (CPU build) lies on this
# machine's disk, and a looser pin would download a multi-GB CUDA build. pyproject.toml keeps
# the range loose for users who install torch themselves.
python3 -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q torch==2.13.0
pip install -q -e ".${1:+[$1]}" torch==2.13.0
