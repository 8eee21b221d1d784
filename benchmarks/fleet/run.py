"""Fleet lab: closed-loop autoscaling of a real Dynamo fleet (frontend + KV router + mocker
workers, a phaselens sidecar per pod, a real Prometheus), one run per (trace, policy).

  python benchmarks/fleet/run.py --trace step --policy phaselens --policy production-stack
  python benchmarks/fleet/run.py --matrix                 # every trace x every policy
  python benchmarks/fleet/run.py --table OUT              # the markdown table of the runs in OUT
  python benchmarks/fleet/run.py --mode pd --trace mix-shift --policy phaselens   # P/D fleet

Output (git-ignored): benchmarks/fleet/out/<trace>/<policy>/ with ground_truth.jsonl,
controller.jsonl (one line per HPA sync), workers.json, result.json, run.png; the Dynamo,
sidecar and Prometheus logs. See docs/fleet.md for the set-up, the time scale and the table.

`--mode pd`: a prefill pool and a decode pool behind the same frontend (its KV router queues
prefill work: --router-queue-threshold), each pool scaled by its own controller (HPA or baseline
rule per pool), output under benchmarks/fleet/out/pd/ unless --out says otherwise.
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
from collections.abc import Mapping
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
# The load client's phases run on the trace's clock (carry-over). Runs without this field started
# each phase once the previous phase's requests had finished (docs/fleet.md, "Scores").
CLIENT = "open-loop, phases on the trace clock"

WORKER = dynamo.MockerSpec(
    name="template",
    system_port=0,
    block_size=16,
    num_gpu_blocks=256,
    max_num_seqs=16,
    max_num_batched_tokens=2048,
    speedup_ratio=1.0,
)


# P/D: the decode pool's workers are the aggregated lab's worker in decode mode. The prefill
# workers compute prefill 1 / 0.15 times slower than the mocker's default: with its default speed
# one prefill worker outruns every trace, so the prefill pool would never need a second replica
# (measured: ~4 prefill-heavy requests/s per prefill worker at 0.15; docs/fleet.md "P/D fleet").
PREFILL_SPEEDUP = 0.15
# Dynamo's KV-router queue: a request waits in the frontend until a prefill worker has less than
# this fraction of max_num_batched_tokens in flight, so the prefill queue lives in the router.
ROUTER_QUEUE_THRESHOLD = 1.0
PD_WORKERS = {
    "prefill": dataclasses.replace(WORKER, mode="prefill", speedup_ratio=PREFILL_SPEEDUP),
    "decode": dataclasses.replace(WORKER, mode="decode"),
}
MODES = ("aggregated", "pd")


def config(port_base: int, mode: str = "aggregated") -> fleet_mod.FleetConfig:
    pd = mode == "pd"
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
        pool_workers=PD_WORKERS if pd else {},
        frontend_extra=("--router-queue-threshold", str(ROUTER_QUEUE_THRESHOLD)) if pd else (),
    )


def sync_once(
    policy: policies.Policy, fl: fleet_mod.Fleet, state: hpa.HpaState, now: float,
    decisions: list[tuple[int, int]], log: Any, loadavg: float, role: str = fleet_mod.AGGREGATED,
) -> None:
    """One HPA sync of one pool: read the metrics, decide, scale, log one line."""
    current = len(fl.active(role))
    try:
        totals = policy.totals(fl.prom_url, current, fl.ready_count(role))
    except (OSError, RuntimeError, ValueError) as exc:
        totals = {}
        log.write(json.dumps({"t": now, "event": "query_error", "error": str(exc)[:200]}) + "\n")
    proposal = hpa.proposal_from_totals(policy.spec, totals, current)
    d = hpa.decide(policy.spec, state, now, current, current if proposal is None else proposal)
    decisions.append((current, d.desired))
    if d.desired != current:
        fl.scale_to(d.desired, role)
    log.write(json.dumps({
        "t": now, "pool": role, "current": current, "ready": fl.ready_count(role), "totals": totals,
        "proposal": d.proposal, "stabilized": d.stabilized, "desired": d.desired, "loadavg": round(loadavg, 2),
    }) + "\n")  # fmt: skip
    log.flush()


def pool_policies(
    trace: traces.Trace, policy_name: str, roles: tuple[str, ...], min_replicas: int | None = None,
) -> dict[str, policies.Policy]:
    """One policy per pool: the aggregated pool's, or the prefill pool's and the decode pool's."""
    static = dict(zip(policies.PD_ROLES, trace.peak_pd, strict=True))
    out = {}
    for role in roles:
        size = trace.peak_replicas if role == fleet_mod.AGGREGATED else static[role]
        policy = policies.load(policy_name, K, static_replicas=size, role=role)
        if min_replicas is not None and policy.static_replicas is None:
            # Ablation only: the same rule with another floor (e.g. a baseline given phaselens's warm pod).
            policy = dataclasses.replace(policy, spec=dataclasses.replace(policy.spec, min_replicas=min_replicas))
        out[role] = policy
    return out


def run_one(
    trace: traces.Trace, policy_name: str, out: Path, port_base: int, seed: int, min_replicas: int | None = None,
    mode: str = "aggregated",
) -> dict[str, Any]:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cfg = config(port_base, mode)
    pols = pool_policies(trace, policy_name, cfg.roles, min_replicas)
    initial = {role: p.static_replicas or p.spec.min_replicas for role, p in pols.items()}
    fl = fleet_mod.Fleet(out, cfg)
    states = {role: hpa.HpaState() for role in cfg.roles}
    by_pool: dict[str, list[tuple[int, int]]] = {role: [] for role in cfg.roles}
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
                    for role, p in pols.items():
                        if p.static_replicas is None:
                            sync_once(p, fl, states[role], now, by_pool[role], log, host_load[-1], role)
                time.sleep(0.1)
        if client.popen.returncode != 0:
            raise RuntimeError(f"load client failed:\n{client.log_tail()}")
    finally:
        if client is not None:
            procs.stop(client)
        fl.stop()
        fl.dump()
        (out / "events.json").write_text(json.dumps(fl.events))
    for role, p in pols.items():
        if p.static_replicas is not None:
            by_pool[role] = [(initial[role], initial[role])]
    result = _result(trace, policy_name, pols, fl.lifetimes(), by_pool, out, min_replicas, seed, mode)
    result["wall_s"] = round(time.time() - t_begin, 1)
    # Mocker ITL is real time: on a busy shared host every policy's ITL suffers (docs/fleet.md).
    result["host_loadavg_mean"] = round(sum(host_load) / len(host_load), 2) if host_load else None
    result["host_loadavg_max"] = round(max(host_load), 2) if host_load else None
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    try:
        import plot

        plot.plot_run(out, trace, K, WINDOW_S)
    except ImportError as exc:  # matplotlib is in the `report` extra
        print(f"[fleet] no plot: {exc}", flush=True)
    return result


def _result(
    trace: traces.Trace, policy_name: str, pols: Mapping[str, policies.Policy], workers: list[dict[str, Any]],
    by_pool: Mapping[str, list[tuple[int, int]]], out: Path, min_replicas: int | None, seed: int, mode: str,
) -> dict[str, Any]:
    """result.json of one run: the aggregated lab's fields, plus `pools` in P/D."""
    policy = next(iter(pols.values()))
    pd = mode == "pd"
    sc = score_mod.score(
        out / "ground_truth.jsonl", workers, [] if pd else by_pool[fleet_mod.AGGREGATED],
        k=K, window_sim_s=WINDOW_S, warmup_sim_s=trace.warmup_s, length_sim_s=trace.seconds,
        steps_sim_s=trace.steps, slo_ttft=SLO_TTFT_S, slo_itl=SLO_ITL_S,
    )  # fmt: skip
    pools: dict[str, score_mod.PoolScore] = {}
    if pd:
        _, t0 = score_mod.load_ground_truth(out / "ground_truth.jsonl")
        assert t0 is not None  # score() has checked it
        pools = score_mod.pool_scores(workers, by_pool, t0=t0, length_sim_s=trace.seconds, k=K,
                                      steps_sim_s=trace.steps)  # fmt: skip
        sc = dataclasses.replace(
            sc,
            direction_changes=sum(p.direction_changes for p in pools.values()),
            max_replicas=sum(p.max_replicas for p in pools.values()),
        )
    result: dict[str, Any] = {
        "trace": trace.name,
        "policy": policy_name,
        "mode": mode,
        "policy_source": "; ".join(sorted({p.source for p in pols.values()})),
        "min_replicas": policy.spec.min_replicas,
        "min_replicas_override": min_replicas if policy.static_replicas is None else None,
        "seed": seed,
        "k": K,
        "client": CLIENT,
        **sc.as_dict(),
    }
    if pd:
        result["pools"] = {role: dataclasses.asdict(p) for role, p in pools.items()}
        result["prefill_speedup_ratio"] = PREFILL_SPEEDUP
        result["router_queue_threshold"] = ROUTER_QUEUE_THRESHOLD
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


def _pools(r: dict[str, Any], fmt: Any) -> str:
    """One cell: the prefill pool's value, then the decode pool's (P / D)."""
    return " / ".join(fmt(r["pools"][role]) for role in policies.PD_ROLES)


def fmt_row_pd(r: dict[str, Any]) -> str:
    """A P/D run: per pool (prefill / decode) replica-seconds, reaction, reversals and peak size."""
    meets = "yes" if r["meets_slo"] else "no"
    warmup = traces.TRACES[r["trace"]].warmup_s
    ttft = min((w["ttft"] for w in r["windows"] if w["start_sim_s"] >= warmup and w["requests"]), default=1.0)
    load = r.get("host_loadavg_mean")
    host = "n/a" if load is None else f"{load:.0f} / {r['host_loadavg_max']:.0f}"

    def react(p: dict[str, Any]) -> str:
        return ", ".join("-" if x is None else f"{x:.0f}" for x in p["reaction_s"]) or "n/a"

    rs = _pools(r, lambda p: f"{p['replica_seconds']:.0f}")
    return (
        f"| {r['trace']} | {r['policy']} | {meets} | {float(r['min_joint_after_warmup']):.3f} | {ttft:.3f} "
        f"| {float(r['replica_seconds']):.0f} ({rs}) | {_pools(r, react)} "
        f"| {_pools(r, lambda p: str(p['direction_changes']))} | {_pools(r, lambda p: str(p['max_replicas']))} "
        f"| {r['failed']}/{r['requests']} | {host} |"
    )


TABLE_HEAD_PD = (
    "| trace | policy | meets SLO | worst window (joint) | worst TTFT window | replica-seconds (P / D) "
    "| reaction (s), P / D | direction changes P / D | max replicas P / D | failed/requests "
    "| host load (mean / max) |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
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
    agg = [r for r in rows if r.get("mode", "aggregated") != "pd"]
    pd = [r for r in rows if r.get("mode") == "pd"]
    parts = []
    if agg or not pd:
        parts += [TABLE_HEAD, *(fmt_row(r) for r in agg)]
    if pd:
        parts += ([""] if agg else []) + [TABLE_HEAD_PD, *(fmt_row_pd(r) for r in pd)]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", action="append", choices=sorted(traces.TRACES))
    ap.add_argument("--policy", action="append", choices=policies.POLICIES)
    ap.add_argument("--matrix", action="store_true", help="every trace (but ci-step) x every policy")
    ap.add_argument("--mode", choices=MODES, default="aggregated",
                    help="aggregated: one pool (default); pd: a prefill pool and a decode pool, each scaled "
                         "on its own (docs/fleet.md, 'P/D fleet')")  # fmt: skip
    ap.add_argument("--out", type=Path, help="output folder (made absolute; default benchmarks/fleet/out, "
                    "benchmarks/fleet/out/pd with --mode pd)")  # fmt: skip
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
    if args.out is None:
        args.out = HERE / "out" / ("pd" if args.mode == "pd" else "")
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
            r = run_one(traces.TRACES[t], p, args.out / t / p, args.port_base, args.seed, args.min_replicas,
                        args.mode)  # fmt: skip
            print((fmt_row_pd if args.mode == "pd" else fmt_row)(r), f"wall {r['wall_s']} s", flush=True)
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
