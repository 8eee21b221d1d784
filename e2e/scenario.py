"""Runs one live end-to-end scenario: real vLLM server(s), the phaselens sidecar, load, recording.

  aggregated  one vLLM server; phases idle, steady, shared-prefix, overload, drain
  pd          one prefill and one decode server joined by the NixlConnector (KV buffer on CPU),
              each pinned to its own core; the two-step P/D request flow

Everything a run produces lands in OUT (default e2e/out/<scenario>/): the engine logs, the
recorded scrapes (`phaselens record` format, scrapes/<role>/NNNN.prom), the sidecar's /signals
snapshots (signals.jsonl), its /metrics (sidecar/NNNN.prom), its stdout (sidecar.stdout.jsonl:
the recommendation lines), the client's ground truth (ground_truth.jsonl) and meta.json (settings,
phase times, step timings). `e2e/check.py OUT` asserts on it afterwards.
Runs in phaselens' venv; the engine runs with --engine-python (its own venv).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
import procs

HERE = Path(__file__).resolve().parent

# The SLOs sit on bucket edges of vLLM's TTFT and per-request TPOT histograms, so that the
# sidecar's attainment marginals need no interpolation inside a bucket.
SLO_TTFT_S = 0.25
SLO_ITL_S = 0.05
WINDOW_S = 20.0
INTERVAL_S = 1.0
BLOCK_SIZE = 32

AGGREGATED_PHASES = (
    "idle:12:0:0-0:0-0",
    "steady:25:2:20-60:16-48",
    "prefix:25:4:10-40:16-32:prefix",
    "overload:35:32:120-260:150-300",
    "drain:15:0:0-0:0-0",
)
PD_PHASES = (
    "idle:8:0:0-0:0-0",
    "steady:25:4:100-300:50-150",
    "burst:20:12:100-300:50-150",
    "drain:10:0:0-0:0-0",
)


@dataclass
class Timings:
    steps: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        print(f"[scenario] {name} ...", flush=True)
        try:
            yield
        finally:
            self.steps[name] = round(time.monotonic() - t0, 2)
            print(f"[scenario] {name}: {self.steps[name]:.1f} s", flush=True)


@dataclass(frozen=True)
class Server:
    role: str
    port: int
    log: str
    env: dict[str, str]
    extra: tuple[str, ...] = ()
    cpus: str | None = None  # taskset CPU list for the whole server process tree

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def engine_argv(python: str, model: Path, server: Server, num_blocks: int, max_seqs: int) -> list[str]:
    pin = ["taskset", "-c", server.cpus] if server.cpus is not None else []
    return [
        *pin,
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        "--served-model-name",
        "tiny",
        "--host",
        "127.0.0.1",
        "--port",
        str(server.port),
        "--max-model-len",
        "1024",
        "--dtype",
        "bfloat16",
        "--block-size",
        str(BLOCK_SIZE),
        "--enable-prefix-caching",
        "--num-gpu-blocks-override",
        str(num_blocks),
        "--max-num-seqs",
        str(max_seqs),
        "--kv-cache-metrics",
        "--kv-cache-metrics-sample",
        "1.0",
        "--disable-uvicorn-access-log",
        # per-request engine timings in the last streamed chunk: check.py bounds each request's
        # engine-side TTFT and finish with them instead of guessing the front end's overhead
        "--enable-per-request-metrics",
        *server.extra,
    ]


def servers_for(scenario: str, nixl_dir: Path) -> list[Server]:
    base_env = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if scenario == "aggregated":
        return [Server("aggregated", 8011, "server.log", dict(base_env))]
    # num_threads 1: vLLM asks NIXL's UCX backend for 4 threads by default; one core per engine here
    kv = (
        '{"kv_connector":"NixlConnector","kv_role":"kv_both","kv_buffer_device":"cpu",'
        '"kv_connector_extra_config":{"num_threads":1}}'
    )
    nixl_env = {
        **base_env,
        "NIXL_TELEMETRY_ENABLE": "y",
        "NIXL_TELEMETRY_DIR": str(nixl_dir),
        "VLLM_NIXL_SIDE_CHANNEL_HOST": "127.0.0.1",
    }
    # Each engine's whole process tree (API server, engine core, worker, NIXL's UCX progress thread)
    # on its own core. Unpinned, the two workers fight over both cores and decode degrades to ~0.45 s
    # per token (REAL-ENGINE.md). Pinning only the worker's OpenMP threads (VLLM_CPU_OMP_THREADS_BIND)
    # was not enough: the worker's busy-polling message-queue reader and the UCX progress thread
    # each spin at 80-100 % of a core, and with four such threads on two cores the decode engine
    # stalled for ~28 s at a time (seen with a real-time `top -H` beside a run); each spinner now
    # only takes turns with its own engine.
    return [
        Server(
            "prefill",
            8021,
            "prefill.log",
            {**nixl_env, "VLLM_NIXL_SIDE_CHANNEL_PORT": "5601", "VLLM_CPU_OMP_THREADS_BIND": "0"},
            ("--kv-transfer-config", kv),
            "0",
        ),
        Server(
            "decode",
            8022,
            "decode.log",
            {**nixl_env, "VLLM_NIXL_SIDE_CHANNEL_PORT": "5602", "VLLM_CPU_OMP_THREADS_BIND": "1"},
            ("--kv-transfer-config", kv),
            "1",
        ),
    ]


def sidecar_argv(
    phaselens: list[str],
    servers: list[Server],
    listen_port: int,
    nixl_dir: Path | None,
    out: Path,
    interval: float = INTERVAL_S,
) -> list[str]:
    argv = [*phaselens, "run"]
    for s in servers:
        argv += ["--target", f"{s.role}={s.base}/metrics"]
    argv += [
        "--listen",
        f"127.0.0.1:{listen_port}",
        "--interval",
        str(interval),
        "--slo-ttft",
        str(SLO_TTFT_S),
        "--slo-itl",
        str(SLO_ITL_S),
        "--window",
        str(WINDOW_S),
    ]
    if nixl_dir is not None:
        argv += ["--nixl-telemetry", str(nixl_dir)]
        argv += ["--log-file", f"decode={out / 'decode.log'}"]
    return argv


async def warm(servers: list[Server], pd: bool) -> list[loadgen.RequestRecord]:
    """One request per server (or one full P/D request): the first one compiles, slowly.

    Returns their records: they are part of the ground truth, since the engine counts them too.
    """
    import aiohttp

    done: list[loadgen.RequestRecord] = []
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as s:
        if pd:
            rec = loadgen.RequestRecord(id=f"warm{len(done)}", phase="warm")
            await loadgen.one_request(s, servers[1].base, "the quick brown fox " * 20, 8, rec, servers[0].base)
            done.append(rec)
            if rec.outcome != "ok":
                raise RuntimeError(f"P/D warm-up request failed: {rec.outcome}")
        else:
            for server in servers:
                for words in (8, 200):
                    rec = loadgen.RequestRecord(id=f"warm{len(done)}", phase="warm")
                    await loadgen.one_request(s, server.base, "the cache holds blocks " * (words // 4), 8, rec)
                    done.append(rec)
                    if rec.outcome != "ok":
                        raise RuntimeError(f"warm-up request to {server.role} failed: {rec.outcome}")
    return done


def pin_servers(servers: list[Server], started: list[procs.Proc]) -> None:
    for s, proc in zip(servers, started, strict=False):
        if s.cpus is not None:
            cpus = {int(c) for c in s.cpus.split(",")}
            print(f"[scenario] {s.role}: {procs.pin_group(proc, cpus)} threads on CPU {s.cpus}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", choices=["aggregated", "pd"])
    ap.add_argument("--engine-python", default=str(HERE / ".venv-engine/bin/python"))
    ap.add_argument("--model", type=Path, default=HERE / "out/model")
    ap.add_argument("--out", type=Path)
    ap.add_argument(
        "--phaselens",
        default=f"{sys.executable} -m phaselens",
        help="command that runs phaselens (space-separated)",
    )
    ap.add_argument("--no-sidecar", action="store_true", help="record the engine only")
    ap.add_argument("--sidecar-port", type=int, default=9470)
    ap.add_argument("--phases", nargs="+", help="override the scenario's load phases (loadgen syntax)")
    ap.add_argument("--ready-timeout", type=float, default=400.0)
    ap.add_argument("--seed", type=int, default=0, help="load client's random seed (prompts, arrivals)")
    ap.add_argument(
        "--interval", type=float, default=INTERVAL_S, help="scrape interval of the sidecar and the recorder (s)"
    )
    # engine shape, for recordings of other KV pool sizes and batch caps (breach-prediction protocol)
    ap.add_argument("--num-gpu-blocks", type=int, help="KV pool in blocks (default 48 aggregated, 96 per P/D engine)")
    ap.add_argument("--max-num-seqs", type=int, help="batch cap (default 32 aggregated, 16 per P/D engine)")
    ap.add_argument("--no-prefix-caching", action="store_true", help="start the engine without prefix caching")
    ap.add_argument("--port-offset", type=int, default=0, help="added to the engines' ports (8011, 8021, 8022)")
    args = ap.parse_args(argv)

    pd = args.scenario == "pd"
    out: Path = args.out or HERE / "out" / args.scenario
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    nixl_dir = out / "nixl-telemetry"
    if pd:
        nixl_dir.mkdir()
    servers = [
        replace(
            s,
            port=s.port + args.port_offset,
            extra=(*s.extra, "--no-enable-prefix-caching") if args.no_prefix_caching else s.extra,
        )
        for s in servers_for(args.scenario, nixl_dir)
    ]
    num_blocks = args.num_gpu_blocks or (96 if pd else 48)
    max_seqs = args.max_num_seqs or (16 if pd else 32)
    phases = [loadgen.Phase.parse(p) for p in (args.phases or (PD_PHASES if pd else AGGREGATED_PHASES))]
    timings = Timings()
    started: list[procs.Proc] = []
    meta: dict[str, object] = {
        "scenario": args.scenario,
        "slo_ttft_s": SLO_TTFT_S,
        "slo_itl_s": SLO_ITL_S,
        "window_s": WINDOW_S,
        "interval_s": args.interval,
        "block_size": BLOCK_SIZE,
        "num_gpu_blocks": num_blocks,
        "max_num_seqs": max_seqs,
        "prefix_caching": not args.no_prefix_caching,
        "roles": [s.role for s in servers],
        "phases": [asdict(p) for p in phases],
        "sidecar": not args.no_sidecar,
        "seed": args.seed,
    }
    ok = False
    try:
        with timings.step("engine_start"):
            for s in servers:
                argv_ = engine_argv(args.engine_python, args.model, s, num_blocks, max_seqs)
                started.append(procs.start(s.role, argv_, out / s.log, env=s.env))
            for s in servers:
                procs.wait_http(f"{s.base}/health", args.ready_timeout, started)
            pin_servers(servers, started)
        with timings.step("warm_up"), (out / "ground_truth.jsonl").open("a") as gt:
            for rec in asyncio.run(warm(servers, pd)):
                gt.write(rec.as_json() + "\n")
            pin_servers(servers, started)  # again: NIXL starts its threads at the first transfer
        if not args.no_sidecar:
            with timings.step("sidecar_start"):
                cmd = args.phaselens.split()
                sidecar = procs.start(
                    "sidecar",
                    sidecar_argv(cmd, servers, args.sidecar_port, nixl_dir if pd else None, out, args.interval),
                    out / "sidecar.log",
                    stdout_path=out / "sidecar.stdout.jsonl",
                )
                started.append(sidecar)
                procs.wait_http(f"http://127.0.0.1:{args.sidecar_port}/metrics", 60, [sidecar])
        recorder_argv = [
            sys.executable,
            str(HERE / "recorder.py"),
            "--out",
            str(out),
            "--interval",
            str(args.interval),
        ]
        for s in servers:
            recorder_argv += ["--target", f"{s.role}={s.base}/metrics"]
        if not args.no_sidecar:
            recorder_argv += ["--sidecar", f"http://127.0.0.1:{args.sidecar_port}"]
        recorder = procs.start("recorder", recorder_argv, out / "recorder.log")
        started.append(recorder)
        time.sleep(1.5)  # the first scrape lands before the first phase starts
        meta["load_client_niceness"] = procs.raise_own_priority()
        with timings.step("load"):
            records = asyncio.run(
                loadgen.run_phases(
                    servers[-1].base,
                    phases,
                    out / "ground_truth.jsonl",
                    seed=args.seed,
                    prefill_url=servers[0].base if pd else None,
                )
            )
        time.sleep(2.0)  # one more scrape after the last phase
        errors = [r for r in records if r.outcome != "ok"]
        meta["requests"] = len(records)
        meta["request_errors"] = len(errors)
        if errors:
            print(f"[scenario] {len(errors)} request errors, first: {errors[0].outcome}", flush=True)
        for p in started:
            if not p.alive:
                raise RuntimeError(f"{p.name} died during the run:\n{p.log_tail()}")
        ok = True
    finally:
        with timings.step("shutdown"):
            for p in reversed(started):
                procs.stop(p)
        meta["timings_s"] = timings.steps
        meta["ok"] = ok
        (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"[scenario] {args.scenario}: done, output in {out}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
