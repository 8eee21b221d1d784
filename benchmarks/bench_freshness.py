"""Freshness of the live sidecar, where its lag comes from, and what it costs beside the engine.

After a step change in load (idle -> a burst of clients), how long until the sidecar shows the
prefill queue (vLLM: also the KV utilization) crossing a threshold, measured against the engine's
own /metrics; both polled at 20 Hz. Target: p95 lag <= one scrape interval + 100 ms.

Each step's lag is split into parts that add up to it, read from the sidecar's /signals (`ts`,
the tick's wall time; `phaselens_scrape_duration_seconds`; `phaselens_signal_age_seconds`, the
tick time minus the time the scrape's body arrived):
  engine   the engine's /metrics latency for the scrape that first showed the crossing, as the
           sidecar measured it (request sent to body received)
  wait     from the engine's change (first 20 Hz poll that saw it) to that scrape's start, itself
           split in two from the sidecar's scrape timeline (every scrape's start and end, read from
           the /signals documents the 20 Hz poller sees):
    inflight  the part while the sidecar's previous scrape was still waiting for the engine (a
              scrape started before the change whose answer did not show it)
    cadence   the rest: from the change, or that previous scrape's end, to the next scrape's start
              (the interval's beat, a late wake-up)
  tick     from the body's arrival to the tick's start (coalescing, inbox, worker thread)
  render   from the tick's start to the first 20 Hz poll of /signals that showed it (tick
           compute, publish, HTTP, half a poll period on average)
`ours` is the lag without the engine's own answer time (total - engine - inflight): what the
sidecar adds. Beside it, `poller` is the engine's /metrics latency as the high-priority 20 Hz poller
saw it during the bursts (same engine, same time, a client that is never short of CPU).
Also the sidecar's CPU share and peak RSS during the run, beside the engine's (/proc).

Engines: `--engine dynamo` (default) runs a real NVIDIA Dynamo 1.6.1 frontend + one `dynamo.mocker`
worker (e2e/dynamo.py; needs e2e/.venv-dynamo from e2e/install_dynamo.sh) and the sidecar scrapes
the frontend (`dynamo_frontend_queued_requests`); `--engine vllm` runs the vLLM CPU build of
`make e2e` (e2e/.venv-engine, e2e/out/model). Without the engine's venv it says so and exits 0.
`--baseline CMD` runs a second sidecar (CMD is a command that runs another phaselens, e.g. an
older checkout) beside the first, against the same engine and load: before/after in one run.
Usage: python benchmarks/bench_freshness.py [--engine dynamo] [--steps 20] [--interval 0.25]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import multiprocessing
import os
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "e2e"))

import loadgen  # noqa: E402
import procs  # noqa: E402
from groundtruth import parse_exposition  # noqa: E402

POLL_S = 0.05
QUEUE_THRESHOLD = 4.0
KV_THRESHOLD = 0.5
CLK_TCK = os.sysconf("SC_CLK_TCK")
PORT_BASE = 32000  # default --port-base: the engine (Dynamo frontend or vLLM); Dynamo worker +1; sidecars +10, +11
PARTS = ("engine", "wait", "inflight", "cadence", "tick", "render")


@dataclass
class Crossings:
    """First time each poller saw each series at or above its threshold, per step, and (for the
    sidecars) the /signals document that showed it."""

    first: dict[tuple[str, str, int], float] = field(default_factory=dict)
    doc: dict[tuple[str, str, int], dict[str, Any]] = field(default_factory=dict)
    step: int = -1
    armed: bool = False
    # per sidecar: every scrape seen in its /signals, body received (rounded) -> (started, received)
    scrapes: dict[str, dict[float, tuple[float, float]]] = field(default_factory=dict)
    # the 20 Hz poller's own /metrics latency while armed: (request sent, seconds)
    engine_latency: list[tuple[float, float]] = field(default_factory=list)


def poll_engine(url: str, series: dict[str, tuple[str, float]], state: Crossings, stop: threading.Event) -> None:
    while not stop.is_set():
        t0 = time.time()
        try:
            body = procs.fetch(url, 2.0).decode()
            latency = time.time() - t0
            scrape = parse_exposition(f"# scrape_time {t0}\n" + body)
        except (OSError, ValueError):
            scrape = None
        if scrape is not None and state.armed:
            state.engine_latency.append((t0, latency))
            for key, (name, threshold) in series.items():
                v = scrape.value(name)
                k = ("engine", key, state.step)
                if v is not None and v >= threshold and k not in state.first:
                    state.first[k] = t0
        stop.wait(max(0.0, POLL_S - (time.time() - t0)))


def signal_value(doc: dict[str, Any], name: str) -> float | None:
    values = [s["value"] for s in doc.get("series", []) if s["name"] == name]
    return max(values) if values else None


def poll_sidecar(
    url: str, source: str, series: dict[str, tuple[str, float]], state: Crossings, stop: threading.Event
) -> None:
    while not stop.is_set():
        t0 = time.time()
        try:
            doc = json.loads(procs.fetch(url, 2.0))
        except (OSError, ValueError):
            doc = None
        seen = time.time()
        if doc is not None:
            timing = scrape_timing(doc)
            if timing is not None:
                state.scrapes.setdefault(source, {})[round(timing[1], 3)] = timing
        if doc is not None and state.armed:
            for key, (name, threshold) in series.items():
                v = signal_value(doc, name)
                k = (source, key, state.step)
                if v is not None and v >= threshold and k not in state.first:
                    # the response arrived by `seen`; t0 would credit the sidecar with our own request time
                    state.first[k] = seen
                    state.doc[k] = doc
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


def scrape_timing(doc: dict[str, Any]) -> tuple[float, float] | None:
    """(started, received) of the scrape a /signals document was computed from."""
    duration = signal_value(doc, "phaselens_scrape_duration_seconds")
    age = signal_value(doc, "phaselens_signal_age_seconds")
    tick_t = doc.get("ts")
    if duration is None or age is None or tick_t is None:
        return None
    received = tick_t - age
    return received - duration, received


def split_lag(
    engine_t: float, seen_t: float, doc: dict[str, Any], scrapes: dict[float, tuple[float, float]] | None = None
) -> dict[str, float] | None:
    """The parts of one step's lag (engine + wait + tick + render = total; inflight + cadence = wait),
    from the /signals document and the sidecar's scrape timeline."""
    timing = scrape_timing(doc)
    if timing is None:
        return None
    started, received = timing
    tick_t = doc["ts"]
    wait = started - engine_t
    # the previous scrape: the latest one that started before this one; if it was still out when the
    # engine changed, the wait until its answer came back (without the crossing) is the engine's time
    previous = max((t for t in (scrapes or {}).values() if t[0] < started - 1e-3), default=None)
    inflight = 0.0
    if previous is not None and wait > 0:
        inflight = min(wait, max(0.0, previous[1] - engine_t))
    engine = received - started
    # not parts: the previous scrape's start and answer, relative to the change (for steps.json)
    context = (
        {"previous_started": previous[0] - engine_t, "previous_received": previous[1] - engine_t} if previous else {}
    )
    return {
        **context,
        "engine": engine,
        "wait": wait,
        "inflight": inflight,
        "cadence": wait - inflight,
        "tick": tick_t - received,
        "render": seen_t - tick_t,
        "total": seen_t - engine_t,
        "ours": seen_t - engine_t - engine - inflight,
    }


async def burst(
    url: str, seconds: float, clients: int, output_tokens: tuple[int, int], seed: int, out: Path, token_ids: bool
) -> None:
    phase = loadgen.Phase("burst", seconds, clients, (150, 250), output_tokens)
    await loadgen.run_phases(url, [phase], out / "ground_truth.jsonl", seed=seed, token_ids=token_ids)


def run_burst(
    url: str, seconds: float, clients: int, output_tokens: tuple[int, int], seed: int, out: Path, token_ids: bool
) -> None:
    """`burst` in a child process (spawned: the parent runs the poller threads)."""
    sys.path.insert(0, str(ROOT / "e2e"))
    asyncio.run(burst(url, seconds, clients, output_tokens, seed, out, token_ids))


@dataclass
class Engine:
    base: str  # OpenAI-compatible API
    metrics_url: str  # the sidecar's target
    target: str  # ROLE=URL for `phaselens run --target`
    series: dict[str, tuple[str, float]]  # key -> (engine metric, threshold)
    sidecar_extra: list[str]
    procs: list[procs.Proc]
    token_ids: bool


def start_dynamo(out: Path, port_base: int) -> Engine | None:
    import dynamo

    if not dynamo.venv_python().exists():
        print("bench_freshness: skipped (no e2e/.venv-dynamo: run e2e/install_dynamo.sh first)")
        return None
    if not (dynamo.DEFAULT_MODEL / "tokenizer.json").exists():
        dynamo.make_model()
    dep = dynamo.Deployment(out, http_port=port_base)
    # Few batch seats: a burst of clients queues in front of the worker (the frontend counts a
    # request as queued until its first token).
    spec = dynamo.MockerSpec("worker", port_base + 1, num_gpu_blocks=256, max_num_seqs=4, max_num_batched_tokens=1024)
    dep.start_frontend()
    dep.start_worker(spec)
    try:
        dep.wait_ready(timeout_s=180)
    except BaseException:
        dep.stop()
        raise
    return Engine(
        dep.base_url,
        dep.frontend_metrics_url,
        f"aggregated={dep.frontend_metrics_url}",
        {"queue": ("dynamo_frontend_queued_requests", QUEUE_THRESHOLD)},
        ["--engine", "dynamo"],
        dep.started,
        token_ids=False,
    )


def start_vllm(out: Path, port_base: int, cpus: str | None = None) -> Engine | None:
    import scenario

    engine_py = ROOT / "e2e/.venv-engine/bin/python"
    model = ROOT / "e2e/out/model"
    if not engine_py.exists() or not (model / "config.json").exists():
        print("bench_freshness: skipped (no engine venv/model: run `make e2e` first)")
        return None
    server = dataclasses.replace(scenario.servers_for("aggregated", out)[0], port=port_base)
    if cpus is not None:
        server = dataclasses.replace(server, cpus=cpus, env={**server.env, "VLLM_CPU_OMP_THREADS_BIND": cpus})
    eng = procs.start(
        "engine", scenario.engine_argv(str(engine_py), model, server, 48, 32), out / "server.log", env=server.env
    )
    try:
        procs.wait_http(f"{server.base}/health", 400, [eng])
        if cpus is not None:  # every thread, once they all exist (procs.pin_group: taskset is not enough)
            print(f"engine: {procs.pin_group(eng, {int(c) for c in cpus.split(',')})} threads on CPU {cpus}")
        asyncio.run(scenario.warm([server], pd=False))
    except BaseException:
        procs.stop(eng)
        raise
    return Engine(
        server.base,
        f"{server.base}/metrics",
        f"aggregated={server.base}/metrics",
        {"queue": ("vllm:num_requests_waiting", QUEUE_THRESHOLD), "kv": ("vllm:kv_cache_usage_perc", KV_THRESHOLD)},
        [],
        [eng],
        token_ids=True,
    )


SIDECAR_SERIES = {
    "queue": ("phaselens_prefill_queue_depth", QUEUE_THRESHOLD),
    "kv": ("phaselens_decode_kv_utilization_ratio", KV_THRESHOLD),
}


def part_quantiles(state: Crossings, source: str, key: str, part: str, steps: int) -> tuple[float, float]:
    xs = []
    for s in range(steps):
        ek, sk = ("engine", key, s), (source, key, s)
        if ek in state.first and sk in state.first:
            parts = split_lag(state.first[ek], state.first[sk], state.doc[sk], state.scrapes.get(source))
            if parts is not None:
                xs.append(parts[part])
    return quantile(xs, 0.5), quantile(xs, 0.95)


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def report(
    state: Crossings,
    sources: list[str],
    keys: list[str],
    steps: int,
    interval: float,
    per_step: dict[str, list[dict[str, float]]],
) -> bool:
    verdict = True
    target = interval + 0.1
    for source in sources:
        print(f"\n[{source}] lag and its parts over {steps} load steps, seconds (target p95 <= {target:.2f} s)")
        print(f"{'series':<7}{'part':<8}{'steps':>6}{'p50':>8}{'p95':>8}{'max':>8}")
        for key in keys:
            rows: list[dict[str, float]] = []
            for s in range(steps):
                ek, sk = ("engine", key, s), (source, key, s)
                if ek in state.first and sk in state.first:
                    parts = split_lag(state.first[ek], state.first[sk], state.doc[sk], state.scrapes.get(source))
                    if parts is not None:
                        rows.append(parts)
            for part in ("total", *PARTS, "ours"):
                xs = [r[part] for r in rows]
                print(
                    f"{key:<7}{part:<8}{len(xs):>6}{quantile(xs, 0.5):>8.3f}{quantile(xs, 0.95):>8.3f}"
                    f"{max(xs, default=math.nan):>8.3f}"
                )
            p95 = quantile([r["total"] for r in rows], 0.95)
            ok = bool(rows) and p95 <= target
            verdict &= ok
            ours = quantile([r["ours"] for r in rows], 0.95)
            print(
                f"{key:<7}p95 {p95:.3f} s: {'ok' if ok else 'MISSED'}; without the engine's answer time "
                f"(engine + inflight) p95 {ours:.3f} s: {'ok' if rows and ours <= target else 'MISSED'}"
            )
            per_step[f"{source}/{key}"] = rows
    latencies = [seconds for _, seconds in state.engine_latency]
    print(
        f"\nengine /metrics latency seen by the 20 Hz poller during the bursts ({len(latencies)} polls): "
        f"p50 {quantile(latencies, 0.5):.3f} s, p95 {quantile(latencies, 0.95):.3f} s, "
        f"max {max(latencies, default=math.nan):.3f} s"
    )
    return verdict


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=["dynamo", "vllm"], default="dynamo")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--interval", type=float, default=0.25, help="the sidecar's scrape interval")
    ap.add_argument("--idle-seconds", type=float, default=3.0, help="between steps: the queue drains")
    ap.add_argument("--burst-seconds", type=float, default=3.0)
    ap.add_argument("--clients", type=int, default=24)
    ap.add_argument("--output-tokens", help="MIN-MAX per request (default: dynamo 20-40, vllm 100-200)")
    ap.add_argument("--baseline", help="a command that runs another phaselens, run beside this one")
    ap.add_argument("--port-base", type=int, default=PORT_BASE, help="engine port; sidecars at +10 and +11")
    ap.add_argument("--pin", action="store_true",
                    help="vllm only: the engine (and the load client) on CPU 0, the sidecars and the pollers on "
                         "CPU 1, as a CPU request of its own would give the sidecar in a pod")
    args = ap.parse_args()
    default_tokens = "20-40" if args.engine == "dynamo" else "100-200"
    lo, hi = (int(x) for x in (args.output_tokens or default_tokens).split("-"))
    tokens = (lo, hi)
    # SIGTERM unwinds through the `finally`s, so the engine and the sidecars are stopped too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    out = ROOT / "e2e/out/freshness"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ground_truth.jsonl").unlink(missing_ok=True)
    t0 = time.monotonic()
    if args.pin and args.engine != "vllm":
        sys.exit("bench_freshness: --pin is for --engine vllm")
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        sys.exit("bench_freshness: --pin needs two CPUs")
    engine = (start_dynamo(out, args.port_base) if args.engine == "dynamo"
              else start_vllm(out, args.port_base, "0" if args.pin else None))
    if engine is None:
        return 0
    print(f"{args.engine} ready in {time.monotonic() - t0:.0f} s")
    started: list[procs.Proc] = []
    sidecars = {"sidecar": [sys.executable, "-m", "phaselens"]}
    if args.baseline:
        sidecars["baseline"] = shlex.split(args.baseline)
    ports = {name: args.port_base + 10 + i for i, name in enumerate(sidecars)}
    keys = list(engine.series)
    try:
        for name, cmd in sidecars.items():
            argv = [*cmd, "run", "--target", engine.target, "--listen", f"127.0.0.1:{ports[name]}",
                    "--interval", str(args.interval), *engine.sidecar_extra]  # fmt: skip
            if args.pin:
                argv = ["taskset", "-c", "1", *argv]
            started.append(procs.start(name, argv, out / f"{name}.log", stdout_path=out / f"{name}.stdout.jsonl"))
        for name in sidecars:
            procs.wait_http(f"http://127.0.0.1:{ports[name]}/metrics", 60, started)

        # the 20 Hz pollers stamp the crossings: they must not wait behind the engine for a core
        niceness = procs.raise_own_priority()  # the load client's process inherits it
        if args.pin:
            os.sched_setaffinity(0, {1})  # the pollers' threads, started below, inherit it
        spawn = multiprocessing.get_context("spawn")
        print(f"pollers and load client at niceness {niceness}")
        state = Crossings()
        stop = threading.Event()
        threads = [threading.Thread(target=poll_engine, args=(engine.metrics_url, engine.series, state, stop))]
        for name in sidecars:
            wanted = {k: SIDECAR_SERIES[k] for k in keys}
            url = f"http://127.0.0.1:{ports[name]}/signals"
            threads.append(threading.Thread(target=poll_sidecar, args=(url, name, wanted, state, stop)))
        for t in threads:
            t.start()
        side_cpu0 = {n: proc_cpu_seconds(p.popen.pid) for n, p in zip(sidecars, started, strict=True)}
        wall0 = time.monotonic()
        eng_pids = [pid for p in engine.procs for pid in group_pids(p.popen.pid)]
        eng_cpu0 = sum(proc_cpu_seconds(p) for p in eng_pids)
        side_rss = dict.fromkeys(sidecars, 0)
        eng_rss = 0
        for step in range(args.steps):
            time.sleep(args.idle_seconds)
            state.step, state.armed = step, True
            # The load client in its own process: in this one it held the GIL against the pollers,
            # which then stamped both the engine's change and the sidecar's answer late.
            client = spawn.Process(
                target=run_burst,
                args=(engine.base, args.burst_seconds, args.clients, tokens, step, out, engine.token_ids),
            )
            client.start()
            if args.pin and client.pid is not None:
                os.sched_setaffinity(client.pid, {0})  # beside the engine it loads, off the sidecar's CPU
            client.join()
            state.armed = False
            for n, p in zip(sidecars, started, strict=True):
                side_rss[n] = max(side_rss[n], proc_rss_bytes(p.popen.pid))
            eng_rss = max(eng_rss, sum(proc_rss_bytes(p) for p in eng_pids if Path(f"/proc/{p}").exists()))
            print(f"step {step + 1}/{args.steps} done", flush=True)
        wall = time.monotonic() - wall0
        side_cpu = {n: proc_cpu_seconds(p.popen.pid) - side_cpu0[n] for n, p in zip(sidecars, started, strict=True)}
        eng_cpu = sum(proc_cpu_seconds(p) for p in eng_pids if Path(f"/proc/{p}").exists()) - eng_cpu0
        stop.set()
        for t in threads:
            t.join()
    finally:
        for p in reversed(started):
            procs.stop(p)
        for p in reversed(engine.procs):
            procs.stop(p)

    print(f"\nfreshness, {args.engine}, sidecar interval {args.interval} s, polls at 20 Hz")
    per_step: dict[str, list[dict[str, float]]] = {}
    verdict = report(state, list(sidecars), keys, args.steps, args.interval, per_step)
    (out / "steps.json").write_text(json.dumps(per_step, indent=1))
    print(f"per-step parts: {out / 'steps.json'}")
    if "baseline" in sidecars:
        print("\nratio baseline/sidecar (above 1: the sidecar under test is fresher)")
        for key in keys:
            for part in ("total", *PARTS, "ours"):
                b, a = (
                    part_quantiles(state, "baseline", key, part, args.steps),
                    part_quantiles(state, "sidecar", key, part, args.steps),
                )
                print(f"{key:<7}{part:<8} p50 {ratio(b[0], a[0]):6.2f}x  p95 {ratio(b[1], a[1]):6.2f}x")
    for name in sidecars:
        print(
            f"\n{name}: CPU {side_cpu[name] / wall:.1%} of one core over {wall:.0f} s (engine {eng_cpu / wall:.1%}); "
            f"peak RSS {side_rss[name] / 2**20:.0f} MiB, engine {eng_rss / 2**20:.0f} MiB"
        )
    print(f"freshness target {'met' if verdict else 'missed'} (sidecar under test)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
