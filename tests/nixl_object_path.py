"""The `phaselens nixl-telemetry` output as it was before the array path (issue 19): one
`NixlTransfer` object per transfer, then the summary. The oracle that the array path must equal,
byte for byte (tests/test_nixl_array_summaries.py), and the "before" of benchmarks/bench_nixl.py."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from phaselens.nixl_cli import NO_TIMESTAMPS_NOTE
from phaselens.parsers.nixl_ring import EVENT_NAMES, decode_ring


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    pos = q * (len(sorted_values) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def write_object_path(path: Path, out: TextIO, summary_only: bool = False) -> None:
    decoded = decode_ring(path.read_bytes(), str(path))
    grouped = decoded.grouped
    transfers = grouped.transfers.to_transfers(path.name, None)
    for index, t in enumerate(() if summary_only else transfers):
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
