"""Shared fixtures: paths to the real captures copied into tests/fixtures/."""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path

import pytest

# The e2e harness is scripts, not a package: its unit tests import its modules by name.
E2E_DIR = Path(__file__).resolve().parent.parent / "e2e"
if str(E2E_DIR) not in sys.path:
    sys.path.insert(0, str(E2E_DIR))
# Test helpers that are not fixtures (engine_replay.py) are imported by name too.
TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

FIXTURES = Path(__file__).parent / "fixtures"
AGGREGATED_TAR = FIXTURES / "vllm-0.32.0-cpu-aggregated" / "scrapes.tar.gz"
PD_TAR = FIXTURES / "vllm-0.32.0-cpu-pd-1p1d" / "scrapes.tar.gz"
KV_THRASH_TAR = FIXTURES / "vllm-0.32.0-cpu-kv-thrash" / "scrapes.tar.gz"


def unpack(archive: Path, factory: pytest.TempPathFactory, name: str) -> Path:
    out = factory.mktemp(name)
    with tarfile.open(archive) as tar:
        tar.extractall(out, filter="data")
    return out


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def aggregated_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real aggregated capture unpacked: <dir>/rec/NNNN.prom."""
    return unpack(AGGREGATED_TAR, tmp_path_factory, "aggregated") / "rec"


@pytest.fixture(scope="session")
def pd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real 1P1D capture unpacked: <dir>/prefill/NNNN.prom and <dir>/decode/NNNN.prom."""
    return unpack(PD_TAR, tmp_path_factory, "pd")


@pytest.fixture(scope="session")
def kv_thrash_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real vLLM overload preempting between 1 s scrapes: <dir>/NNNN.prom (scrapes 60-101)."""
    return unpack(KV_THRASH_TAR, tmp_path_factory, "kv-thrash") / "rec"


@pytest.fixture(scope="session")
def aggregated_report(aggregated_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`phaselens report` run once on the real aggregated capture (HTML)."""
    from phaselens.report.cli import main as report_main

    out = tmp_path_factory.mktemp("report") / "aggregated.html"
    assert report_main([str(aggregated_dir), "-o", str(out)]) == 0
    return out
