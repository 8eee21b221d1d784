#!/usr/bin/env bash
# Creates NVIDIA Dynamo's own virtual environment e2e/.venv-dynamo (ai-dynamo 1.6.1: the Rust
# frontend, KV router and the mocker engine), following the Dynamo recipe (e2e/README.md, "Dynamo"):
# `pip install ai-dynamo==1.6.1` fails here: its `aisimulate` dependency is a
# stub that downloads from a host this machine cannot reach (only Dynamo's planner needs it), so the two wheels go in
# without dependencies and then the dependencies they really import.
# Usage: bash e2e/install_dynamo.sh      (idempotent: a stamp file skips a finished install)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
DYNAMO_VENV="${DYNAMO_VENV:-$HERE/.venv-dynamo}"
DYNAMO_BASE_PYTHON="${DYNAMO_BASE_PYTHON:-python3}"

if [[ -f "$DYNAMO_VENV/.dynamo-installed" ]]; then
  exit 0
fi
t0=$(date +%s)
rm -rf "$DYNAMO_VENV"
"$DYNAMO_BASE_PYTHON" -m venv "$DYNAMO_VENV"
PIP=("$DYNAMO_VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip
dl="$(mktemp -d)"
trap 'rm -rf "$dl"' EXIT
"${PIP[@]}" download -q --no-deps ai-dynamo==1.6.1 ai-dynamo-runtime==1.6.1 -d "$dl"
"${PIP[@]}" install -q --no-deps "$dl"/ai_dynamo-1.6.1-*.whl "$dl"/ai_dynamo_runtime-1.6.1-*.whl
"${PIP[@]}" install -q "pydantic>=2.10.6,<=2.13.5" uvloop "aiohttp>=3.14.3,<4" "kubernetes>=32.0.1,<33" msgspec \
  "prometheus-client>=0.23.1,<1" "pyzmq>=26" "redis>=6.2,<9" tqdm "transformers>=4.56" zstandard tokenizers
echo "install_dynamo: pip's 'aisimulate ... which is not installed' conflict above is expected (only the planner needs it)"
"$DYNAMO_VENV/bin/python" -c 'import dynamo.frontend, dynamo.mocker, dynamo._core'
touch "$DYNAMO_VENV/.dynamo-installed"
echo "install_dynamo: ai-dynamo 1.6.1 installed in $(( $(date +%s) - t0 )) s"
