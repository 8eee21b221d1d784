# Developer entry points. `make demo` and `make test` are the README's two set-up commands:
# each creates the virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench soak e2e demo-live clean system-deps docker-smoke fleet fleet-ci fleet-pd

# Set-up prints two lines; pip's own output goes to $(SETUP_LOG), shown only when it fails.
SETUP_LOG := $(VENV)/setup.log
$(STAMP): pyproject.toml
	@echo "setup: creating $(VENV) and installing phaselens with its dev and report extras (about a minute; pip log: $(SETUP_LOG))"
	@$(PYTHON) -m venv $(VENV) || { echo "setup: '$(PYTHON) -m venv' failed; on Debian/Ubuntu install python3-venv" >&2; exit 1; }
	@{ $(PY) -m pip install -q --disable-pip-version-check --upgrade pip \
	   && $(PY) -m pip install -q --disable-pip-version-check -e '.[dev,report]'; } > $(SETUP_LOG) 2>&1 \
	 || { tail -n 30 $(SETUP_LOG) >&2; echo "setup: pip install failed (last lines above; full log $(SETUP_LOG))" >&2; exit 1; }
	@touch $(STAMP)
	@echo "setup: done"

setup: $(STAMP)

# Debian packages the integration tests use (real Prometheus + promtool, headless Chromium).
system-deps:
	@bash scripts/system-deps.sh

demo: $(STAMP)
	@$(VENV)/bin/phaselens demo --once

test: $(STAMP) system-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy sidecar parsers analyzers exporters
	$(VENV)/bin/pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check . || true
	$(VENV)/bin/mypy sidecar parsers analyzers exporters

bench: $(STAMP)
	for f in benchmarks/bench_*.py; do [ $$f = benchmarks/bench_soak.py ] && continue; echo "== $$f"; $(PY) $$f || exit 1; done

# 30 minutes of `phaselens run` at 0.25 s against the recorded engine: RSS growth per hour
soak: $(STAMP)
	nice $(PY) benchmarks/bench_soak.py --minutes 30

e2e: $(STAMP) system-deps
	bash e2e/run.sh

# Builds the Dockerfile with podman on a debootstrap base and runs the image (root, Debian; ~2 min cold).
docker-smoke:
	bash scripts/docker-smoke.sh

demo-live: $(STAMP)
	bash e2e/demo_live.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

fleet: $(STAMP)
	$(PY) benchmarks/fleet/run.py --matrix

# P/D fleet (a prefill pool and a decode pool, docs/fleet.md "P/D fleet"): the traces and policies of its table
fleet-pd: $(STAMP)
	$(PY) benchmarks/fleet/run.py --mode pd --trace step --trace mix-shift --policy phaselens --policy production-stack --policy static

fleet-ci: $(STAMP)
	$(PY) benchmarks/fleet/run.py --trace ci-step --policy phaselens --policy production-stack --out benchmarks/fleet/out/ci --check
