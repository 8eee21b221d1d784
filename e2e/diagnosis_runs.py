"""Labelled real runs for the diagnosis stage: a real Dynamo frontend + mocker workers set up to
show one cause each, recorded with `phaselens record` (the workers, and the frontend) while
e2e/loadgen.py drives the load and writes the client's ground truth.

Usage: python e2e/diagnosis_runs.py OUT_DIR SCENARIO [SCENARIO ...]   (names in SCENARIOS)
Runs in the project's venv; Dynamo runs from DYNAMO_PY (a venv made per recipes/REAL-DYNAMO.md,
default e2e/out/dynvenv/bin/python) on the model folder e2e/dynamo_model.py writes.
Every process is started in its own group and stopped by its pid. Ports: BASE_PORT (27000) + n.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs

ROOT = Path(__file__).resolve().parent
DYNAMO_PY = os.environ.get("DYNAMO_PY", str(ROOT / "out" / "dynvenv" / "bin" / "python"))
BASE_PORT = int(os.environ.get("BASE_PORT", "27000"))


@dataclass(frozen=True)
class Scenario:
    label: str  # the cause set up on purpose ("none" for a healthy run)
    workers: tuple[tuple[str, tuple[str, ...]], ...]  # (role, extra mocker flags)
    phases: tuple[str, ...]  # loadgen phases
    note: str


COMMON = ("--block-size", "16", "--speedup-ratio", "1")
SCENARIOS: dict[str, Scenario] = {
    "seat": Scenario(
        "BATCH_SEAT_LIMIT",
        (("aggregated", ("--num-gpu-blocks-override", "4096", "--max-num-seqs", "4",
                         "--max-num-batched-tokens", "2048")),),
        ("warm:10:2:20-40:50-60", "load:60:12:20-40:300-400"),
        "max_num_seqs 4, long outputs, 12 clients, a KV pool far larger than 4 sequences need",
    ),
    "kv": Scenario(
        "KV_CAPACITY",
        (("aggregated", ("--num-gpu-blocks-override", "96", "--max-num-seqs", "64",
                         "--max-num-batched-tokens", "2048")),),
        ("warm:10:2:20-40:50-60", "load:60:16:100-200:200-300"),
        "96 blocks of 16 tokens for 16 clients with ~400-token sequences: the pool cannot hold them",
    ),
    "prefill": Scenario(
        "PREFILL_COMPUTE",
        (("aggregated", ("--num-gpu-blocks-override", "8192", "--max-num-seqs", "64",
                         "--max-num-batched-tokens", "512", "--no-enable-prefix-caching")),),
        ("warm:10:2:200-400:4-8", "load:60:8:2500-3500:2-4"),
        "long prompts (~3k words), 2-4 output tokens, a small chunked-prefill budget",
    ),
    "light": Scenario(
        "none",
        (("aggregated", ("--num-gpu-blocks-override", "4096", "--max-num-seqs", "64",
                         "--max-num-batched-tokens", "2048")),),
        ("light:70:1:20-60:20-40",),
        "one client, short prompts and outputs on a roomy engine",
    ),
    "transfer": Scenario(
        "KV_TRANSFER",
        (("prefill", ("--num-gpu-blocks-override", "4096", "--max-num-seqs", "64",
                      "--kv-transfer-bandwidth", "0.002")),
         ("decode", ("--num-gpu-blocks-override", "4096", "--max-num-seqs", "64",
                     "--kv-transfer-bandwidth", "0.002"))),
        ("warm:10:2:200-400:10-20", "load:60:6:600-1000:10-20"),
        "1P1D with a 2 MB/s simulated KV transfer and 600-1000-word prompts",
    ),
    # held out of the tuning: other sizes and loads for the same causes
    "seat-b": Scenario(
        "BATCH_SEAT_LIMIT",
        (("aggregated", ("--num-gpu-blocks-override", "8192", "--max-num-seqs", "8",
                         "--max-num-batched-tokens", "4096")),),
        ("warm:10:2:50-80:30-50", "load:60:20:50-80:200-300"),
        "max_num_seqs 8, 20 clients, long outputs, a roomy KV pool",
    ),
    "kv-b": Scenario(
        "KV_CAPACITY",
        (("aggregated", ("--num-gpu-blocks-override", "160", "--max-num-seqs", "128",
                         "--max-num-batched-tokens", "4096")),),
        ("warm:10:2:20-40:50-60", "load:60:24:200-300:150-250"),
        "160 blocks for 24 clients with ~500-token sequences",
    ),
    "prefill-b": Scenario(
        "PREFILL_COMPUTE",
        (("aggregated", ("--num-gpu-blocks-override", "16384", "--max-num-seqs", "32",
                         "--max-num-batched-tokens", "1024", "--no-enable-prefix-caching")),),
        ("warm:10:1:200-400:4-8", "load:60:5:4000-5000:1-3"),
        "4-5k-word prompts, 1-3 output tokens, 5 clients",
    ),
    "light-b": Scenario(
        "none",
        (("aggregated", ("--num-gpu-blocks-override", "2048", "--max-num-seqs", "16",
                         "--max-num-batched-tokens", "2048")),),
        ("light:70:@0.5-1:50-100:10-30",),
        "open loop at 0.5-1 req/s, short requests",
    ),
    "transfer-b": Scenario(
        "KV_TRANSFER",
        (("prefill", ("--num-gpu-blocks-override", "8192", "--max-num-seqs", "64",
                      "--kv-transfer-bandwidth", "0.001")),
         ("decode", ("--num-gpu-blocks-override", "8192", "--max-num-seqs", "64",
                     "--kv-transfer-bandwidth", "0.001"))),
        ("warm:10:1:200-400:10-20", "load:60:4:400-800:20-30"),
        "1P1D with a 1 MB/s simulated KV transfer",
    ),
}


def dynamo_env(kv_dir: str) -> dict[str, str]:
    return {
        "DYN_DISCOVERY_BACKEND": "file", "DYN_FILE_KV": kv_dir, "DYN_REQUEST_PLANE": "tcp",
        "DYN_EVENT_PLANE": "zmq", "DYN_TCP_RPC_HOST": "127.0.0.1", "DYN_EVENT_PLANE_HOST": "127.0.0.1",
        "DYN_SYSTEM_HOST": "127.0.0.1", "DYN_TCP_RESPONSE_STREAM_HOST": "127.0.0.1",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
    }


def run(name: str, scenario: Scenario, out: Path, model: Path) -> None:
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    env = dynamo_env(tempfile.mkdtemp(prefix="dynkv-", dir=str(out)))
    started: list[procs.Proc] = []
    http = BASE_PORT
    try:
        fe = procs.start("frontend", [DYNAMO_PY, "-m", "dynamo.frontend", "--http-host", "127.0.0.1",
                                      "--http-port", str(http), "--discovery-backend", "file",
                                      "--request-plane", "tcp", "--event-plane", "zmq", "--router-mode", "kv"],
                         folder / "frontend.log", env)
        started.append(fe)
        targets = {"frontend": f"http://127.0.0.1:{http}/metrics"}
        for i, (role, flags) in enumerate(scenario.workers):
            port = BASE_PORT + 1 + i
            argv = [DYNAMO_PY, "-m", "dynamo.mocker", "--model-path", str(model), "--model-name", "tiny",
                    "--discovery-backend", "file", "--request-plane", "tcp", "--event-plane", "zmq",
                    *COMMON, *flags]
            if role != "aggregated":
                argv += ["--disaggregation-mode", role]
            worker_env = {**env, "DYN_SYSTEM_ENABLED": "true", "DYN_SYSTEM_PORT": str(port)}
            started.append(procs.start(role, argv, folder / f"{role}.log", worker_env))
            targets[role] = f"http://127.0.0.1:{port}/metrics"
        for url in targets.values():
            procs.wait_http(url, 120, started)
        # the frontend lists the model once a worker registered
        deadline = time.monotonic() + 60
        while b"tiny" not in procs.fetch(f"http://127.0.0.1:{http}/v1/models") and time.monotonic() < deadline:
            time.sleep(0.5)
        seconds = sum(float(p.split(":")[1]) for p in scenario.phases) + 25
        for role, url in targets.items():
            started.append(procs.start(f"record-{role}", [sys.executable, "-m", "phaselens", "record",
                                                          "--target", url, "--out", str(folder / role),
                                                          "--interval", "1", "--duration", str(seconds)],
                                       folder / f"record-{role}.log"))
        time.sleep(3)
        lg = procs.start("loadgen", [sys.executable, str(ROOT / "loadgen.py"), "--url", f"http://127.0.0.1:{http}",
                                     "--out", str(folder / "groundtruth.jsonl"), "--no-token-ids",
                                     "--phases", *scenario.phases],
                         folder / "loadgen.log")
        started.append(lg)
        lg.popen.wait(timeout=seconds + 120)
        for p in started:
            if p.name.startswith("record-"):
                p.popen.wait(timeout=seconds + 60)
        meta = {"scenario": name, "label": scenario.label, "workers": scenario.workers,
                "phases": scenario.phases, "note": scenario.note, "dynamo": "1.6.1 mocker"}
        (folder / "label.json").write_text(json.dumps(meta, indent=1))
    finally:
        for p in reversed(started):
            procs.stop(p, grace_s=5)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or any(a not in SCENARIOS for a in argv[2:]):
        print(f"usage: diagnosis_runs.py OUT_DIR {{{','.join(SCENARIOS)}}} ...", file=sys.stderr)
        return 2
    out = Path(argv[1]).resolve()
    model = out / "dynmodel"
    if not (model / "config.json").exists():
        import subprocess
        subprocess.run([DYNAMO_PY, str(ROOT / "dynamo_model.py"), str(model)], check=True)
    for name in argv[2:]:
        run(name, SCENARIOS[name], out, model)
        print(f"diagnosis_runs: {name} -> {out / name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
