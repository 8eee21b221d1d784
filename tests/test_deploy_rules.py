"""The Prometheus rules pass `promtool check rules` and their unit tests (`promtool test rules`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PROMETHEUS_DIR = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PROMTOOL is None, reason="promtool missing: run `bash scripts/system-deps.sh`"),
]


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=PROMETHEUS_DIR)


def test_rules_check() -> None:
    proc = _promtool("check", "rules", "phaselens-rules.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_rules_unit_tests() -> None:
    proc = _promtool("test", "rules", "tests/phaselens-rules.test.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_catches_a_wrong_expectation(tmp_path: Path) -> None:
    # The unit tests can fail: the same test file with one expected value changed must not pass.
    original = (PROMETHEUS_DIR / "tests" / "phaselens-rules.test.yaml").read_text()
    broken = original.replace("value: 1.6        # 1 / 0.625", "value: 1.7", 1)
    assert broken != original
    rules_path = str(PROMETHEUS_DIR / "phaselens-rules.yaml")
    (tmp_path / "t.yaml").write_text(broken.replace("../phaselens-rules.yaml", rules_path))
    proc = _promtool("test", "rules", str(tmp_path / "t.yaml"))
    assert proc.returncode != 0
