"""`phaselens nixl-telemetry FILE...`: decode NIXL telemetry rings, print transfers as JSON lines.

One object per transfer, then one `{"summary": ...}` object per file (count, bytes, transfer-time
quantiles, known dropped events, ring state). A file that cannot be decoded gets an
`{"error": ...}` object on stderr and the others go on; the exit status is then 1.
Read-only by default; `--consume` advances `read_pos` as NIXL's own reader does.

Times are in seconds, rounded to the ring's own resolution (microseconds). Only format v1 rings
stamp their events: a transfer from a v2+ ring has no `"time"` field, and its file's summary says
`"timestamps": false` (the sidecar stamps such transfers with the time it reads them).
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

NO_TIMESTAMPS_NOTE = 'format v2+ rings carry no timestamps: the transfers have no "time" field'


def _seconds(value: float) -> float:
    """Seconds at the ring's resolution (integer microseconds), without binary float noise."""
    return round(value, 6)


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
            record: dict[str, object] = {"agent": t.agent, "index": index}
            if t.time is not None:
                record["time"] = _seconds(t.time)
            record |= {
                "post_seconds": _seconds(t.post_seconds),
                "xfer_seconds": _seconds(t.xfer_seconds),
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
        "xfer_seconds_sum": _seconds(sum(times)),
        "post_seconds_sum": _seconds(sum(t.post_seconds for t in transfers)),
        "xfer_seconds_quantiles": {f"{q:g}": _seconds(_quantile(times, q)) for q in (0.5, 0.9, 0.99)} if times else {},
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phaselens nixl-telemetry",
        description=__doc__.split("\n", 1)[1].strip().replace("`", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="NIXL telemetry ring files")
    parser.add_argument("--summary-only", action="store_true", help="print only the per-file summaries")
    parser.add_argument(
        "--consume",
        action="store_true",
        help="advance read_pos after reading (acts as the ring's consumer; needs write access)",
    )
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
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
