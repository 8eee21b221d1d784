"""Benchmark: many models (LoRA adapters, engines) behind one target (issue 17, item 1).

Run: python benchmarks/bench_many_models.py [--models 1000 10000] [--baseline-ref main]

Payload: the real vLLM 0.32 capture (sidecar/data, model "tiny", every family) plus N more
models. Each extra model repeats the capture's own scalar families (`num_requests_running`,
`num_requests_waiting`, `kv_cache_usage_perc`, `prompt_tokens_total`, `generation_tokens_total`,
`request_success_total` by finished reason) with its `model_name`, its counters scaled by a
Zipf weight 1/(i+1) so that traffic differs between models (gauges as captured). About 9 lines
(1 KB) per model: 10,000 models make a 9 MB body.

Two measurements, each for this checkout and, with `--baseline-ref`, for that git ref (checked
out into a temporary worktree and run in a child process, so both figures come from the same
run on the same machine):
1. tick time: `Pipeline.tick()` over a window warmed with `--points` scrapes at 1 s, one new
   scrape per tick; `parse_payload` (parse + adapter) of the same body is timed alone, and
   `analysis` is the tick minus that;
2. live: `phaselens run` as a child process scraping a local HTTP server that serves the 10,000
   model body; this process polls `/healthz` every 50 ms for `--live-seconds` and records each
   answer's latency and status (0: no answer within the 2 s client timeout; 503: the pipeline
   heartbeat is older than 5 s, i.e. no tick finished lately), then sends SIGTERM and times the
   exit (`--shutdown-timeout` is 5 s).
A baseline that takes longer than `--baseline-timeout` per measurement is reported as such.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CAPTURE = ROOT / "sidecar" / "data" / "vllm-0.32.0-cpu-aggregated.tar.gz"
SHAPES = {
    # what issue 17 measured: one series per model (about 64 bytes a model)
    "one": ("vllm:num_requests_running{",),
    # every scalar family the analyzers read per model: 9 series a model
    "scalars": (
        "vllm:num_requests_running{",
    "vllm:num_requests_waiting{",
    "vllm:kv_cache_usage_perc{",
    "vllm:prompt_tokens_total{",
    "vllm:generation_tokens_total{",
        "vllm:request_success_total{",
    ),
}
COUNTERS = ("_total{",)
GOAL_TICK_SECONDS_AT_1000 = 0.020


def payload(body: bytes, models: int, shape: str = "scalars") -> bytes:
    """The real body plus `models` more models, each family's copies inside its own block."""
    tiny = 'model_name="tiny"'
    names = [f'model_name="adapter-{index:05d}"' for index in range(models)]
    out: list[str] = []
    for line in body.decode().splitlines():
        out.append(line)
        if not line.startswith(SHAPES[shape]):
            continue
        head, value = line.rsplit(" ", 1)
        counter = any(c in head for c in COUNTERS)
        for index, name in enumerate(names):
            number = float(value) / (index + 1) if counter else float(value)
            out.append(f"{head.replace(tiny, name)} {number!r}")
    return ("\n".join(out) + "\n").encode()


def bodies() -> list[bytes]:
    from phaselens.sources.recording import load_sources

    (source,) = load_sources(f"aggregated={CAPTURE}")
    return [scrape.load() for scrape in source.scrapes]


# --------------------------------------------------------------------------- tick time (child-safe)


def settings_for(target: Any) -> Any:
    from phaselens.settings import Settings

    return Settings(targets=(target,))  # defaults: --max-models-per-target 20 where it exists


def tick_times(models: int, points: int, repeat: int, shape: str) -> dict[str, Any]:
    from phaselens.assembly import build_pipeline
    from phaselens.clock import ManualClock
    from phaselens.model import Target
    from phaselens.pipeline import parse_payload
    from phaselens.sources.scraper import ScrapeResult

    real = bodies()
    scrapes = [payload(real[index % len(real)], models, shape) for index in range(points + repeat)]
    target = Target("aggregated", "aggregated", "recording:aggregated")
    clock = ManualClock(1_800_000_000.0)
    settings = settings_for(target)
    pipeline = build_pipeline(settings, clock, targets=settings.targets, replay=True)  # what `run` builds
    ticks: list[float] = []
    cpu: list[float] = []  # the tick's own CPU time: less sensitive than wall time to a busy machine
    parses: list[float] = []
    signals = 0
    for index, body in enumerate(scrapes):
        clock.advance(1.0)
        if index >= points:
            start = time.perf_counter()
            parse_payload(body, None, clock.wall(), "auto")
            parses.append(time.perf_counter() - start)
        pipeline.submit(ScrapeResult("aggregated", clock.wall(), 0.01, body, None))
        start, cpu_start = time.perf_counter(), time.thread_time()
        result = pipeline.tick()
        if index >= points:
            ticks.append(time.perf_counter() - start)
            cpu.append(time.thread_time() - cpu_start)
            signals = len(result.signals)
    tick = statistics.median(ticks)
    parse = statistics.median(parses)
    return {"models": models, "shape": shape, "body_bytes": len(scrapes[-1]), "tick_s": tick,
            "tick_cpu_s": statistics.median(cpu), "parse_s": parse, "analysis_s": max(0.0, tick - parse),
            "signals": signals, "load_average": os.getloadavg()[0]}


# --------------------------------------------------------------------------- live sidecar


class _Engine(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def live(pythonpath: str, models: int, seconds: float, shape: str) -> dict[str, Any]:
    _Engine.body = payload(bodies()[-1], models, shape)
    engine = ThreadingHTTPServer(("127.0.0.1", 0), _Engine)
    threading.Thread(target=engine.serve_forever, daemon=True).start()
    port = free_port()
    env = {**os.environ, "PYTHONPATH": pythonpath, "PHASELENS_GPU_TELEMETRY": "false"}
    command = [sys.executable, "-m", "phaselens", "run", "--target", f"http://127.0.0.1:{engine.server_port}/metrics",
               "--listen", f"127.0.0.1:{port}", "--interval", "1", "--scrape-timeout", "5",
               "--stale-after", "30", "--shutdown-timeout", "5", "--log-level", "warning"]
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    ticks = 0
    try:
        deadline = time.monotonic() + 30
        while not _listening(port):  # a blocked event loop still accepts connections: polls then time out
            if time.monotonic() > deadline or child.poll() is not None:
                raise RuntimeError("sidecar did not start")
            time.sleep(0.1)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            start = time.perf_counter()
            status, _ = _get(port, "/healthz", 2.0)
            latencies.append(time.perf_counter() - start)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            time.sleep(0.05)
        metrics = _get(port, "/metrics", 10.0)[1].decode(errors="replace")
        ticks = len(re.findall(r"^phaselens_tick_duration_seconds ", metrics, re.M))
        start = time.perf_counter()
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=60)
            stop = time.perf_counter() - start
        except subprocess.TimeoutExpired:
            stop = float("inf")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        engine.shutdown()
    return {"models": models, "shape": shape, "body_bytes": len(_Engine.body), "polls": len(latencies),
            "statuses": statuses, "healthz_p50_s": statistics.median(latencies),
            "healthz_max_s": max(latencies), "published_a_tick": bool(ticks), "sigterm_exit_s": stop,
            "model_names_exported": len(set(re.findall(r'model_name="([^"]*)"', metrics)))}


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _get(port: int, path: str, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (OSError, TimeoutError):
        return 0, b""  # no answer within the timeout


# --------------------------------------------------------------------------- baseline tree


def baseline_tree(ref: str, into: Path) -> str:
    """`ref` checked out as a worktree, with a package tree in the layout pyproject maps."""
    checkout = into / "checkout"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(checkout), ref],
                   check=True, capture_output=True)
    # pyproject maps `sidecar/` to `phaselens` and the subpackages beside it under it: a symlink tree
    tree = into / "tree"
    (tree / "phaselens").mkdir(parents=True)
    for entry in (checkout / "sidecar").iterdir():
        (tree / "phaselens" / entry.name).symlink_to(entry)
    for sub in ("parsers", "analyzers", "exporters"):
        (tree / "phaselens" / sub).symlink_to(checkout / sub)
    return str(tree)


def child(pythonpath: str, mode: str, models: int, shape: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", mode, "--models", str(models), "--shapes", shape,
               "--points", str(args.points), "--repeat", str(args.repeat), "--live-seconds", str(args.live_seconds)]
    env = {**os.environ, "PYTHONPATH": pythonpath}  # "" for this checkout: its editable install
    try:
        done = subprocess.run(command, env=env, capture_output=True, timeout=args.baseline_timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"models": models, "shape": shape, "timeout_s": args.baseline_timeout}
    except subprocess.CalledProcessError as exc:
        return {"models": models, "shape": shape, "error": exc.stderr.decode()[-500:]}
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--models", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=["one", "scalars"])
    parser.add_argument("--points", type=int, default=10, help="scrapes in the window before timing")
    parser.add_argument("--repeat", type=int, default=9, help="timed ticks (median)")
    parser.add_argument("--live-seconds", type=float, default=15.0)
    parser.add_argument("--live-models", type=int, default=10000, help="0: skip the live measurement")
    parser.add_argument("--baseline-ref", help="git ref to time the same way (e.g. main)")
    parser.add_argument("--baseline-timeout", type=float, default=300.0, help="per baseline measurement")
    parser.add_argument("--child", choices=("tick", "live"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # `models_capped` and the like: not benchmark output
    if args.child == "tick":
        print(json.dumps(tick_times(args.models[0], args.points, args.repeat, args.shapes[0])))
        return 0
    if args.child == "live":
        print(json.dumps(live(os.environ.get("PYTHONPATH", ""), args.models[0], args.live_seconds, args.shapes[0])))
        return 0

    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="phaselens-bench-") as tmp:
        trees = {"this": ""}
        if args.baseline_ref:
            trees["baseline"] = baseline_tree(args.baseline_ref, Path(tmp))
        try:
            for label, tree in trees.items():
                for shape in args.shapes:
                    for models in args.models:
                        key = f"{label}/{shape}/{models}"
                        runs[key] = child(tree, "tick", models, shape, args)
                        print(key, json.dumps(runs[key]), flush=True)
                for shape in args.shapes if args.live_models else ():
                    key = f"{label}/live/{shape}"
                    runs[key] = child(tree, "live", args.live_models, shape, args)
                    print(key, json.dumps(runs[key]), flush=True)
        finally:
            if args.baseline_ref:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(Path(tmp) / "checkout")],
                               capture_output=True)
    _summary(runs, args)
    return 0


def _ms(value: float | None) -> str:
    return f"{value * 1000:.1f} ms" if value is not None else "-"


def _summary(runs: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    print("\nmedian wall time of a whole tick (its CPU time in brackets); parse+adapter timed alone; rest = the "
          "difference (window, analyzers, queue stage)")
    print("shape    models  body      tick (this)            parse+adapter  rest       | tick (baseline)  ratio")
    for shape in args.shapes:
        for models in args.models:
            this = runs[f"this/{shape}/{models}"]
            base = runs.get(f"baseline/{shape}/{models}", {})
            if "tick_s" not in this:
                print(f"{shape:8} {models:>6}  this run failed: {this}")
                continue
            base_tick = base.get("tick_s")
            ratio = f"{base_tick / this['tick_s']:.1f}x" if base_tick else (
                f"baseline > {base['timeout_s']:.0f} s for the run" if "timeout_s" in base else "-")
            cpu = f"[{_ms(this['tick_cpu_s'])}]"
            print(f"{shape:8} {models:>6}  {this['body_bytes'] / 1e6:5.2f} MB  {_ms(this['tick_s']):>10} {cpu:>11}  "
                  f"{_ms(this['parse_s']):>13}  {_ms(this['analysis_s']):>9} | {_ms(base_tick):>15}  {ratio}")
    goal = runs.get("this/one/1000")
    if goal and "tick_s" in goal:
        def verdict(seconds: float) -> str:
            return "met" if seconds < GOAL_TICK_SECONDS_AT_1000 else "NOT met"

        print(f"goal: a whole tick < {GOAL_TICK_SECONDS_AT_1000 * 1000:.0f} ms at 1,000 models (shape 'one', as "
              f"issue 17 measured it): CPU time {_ms(goal['tick_cpu_s'])} {verdict(goal['tick_cpu_s'])}, wall time "
              f"{_ms(goal['tick_s'])} {verdict(goal['tick_s'])} (load average {goal['load_average']:.1f} on "
              f"{os.cpu_count()} CPUs)")
    print("\nlive `phaselens run`: /healthz polled every 50 ms (status: count), then SIGTERM")
    for key, result in runs.items():
        if "/live/" in key:
            print(f"{key}: {json.dumps(result)}")


if __name__ == "__main__":
    raise SystemExit(main())
