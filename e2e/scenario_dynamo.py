"""Runs one live Dynamo scenario: a real NVIDIA Dynamo 1.6.1 frontend + mocker workers, a
`phaselens run` sidecar per worker plus one on the frontend, the recorder and the load client.

  dynamo-agg  frontend + one aggregated mocker worker
  dynamo-pd   frontend + one prefill and one decode mocker worker (1P1D)

Sidecars, as they would run in the pods: one beside each worker (its own target only) and one
beside the frontend. The frontend's sidecar scrapes the frontend, and in P/D the workers too, so
that it can join the frontend's per-worker view with the workers (pool signals).
Everything lands in OUT (default e2e/out/<scenario>/): scrapes/<role>/ (frontend and workers),
signals-<sidecar>.jsonl and sidecar-<sidecar>/ (each sidecar's /signals and /metrics),
sidecar-<name>.stdout.jsonl, ground_truth.jsonl, the Dynamo logs, meta.json.
`e2e/check_dynamo.py OUT` asserts on it afterwards. Runs in phaselens' venv; Dynamo runs in its
own (e2e/.venv-dynamo, installed by e2e/dynamo.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dynamo
import loadgen
import procs
from scenario import Timings

HERE = Path(__file__).resolve().parent

# SLOs on bucket edges of the frontend's TTFT histogram (0.1, 0.22, 0.47 ...) and ITL histogram
# (0.035, 0.064 ...): the sidecar's attainment then needs no interpolation inside a bucket.
SLO_TTFT_S = 0.22
SLO_ITL_S = 0.064
WINDOW_S = 30.0
INTERVAL_S = 1.0
BLOCK_SIZE = 16
PORT_BASE = 25100  # frontend HTTP; workers +1, +2; sidecars +10 ...

# Few batch seats so that a modest closed-loop load queues in front of the engine (TTFT
# attainment below 1), a shared-prefix phase for prefix reuse, an idle tail.
AGG_PHASES = (
    "idle:4:0:0-0:0-0",
    "steady:35:3:20-60:20-60",
    "prefix:35:4:10-40:20-60:prefix",
    "overload:35:10:40-120:30-80",
    "drain:4:0:0-0:0-0",
)
PD_PHASES = (
    "idle:4:0:0-0:0-0",
    "steady:35:3:40-120:20-60",
    "prefix:35:4:10-40:20-60:prefix",
    "burst:35:10:60-160:30-80",
    "drain:4:0:0-0:0-0",
)


def workers_for(scenario: str, port: int) -> list[dynamo.MockerSpec]:
    common = {"block_size": BLOCK_SIZE, "num_gpu_blocks": 256, "max_num_seqs": 4, "max_num_batched_tokens": 1024}
    if scenario == "dynamo-agg":
        return [dynamo.MockerSpec("worker", port + 1, **common)]  # type: ignore[arg-type]
    return [
        dynamo.MockerSpec("prefill", port + 1, mode="prefill", kv_transfer_bandwidth=8.0, **common),  # type: ignore[arg-type]
        dynamo.MockerSpec("decode", port + 2, mode="decode", kv_transfer_bandwidth=8.0, **common),  # type: ignore[arg-type]
    ]


def role_of(spec: dynamo.MockerSpec) -> str:
    return "aggregated" if spec.mode == "aggregated" else spec.mode


def sidecar_argv(phaselens: list[str], targets: list[str], port: int, interval: float) -> list[str]:
    argv = [*phaselens, "run"]
    for t in targets:
        argv += ["--target", t]
    return [
        *argv,
        "--listen", f"127.0.0.1:{port}",
        "--interval", str(interval),
        "--slo-ttft", str(SLO_TTFT_S),
        "--slo-itl", str(SLO_ITL_S),
        "--window", str(WINDOW_S),
        "--engine", "dynamo",
    ]  # fmt: skip


async def warm(base: str) -> list[loadgen.RequestRecord]:
    """Two requests through the whole path before measuring; they are part of the ground truth."""
    import aiohttp

    done: list[loadgen.RequestRecord] = []
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as s:
        for words in (8, 60):
            rec = loadgen.RequestRecord(id=f"warm{len(done)}", phase="warm")
            await loadgen.one_request(s, base, "the cache holds blocks " * (words // 4), 8, rec, token_ids=False)
            done.append(rec)
            if rec.outcome != "ok":
                raise RuntimeError(f"warm-up request failed: {rec.outcome}")
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", choices=["dynamo-agg", "dynamo-pd"])
    ap.add_argument("--dynamo-python", type=Path, default=dynamo.venv_python())
    ap.add_argument("--model", type=Path, default=dynamo.DEFAULT_MODEL)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--phaselens", default=f"{sys.executable} -m phaselens",
                    help="command that runs phaselens (space-separated)")
    ap.add_argument("--port-base", type=int, default=PORT_BASE)
    ap.add_argument("--phases", nargs="+", help="override the scenario's load phases (loadgen syntax)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--interval", type=float, default=INTERVAL_S)
    args = ap.parse_args(argv)

    pd = args.scenario == "dynamo-pd"
    out: Path = args.out or HERE / "out" / args.scenario
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    port = args.port_base
    specs = workers_for(args.scenario, port)
    phases = [loadgen.Phase.parse(p) for p in (args.phases or (PD_PHASES if pd else AGG_PHASES))]
    timings = Timings()
    started: list[procs.Proc] = []
    cmd = args.phaselens.split()
    frontend_metrics = f"http://127.0.0.1:{port}/metrics"
    # sidecar name -> its targets ([ROLE=]URL as `phaselens run --target` takes them)
    sidecars: dict[str, list[str]] = {
        s.name: [f"{role_of(s)}={s.metrics_url}"] for s in specs
    }
    # The frontend serves whole requests (both phases): role "aggregated", so its target is named so.
    sidecars["frontend"] = [f"aggregated={frontend_metrics}"]
    if pd:
        sidecars["frontend"] += [f"{role_of(s)}={s.metrics_url}" for s in specs]
    sidecar_ports = {name: port + 10 + i for i, name in enumerate(sidecars)}
    meta: dict[str, object] = {
        "scenario": args.scenario,
        "dynamo_version": dynamo.DYNAMO_VERSION,
        "slo_ttft_s": SLO_TTFT_S,
        "slo_itl_s": SLO_ITL_S,
        "window_s": WINDOW_S,
        "interval_s": args.interval,
        "block_size": BLOCK_SIZE,
        "workers": [asdict(s) for s in specs],
        "roles": ["frontend", *[s.name for s in specs]],
        "sidecars": sidecars,
        "phases": [asdict(p) for p in phases],
        "seed": args.seed,
    }
    dep = dynamo.Deployment(out, http_port=port, python=args.dynamo_python, model=args.model)
    ok = False
    try:
        with timings.step("dynamo_start"):
            dep.start_frontend()
            for s in specs:
                dep.start_worker(s)
            dep.wait_ready(timeout_s=180)
        with timings.step("warm_up"), (out / "ground_truth.jsonl").open("a") as gt:
            for rec in asyncio.run(warm(dep.base_url)):
                gt.write(rec.as_json() + "\n")
        meta["worker_ids"] = dep.worker_ids()
        with timings.step("sidecar_start"):
            for name, targets in sidecars.items():
                sc = procs.start(
                    f"sidecar-{name}",
                    sidecar_argv(cmd, targets, sidecar_ports[name], args.interval),
                    out / f"sidecar-{name}.log",
                    stdout_path=out / f"sidecar-{name}.stdout.jsonl",
                )
                started.append(sc)
            for name in sidecars:
                procs.wait_http(f"http://127.0.0.1:{sidecar_ports[name]}/metrics", 60, started)
        recorder_argv = [sys.executable, str(HERE / "recorder.py"), "--out", str(out), "--interval", str(args.interval),
                         "--target", f"frontend={frontend_metrics}"]
        for s in specs:
            recorder_argv += ["--target", f"{s.name}={s.metrics_url}"]
        for name, sc_port in sidecar_ports.items():
            recorder_argv += ["--sidecar", f"{name}=http://127.0.0.1:{sc_port}"]
        started.append(procs.start("recorder", recorder_argv, out / "recorder.log"))
        time.sleep(1.5)
        meta["load_client_niceness"] = procs.raise_own_priority()
        with timings.step("load"):
            records = asyncio.run(loadgen.run_phases(
                dep.base_url, phases, out / "ground_truth.jsonl", seed=args.seed, token_ids=False
            ))
        time.sleep(2.0)
        errors = [r for r in records if r.outcome != "ok"]
        meta["requests"] = len(records)
        meta["request_errors"] = len(errors)
        if errors:
            print(f"[scenario] {len(errors)} request errors, first: {errors[0].outcome}", flush=True)
        for p in [*started, *dep.started]:
            if not p.alive:
                raise RuntimeError(f"{p.name} died during the run:\n{p.log_tail()}")
        ok = True
    finally:
        with timings.step("shutdown"):
            for p in reversed(started):
                procs.stop(p)
            dep.stop()
        meta["timings_s"] = timings.steps
        meta["ok"] = ok
        (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"[scenario] {args.scenario}: done, output in {out}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
