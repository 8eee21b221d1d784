"""Log following + parsing throughput on a mixed vLLM log of ~1M lines built from the real logs.

The lines of the three real vLLM 0.32 logs (aggregated server, P/D prefill and decode) are
repeated until LINES lines, written to a file in 64 KiB appends, and each append is followed
(FileFollower.poll) and parsed (parse_line) as the sidecar does. Target: >= 200,000 lines/s.
Run: python benchmarks/bench_logs.py [LINES]
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from phaselens.parsers.logs import MalformedLine, parse_line
from phaselens.sources.log_follow import FileFollower, read_lines

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
SOURCES = (
    FIXTURES / "vllm-0.32.0-cpu-aggregated" / "server.log.gz",
    FIXTURES / "vllm-0.32.0-cpu-pd-1p1d" / "decode.log.gz",
    FIXTURES / "vllm-0.32.0-cpu-pd-1p1d" / "prefill.log.gz",
)


def main() -> None:
    target = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    base = [line for path in SOURCES for line in read_lines(path)]
    text = "\n".join(base) + "\n"
    repeats = max(1, target // len(base))
    blob = (text * repeats).encode()
    total_lines = len(base) * repeats
    chunk = 1 << 16
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "engine.log"
        path.write_bytes(b"")
        follower = FileFollower(path)
        kinds: Counter[str] = Counter()
        seen = 0
        with open(path, "ab", buffering=0) as out:
            start = time.perf_counter()
            for offset in range(0, len(blob), chunk):
                out.write(blob[offset : offset + chunk])
                for line in follower.poll():
                    seen += 1
                    result = parse_line(line, 2026)
                    if result is None:
                        continue
                    kinds["malformed" if isinstance(result, MalformedLine) else result.kind] += 1
            elapsed = time.perf_counter() - start
        follower.close()
    assert seen == total_lines, (seen, total_lines)
    print(f"log: {total_lines:,} lines, {len(blob) / 1e6:.0f} MB ({repeats} x the 3 real vLLM logs)")
    print(f"follow + parse: {elapsed:.2f} s  {total_lines / elapsed:,.0f} lines/s  (target >= 200,000)")
    print("events:", dict(kinds))


if __name__ == "__main__":
    main()
