"""Record the real-vLLM runs of the breach-prediction protocol (benchmarks/predictor_runs_vllm.json).

One at a time (one engine needs most of the 2 cores): e2e/scenario.py aggregated --no-sidecar at
the manifest's `interval_s` (default 1 s) scrapes, with the manifest's engine arguments, phases and
seed, into e2e/out/protocol-vllm/NAME; a run whose folder already holds ground truth is skipped.
Needs e2e/.venv-engine and e2e/out/model (`make e2e` makes both, or e2e/install_engine.sh and
e2e/make_model.py).
Usage: python e2e/record_vllm_protocol.py [NAME ...] [--port-offset 500] [--manifest M] [--out DIR]
(`--manifest benchmarks/predictor_runs_vllm_b.json --out e2e/out/protocol-vllm-b` records the blind set.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MANIFEST = HERE.parent / "benchmarks" / "predictor_runs_vllm.json"
OUT = HERE / "out" / "protocol-vllm"


def command(run: dict[str, object], port_offset: int, out: Path = OUT, interval: float = 1.0) -> list[str]:
    return [
        sys.executable,
        str(HERE / "scenario.py"),
        "aggregated",
        "--no-sidecar",
        "--interval",
        str(interval),
        "--out",
        str(out / str(run["name"])),
        "--seed",
        str(run["seed"]),
        "--port-offset",
        str(port_offset),
        *[str(a) for a in run["args"]],  # type: ignore[attr-defined]
        "--phases",
        *[str(p) for p in run["phases"]],  # type: ignore[attr-defined]
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("names", nargs="*")
    ap.add_argument("--port-offset", type=int, default=500, help="added to the engine's port 8011")
    ap.add_argument("--manifest", type=Path, default=MANIFEST, help="runs to record")
    ap.add_argument("--out", type=Path, default=OUT, help="folder that receives one folder per run")
    args = ap.parse_args(argv)
    out: Path = args.out.resolve()
    failed = 0
    manifest = json.loads(args.manifest.read_text())
    interval = float(manifest.get("interval_s", 1.0))  # the recorder's scrape interval, like a sidecar's
    for run in manifest["runs"]:
        if args.names and run["name"] not in args.names:
            continue
        if (out / run["name"] / "ground_truth.jsonl").exists():
            print(f"[record] {run['name']}: recorded already", flush=True)
            continue
        out.mkdir(parents=True, exist_ok=True)
        with (out / f"{run['name']}.log").open("wb") as log:
            rc = subprocess.call(command(run, args.port_offset, out, interval), stdout=log, stderr=subprocess.STDOUT)
        print(f"[record] {run['name']}: exit {rc}", flush=True)
        failed += rc != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
