"""Freshness of the live sidecar, and what it costs beside the engine.

After a step change in load (idle -> a burst of clients with long prompts), how long until the
sidecar's /metrics shows the prefill queue (or the KV utilization) crossing a threshold, measured
against the engine's own /metrics, both polled at 20 Hz. Target: p95 lag <= one scrape interval
+ 100 ms. Also the sidecar's CPU share and peak RSS during the run, beside the engine's (/proc).

Needs the engine venv and model of `make e2e` (e2e/.venv-engine, e2e/out/model); without them it
says so and exits 0, so `make bench` stays usable on a machine without the engine.
Usage: python benchmarks/bench_freshness.py [--steps 6] [--interval 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "e2e"))

import loadgen  # noqa: E402
import procs  # noqa: E402
import scenario  # noqa: E402
from groundtruth import parse_exposition  # noqa: E402

POLL_S = 0.05
QUEUE_THRESHOLD = 4.0
KV_THRESHOLD = 0.5
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Crossings:
    """First time each poller saw each series at or above its threshold, per step."""

    first: dict[tuple[str, str, int], float] = field(default_factory=dict)
    step: int = -1
    armed: bool = False


def poll(url: str, source: str, series: dict[str, tuple[str, float]], state: Crossings, stop: threading.Event) -> None:
    while not stop.is_set():
        t0 = time.time()
        try:
            scrape = parse_exposition(f"# scrape_time {t0}\n" + procs.fetch(url, 2.0).decode())
        except (OSError, ValueError):
            scrape = None
        if scrape is not None and state.armed:
            for key, (name, threshold) in series.items():
                v = scrape.value(name)
                k = (source, key, state.step)
                if v is not None and v >= threshold and k not in state.first:
                    state.first[k] = t0
        stop.wait(max(0.0, POLL_S - (time.time() - t0)))


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def proc_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def group_pids(pgid: int) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.getpgid(int(d.name)) == pgid:
                    pids.append(int(d.name))
            except (ProcessLookupError, PermissionError):
                continue
    return pids


def quantile(xs: list[float], q: float) -> float:
    if not xs:
        return math.nan
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


async def burst(url: str, seconds: float, clients: int, seed: int) -> None:
    phase = loadgen.Phase("burst", seconds, clients, (150, 250), (100, 200))
    out = ROOT / "e2e/out/freshness/ground_truth.jsonl"
    await loadgen.run_phases(url, [phase], out, seed=seed)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--interval", type=float, default=1.0, help="the sidecar's scrape interval")
    ap.add_argument("--burst-seconds", type=float, default=6.0)
    ap.add_argument("--clients", type=int, default=24)
    args = ap.parse_args()

    engine_py = ROOT / "e2e/.venv-engine/bin/python"
    model = ROOT / "e2e/out/model"
    if not engine_py.exists() or not (model / "config.json").exists():
        print("bench_freshness: skipped (no engine venv/model: run `make e2e` first)")
        return 0
    out = ROOT / "e2e/out/freshness"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ground_truth.jsonl").unlink(missing_ok=True)
    server = scenario.servers_for("aggregated", out)[0]
    started: list[procs.Proc] = []
    try:
        t0 = time.monotonic()
        eng = procs.start(
            "engine",
            scenario.engine_argv(str(engine_py), model, server, 48, 32),
            out / "server.log",
            env=server.env,
        )
        started.append(eng)
        procs.wait_http(f"{server.base}/health", 400, started)
        asyncio.run(scenario.warm([server], pd=False))
        print(f"engine ready in {time.monotonic() - t0:.0f} s")
        port = 9471
        side = procs.start(
            "sidecar",
            [
                sys.executable,
                "-m",
                "phaselens",
                "run",
                "--target",
                f"aggregated={server.base}/metrics",
                "--listen",
                f"127.0.0.1:{port}",
                "--interval",
                str(args.interval),
            ],
            out / "sidecar.log",
            stdout_path=out / "sidecar.stdout.jsonl",
        )
        started.append(side)
        procs.wait_http(f"http://127.0.0.1:{port}/metrics", 60, started)

        # the 20 Hz pollers stamp the crossings: they must not wait behind the engine for a core
        niceness = procs.raise_own_priority()
        print(f"pollers and load client at niceness {niceness}")
        state = Crossings()
        stop = threading.Event()
        engine_series = {
            "queue": ("vllm:num_requests_waiting", QUEUE_THRESHOLD),
            "kv": ("vllm:kv_cache_usage_perc", KV_THRESHOLD),
        }
        sidecar_series = {
            "queue": ("phaselens_prefill_queue_depth", QUEUE_THRESHOLD),
            "kv": ("phaselens_decode_kv_utilization_ratio", KV_THRESHOLD),
        }
        threads = [
            threading.Thread(target=poll, args=(f"{server.base}/metrics", "engine", engine_series, state, stop)),
            threading.Thread(
                target=poll, args=(f"http://127.0.0.1:{port}/metrics", "sidecar", sidecar_series, state, stop)
            ),
        ]
        for t in threads:
            t.start()
        side_cpu0, wall0 = proc_cpu_seconds(side.popen.pid), time.monotonic()
        eng_pids = group_pids(eng.popen.pid)
        eng_cpu0 = sum(proc_cpu_seconds(p) for p in eng_pids)
        side_rss = eng_rss = 0
        for step in range(args.steps):
            time.sleep(8.0)  # idle: the queue and the KV pool drain between steps
            state.step, state.armed = step, True
            asyncio.run(burst(server.base, args.burst_seconds, args.clients, seed=step))
            state.armed = False
            side_rss = max(side_rss, proc_rss_bytes(side.popen.pid))
            eng_rss = max(eng_rss, sum(proc_rss_bytes(p) for p in eng_pids if Path(f"/proc/{p}").exists()))
            print(f"step {step + 1}/{args.steps} done", flush=True)
        wall = time.monotonic() - wall0
        side_cpu = proc_cpu_seconds(side.popen.pid) - side_cpu0
        eng_cpu = sum(proc_cpu_seconds(p) for p in eng_pids if Path(f"/proc/{p}").exists()) - eng_cpu0
        stop.set()
        for t in threads:
            t.join()
    finally:
        for p in reversed(started):
            procs.stop(p)

    print(f"\nfreshness over {args.steps} load steps, sidecar interval {args.interval} s, polls at 20 Hz")
    print(
        f"{'series':<8}{'steps':>6}{'p50 lag s':>11}{'p95 lag s':>11}{'max s':>8}  target p95 <= "
        f"{args.interval + 0.1:.2f} s"
    )
    verdict = True
    for key in ("queue", "kv"):
        lags = [
            state.first[("sidecar", key, s)] - state.first[("engine", key, s)]
            for s in range(args.steps)
            if ("sidecar", key, s) in state.first and ("engine", key, s) in state.first
        ]
        p95 = quantile(lags, 0.95)
        ok = bool(lags) and p95 <= args.interval + 0.1
        verdict &= ok
        print(
            f"{key:<8}{len(lags):>6}{quantile(lags, 0.5):>11.3f}{p95:>11.3f}"
            f"{max(lags, default=math.nan):>8.3f}"
            f"  {'ok' if ok else 'MISSED'}"
        )
    print(
        f"\nsidecar CPU {side_cpu / wall:.1%} of one core over {wall:.0f} s (engine {eng_cpu / wall:.1%}); "
        f"peak RSS sidecar {side_rss / 2**20:.0f} MiB, engine {eng_rss / 2**20:.0f} MiB; "
        f"ratio sidecar/engine CPU {side_cpu / max(eng_cpu, 1e-9):.3f}"
    )
    print(f"freshness target {'met' if verdict else 'missed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
