#!/usr/bin/env bash
# `make demo-live`: phaselens beside a live vLLM (CPU build) under cycling load, until Ctrl-C.
# Recommendations print here; the sidecar's /metrics is at http://127.0.0.1:9469/metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PHASELENS_PYTHON:-.venv/bin/python}"
[[ -x "$PY" ]] || { echo "$PY not found: run 'make setup' or set PHASELENS_PYTHON" >&2; exit 2; }
bash e2e/install_engine.sh
e2e/.venv-engine/bin/python e2e/make_model.py e2e/out/model
exec "$PY" e2e/demo_live.py --phaselens "$PY -m phaselens" "$@"
