"""State file at start-up: what is at the path may be anything, and must never stop the sidecar.

Each case loads the state in a child process (memory capped at 2 GiB, 30 s limit), so a hang,
a crash or a runaway read shows as a failed exit instead of taking the test run down with it.
The sidecar must start fresh with exactly one `state_corrupt` line and leave what is not its own
file where it is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    from phaselens.logs import setup_logging
    from phaselens.state import StateFile
    setup_logging("info")
    print(json.dumps(StateFile(sys.argv[1]).load()))
    """
)


def _load_in_child(path: Path) -> tuple[dict[str, object], list[dict[str, object]]]:
    child = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, timeout=30)
    assert child.returncode == 0, f"exit {child.returncode}\n{child.stderr[-3000:]}"
    logs = [json.loads(line) for line in child.stderr.splitlines()]
    return json.loads(child.stdout), logs


def _one_corrupt_line(logs: list[dict[str, object]], path: Path) -> dict[str, object]:
    assert [r["event"] for r in logs] == ["state_corrupt"], logs
    assert logs[0]["path"] == str(path) and logs[0]["level"] == "warning"
    return logs[0]


@pytest.mark.parametrize("depth", [100_000, 200])
def test_deeply_nested_json_starts_fresh(tmp_path: Path, depth: int) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"targets": ' + "[" * depth + "]" * depth + "}")
    state, logs = _load_in_child(path)
    assert state == {}
    _one_corrupt_line(logs, path)
    assert (tmp_path / "state.json.corrupt").exists()  # a regular file of ours: kept for inspection


def test_fifo_does_not_hang_start_up(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    os.mkfifo(path)
    state, logs = _load_in_child(path)
    assert state == {}
    assert "FIFO" in str(_one_corrupt_line(logs, path)["error"])
    assert path.is_fifo()  # left where it is


def test_endless_device_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.symlink_to("/dev/zero")
    state, logs = _load_in_child(path)
    assert state == {}
    assert "character device" in str(_one_corrupt_line(logs, path)["error"])
    assert path.is_symlink() and Path("/dev/zero").exists()


def test_directory_is_not_renamed_with_its_contents(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.mkdir()
    (path / "keep.txt").write_text("someone else's data")
    state, logs = _load_in_child(path)
    assert state == {}
    _one_corrupt_line(logs, path)
    assert (path / "keep.txt").read_text() == "someone else's data"
    assert not (tmp_path / "state.json.corrupt").exists()


def test_oversized_file_is_not_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    with path.open("wb") as handle:  # sparse: 64 MiB of size, no disk used
        handle.truncate(64 << 20)
    state, logs = _load_in_child(path)
    assert state == {}
    assert "limit" in str(_one_corrupt_line(logs, path)["error"])
