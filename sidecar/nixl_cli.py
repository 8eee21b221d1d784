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
from pathlib import Path
from typing import TextIO

import numpy as np
import numpy.typing as npt
from phaselens.parsers.nixl_ring import EVENT_NAMES, RingDecode, RingFormatError, TransferColumns, decode_ring
from phaselens.sources.nixl_dir import NixlRing

NO_TIMESTAMPS_NOTE = 'format v2+ rings carry no timestamps: the transfers have no "time" field'


def _seconds(value: float) -> float:
    """Seconds at the ring's resolution (integer microseconds), without binary float noise."""
    return round(value, 6)


def _quantile(sorted_us: npt.NDArray[np.uint64], q: float) -> float:
    """Linear interpolation between closest ranks, on the seconds of the two neighbours."""
    pos = q * (len(sorted_us) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(sorted_us) - 1)
    a, b = int(sorted_us[low]) / 1e6, int(sorted_us[high]) / 1e6
    return a + (b - a) * (pos - low)


_RECORD = (
    '{"agent": @AGENT@, "index": %d, %s"post_seconds": %r, "xfer_seconds": %r, "bytes": %d, "requests": %d, '
    '"direction": "%s"}\n'
)
_CHUNK = 65536


def _write_records(columns: TransferColumns, agent: str, out: TextIO) -> None:
    """One JSON object per transfer, as `json.dumps` writes it, formatted in bulk from the columns
    (the same text: `%r` of a float is its `json.dumps`; microseconds / 1e6 are already at 6 decimals)."""
    record = _RECORD.replace("@AGENT@", json.dumps(agent).replace("%", "%%"))
    for lo in range(0, len(columns), _CHUNK):
        hi = min(lo + _CHUNK, len(columns))
        if columns.timestamps_us is not None:
            times = [f'"time": {t!r}, ' for t in (columns.timestamps_us[lo:hi] / 1e6).tolist()]
        else:
            times = [""] * (hi - lo)
        rows = zip(
            range(lo, hi),
            times,
            (columns.post_us[lo:hi] / 1e6).tolist(),
            (columns.xfer_us[lo:hi] / 1e6).tolist(),
            columns.bytes[lo:hi].tolist(),
            columns.requests[lo:hi].tolist(),
            np.where(columns.is_read[lo:hi], "read", "write").tolist(),
            strict=True,
        )
        out.write("".join([record % row for row in rows]))


def summary(path: Path, decoded: RingDecode) -> dict[str, object]:
    """The per-file summary, computed on the columns (no object per transfer)."""
    grouped = decoded.grouped
    columns = grouped.transfers
    header = decoded.header
    timestamps = columns.timestamps_us is not None
    count = len(columns)
    xfer = np.sort(columns.xfer_us)
    result: dict[str, object] = {
        "file": str(path),
        "agent": path.name,
        "version": header.version,
        "timestamps": timestamps,
        "capacity": header.capacity,
        "write_pos": header.write_pos,
        "read_pos": header.read_pos,
        "pending_events": header.pending,
        "full": header.is_full,
        "transfers": count,
        "bytes": int(columns.bytes.sum()),
        # Sums of integer microseconds are exact; the seconds are rounded to them (0 with no transfer).
        "xfer_seconds_sum": _seconds(int(columns.xfer_us.sum()) / 1e6) if count else 0,
        "post_seconds_sum": _seconds(int(columns.post_us.sum()) / 1e6) if count else 0,
        "xfer_seconds_quantiles": {f"{q:g}": _seconds(_quantile(xfer, q)) for q in (0.5, 0.9, 0.99)} if count else {},
        "errors": grouped.errors,
        "memory_registered_bytes": grouped.memory_registered_bytes,
        "dropped_events_known": decoded.dropped_events_known,
        "unfinished_tail_events": decoded.unfinished_tail_events,
        "unknown_events": grouped.unknown_events,
        "event_names": decoded.distinct_event_names() if header.version in EVENT_NAMES else None,
    }
    if not timestamps:
        result["note"] = NO_TIMESTAMPS_NOTE
    return result


def _summarise(path: Path, out: TextIO, show_transfers: bool) -> None:
    decoded = decode_ring(path.read_bytes(), str(path))
    if show_transfers:
        _write_records(decoded.grouped.transfers, path.name, out)
    out.write(json.dumps({"summary": summary(path, decoded)}) + "\n")


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
