"""Labelled real runs for the diagnosis stage: a real Dynamo frontend + mocker workers
(e2e/dynamo.py) set up to show one cause each, recorded with `phaselens record` (the workers and
the frontend) while e2e/loadgen.py drives the load and writes the client's ground truth.

Usage: python e2e/diagnosis_runs.py OUT_DIR SCENARIO [SCENARIO ...]   (names in SCENARIOS)
Runs in the project's venv; Dynamo runs from its own venv (`e2e/install_dynamo.sh`, or DYNAMO_PY).
`bash e2e/diagnosis_pack.sh NAME HELD_OUT` turns a run into a test fixture. Ports: BASE_PORT
(27000) + n. Every process is started in its own group and stopped by its pid.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dynamo
import procs
from dynamo import Deployment, MockerSpec

ROOT = Path(__file__).resolve().parent
BASE_PORT = int(os.environ.get("BASE_PORT", "27000"))


@dataclass(frozen=True)
class Scenario:
    label: str  # the cause set up on purpose ("none" for a healthy run)
    workers: tuple[MockerSpec, ...]  # system ports are assigned at run time
    phases: tuple[str, ...]  # loadgen phases
    note: str


def _agg(blocks: int, seqs: int, batched: int, caching: bool = True) -> tuple[MockerSpec, ...]:
    return (MockerSpec("aggregated", 0, num_gpu_blocks=blocks, max_num_seqs=seqs,
                       max_num_batched_tokens=batched, enable_prefix_caching=caching),)


def _pd(blocks: int, seqs: int, bandwidth: float) -> tuple[MockerSpec, ...]:
    return tuple(MockerSpec(role, 0, mode=role, num_gpu_blocks=blocks, max_num_seqs=seqs,
                            max_num_batched_tokens=8192, kv_transfer_bandwidth=bandwidth)
                 for role in ("prefill", "decode"))


SCENARIOS: dict[str, Scenario] = {
    # used to set the thresholds
    "seat": Scenario("BATCH_SEAT_LIMIT", _agg(4096, 4, 2048),
                     ("warm:10:2:20-40:50-60", "load:60:12:20-40:300-400"),
                     "max_num_seqs 4, long outputs, 12 clients, a KV pool far larger than 4 sequences need"),
    "kv": Scenario("KV_CAPACITY", _agg(96, 64, 2048),
                   ("warm:10:2:20-40:50-60", "load:60:16:100-200:200-300"),
                   "96 blocks of 16 tokens for 16 clients with ~400-token sequences: the pool cannot hold them"),
    "prefill": Scenario("PREFILL_COMPUTE", _agg(8192, 64, 512, caching=False),
                        ("warm:10:2:200-400:4-8", "load:60:8:2500-3500:2-4"),
                        "long prompts (~3k words), 2-4 output tokens, a small chunked-prefill budget"),
    "light": Scenario("none", _agg(4096, 64, 2048), ("light:70:1:20-60:20-40",),
                      "one client, short prompts and outputs on a roomy engine"),
    "transfer": Scenario("KV_TRANSFER", _pd(4096, 64, 0.002),
                         ("warm:10:2:200-400:10-20", "load:60:6:600-1000:10-20"),
                         "1P1D with a 2 MB/s simulated KV transfer and 600-1000-word prompts"),
    # held out of the tuning: other sizes and loads for the same causes
    "seat-b": Scenario("BATCH_SEAT_LIMIT", _agg(8192, 8, 4096),
                       ("warm:10:2:50-80:30-50", "load:60:20:50-80:200-300"),
                       "max_num_seqs 8, 20 clients, long outputs, a roomy KV pool"),
    "kv-b": Scenario("KV_CAPACITY", _agg(160, 128, 4096),
                     ("warm:10:2:20-40:50-60", "load:60:24:200-300:150-250"),
                     "160 blocks for 24 clients with ~500-token sequences"),
    "prefill-b": Scenario("PREFILL_COMPUTE", _agg(16384, 32, 1024, caching=False),
                          ("warm:10:1:200-400:4-8", "load:60:5:4000-5000:1-3"),
                          "4-5k-word prompts, 1-3 output tokens, 5 clients"),
    "light-b": Scenario("none", _agg(2048, 16, 2048), ("light:70:@0.5-1:50-100:10-30",),
                        "open loop at 0.5-1 req/s, short requests"),
    "transfer-b": Scenario("KV_TRANSFER", _pd(8192, 64, 0.001),
                           ("warm:10:1:200-400:10-20", "load:60:4:400-800:20-30"),
                           "1P1D with a 1 MB/s simulated KV transfer"),
}


def run(name: str, scenario: Scenario, out: Path, model: Path, python: Path) -> None:
    folder = out / name
    recorders: list[procs.Proc] = []
    with Deployment(folder, http_port=BASE_PORT, python=python, model=model) as deployment:
        deployment.start_frontend()
        targets = {"frontend": deployment.frontend_metrics_url}
        for i, spec in enumerate(scenario.workers):
            spec = replace(spec, system_port=BASE_PORT + 1 + i)
            deployment.start_worker(spec)
            targets[spec.name] = spec.metrics_url
        deployment.wait_ready()
        seconds = sum(float(p.split(":")[1]) for p in scenario.phases) + 25
        try:
            for role, url in targets.items():
                recorders.append(procs.start(f"record-{role}", [
                    sys.executable, "-m", "phaselens", "record", "--target", url, "--out", str(folder / role),
                    "--interval", "1", "--duration", str(seconds)], folder / f"record-{role}.log"))
            time.sleep(3)
            load = procs.start("loadgen", [
                sys.executable, str(ROOT / "loadgen.py"), "--url", deployment.base_url,
                "--out", str(folder / "groundtruth.jsonl"), "--no-token-ids", "--phases", *scenario.phases],
                folder / "loadgen.log")
            recorders.append(load)
            load.popen.wait(timeout=seconds + 120)
            for proc in recorders:
                proc.popen.wait(timeout=seconds + 60)
        finally:
            for proc in recorders:
                procs.stop(proc, grace_s=5)
    meta = {"scenario": name, "label": scenario.label,
            "workers": [[s.name, s.argv(Path("python"), Path("MODEL"))[3:]] for s in scenario.workers],
            "phases": scenario.phases, "note": scenario.note, "dynamo": dynamo.DYNAMO_VERSION}
    (folder / "label.json").write_text(json.dumps(meta, indent=1))


def main(argv: list[str]) -> int:
    if len(argv) < 3 or any(a not in SCENARIOS for a in argv[2:]):
        print(f"usage: diagnosis_runs.py OUT_DIR {{{','.join(SCENARIOS)}}} ...", file=sys.stderr)
        return 2
    out = Path(argv[1]).resolve()
    python = Path(os.environ["DYNAMO_PY"]) if "DYNAMO_PY" in os.environ else dynamo.install()
    model = dynamo.make_model(out / "dynamo-model", python)
    for name in argv[2:]:
        run(name, SCENARIOS[name], out, model, python)
        print(f"diagnosis_runs: {name} -> {out / name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
