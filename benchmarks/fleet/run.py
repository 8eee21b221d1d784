"""Fleet lab: closed-loop autoscaling of a real Dynamo fleet (frontend + KV router + mocker
workers, a phaselens sidecar per pod, a real Prometheus), one run per (trace, policy).

  python benchmarks/fleet/run.py --trace step --policy phaselens --policy production-stack
  python benchmarks/fleet/run.py --matrix                 # every trace x every policy
  python benchmarks/fleet/run.py --table OUT              # the markdown table of the runs in OUT

Output (git-ignored): benchmarks/fleet/out/<trace>/<policy>/ with ground_truth.jsonl,
controller.jsonl (one line per HPA sync), workers.json, result.json, run.png; the Dynamo,
sidecar and Prometheus logs. See docs/fleet.md for the set-up, the time scale and the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "e2e"))

import dynamo  # noqa: E402
import fleet as fleet_mod  # noqa: E402
import hpa  # noqa: E402
import policies  # noqa: E402
import procs  # noqa: E402
import score as score_mod  # noqa: E402
import traces  # noqa: E402

# Time scale: control-plane durations (trace phases, HPA sync period, stabilization windows,
# policy periods, rule ranges, sidecar windows, cold start, SLO windows) run K times faster than
# written; request-level times (TTFT, ITL, backlog seconds) are not compressed.
K = 10.0
HPA_SYNC_S = 15.0  # kube-controller-manager --horizontal-pod-autoscaler-sync-period default
COLD_START_S = 30.0  # sim seconds from "pod created" to the worker serving
SLO_TTFT_S = 2.0  # TTFT SLO: the HPA's 1.5 s backlog target + prefill time (docs/autoscaling.md)
SLO_ITL_S = 0.06
WINDOW_S = 60.0  # SLO attainment window (sim)
SIDECAR_WINDOW_S = 30.0  # sim; the sidecar's default
PORT_BASE = 29100

WORKER = dynamo.MockerSpec(
    name="template",
    system_port=0,
    block_size=16,
    num_gpu_blocks=256,
    max_num_seqs=16,
    max_num_batched_tokens=2048,
    speedup_ratio=1.0,
)


def config(port_base: int) -> fleet_mod.FleetConfig:
    return fleet_mod.FleetConfig(
        port_base=port_base,
        compression=K,
        cold_start_s=max(0.0, COLD_START_S / K - 1.5),  # the mocker process itself takes ~1.5 s
        sidecar_interval_s=0.5,
        sidecar_window_s=SIDECAR_WINDOW_S / K,
        slo_ttft_s=SLO_TTFT_S,
        slo_itl_s=SLO_ITL_S,
        scrape_interval_s=0.5,
        eval_interval_s=HPA_SYNC_S / K,
        worker=WORKER,
        phaselens=(sys.executable, "-m", "phaselens"),
    )


def sync_once(
    policy: policies.Policy, fl: fleet_mod.Fleet, state: hpa.HpaState, now: float,
    decisions: list[tuple[int, int]], log: Any, loadavg: float,
) -> None:
    """One HPA sync: read the metrics, decide, scale, log one line."""
    current = len(fl.active())
    try:
        totals = policy.totals(fl.prom_url, current, fl.ready_count())
    except (OSError, RuntimeError, ValueError) as exc:
        totals = {}
        log.write(json.dumps({"t": now, "event": "query_error", "error": str(exc)[:200]}) + "\n")
    proposal = hpa.proposal_from_totals(policy.spec, totals, current)
    d = hpa.decide(policy.spec, state, now, current, current if proposal is None else proposal)
    decisions.append((current, d.desired))
    if d.desired != current:
        fl.scale_to(d.desired)
    log.write(json.dumps({
        "t": now, "current": current, "ready": fl.ready_count(), "totals": totals,
        "proposal": d.proposal, "stabilized": d.stabilized, "desired": d.desired, "loadavg": round(loadavg, 2),
    }) + "\n")  # fmt: skip
    log.flush()


def run_one(
    trace: traces.Trace, policy_name: str, out: Path, port_base: int, seed: int, min_replicas: int | None = None,
) -> dict[str, Any]:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    policy = policies.load(policy_name, K, static_replicas=trace.peak_replicas)
    if min_replicas is not None and policy.static_replicas is None:
        # Ablation only: the same rule with another floor (e.g. a baseline given phaselens's warm pod).
        policy = dataclasses.replace(policy, spec=dataclasses.replace(policy.spec, min_replicas=min_replicas))
    initial = policy.static_replicas or policy.spec.min_replicas
    cfg = config(port_base)
    fl = fleet_mod.Fleet(out, cfg)
    state = hpa.HpaState()
    decisions: list[tuple[int, int]] = []
    host_load: list[float] = []  # the host's 1-min load average per sync period
    client: procs.Proc | None = None
    t_begin = time.time()
    try:
        fl.start(initial)
        time.sleep(3.0)  # first scrapes and rule evaluations
        phases = traces.phases(trace, K)
        client = procs.start(
            "client", [sys.executable, str(HERE / "client.py"), fl.base_url, str(out / "ground_truth.jsonl"),
                       str(seed), *phases],
            out / "client.log",
        )  # fmt: skip
        sync = HPA_SYNC_S / K
        next_sync = time.time() + sync
        with (out / "controller.jsonl").open("w") as log:
            while client.alive:
                fl.poll_ready()
                now = time.time()
                if now >= next_sync:
                    next_sync += sync
                    # the host's 1-min load average: mocker ITL is real time, so a busy shared
                    # host shows up as ITL misses that no policy caused
                    host_load.append(os.getloadavg()[0])
                    if policy.static_replicas is None:
                        sync_once(policy, fl, state, now, decisions, log, host_load[-1])
                time.sleep(0.1)
        if client.popen.returncode != 0:
            raise RuntimeError(f"load client failed:\n{client.log_tail()}")
    finally:
        if client is not None:
            procs.stop(client)
        fl.stop()
        fl.dump()
        (out / "events.json").write_text(json.dumps(fl.events))
    if policy.static_replicas is not None:
        decisions = [(initial, initial)]
    sc = score_mod.score(
        out / "ground_truth.jsonl", fl.lifetimes(), decisions,
        k=K, window_sim_s=WINDOW_S, warmup_sim_s=trace.warmup_s, length_sim_s=trace.seconds,
        steps_sim_s=trace.steps, slo_ttft=SLO_TTFT_S, slo_itl=SLO_ITL_S,
    )  # fmt: skip
    result: dict[str, Any] = {
        "trace": trace.name,
        "policy": policy_name,
        "policy_source": policy.source,
        "min_replicas": policy.spec.min_replicas,
        "min_replicas_override": min_replicas if policy.static_replicas is None else None,
        "seed": seed,
        "k": K,
        "wall_s": round(time.time() - t_begin, 1),
        # Mocker ITL is real time: on a busy shared host every policy's ITL suffers (docs/fleet.md).
        "host_loadavg_mean": round(sum(host_load) / len(host_load), 2) if host_load else None,
        "host_loadavg_max": round(max(host_load), 2) if host_load else None,
        **sc.as_dict(),
    }
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    try:
        import plot

        plot.plot_run(out, trace, K, WINDOW_S)
    except ImportError as exc:  # matplotlib is in the `report` extra
        print(f"[fleet] no plot: {exc}", flush=True)
    return result


def fmt_row(r: dict[str, Any]) -> str:
    react = ", ".join("-" if x is None else f"{x:.0f}" for x in r["reaction_s"]) or "n/a"
    meets = "yes" if r["meets_slo"] else "no"
    warmup = traces.TRACES[r["trace"]].warmup_s
    # TTFT alone: queueing, which the autoscaler controls; ITL also moves with the host's load
    ttft = min((w["ttft"] for w in r["windows"] if w["start_sim_s"] >= warmup and w["requests"]), default=1.0)
    load = r.get("host_loadavg_mean")
    host = "n/a" if load is None else f"{load:.0f} / {r['host_loadavg_max']:.0f}"
    name = r["policy"] + (f" (min {r['min_replicas_override']})" if r.get("min_replicas_override") else "")
    return (
        f"| {r['trace']} | {name} | {meets} | {float(r['min_joint_after_warmup']):.3f} | {ttft:.3f} "
        f"| {float(r['replica_seconds']):.0f} | {react} | {r['direction_changes']} | {r['max_replicas']} "
        f"| {r['failed']}/{r['requests']} | {host} |"
    )


TABLE_HEAD = (
    "| trace | policy | meets SLO | worst window (joint) | worst TTFT window | replica-seconds | reaction (s) "
    "| direction changes | max replicas | failed/requests | host load (mean / max) |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def table(root: Path) -> str:
    rows = [json.loads(p.read_text()) for p in sorted(root.glob("*/*/result.json"))]
    order = {n: i for i, n in enumerate(policies.POLICIES)}
    trace_order = {n: i for i, n in enumerate(traces.TRACES)}
    rows.sort(key=lambda r: (trace_order.get(r["trace"], 99), order.get(r["policy"], 99)))
    return "\n".join([TABLE_HEAD, *(fmt_row(r) for r in rows)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", action="append", choices=sorted(traces.TRACES))
    ap.add_argument("--policy", action="append", choices=policies.POLICIES)
    ap.add_argument("--matrix", action="store_true", help="every trace (but ci-step) x every policy")
    ap.add_argument("--out", type=Path, default=HERE / "out", help="output folder (made absolute)")
    ap.add_argument("--port-base", type=int, default=PORT_BASE)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-replicas", type=int, metavar="N",
                    help="ablation: override every autoscaled policy's minReplicas (result.json records it)")
    ap.add_argument("--table", type=Path, metavar="OUT", help="print the table of the runs under OUT and exit")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless every run served every request and every autoscaler scaled up after "
                         "the load step (CI)")  # fmt: skip
    args = ap.parse_args(argv)
    # A CI timeout's SIGTERM unwinds like Ctrl-C: every run's `finally` stops its processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.out = args.out.resolve()  # Prometheus' config names files: relative paths would be its own
    if args.table:
        print(table(args.table))
        return 0
    trace_names = [t for t in traces.TRACES if t != "ci-step"] if args.matrix else (args.trace or ["step"])
    policy_names = list(policies.POLICIES) if args.matrix else (args.policy or ["phaselens"])
    dynamo.install()
    dynamo.make_model()
    if shutil.which("prometheus") is None:
        sys.exit("fleet: the `prometheus` binary is missing (Debian package prometheus: make system-deps)")
    problems: list[str] = []
    for t in trace_names:
        for p in policy_names:
            print(f"[fleet] {t} / {p} ...", flush=True)
            r = run_one(traces.TRACES[t], p, args.out / t / p, args.port_base, args.seed, args.min_replicas)
            print(fmt_row(r), f"wall {r['wall_s']} s", flush=True)
            problems += check(r)
    print(table(args.out))
    if args.check and problems:
        print("[fleet] CHECK FAILED:\n  " + "\n  ".join(problems), flush=True)
        return 1
    return 0


def check(r: dict[str, Any]) -> list[str]:
    """What a CI run must show: every request served, and an autoscaler that reacted to the step."""
    name = f"{r['trace']}/{r['policy']}"
    out = []
    # A baseline that removes replicas under load can lose a request in Dynamo's drain race (the
    # router picks a worker that is deregistering): a measured outcome, shown in the table. More
    # than 1 % lost means the harness is broken.
    if r["requests"] < 100 or r["failed"] > 0.01 * r["requests"]:
        out.append(f"{name}: {r['failed']} of {r['requests']} requests failed")
    if r["policy"] != "static" and (not r["reaction_s"] or r["reaction_s"][0] is None):
        out.append(f"{name}: no replica became ready after the load step")
    return out


if __name__ == "__main__":
    sys.exit(main())
