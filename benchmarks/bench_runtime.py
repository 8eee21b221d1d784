"""Runtime benchmark: memory after one simulated hour at 1 Hz, per-tick CPU, /metrics latency.

Run: python benchmarks/bench_runtime.py [--ticks 3600] [--clients 200] [--seconds 10]
The real aggregated capture is replayed in a loop with the injected clock moving 1 s per tick.
The load clients run in the same process as the server (they share its CPU), so the latency
figure is pessimistic.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from phaselens.clock import ManualClock
from phaselens.pipeline import Pipeline, replay_targets
from phaselens.server import Sidecar
from phaselens.settings import Settings
from phaselens.sources.recording import load_sources
from phaselens.sources.scraper import ScrapeResult

CAPTURE = Path(__file__).resolve().parents[1] / "sidecar" / "data" / "vllm-0.32.0-cpu-aggregated.tar.gz"
RSS_LIMIT_MIB = 64.0


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def simulate_hour(ticks: int) -> tuple[Pipeline, list[float]]:
    (source,) = load_sources(f"aggregated={CAPTURE}")
    payloads = [scrape.load() for scrape in source.scrapes]
    clock = ManualClock(1_800_000_000.0)
    pipeline = Pipeline(Settings(targets=replay_targets([source])), clock)
    cpu: list[float] = []
    for index in range(ticks):
        clock.advance(1.0)
        pipeline.submit(ScrapeResult("aggregated", clock.wall(), 0.01, payloads[index % len(payloads)], None))
        result = pipeline.tick()
        cpu.append(next(s.value for s in result.signals if s.name == "phaselens_tick_duration_seconds"))
    return pipeline, cpu


async def metrics_latency(pipeline: Pipeline, clients: int, seconds: float) -> tuple[list[float], int]:
    sidecar = Sidecar(pipeline.settings, pipeline.clock, pipeline=pipeline)
    runner = web.AppRunner(sidecar.build_app(background=False), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/metrics"
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.monotonic() < deadline:
            start = time.perf_counter()
            try:
                async with session.get(url) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            latencies.append(time.perf_counter() - start)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    await runner.cleanup()
    return latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ticks", type=int, default=3600)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    before = rss_mib()
    started = time.perf_counter()
    pipeline, cpu = simulate_hour(args.ticks)
    wall = time.perf_counter() - started
    after = rss_mib()
    print(f"simulated {args.ticks} ticks at 1 Hz in {wall:.1f} s wall ({args.ticks / wall:.0f} ticks/s)")
    print(
        f"RSS after the hour: {after:.1f} MiB (at start {before:.1f} MiB); target <= {RSS_LIMIT_MIB:.0f} MiB: "
        f"{'OK' if after <= RSS_LIMIT_MIB else 'OVER'} ({after / RSS_LIMIT_MIB:.2f} of budget)"
    )
    print(
        f"per-tick CPU: median {statistics.median(cpu) * 1e3:.2f} ms, p99 {percentile(cpu, 0.99) * 1e3:.2f} ms, "
        f"max {max(cpu) * 1e3:.2f} ms ({statistics.median(cpu) * 100:.2f}% of one core at 1 Hz)"
    )
    latencies, errors = asyncio.run(metrics_latency(pipeline, args.clients, args.seconds))
    print(
        f"/metrics under {args.clients} concurrent clients for {args.seconds:g} s: {len(latencies)} requests "
        f"({len(latencies) / args.seconds:.0f}/s), {errors} errors, p50 {percentile(latencies, 0.5) * 1e3:.1f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1e3:.1f} ms"
    )


if __name__ == "__main__":
    main()
