# Developer entry points. `make demo` and `make test` are the README's two set-up commands:
# each creates the virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench e2e demo-live clean system-deps fleet fleet-ci

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,report]'
	touch $(STAMP)

setup: $(STAMP)

# Debian packages the integration tests use (real Prometheus + promtool, headless Chromium).
system-deps:
	bash scripts/system-deps.sh

demo: $(STAMP)
	$(VENV)/bin/phaselens demo --once

test: $(STAMP) system-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy sidecar parsers analyzers exporters
	$(VENV)/bin/pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check . || true
	$(VENV)/bin/mypy sidecar parsers analyzers exporters

bench: $(STAMP)
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

e2e: $(STAMP)
	bash e2e/run.sh

demo-live: $(STAMP)
	bash e2e/demo_live.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

fleet: $(STAMP)
	$(PY) benchmarks/fleet/run.py --matrix

fleet-ci: $(STAMP)
	$(PY) benchmarks/fleet/run.py --trace ci-step --policy phaselens --policy production-stack --out benchmarks/fleet/out/ci --check
