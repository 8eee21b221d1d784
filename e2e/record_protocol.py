"""Record the breach-prediction protocol's runs (benchmarks/predictor_runs.json), a few at a time.

Each run goes to e2e/out/protocol/NAME through e2e/dynamo_record.py with the manifest's arguments
and seed; a run whose folder already holds ground truth is skipped. Ports: PORT_BASE (default 28100)
+ 10 * its index in the manifest (the frontend, then one per worker).
Usage: python e2e/record_protocol.py [NAME ...] [--set heldout] [--parallel 2] [--port-base 28100]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MANIFEST = ROOT / "benchmarks" / "predictor_runs.json"
OUT = HERE / "out" / "protocol"


def command(index: int, run: dict[str, object], port_base: int = 28100) -> list[str]:
    return [
        sys.executable,
        str(HERE / "dynamo_record.py"),
        "--out",
        str(OUT / str(run["name"])),
        "--seed",
        str(run["seed"]),
        "--port-base",
        str(port_base + 10 * index),
        *[str(a) for a in run["args"]],  # type: ignore[attr-defined]
        "--phases",
        *[str(p) for p in run["phases"]],  # type: ignore[attr-defined]
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("names", nargs="*")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--set", dest="run_set", help="only the runs of this set of the manifest")
    ap.add_argument("--port-base", type=int, default=28100, help="frontend port of the manifest's first run")
    args = ap.parse_args(argv)
    runs = json.loads(MANIFEST.read_text())["runs"]
    todo = [
        (i, r)
        for i, r in enumerate(runs)
        if (not args.names or r["name"] in args.names)
        and (args.run_set is None or r.get("set") == args.run_set)
        and not (OUT / r["name"] / "ground_truth.jsonl").exists()
    ]
    running: list[tuple[str, subprocess.Popen[bytes], float]] = []
    failed = 0
    while todo or running:
        while todo and len(running) < args.parallel:
            i, run = todo.pop(0)
            (OUT / run["name"]).mkdir(parents=True, exist_ok=True)
            log = (OUT / f"{run['name']}.log").open("wb")
            running.append(
                (run["name"], subprocess.Popen(command(i, run, args.port_base), stdout=log, stderr=log), time.time())
            )
        time.sleep(2)
        for item in list(running):
            name, proc, t0 = item
            if proc.poll() is not None:
                running.remove(item)
                failed += proc.returncode != 0
                print(f"{name}: rc {proc.returncode} in {time.time() - t0:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
