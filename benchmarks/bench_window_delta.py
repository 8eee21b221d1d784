"""Window histogram deltas: the reset records kept as snapshots are added against walking every point.

A TargetWindow holds a full 60 s window at 0.25 s (241 points) of the real vLLM 0.32 capture of
tests/fixtures/vllm-0.32.0-cpu-aggregated, replayed without counter resets (bench_sidecar_cpu's
`bodies`); every histogram's `histogram_delta` is timed with the records (the ends only, when no
series reset or changed) and without them (each series' points walked for a reset, as before),
in one process. Both must give the same deltas.

Run: python benchmarks/bench_window_delta.py [--reps 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_sidecar_cpu import bodies  # noqa: E402
from phaselens.analyzers.window import HistogramDelta, TargetWindow  # noqa: E402
from phaselens.parsers.engines import to_snapshot  # noqa: E402
from phaselens.parsers.exposition import parse_exposition  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args()
    window = TargetWindow(horizon_seconds=60.0)
    for i, body in enumerate(bodies(260)):
        window.add(to_snapshot(parse_exposition(body.decode()), 1000.0 + 0.25 * i))
    latest = window.latest
    assert latest is not None
    names = sorted({name for name, _ in latest.histograms})
    groups = window.groups()

    def all_deltas() -> list[HistogramDelta | None]:
        window._deltas.clear()  # the computation, not the per-tick memo, is timed
        return [window.histogram_delta(name, group) for name in names for group in groups]

    def timed() -> float:
        t0 = time.perf_counter()
        for _ in range(args.reps):
            all_deltas()
        return (time.perf_counter() - t0) / args.reps

    with_records = all_deltas()
    t_records = timed()
    saved = window._breaks, window._series_sets
    window._breaks, window._series_sets = {}, {}  # no records: every series is walked, as before
    walked = all_deltas()
    t_walk = timed()
    window._breaks, window._series_sets = saved
    if walked != with_records:
        print("bench_window_delta: the two paths disagree")
        return 1
    print(
        f"{len(window)} points, {len(names)} histograms x {len(groups)} groups, all deltas: walk "
        f"{t_walk * 1e3:.2f} ms, reset records {t_records * 1e3:.2f} ms: {t_walk / t_records:.1f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
