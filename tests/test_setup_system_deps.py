"""scripts/system-deps.sh: one line per package, and a clear stop (exit 1) when it cannot install.

Runs the real script with bash under a PATH of our choosing. The missing programs are simply not on
that PATH; `id` is a one-line stand-in (named as such) that reports a non-root user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "system-deps.sh"
BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="needs bash")
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def _bin(tmp_path: Path, real: tuple[str, ...], fakes: dict[str, str]) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in real:
        found = shutil.which(name)
        assert found, name
        (folder / name).symlink_to(found)
    for name, body in fakes.items():
        (folder / name).write_text(f"#!{BASH}\n{body}\n")
        (folder / name).chmod(0o755)
    return folder


def _run(folder: Path) -> subprocess.CompletedProcess[str]:
    assert BASH is not None
    env = {"PATH": str(folder), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run([BASH, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30)


def test_everything_present_prints_one_line_each_and_no_sudo(tmp_path: Path) -> None:
    present = {name: "exit 0" for name in ("prometheus", "promtool", "chromium")}
    result = _run(_bin(tmp_path, ("id", "mktemp", "rm", "tail"), present | {"sudo": "echo SUDO-CALLED; exit 9"}))
    lines = result.stdout.splitlines()
    assert "system-deps: prometheus: already installed" in lines
    assert "system-deps: chromium: already installed" in lines
    assert "SUDO-CALLED" not in result.stdout + result.stderr
    if FONT.exists():
        assert result.returncode == 0 and len(lines) == 3, result
    else:
        assert result.returncode == 1 and "fonts-dejavu-core" in result.stderr


def test_no_apt_get_explains_and_exits_1(tmp_path: Path) -> None:
    result = _run(_bin(tmp_path, ("id", "mktemp", "rm", "tail"), {}))
    assert result.returncode == 1
    assert "cannot install prometheus chromium" in result.stderr
    assert "apt-get not found" in result.stderr and "make test" in result.stderr


def test_not_root_without_sudo_explains_and_exits_1(tmp_path: Path) -> None:
    folder = _bin(tmp_path, ("mktemp", "rm", "tail"), {"apt-get": "echo APT-CALLED; exit 9", "id": "echo 1000"})
    result = _run(folder)
    assert result.returncode == 1
    assert "not root and sudo not found" in result.stderr
    assert "APT-CALLED" not in result.stdout
