"""A real NIXL 1.5.1 agent pair (UCX over loopback) writing its telemetry ring while we consume it.

Needs `pip install nixl-cu12==1.5.1 torch==2.13.0` and `pip install --no-deps nixl==1.5.1`
(not in the dev extra: torch is large). Skipped only when nixl cannot be imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

try:
    import nixl  # noqa: F401
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    pytest.skip(f"nixl (with torch) is not importable here: {exc}", allow_module_level=True)

from phaselens.sources.nixl_dir import NixlTelemetryDir

AGENT_PAIR = """
import sys, time
import torch
from nixl._api import nixl_agent, nixl_agent_config
count, pause = int(sys.argv[1]), float(sys.argv[2])
config = nixl_agent_config(backends=["UCX"])
initiator, target = nixl_agent("initiator", config), nixl_agent("target", config)
src, dst = torch.ones(64 * 1024, dtype=torch.uint8), torch.zeros(64 * 1024, dtype=torch.uint8)
initiator.register_memory(src)
target.register_memory(dst)
initiator.add_remote_agent(target.get_agent_metadata())
target.add_remote_agent(initiator.get_agent_metadata())
local, remote = initiator.get_xfer_descs(src), target.get_xfer_descs(dst)
print("ready", flush=True)
for _ in range(count):
    handle = initiator.initialize_xfer("WRITE", local, remote, "target", b"n")
    state = initiator.transfer(handle)
    while state not in ("DONE", "ERR"):
        state = initiator.check_xfer_state(handle)
    assert state == "DONE", state
    initiator.release_xfer_handle(handle)
    time.sleep(pause)
time.sleep(0.5)  # let the telemetry thread flush the last events
"""


@pytest.mark.slow
def test_real_agent_ring_wraps_while_we_consume(tmp_path: Path) -> None:
    telemetry = tmp_path / "telemetry"
    telemetry.mkdir()
    env = dict(
        os.environ,
        NIXL_TELEMETRY_ENABLE="y",
        NIXL_TELEMETRY_DIR=str(telemetry),
        NIXL_TELEMETRY_BUFFER_SIZE="16",  # 15 usable events: wraps after ~4 transfers
        NIXL_TELEMETRY_RUN_INTERVAL="10",
    )
    count = 12
    proc = subprocess.Popen(
        [sys.executable, "-c", AGENT_PAIR, str(count), "0.1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    source = NixlTelemetryDir(telemetry, mode="consume")
    transfers = []
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        transfers.extend(source.poll(time.time()).transfers)
        time.sleep(0.005)
    output = proc.communicate(timeout=30)[0]
    transfers.extend(source.poll(time.time()).transfers)
    assert proc.returncode == 0, output
    initiator = source.rings[str(telemetry / "initiator")]
    assert initiator.stats.events == 4 * count + 1  # one registration + 4 per transfer
    assert initiator.stats.events > 16  # the ring wrapped while we read it
    assert initiator.stats.dropped_known == 0
    assert [t.bytes for t in transfers] == [64 * 1024] * count
    assert {t.direction for t in transfers} == {"write"} and {t.agent for t in transfers} == {"initiator"}
    assert all(0 < t.post_seconds <= t.xfer_seconds for t in transfers)
    source.close()
