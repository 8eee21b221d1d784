"""Soak benchmark: RSS growth of a real `phaselens run` process over a long run at a fast interval.

Run: python benchmarks/bench_soak.py [--minutes 30] [--warmup-minutes 5] [--interval 0.25]
     [--sample-seconds 10] [--csv out.csv]

A local HTTP server (in this process, on 127.0.0.1) replays the recorded vLLM CPU engine
(tests/fixtures/vllm-0.32.0-cpu-aggregated, 84 real scrapes) in a loop, the scrape shown advancing
with wall time at the recorded pace, so counters grow as they did on the engine and reset when the
loop wraps (as after an engine restart). `phaselens run --interval 0.25` scrapes it in a child
process; a client here reads the sidecar's /metrics and /signals once a second. The child's RSS
(VmRSS from /proc) is sampled every `--sample-seconds`.

Reported figure: RSS growth per hour after warm-up, the least-squares slope of RSS over time of
the samples taken after `--warmup-minutes` (goal < 1 MiB/hour). Also: RSS at the end of warm-up,
at the end, the peak, and how many scrapes/reads failed.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from phaselens.sources.recording import load_sources

ROOT = Path(__file__).resolve().parents[1]
CAPTURE = ROOT / "tests" / "fixtures" / "vllm-0.32.0-cpu-aggregated" / "scrapes.tar.gz"
GOAL_MIB_PER_HOUR = 1.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) points, in MiB per hour."""
    if len(points) < 2:
        return float("nan")
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    if den == 0:
        return float("nan")
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den * 3600


class Engine:
    """Serves the recorded scrapes in a loop, advancing with wall time at the recorded pace."""

    def __init__(self) -> None:
        (source,) = load_sources(f"aggregated={CAPTURE}")
        self.payloads = [scrape.load() for scrape in source.scrapes]
        times = [scrape.time for scrape in source.scrapes]
        self.step = max(0.05, (times[-1] - times[0]) / max(1, len(times) - 1))
        self.started = time.monotonic()
        self.requests = 0

    async def metrics(self, request: web.Request) -> web.Response:
        self.requests += 1
        index = int((time.monotonic() - self.started) / self.step) % len(self.payloads)
        return web.Response(body=self.payloads[index], content_type="text/plain", charset="utf-8")


async def wait_ready(session: aiohttp.ClientSession, url: str, child: subprocess.Popen[bytes]) -> bool:
    for _ in range(600):
        if child.poll() is not None:
            return False
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                if response.status == 200:
                    return True
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(0.1)
    return False


async def soak(args: argparse.Namespace) -> int:
    engine = Engine()
    app = web.Application()
    app.router.add_get("/metrics", engine.metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    engine_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", engine_port).start()
    sidecar_port = free_port()
    command = [
        sys.executable,
        "-m",
        "phaselens",
        "run",
        "--target",
        f"http://127.0.0.1:{engine_port}/metrics",
        "--interval",
        str(args.interval),
        "--listen",
        f"127.0.0.1:{sidecar_port}",
        "--gpu-telemetry" if args.gpu else "--no-gpu-telemetry",
        "--log-level",
        "warning",
    ]
    stderr_path = Path(args.stderr)
    with stderr_path.open("wb") as stderr_file:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr_file)
    print(f"sidecar pid {child.pid} scraping a replay of {len(engine.payloads)} scrapes every {args.interval:g} s")
    samples: list[tuple[float, float]] = []
    reads = read_errors = 0
    url = f"http://127.0.0.1:{sidecar_port}"
    try:
        async with aiohttp.ClientSession() as session:
            if not await wait_ready(session, url + "/readyz", child):
                print(f"sidecar never became ready; see {stderr_path}")
                return 1
            started = time.monotonic()  # the clock starts once the sidecar serves its first good scrape
            deadline = started + args.minutes * 60
            next_sample = started
            while time.monotonic() < deadline:
                if child.poll() is not None:
                    print(f"sidecar exited early with code {child.returncode}; see {stderr_path}")
                    return 1
                for path in ("/metrics", "/signals"):
                    try:
                        async with session.get(url + path, timeout=aiohttp.ClientTimeout(total=5)) as response:
                            await response.read()
                            reads += 1
                            read_errors += response.status != 200
                    except (aiohttp.ClientError, TimeoutError):
                        read_errors += 1
                now = time.monotonic()
                if now >= next_sample:
                    rss = rss_mib(child.pid)
                    if rss is not None:
                        samples.append((now - started, rss))
                    next_sample += args.sample_seconds
                await asyncio.sleep(1.0)
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        await runner.cleanup()
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["seconds", "rss_mib"])
            writer.writerows((round(t, 1), round(r, 3)) for t, r in samples)
    warm = [p for p in samples if p[0] >= args.warmup_minutes * 60]
    growth = slope_per_hour(warm)
    print(
        f"ran {args.minutes:g} min; the engine served {engine.requests} scrapes; "
        f"{reads} reads of the sidecar, {read_errors} failed"
    )
    if not warm:
        print("no samples after warm-up: run longer than --warmup-minutes")
        return 1
    print(
        f"RSS: {samples[0][1]:.1f} MiB at start, {warm[0][1]:.1f} MiB after {args.warmup_minutes:g} min warm-up, "
        f"{samples[-1][1]:.1f} MiB at the end, peak {max(r for _, r in samples):.1f} MiB ({len(samples)} samples)"
    )
    print(
        f"RSS growth after warm-up: {growth:+.2f} MiB/hour (least-squares slope over {len(warm)} samples); "
        f"goal < {GOAL_MIB_PER_HOUR:g} MiB/hour: {'OK' if growth < GOAL_MIB_PER_HOUR else 'OVER'}"
    )
    print(f"sidecar exit code {child.returncode}; its stderr: {stderr_path} ({stderr_path.stat().st_size} bytes)")
    return 0 if growth < GOAL_MIB_PER_HOUR and child.returncode == 0 else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--warmup-minutes", type=float, default=5.0)
    parser.add_argument("--interval", type=float, default=0.25)
    parser.add_argument("--sample-seconds", type=float, default=10.0)
    parser.add_argument("--csv", help="write the RSS samples here")
    parser.add_argument("--stderr", default=os.devnull, help="keep the sidecar's stderr here")
    parser.add_argument("--gpu", action="store_true", help="leave GPU telemetry on (off by default)")
    raise SystemExit(asyncio.run(soak(parser.parse_args())))


if __name__ == "__main__":
    main()
