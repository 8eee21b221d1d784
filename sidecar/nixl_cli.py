"""`phaselens nixl-telemetry FILE...`: decode NIXL telemetry rings, print transfers as JSON lines.

One object per transfer, then one `{"summary": ...}` object per file (count, bytes, transfer-time
quantiles, known dropped events, ring state). A file that cannot be decoded gets an
`{"error": ...}` object on stderr and the others go on; the exit status is then 1.
Read-only by default; `--consume` advances `read_pos` as NIXL's own reader does.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from phaselens.parsers.nixl_ring import EVENT_NAMES, RingFormatError, decode_ring
from phaselens.sources.nixl_dir import NixlRing


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    pos = q * (len(sorted_values) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def _summarise(path: Path, out: TextIO, show_transfers: bool) -> None:
    decoded = decode_ring(path.read_bytes(), str(path))
    grouped = decoded.grouped
    transfers = grouped.transfers.to_transfers(path.name, None)
    if show_transfers:
        for index, t in enumerate(transfers):
            record = {
                "agent": t.agent,
                "index": index,
                "time": t.time,
                "post_seconds": t.post_seconds,
                "xfer_seconds": t.xfer_seconds,
                "bytes": t.bytes,
                "requests": t.requests,
                "direction": t.direction,
            }
            out.write(json.dumps(record) + "\n")
    times = sorted(t.xfer_seconds for t in transfers)
    header = decoded.header
    summary = {
        "file": str(path),
        "agent": path.name,
        "version": header.version,
        "capacity": header.capacity,
        "write_pos": header.write_pos,
        "read_pos": header.read_pos,
        "pending_events": header.pending,
        "full": header.is_full,
        "transfers": len(transfers),
        "bytes": sum(t.bytes for t in transfers),
        "xfer_seconds_sum": sum(times),
        "post_seconds_sum": sum(t.post_seconds for t in transfers),
        "xfer_seconds_quantiles": {f"{q:g}": _quantile(times, q) for q in (0.5, 0.9, 0.99)} if times else {},
        "errors": grouped.errors,
        "memory_registered_bytes": grouped.memory_registered_bytes,
        "dropped_events_known": decoded.dropped_events_known,
        "unfinished_tail_events": decoded.unfinished_tail_events,
        "unknown_events": grouped.unknown_events,
        "event_names": sorted(set(decoded.event_names())) if header.version in EVENT_NAMES else None,
    }
    out.write(json.dumps({"summary": summary}) + "\n")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="phaselens nixl-telemetry", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", metavar="FILE", help="NIXL telemetry ring files")
    parser.add_argument("--summary-only", action="store_true", help="print only the per-file summaries")
    parser.add_argument(
        "--consume",
        action="store_true",
        help="advance read_pos after reading (acts as the ring's consumer; needs write access)",
    )
    args = parser.parse_args(argv)
    status = 0
    for name in args.files:
        path = Path(name)
        try:
            _summarise(path, sys.stdout, not args.summary_only)
            if args.consume:
                ring = NixlRing(path, "consume")
                ring.poll(0.0)
                ring.close()
        except (RingFormatError, OSError) as exc:
            reason = exc.reason if isinstance(exc, RingFormatError) else f"{type(exc).__name__}: {exc}"
            sys.stderr.write(json.dumps({"file": name, "error": reason}) + "\n")
            status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
