"""A ring truncated in place while the sidecar reads it (same inode, shorter file).

The reader must notice the new size, report the ring as unreadable (`nixl_ring_unreadable`) and
go on; a mapping that outlives the file's size would kill the process with SIGBUS instead, so
each case runs in a child process where a signal shows as a negative exit code.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

DECODE_RING = Path("vllm-0.32.0-cpu-pd-1p1d") / "nixl-telemetry" / "decode-agent-2e6ededa-289e-4bc1-aea5-146d0f4d9d3d"
LOOPBACK_RING = Path("nixl-1.5.1-cpu-ucx-loopback") / "initiator.ring"

# Poll the folder through the sidecar's input stage (which logs), truncate the first ring in place
# with new events pending, poll again, then restore it and poll once more.
_CHILD = textwrap.dedent(
    """
    import os, struct, sys, json
    from phaselens.logs import setup_logging
    from phaselens.inputs import SideInputs
    from phaselens.settings import Settings

    folder, mode, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    setup_logging("info")
    ring = os.path.join(folder, "a")
    original = open(ring, "rb").read()
    write_pos, read_pos = struct.unpack_from("<QQ", original, 0)
    with open(ring, "r+b") as f:  # the producer has not written yet: nothing pending at start
        f.write(struct.pack("<Q", read_pos))
    inputs = SideInputs(Settings(nixl_telemetry_dir=folder, nixl_ring_mode=mode))
    inputs.poll(100.0)
    first = len(inputs.transfers)
    inode = os.stat(ring).st_ino
    with open(ring, "r+b") as f:
        f.write(struct.pack("<Q", write_pos))  # new events pending ...
    os.truncate(ring, size)  # ... and the file cut in place under the reader
    assert os.stat(ring).st_ino == inode
    inputs.poll(101.0)
    second = len(inputs.transfers)
    with open(ring, "r+b") as f:  # the engine writes the ring back in place
        f.write(original)
    inputs.poll(102.0)
    print(json.dumps({"first": first, "second": second, "third": len(inputs.transfers)}))
    """
)


@pytest.mark.parametrize("mode", ["consume", "readonly"])
@pytest.mark.parametrize("size", [0, 100, 4096 + 16])
def test_ring_truncated_in_place_is_reported_not_fatal(
    fixtures_dir: Path, tmp_path: Path, mode: str, size: int
) -> None:
    shutil.copy(fixtures_dir / DECODE_RING, tmp_path / "a")
    shutil.copy(fixtures_dir / LOOPBACK_RING, tmp_path / "b")  # another agent, unaffected
    (tmp_path / "a").chmod(0o644)
    (tmp_path / "b").chmod(0o644)
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path), mode, str(size)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, f"exit {child.returncode} (negative: killed by a signal)\n{child.stderr[-2000:]}"
    counts = json.loads(child.stdout)
    logs = [json.loads(line) for line in child.stderr.splitlines()]
    unreadable = [r for r in logs if r["event"] == "nixl_ring_unreadable"]
    assert len(unreadable) == 1, logs
    assert unreadable[0]["path"] == str(tmp_path / "a") and "truncated" in unreadable[0]["reason"]
    # Ring b's 20 transfers came with the backlog at start (left out of the window); after the
    # truncation nothing of ring a was read; once written back in place, its 110 transfers are.
    assert counts["first"] == 0
    assert counts["second"] == 0
    assert counts["third"] == 110
