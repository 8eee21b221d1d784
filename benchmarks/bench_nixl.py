"""NIXL telemetry ring decoding: numpy (the sidecar's decoder) vs a pure-Python `struct` loop, and
`phaselens nixl-telemetry` as a whole process, before (one object per transfer) and after (arrays).

The ring: the real NIXL 1.5.1 v4 ring tests/fixtures/nixl-1.5.1-cpu-ucx-loopback/initiator.ring
(its header, its memory-registration event, its 20 real transfer groups with the garbage NIXL
leaves in the padding), the groups repeated to EVENTS events (16 bytes each). Decoded both ways in
one run: raw events -> per-transfer columns. Targets: >= 5 million events/s and >= 20x.
Also times the live path, `NixlRing.poll` on the ring written to a file (pread, decode, group).

Whole process (`python -m phaselens nixl-telemetry FILE`, median of --runs, min-max shown): after
= this checkout; before = the same decode with the summary and JSON lines built from one
`NixlTransfer` per transfer, as `nixl_cli.py` did before issue 19 (`--object-path`, below).
Targets: --summary-only >= 5 M events/s; with the JSON lines >= 1 M events/s.
Run: python benchmarks/bench_nixl.py [EVENTS] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from phaselens.parsers.nixl_ring import (
    HEADER_SIZE,
    RX_BYTES,
    XFER_POST_TIME,
    XFER_TIME,
    decode_ring,
    parse_header,
)
from phaselens.sources.nixl_dir import NixlRing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from nixl_object_path import write_object_path

REAL_RING = Path(__file__).resolve().parent.parent / "tests/fixtures/nixl-1.5.1-cpu-ucx-loopback/initiator.ring"


def build_ring(events: int, registrations_only: bool = False) -> bytes:
    """The real ring's events (a registration, then 20 transfer groups) with the groups repeated."""
    real = REAL_RING.read_bytes()
    header = parse_header(real[:HEADER_SIZE], str(REAL_RING), len(real))
    assert header.version == 4 and header.read_pos == 0
    slots = np.frombuffer(real, dtype=np.uint8, offset=HEADER_SIZE).reshape(-1, 16)[: header.write_pos]
    groups = slots[1:]
    repeated = np.tile(groups, ((events - 1) // len(groups) + 1, 1))[: events - 1]
    body = np.concatenate([slots[:1], repeated])
    if registrations_only:
        body = np.repeat(slots[:1], events, axis=0)
    capacity = 1 << (events).bit_length()  # one slot stays free
    ring = np.zeros((capacity, 16), dtype=np.uint8)
    ring[:events] = body
    head = struct.pack("<QQiiQQ", events, 0, header.version, header.expected_version, capacity, capacity - 1)
    return head + ring.tobytes()


def decode_python(data: bytes) -> list[tuple[int, int, int, int, bool]]:
    """The straightforward reader: one struct.unpack per event, a small state machine per group."""
    write_pos, read_pos, _version, _expected, _capacity, mask = struct.unpack_from("<QQiiQQ", data, 0)
    event = struct.Struct("<B7xQ")
    out: list[tuple[int, int, int, int, bool]] = []
    pending: list[tuple[int, int]] = []
    pos = read_pos
    while pos != write_pos:
        kind, value = event.unpack_from(data, HEADER_SIZE + pos * 16)
        pos = (pos + 1) & mask
        position = len(pending)
        fits = (
            (position == 0 and kind == XFER_POST_TIME)
            or (position == 1 and kind == XFER_TIME)
            or (position == 2 and kind in (0, 1))
            or (position == 3 and kind in (2, 3))
        )
        if fits:
            pending.append((kind, value))
        else:
            pending = [(kind, value)] if kind == XFER_POST_TIME else []
        if len(pending) == 4:
            out.append((pending[0][1], pending[1][1], pending[2][1], pending[3][1], pending[2][0] == RX_BYTES))
            pending = []
    return out


def poll_file(data: bytes) -> tuple[float, int]:
    """Best of three: one `NixlRing.poll` (the live path: read the file, decode, group) of the ring.

    (The page cache holds the file: this times the copy out of it, not the disk.)"""
    best = float("inf")
    transfers = 0
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "agent")
        for _ in range(3):
            with open(path, "wb") as handle:
                handle.write(data)
            ring = NixlRing(path, mode="consume")
            start = time.perf_counter()
            poll = ring.poll(now=1.0)
            best = min(best, time.perf_counter() - start)
            transfers = len(poll.batch)
            ring.close()
    return best, transfers


def _process_seconds(command: list[str], runs: int) -> tuple[list[float], bytes]:
    times = []
    output = b""
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(command, check=True, stdout=subprocess.PIPE)
        times.append(time.perf_counter() - start)
        output = done.stdout
    return times, output


def whole_process(data: bytes, events: int, runs: int) -> None:
    print(f"\nwhole process, {runs} runs each (median, min-max), output piped to this benchmark:")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "agent"
        path.write_bytes(data)
        for label, flags in (("--summary-only", ["--summary-only"]), ("JSON lines", [])):
            after_cmd = [sys.executable, "-m", "phaselens", "nixl-telemetry", *flags, str(path)]
            before_cmd = [sys.executable, __file__, *flags, "--object-path", str(path)]
            before, before_out = _process_seconds(before_cmd, runs)
            after, after_out = _process_seconds(after_cmd, runs)
            assert after_out == before_out, f"{label}: output differs from the object path"
            for name, times in (("before (objects)", before), ("after (arrays) ", after)):
                median = statistics.median(times)
                print(
                    f"  {label:15s} {name}: {median:6.2f} s ({min(times):.2f}-{max(times):.2f})"
                    f"  {events / median / 1e6:6.2f} M events/s"
                )
            print(f"  {label:15s} after / before: {statistics.median(before) / statistics.median(after):.1f}x faster"
                  f"  (identical output, {len(after_out) / 1e6:.0f} MB)")  # fmt: skip
    print("  targets: --summary-only >= 5 M events/s; JSON lines >= 1 M events/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("events", nargs="?", type=int, default=4_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--object-path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--summary-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.object_path:
        write_object_path(args.object_path, sys.stdout, args.summary_only)
        return
    events = args.events
    data = build_ring(events)
    print(f"ring: {events:,} events, {len(data) / 1e6:.1f} MB (v4 layout)")

    best_np = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        decoded = decode_ring(data)
        best_np = min(best_np, time.perf_counter() - start)
    columns = decoded.grouped.transfers

    start = time.perf_counter()
    python = decode_python(data)
    t_py = time.perf_counter() - start

    assert len(python) == len(columns) == (events - 1) // 4
    assert [p[1] for p in python[:1000]] == columns.xfer_us[:1000].tolist()
    assert sum(p[2] for p in python) == int(columns.bytes.sum())

    np_rate = events / best_np
    py_rate = events / t_py
    print(f"numpy decoder : {best_np * 1e3:9.1f} ms  {np_rate / 1e6:8.1f} M events/s")
    print(f"python struct : {t_py * 1e3:9.1f} ms  {py_rate / 1e6:8.2f} M events/s")
    print(f"speed-up      : {t_py / best_np:9.1f} x   (targets: >= 5 M events/s, >= 20 x)")

    t_file, transfers = poll_file(data)
    assert transfers == (events - 1) // 4
    print(
        f"file poll     : {t_file * 1e3:9.1f} ms  {events / t_file / 1e6:8.1f} M events/s  "
        "(NixlRing.poll: read + decode + group, arrays)"
    )
    t_read, none = poll_file(build_ring(events, registrations_only=True))
    assert none == 0
    print(
        f"file read     : {t_read * 1e3:9.1f} ms  {events / t_read / 1e6:8.1f} M events/s  "
        "(NixlRing.poll of as many memory-registration events: the read and decode alone)"
    )
    whole_process(data, events, args.runs)


if __name__ == "__main__":
    main()
