"""NIXL summaries computed on the arrays (no object per transfer) equal the ones computed one
`NixlTransfer` at a time, on the real rings in tests/fixtures (NIXL 1.5.1 UCX loopback, and the
vLLM 0.32 1P1D run's agents): the `nixl-telemetry` output byte for byte, and the sidecar's figures."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from phaselens.analyzers.nixl import figures_from_ring
from phaselens.nixl_cli import NO_TIMESTAMPS_NOTE, _summarise
from phaselens.parsers.nixl_ring import EVENT_NAMES, TimedTransfers, decode_ring

RINGS = [
    "nixl-1.5.1-cpu-ucx-loopback/initiator.ring",
    "nixl-1.5.1-cpu-ucx-loopback/target.ring",
    "nixl-1.5.1-cpu-ucx-loopback/initiator-capacity64-full.ring",
    "vllm-0.32.0-cpu-pd-1p1d/nixl-telemetry/decode-agent-2e6ededa-289e-4bc1-aea5-146d0f4d9d3d",
    "vllm-0.32.0-cpu-pd-1p1d/nixl-telemetry/prefill-agent-926208c8-974f-48ce-89aa-da95cc64c17f",
]


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    pos = q * (len(sorted_values) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def _object_path(path: Path) -> str:
    """`phaselens nixl-telemetry` as it was before the array path: one record per transfer."""
    out = io.StringIO()
    decoded = decode_ring(path.read_bytes(), str(path))
    grouped = decoded.grouped
    transfers = grouped.transfers.to_transfers(path.name, None)
    for index, t in enumerate(transfers):
        record: dict[str, object] = {"agent": t.agent, "index": index}
        if t.time is not None:
            record["time"] = round(t.time, 6)
        record |= {
            "post_seconds": round(t.post_seconds, 6),
            "xfer_seconds": round(t.xfer_seconds, 6),
            "bytes": t.bytes,
            "requests": t.requests,
            "direction": t.direction,
        }
        out.write(json.dumps(record) + "\n")
    times = sorted(t.xfer_seconds for t in transfers)
    header = decoded.header
    timestamps = grouped.transfers.timestamps_us is not None
    summary: dict[str, object] = {
        "file": str(path),
        "agent": path.name,
        "version": header.version,
        "timestamps": timestamps,
        "capacity": header.capacity,
        "write_pos": header.write_pos,
        "read_pos": header.read_pos,
        "pending_events": header.pending,
        "full": header.is_full,
        "transfers": len(transfers),
        "bytes": sum(t.bytes for t in transfers),
        "xfer_seconds_sum": round(sum(times), 6),
        "post_seconds_sum": round(sum(t.post_seconds for t in transfers), 6),
        "xfer_seconds_quantiles": {f"{q:g}": round(_quantile(times, q), 6) for q in (0.5, 0.9, 0.99)} if times else {},
        "errors": grouped.errors,
        "memory_registered_bytes": grouped.memory_registered_bytes,
        "dropped_events_known": decoded.dropped_events_known,
        "unfinished_tail_events": decoded.unfinished_tail_events,
        "unknown_events": grouped.unknown_events,
        "event_names": sorted(set(decoded.event_names())) if header.version in EVENT_NAMES else None,
    }
    if not timestamps:
        summary["note"] = NO_TIMESTAMPS_NOTE
    out.write(json.dumps({"summary": summary}) + "\n")
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
