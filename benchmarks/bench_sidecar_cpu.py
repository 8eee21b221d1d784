"""The live sidecar's CPU at `--interval 0.25`, this checkout against a baseline git ref, in one run.

The engine is a real HTTP server answering every scrape with the next real vLLM 0.32 capture of
tests/fixtures/vllm-0.32.0-cpu-aggregated (the scrapes after the warm-up, replayed in laps with
the cumulative values carried on, so they never reset: the same series, values that change as
they did live). `phaselens run --interval 0.25` scrapes it; after a
warm-up, its CPU time (user + system, all threads, /proc) over --seconds is its share of one core.
The variants alternate (A B A B ...) so load from other work on the machine hits both alike.
The engine keeps connections alive as vLLM and Dynamo do (`--close-connections`: one per scrape).
With --profile (py-spy installed), one more run of each is sampled and the top functions printed.

Run: python benchmarks/bench_sidecar_cpu.py [--baseline-ref REF] [--seconds 60] [--rounds 2]
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_many_models import baseline_tree, free_port  # noqa: E402

CAPTURE = ROOT / "tests" / "fixtures" / "vllm-0.32.0-cpu-aggregated" / "scrapes.tar.gz"
CLK_TCK = os.sysconf("SC_CLK_TCK")
GOAL = 0.02


_CUMULATIVE = ("_total", "_bucket", "_sum", "_count")


def bodies(count: int) -> list[bytes]:
    """`count` scrapes: the real captures after the warm-up in order, then again and again with every
    cumulative value (counters, histogram buckets, sums, counts) raised by what the whole capture
    added, so the stream never shows a counter reset (a reset would make the window walk every step)."""
    with tarfile.open(CAPTURE) as archive:
        members = sorted((m for m in archive.getmembers() if m.name.endswith(".prom")), key=lambda m: m.name)
        texts = []
        for member in members[40:]:  # after the first requests: the series set no longer grows
            handle = archive.extractfile(member)
            assert handle is not None
            texts.append(handle.read().decode())
    split = [[line.rpartition(" ") for line in text.splitlines()] for text in texts]
    first = {head: float(value) for head, _, value in split[0] if head and not head.startswith("#")}
    gain = {
        head: float(value) - first[head]
        for head, _, value in split[-1]
        if head in first and head.partition("{")[0].endswith(_CUMULATIVE)
    }
    out = []
    for index in range(count):
        lap, at = divmod(index, len(split))
        lines = [
            f"{head} {float(value) + lap * gain[head]!r}" if lap and head in gain else f"{head}{space}{value}"
            for head, space, value in split[at]
        ]
        out.append(("\n".join(lines) + "\n").encode())
    return out


class Engine:
    """Serves the next scrape of `bodies` per request (the last one once past the end); `restart`
    goes back to the first, for the next sidecar. HTTP/1.1 with keep-alive, as the engines answer
    (vLLM's uvicorn, Dynamo's frontend); `close_connections`: HTTP/1.0, a new connection per scrape
    (this benchmark's engine before; it cost the sidecar a TCP connect per scrape)."""

    def __init__(self, count: int, close_connections: bool = False) -> None:
        scrapes = bodies(count)
        count_ = self.served = [0]

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0" if close_connections else "HTTP/1.1"

            def do_GET(self) -> None:
                body = scrapes[min(count_[0], len(scrapes) - 1)]
                count_[0] += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def restart(self) -> None:
        self.served[0] = 0

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (all threads)


def start(pythonpath: str, engine_port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": pythonpath, "PHASELENS_GPU_TELEMETRY": "false"}
    command = [
        sys.executable, "-m", "phaselens", "run", "--target", f"http://127.0.0.1:{engine_port}/metrics",
        "--listen", f"127.0.0.1:{free_port()}", "--interval", "0.25", "--log-level", "warning",
    ]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(child: subprocess.Popen[bytes]) -> None:
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout=15)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def measure(pythonpath: str, engine: Engine, warmup: float, seconds: float) -> tuple[float, float]:
    """(share of a core, CPU seconds per scrape served): on a loaded machine a sidecar skips the
    beats it misses, so fewer scrapes (and ticks) also lower its share; the cost per scrape does not."""
    engine.restart()
    child = start(pythonpath, engine.port)
    try:
        time.sleep(warmup)
        if child.poll() is not None:
            raise RuntimeError("the sidecar exited during the warm-up")
        before, started, served = cpu_seconds(child.pid), time.monotonic(), engine.served[0]
        time.sleep(seconds)
        used = cpu_seconds(child.pid) - before
        return used / (time.monotonic() - started), used / max(1, engine.served[0] - served)
    finally:
        stop(child)


def profile(pythonpath: str, engine: Engine, warmup: float, seconds: float, top: int) -> list[str]:
    """py-spy samples of a live sidecar: the functions most often on CPU (self time), top first."""
    engine.restart()
    child = start(pythonpath, engine.port)
    try:
        time.sleep(warmup)
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "raw.txt"
            subprocess.run(
                ["py-spy", "record", "-p", str(child.pid), "-d", str(int(seconds)), "-r", "200", "-f", "raw",
                 "-o", str(out), "--nonblocking"],
                check=True, capture_output=True,
            )  # fmt: skip
            own: collections.Counter[str] = collections.Counter()
            total = 0
            for line in out.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                frames = stack.split(";")
                n = int(count)
                total += n
                own[frames[-1]] += n
        return [f"{100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)] if total else []
    finally:
        stop(child)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--baseline-ref", default="main", help="git ref measured the same way")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="also sample both with py-spy")
    parser.add_argument(
        "--close-connections",
        action="store_true",
        help="the engine answers HTTP/1.0 and closes each connection (a TCP connect per scrape)",
    )
    args = parser.parse_args()
    # 4 scrapes a second at most
    engine = Engine(int((args.warmup + args.seconds) * 4 * 1.2), close_connections=args.close_connections)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            variants = {f"before ({args.baseline_ref})": baseline_tree(args.baseline_ref, Path(tmp)), "after": ""}
            shares: dict[str, list[float]] = {name: [] for name in variants}
            per_scrape: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(args.rounds):
                for name, path in variants.items():
                    share, cost = measure(path, engine, args.warmup, args.seconds)
                    shares[name].append(share)
                    per_scrape[name].append(cost)
                    print(f"  {name}: {100 * share:.2f}% of a core, {1000 * cost:.2f} ms per scrape", flush=True)
            http = "HTTP/1.0, a connection per scrape" if args.close_connections else "HTTP/1.1 keep-alive"
            print(
                f"\nsidecar CPU at --interval 0.25 s, {args.rounds} x {args.seconds:.0f} s each, engine {http} "
                "(median, min-max):"
            )
            for name, values in shares.items():
                costs = per_scrape[name]
                print(f"  {name:22s} {100 * statistics.median(values):6.2f}% of a core "
                      f"({100 * min(values):.2f}-{100 * max(values):.2f}), "
                      f"{1000 * statistics.median(costs):.2f} ms per scrape "
                      f"({1000 * min(costs):.2f}-{1000 * max(costs):.2f})")  # fmt: skip
            (before, after) = (statistics.median(v) for v in shares.values())
            (cost_before, cost_after) = (statistics.median(v) for v in per_scrape.values())
            print(f"  after / before: {before / after:.1f}x less CPU, {cost_before / cost_after:.1f}x less per scrape; "
                  f"goal <= {100 * GOAL:.0f}% of a core: {'met' if after <= GOAL else 'NOT met'}")  # fmt: skip
            if args.profile and shutil.which("py-spy"):
                for name, path in variants.items():
                    print(f"\npy-spy, {name}: self time, top functions")
                    for row in profile(path, engine, args.warmup, args.seconds, 12):
                        print("  " + row)
        finally:
            engine.close()
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(Path(tmp) / "checkout")],
                           capture_output=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
