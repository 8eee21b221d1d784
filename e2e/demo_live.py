"""A live phaselens demo for a person: real vLLM, the sidecar, cycling load, until Ctrl-C.

The sidecar's recommendation lines print on this terminal (and go to e2e/out/live/sidecar.log);
its /metrics is at http://127.0.0.1:9469/metrics (and /signals). The load cycles through
steady, shared-prefix and overload phases so that recommendations come and go.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
import procs
import scenario

HERE = Path(__file__).resolve().parent
CYCLE = (
    "steady:30:2:20-60:16-48",
    "prefix:30:4:10-40:16-32:prefix",
    "overload:40:32:120-260:150-300",
    "quiet:20:0:0-0:0-0",
)


def follow(path: Path, stop: threading.Event) -> None:
    """Print the sidecar's recommendation lines as they appear."""
    while not path.exists() and not stop.is_set():
        time.sleep(0.2)
    with path.open() as f:
        while not stop.is_set():
            line = f.readline()
            if not line:
                time.sleep(0.2)
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if obj.get("event") == "recommendation":
                print(
                    f"[phaselens] {obj.get('severity', '')} {obj.get('code')}: {obj.get('message')}",
                    flush=True,
                )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--listen", default="127.0.0.1:9469")
    ap.add_argument("--phaselens", default=f"{sys.executable} -m phaselens")
    args = ap.parse_args()
    out = HERE / "out/live"
    out.mkdir(parents=True, exist_ok=True)
    server = scenario.servers_for("aggregated", out)[0]
    started: list[procs.Proc] = []
    stop = threading.Event()
    try:
        print("[demo] starting vLLM (60-150 s: torch.compile warm-up) ...", flush=True)
        started.append(
            procs.start(
                "engine",
                scenario.engine_argv(str(HERE / ".venv-engine/bin/python"), HERE / "out/model", server, 48, 32),
                out / "server.log",
                env=server.env,
            )
        )
        procs.wait_http(f"{server.base}/health", 400, started)
        asyncio.run(scenario.warm([server], pd=False))
        host, _, port = args.listen.rpartition(":")
        started.append(
            procs.start(
                "sidecar",
                [
                    *args.phaselens.split(),
                    "run",
                    "--target",
                    f"aggregated={server.base}/metrics",
                    "--listen",
                    args.listen,
                    "--interval",
                    "1",
                    "--window",
                    "20",
                    "--slo-ttft",
                    str(scenario.SLO_TTFT_S),
                    "--slo-itl",
                    str(scenario.SLO_ITL_S),
                    "--recommendation-interval",
                    "30",
                ],
                out / "sidecar.log",
                stdout_path=out / "sidecar.stdout.jsonl",
            )
        )
        procs.wait_http(f"http://{host}:{port}/metrics", 60, started)
        threading.Thread(target=follow, args=(out / "sidecar.stdout.jsonl", stop), daemon=True).start()
        print(f"[demo] sidecar at http://{host}:{port}/metrics and /signals; engine at {server.base}/metrics")
        print("[demo] load cycles steady -> shared prefix -> overload -> quiet; Ctrl-C to stop", flush=True)
        phases = [loadgen.Phase.parse(p) for p in CYCLE]
        n = 0
        while True:
            n += 1
            for phase in phases:
                print(
                    f"[demo] cycle {n}: {phase.name} ({phase.concurrency} clients, {phase.seconds:.0f} s)",
                    flush=True,
                )
                asyncio.run(loadgen.run_phases(server.base, [phase], out / "ground_truth.jsonl", seed=n))
    except KeyboardInterrupt:
        print("\n[demo] stopping ...", flush=True)
    finally:
        stop.set()
        for p in reversed(started):
            procs.stop(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
