"""NIXL summaries computed on the arrays (no object per transfer) equal the ones computed one
`NixlTransfer` at a time, on the real rings in tests/fixtures (NIXL 1.5.1 UCX loopback, and the
vLLM 0.32 1P1D run's agents): the `nixl-telemetry` output byte for byte, and the sidecar's figures."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from nixl_object_path import write_object_path
from phaselens.analyzers.nixl import figures_from_ring
from phaselens.nixl_cli import _summarise
from phaselens.parsers.nixl_ring import TimedTransfers, decode_ring

RINGS = [
    "nixl-1.5.1-cpu-ucx-loopback/initiator.ring",
    "nixl-1.5.1-cpu-ucx-loopback/target.ring",
    "nixl-1.5.1-cpu-ucx-loopback/initiator-capacity64-full.ring",
    "vllm-0.32.0-cpu-pd-1p1d/nixl-telemetry/decode-agent-2e6ededa-289e-4bc1-aea5-146d0f4d9d3d",
    "vllm-0.32.0-cpu-pd-1p1d/nixl-telemetry/prefill-agent-926208c8-974f-48ce-89aa-da95cc64c17f",
]


def _object_path(path: Path) -> str:
    out = io.StringIO()
    write_object_path(path, out)
    return out.getvalue()


@pytest.mark.parametrize("ring", RINGS)
def test_cli_output_from_the_arrays_equals_the_object_path(fixtures_dir: Path, ring: str) -> None:
    path = fixtures_dir / ring
    out = io.StringIO()
    _summarise(path, out, show_transfers=True)
    expected = _object_path(path)
    assert out.getvalue() == expected
    if ring.endswith("initiator.ring") or "decode-agent" in ring:  # the initiators: real transfers
        assert json.loads(expected.splitlines()[-1])["summary"]["transfers"] > 0


@pytest.mark.parametrize("ring", RINGS)
def test_sidecar_window_figures_from_the_arrays_equal_the_object_path(fixtures_dir: Path, ring: str) -> None:
    columns = decode_ring((fixtures_dir / ring).read_bytes()).grouped.transfers
    # v2+ rings carry no stamps: spread the transfers over 60 s so the 30 s window cuts them
    times = np.linspace(940.0, 1000.0, len(columns))
    table = TimedTransfers(times, columns, "agent")
    records = table.to_transfers()
    assert [t.time for t in records] == times.tolist()
    for now in (1000.0, 980.0, 2000.0):
        from_arrays = figures_from_ring(table, [], now, 30.0, None)
        from_objects = figures_from_ring(records, [], now, 30.0, None)
        assert from_arrays == from_objects
        assert bool(from_arrays) == (now < 1030.0 and len(columns) > 0)
