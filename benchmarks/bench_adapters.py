"""Engine adapter speed: `to_snapshot` on a real 59 KB vLLM scrape and on a ~3 MB payload.

The 3 MB payload is the real scrape's vLLM series repeated for many (engine, model) pairs, as a
large DP deployment behind one endpoint would expose. Run: `python benchmarks/bench_adapters.py`.
Prints per-call times (median of repeats) and the adapter's share of parse + adapt.
"""

from __future__ import annotations

import statistics
import tarfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from phaselens.parsers.engines import to_snapshot
from phaselens.parsers.exposition import parse_exposition

CAPTURE = Path(__file__).resolve().parent.parent / "tests/fixtures/vllm-0.32.0-cpu-aggregated/scrapes.tar.gz"


def read_scrape(member: str = "rec/0060.prom") -> str:
    with tarfile.open(CAPTURE) as tar:
        handle = tar.extractfile(member)
        assert handle is not None
        return handle.read().decode()


def widen(text: str, target_bytes: int) -> str:
    """Copy each vLLM family's `engine="0"` sample lines, inside that family, for engine indexes
    1..N until the body reaches target_bytes (families stay contiguous, as an exporter writes)."""
    blocks = text.split("# HELP ")
    per_engine = sum(len(line) + 1 for line in text.splitlines() if 'engine="0"' in line)
    copies = 1 + max(0, target_bytes - len(text)) // per_engine
    out = [blocks[0]]
    for block in blocks[1:]:
        lines = block.rstrip("\n").split("\n")
        samples = [line for line in lines if line.startswith("vllm:") and 'engine="0"' in line]
        extra = [
            line.replace('engine="0"', f'engine="{engine}"')
            for engine in range(1, copies)
            for line in samples
        ]
        out.append("\n".join([*lines, *extra]) + "\n")
    return "# HELP ".join(out)


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    small = read_scrape()
    large = widen(small, 3_000_000)
    for label, text, repeats in (("59 KB real scrape", small, 300), ("3 MB widened scrape", large, 15)):
        exposition = parse_exposition(text)
        parse = median_seconds(partial(parse_exposition, text), repeats)
        adapt = median_seconds(partial(to_snapshot, exposition, 0.0), repeats)
        snap = to_snapshot(exposition, 0.0)
        print(
            f"{label}: {len(text) / 1e3:.0f} KB, {len(exposition.families)} families, "
            f"{len(snap.scalars)} scalars + {len(snap.histograms)} histograms out"
        )
        print(f"  parse_exposition {parse * 1e3:8.3f} ms")
        print(f"  to_snapshot      {adapt * 1e3:8.3f} ms  ({adapt / (parse + adapt):.1%} of parse+adapt)")


if __name__ == "__main__":
    main()
