"""`phaselens plan PLAN.yaml`: a one-page, three-layer capacity plan (nodes, scheduler, autoscalers).

Pure computation in functions (`load_plan`, `check_refusals`, `warm_pool_pods`, `break_even`,
`build_plan`, `render`); `main` only reads the file and prints. Formulas are in docs/autoscaling.md.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

EXIT_OK = 0
EXIT_REFUSED = 2

# Names that measure "a kernel was resident" or "HBM is allocated", never queued work.
GPU_UTILIZATION_MARKERS = (
    "gpu_util", "gpu_utilization", "dcgm_fi_dev_gpu_util", "dcgm_fi_prof_gr_engine_active",
    "dcgm_fi_prof_sm_active", "dcgm_fi_dev_fb_used", "dcgm_fi_dev_fb_free", "gpu_memory",
    "memory_used", "nvidia_gpu_duty_cycle", "nvidia_gpu_memory", "duty_cycle",
)
GPU_UNDERUTILIZED_POLICIES = ("WhenEmptyOrUnderutilized", "WhenUnderutilized")
DEFAULT_PREFILL_SIGNAL = "phaselens_prefill_backlog_seconds"
DEFAULT_DECODE_SIGNAL = "phaselens_decode_saturation_ratio"


class PlanError(ValueError):
    """The plan file is malformed (exit 1)."""


class PlanRefused(ValueError):
    """The plan asks for something that breaks GPU serving (exit 2); the message says why."""


@dataclass(frozen=True, slots=True)
class NodeGroup:
    name: str
    gpu_type: str
    gpus_per_node: int
    count: int
    nvlink_domain_gpus: int


@dataclass(frozen=True, slots=True)
class PoolShape:
    tensor_parallel: int
    pipeline_parallel: int

    @property
    def gpus_per_replica(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    node_groups: tuple[NodeGroup, ...]
    provisioner: str  # "karpenter" | "static"
    node_provisioning_seconds: float
    model_load_seconds: float
    prefill: PoolShape
    decode: PoolShape
    arrival_rate_per_second: float
    burst_factor: float
    isl_tokens: float
    osl_tokens: float
    prefix_hit_ratio: float
    prefill_tokens_per_second_per_pod: float
    decode_concurrency_per_pod: float
    target_utilization: float
    ttft_p99_seconds: float
    itl_p99_seconds: float
    goodput_target_ratio: float
    prefill_signal: str
    decode_signal: str
    consolidation_policy: str
    consolidate_after: str
    gang_scheduling: bool
    break_even_multiple: float


@dataclass(frozen=True, slots=True)
class PoolSizing:
    role: str
    per_pod_requests_per_second: float
    steady_pods: int
    warm_pods: int
    signal: str
    hpa_target: str


@dataclass(frozen=True, slots=True)
class PlanResult:
    plan: Plan
    cold_start_seconds: float
    prefill_service_seconds: float
    ttft_slack_seconds: float
    prefill: PoolSizing
    decode: PoolSizing
    break_even_pod_seconds: float
    break_even_node_seconds: float
    warnings: tuple[str, ...]


# ---------------------------------------------------------------- parsing


def _get(section: dict[str, Any], key: str, kind: type, default: Any = None, where: str = "") -> Any:
    value = section.get(key, default)
    if value is None:
        raise PlanError(f"{where}{key}: required")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise PlanError(f"{where}{key}: expected {kind.__name__}, got {value!r}")
    if isinstance(value, int | float) and value < 0:
        raise PlanError(f"{where}{key}: must not be negative, got {value!r}")
    return value


def _section(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise PlanError(f"{key}: expected a mapping")
    return value


def _shape(section: dict[str, Any], where: str) -> PoolShape:
    tp = _get(section, "tensor_parallel", int, 1, where)
    pp = _get(section, "pipeline_parallel", int, 1, where)
    if tp < 1 or pp < 1:
        raise PlanError(f"{where}tensor_parallel/pipeline_parallel must be >= 1")
    return PoolShape(tp, pp)


def parse_plan(doc: object) -> Plan:
    """Validate a parsed PLAN.yaml document into a Plan (PlanError on bad input)."""
    if not isinstance(doc, dict):
        raise PlanError("the plan must be a YAML mapping")
    cluster, workload = _section(doc, "cluster"), _section(doc, "workload")
    slo, autoscaling = _section(doc, "slo"), _section(doc, "autoscaling")
    karpenter, scheduler = _section(doc, "karpenter"), _section(doc, "scheduler")
    raw_nodes = cluster.get("node_groups")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise PlanError("cluster.node_groups: a non-empty list is required")
    groups = []
    for i, raw in enumerate(raw_nodes):
        if not isinstance(raw, dict):
            raise PlanError(f"cluster.node_groups[{i}]: expected a mapping")
        where = f"cluster.node_groups[{i}]."
        gpus = _get(raw, "gpus_per_node", int, None, where)
        groups.append(NodeGroup(
            name=_get(raw, "name", str, f"group-{i}", where),
            gpu_type=_get(raw, "gpu_type", str, None, where),
            gpus_per_node=gpus,
            count=_get(raw, "count", int, 1, where),
            nvlink_domain_gpus=_get(raw, "nvlink_domain_gpus", int, gpus, where),
        ))
    provisioner = _get(cluster, "provisioner", str, "karpenter", "cluster.")
    if provisioner not in ("karpenter", "static"):
        raise PlanError("cluster.provisioner: 'karpenter' or 'static'")
    w = "workload."
    plan = Plan(
        name=_get(doc, "name", str, "phaselens"),
        node_groups=tuple(groups),
        provisioner=provisioner,
        node_provisioning_seconds=_get(cluster, "node_provisioning_seconds", float, 300.0, "cluster."),
        model_load_seconds=_get(workload, "model_load_seconds", float, None, w),
        prefill=_shape(_section(workload, "prefill"), "workload.prefill."),
        decode=_shape(_section(workload, "decode"), "workload.decode."),
        arrival_rate_per_second=_get(workload, "arrival_rate_per_second", float, None, w),
        burst_factor=_get(workload, "burst_factor", float, 1.0, w),
        isl_tokens=_get(workload, "isl_tokens", float, None, w),
        osl_tokens=_get(workload, "osl_tokens", float, None, w),
        prefix_hit_ratio=_get(workload, "prefix_hit_ratio", float, 0.0, w),
        prefill_tokens_per_second_per_pod=_get(workload, "prefill_tokens_per_second_per_pod", float, None, w),
        decode_concurrency_per_pod=_get(workload, "decode_concurrency_per_pod", float, None, w),
        target_utilization=_get(workload, "target_utilization", float, 0.8, w),
        ttft_p99_seconds=_get(slo, "ttft_p99_seconds", float, None, "slo."),
        itl_p99_seconds=_get(slo, "itl_p99_seconds", float, None, "slo."),
        goodput_target_ratio=_get(slo, "goodput_target_ratio", float, 0.95, "slo."),
        prefill_signal=_get(autoscaling, "prefill_signal", str, DEFAULT_PREFILL_SIGNAL, "autoscaling."),
        decode_signal=_get(autoscaling, "decode_signal", str, DEFAULT_DECODE_SIGNAL, "autoscaling."),
        consolidation_policy=_get(karpenter, "consolidation_policy", str, "WhenEmpty", "karpenter."),
        consolidate_after=_get(karpenter, "consolidate_after", str, "1h", "karpenter."),
        gang_scheduling=_get(scheduler, "gang_scheduling", bool, True, "scheduler."),
        break_even_multiple=_get(autoscaling, "break_even_multiple", float, 1.0, "autoscaling."),
    )
    if not 0 < plan.target_utilization < 1:
        raise PlanError("workload.target_utilization must be in (0, 1)")
    if not 0 <= plan.prefix_hit_ratio < 1:
        raise PlanError("workload.prefix_hit_ratio must be in [0, 1)")
    if plan.burst_factor < 1:
        raise PlanError("workload.burst_factor must be >= 1")
    for key in ("prefill_tokens_per_second_per_pod", "decode_concurrency_per_pod", "isl_tokens", "osl_tokens",
                "ttft_p99_seconds", "itl_p99_seconds"):
        if getattr(plan, key) <= 0:
            raise PlanError(f"{key} must be > 0")
    return plan


def load_plan(path: Path) -> Plan:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlanError(f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise PlanError(f"{path} is not valid YAML: {exc}") from exc
    return parse_plan(doc)


# ---------------------------------------------------------------- refusals


def _is_gpu_utilization_signal(name: str) -> bool:
    lowered = name.lower()
    return any(marker in lowered for marker in GPU_UTILIZATION_MARKERS)


def check_refusals(plan: Plan) -> list[str]:
    """Every reason this plan must not be applied; empty when it is acceptable."""
    reasons = []
    for role, signal in (("prefill", plan.prefill_signal), ("decode", plan.decode_signal)):
        if _is_gpu_utilization_signal(signal):
            reasons.append(
                f"{role} pool scales on {signal!r}: GPU utilization / GPU memory is not a scaling signal "
                "(utilization reads ~100% while one kernel is resident, and vLLM pre-allocates HBM "
                "at start); "
                f"use {DEFAULT_PREFILL_SIGNAL if role == 'prefill' else DEFAULT_DECODE_SIGNAL}")
    if plan.provisioner == "karpenter" and plan.consolidation_policy in GPU_UNDERUTILIZED_POLICIES:
        reasons.append(
            f"karpenter.consolidation_policy {plan.consolidation_policy} on a GPU pool: Karpenter would "
            "evict serving pods that hold loaded models and warm KV caches to repack nodes; use WhenEmpty with "
            "consolidate_after >= the cold-start time")
    for role, shape in (("prefill", plan.prefill), ("decode", plan.decode)):
        if shape.gpus_per_replica > 1 and not plan.gang_scheduling:
            reasons.append(
                f"{role} pool uses TP={shape.tensor_parallel} x PP={shape.pipeline_parallel} without gang "
                "scheduling: a partly placed replica holds GPUs and serves nothing; enable "
                "scheduler.gang_scheduling (KAI PodGroup minMember)")
    total_nodes = sum(group.count for group in plan.node_groups)
    gpu_types = {group.gpu_type for group in plan.node_groups}
    total_gpus = sum(group.count * group.gpus_per_node for group in plan.node_groups)
    if plan.provisioner == "karpenter" and total_nodes == 1 and total_gpus == 1 and len(gpu_types) == 1:
        reasons.append(
            "Karpenter for a single node with a single GPU of one type: there is nothing to provision, "
            "choose between or consolidate; run a static node and size the pods only")
    return reasons


# ---------------------------------------------------------------- formulas


def prefill_capacity_rps(plan: Plan) -> float:
    """Requests/s one prefill pod can prefill: V_P / uncached prompt tokens per request."""
    return plan.prefill_tokens_per_second_per_pod / (plan.isl_tokens * (1 - plan.prefix_hit_ratio))


def decode_capacity_rps(plan: Plan) -> float:
    """Requests/s one decode pod completes (Little's law): concurrency / (OSL x ITL at the SLO)."""
    return plan.decode_concurrency_per_pod / (plan.osl_tokens * plan.itl_p99_seconds)


def steady_pods(arrival_rps: float, per_pod_rps: float, target_utilization: float) -> int:
    """Pods that keep utilization at the target (the queueing knee) at the steady arrival rate."""
    return max(1, math.ceil(arrival_rps / (per_pod_rps * target_utilization) - 1e-9))


def warm_pool_pods(
    burst_rps: float, steady: int, per_pod_rps: float, target_utilization: float,
    cold_start_seconds: float, slack_seconds: float,
) -> int:
    """Idle pods to keep running so a burst meets the TTFT SLO while new pods cold-start.

    During one cold start T the burst brings (burst - steady*rho*c)*T requests more than the running
    pods take at their target load; the running pods can additionally absorb steady*c*slack of them
    by letting each wait up to the TTFT slack. Every warm pod serves c*T requests in that time:
        warm = ceil(max(0, (burst - N*rho*c)*T - N*c*slack) / (c*T))
    """
    if cold_start_seconds <= 0:
        return 0
    excess = (burst_rps - steady * target_utilization * per_pod_rps) * cold_start_seconds
    absorbed = steady * per_pod_rps * max(0.0, slack_seconds)
    uncovered = excess - absorbed
    if uncovered <= 0:
        return 0
    return math.ceil(uncovered / (per_pod_rps * cold_start_seconds) - 1e-9)


def break_even(cold_start_seconds: float, multiple: float) -> float:
    """Queued work (seconds to drain at current capacity) above which a new GPU pays off.

    A GPU that needs T seconds to start only serves the work still queued after T; below
    multiple*T the running pods drain the queue first and the new GPU is pure cost.
    """
    return multiple * cold_start_seconds


def build_plan(plan: Plan) -> PlanResult:
    reasons = check_refusals(plan)
    if reasons:
        raise PlanRefused("; ".join(reasons))
    warnings = []
    cold_start = plan.node_provisioning_seconds + plan.model_load_seconds
    uncached = plan.isl_tokens * (1 - plan.prefix_hit_ratio)
    prefill_service = uncached / plan.prefill_tokens_per_second_per_pod
    slack = plan.ttft_p99_seconds - prefill_service
    if slack <= 0:
        warnings.append(f"prefill alone takes {prefill_service:.3f} s >= the TTFT P99 SLO "
                        f"{plan.ttft_p99_seconds} s: no amount of scaling meets it; use more TP for prefill")
    burst = plan.arrival_rate_per_second * plan.burst_factor
    rho = plan.target_utilization
    pools = []
    for role, per_pod, signal, target in (
        ("prefill", prefill_capacity_rps(plan), plan.prefill_signal, f"{max(slack, 0.1):.2f}"),
        ("decode", decode_capacity_rps(plan), plan.decode_signal, f"{rho:.2f}"),
    ):
        steady = steady_pods(plan.arrival_rate_per_second, per_pod, rho)
        # Only the prefill pool has TTFT slack to queue in; a decode burst must be absorbed at once.
        role_slack = slack if role == "prefill" else 0.0
        warm = warm_pool_pods(burst, steady, per_pod, rho, cold_start, role_slack)
        pools.append(PoolSizing(role, per_pod, steady, warm, signal, target))
    for group in plan.node_groups:
        for shape, role in ((plan.prefill, "prefill"), (plan.decode, "decode")):
            if shape.tensor_parallel > group.nvlink_domain_gpus:
                warnings.append(f"{role} TP={shape.tensor_parallel} exceeds the NVLink domain "
                                f"({group.nvlink_domain_gpus} GPUs) of {group.name}: TP traffic crosses "
                                "the network")
    return PlanResult(
        plan=plan, cold_start_seconds=cold_start, prefill_service_seconds=prefill_service,
        ttft_slack_seconds=slack, prefill=pools[0], decode=pools[1],
        break_even_pod_seconds=break_even(plan.model_load_seconds, plan.break_even_multiple),
        break_even_node_seconds=break_even(cold_start, plan.break_even_multiple),
        warnings=tuple(warnings),
    )


# ---------------------------------------------------------------- rendering


def nodepool_yaml(result: PlanResult) -> str:
    plan = result.plan
    gpu_types = sorted({group.gpu_type for group in plan.node_groups})
    gpus = (result.prefill.steady_pods + result.prefill.warm_pods) * plan.prefill.gpus_per_replica + (
        result.decode.steady_pods + result.decode.warm_pods) * plan.decode.gpus_per_replica
    doc = {
        "apiVersion": "karpenter.sh/v1", "kind": "NodePool",
        "metadata": {"name": f"{plan.name}-gpu"},
        "spec": {
            "template": {
                "metadata": {"labels": {"phaselens.io/accelerator": "nvidia-gpu"}},
                "spec": {
                    "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "gpu"},
                    "requirements": [{"key": "phaselens.io/gpu-type", "operator": "In", "values": gpu_types}],
                    "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
                    "expireAfter": "Never",
                },
            },
            "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": plan.consolidate_after},
            # 2x the planned peak, so a bad autoscaler cannot buy the whole region.
            "limits": {"nvidia.com/gpu": str(2 * gpus)},
        },
    }
    return yaml.safe_dump(doc, sort_keys=False).rstrip()


def kai_yaml(result: PlanResult) -> str:
    plan = result.plan
    docs: list[dict[str, Any]] = [{
        "apiVersion": "scheduling.run.ai/v2", "kind": "Queue", "metadata": {"name": f"{plan.name}-serving"},
        "spec": {"parentQueue": "inference",
                 "resources": {"gpu": {"quota": float(sum(
                     (p.steady_pods + p.warm_pods) * s.gpus_per_replica
                     for p, s in ((result.prefill, plan.prefill), (result.decode, plan.decode)))),
                     "limit": -1, "overQuotaWeight": 1},
                     "cpu": {"quota": -1, "limit": -1, "overQuotaWeight": 1},
                     "memory": {"quota": -1, "limit": -1, "overQuotaWeight": 1}}},
    }]
    for role, shape in (("prefill", plan.prefill), ("decode", plan.decode)):
        if shape.gpus_per_replica > 1:
            docs.append({
                "apiVersion": "scheduling.run.ai/v2alpha2", "kind": "PodGroup",
                "metadata": {"name": f"{plan.name}-{role}-replica"},
                "spec": {"minMember": shape.pipeline_parallel, "queue": f"{plan.name}-serving",
                         "priorityClassName": "inference",
                         "topologyConstraint": {"requiredTopologyLevel": "nvidia.com/gpu.clique",
                                                "topology": "gpu-topology"}},
            })
    return "\n---\n".join(yaml.safe_dump(d, sort_keys=False).rstrip() for d in docs)


def render(result: PlanResult) -> str:
    plan = result.plan
    p, d = result.prefill, result.decode
    lines = [
        f"phaselens plan: {plan.name}",
        "",
        "== Inputs",
        f"arrival {plan.arrival_rate_per_second:g} req/s, burst x{plan.burst_factor:g}; "
        f"ISL {plan.isl_tokens:g} (prefix hit {plan.prefix_hit_ratio:.0%}), OSL {plan.osl_tokens:g}; "
        f"SLO TTFT P99 {plan.ttft_p99_seconds:g} s, "
        f"ITL P99 {plan.itl_p99_seconds:g} s, goodput >= {plan.goodput_target_ratio:.0%}",
        f"cold start {result.cold_start_seconds:g} s = node {plan.node_provisioning_seconds:g} s + "
        f"model load {plan.model_load_seconds:g} s; prefill service {result.prefill_service_seconds:.3f} s, "
        f"TTFT slack {result.ttft_slack_seconds:.3f} s",
        "",
        "== Layer 1: nodes " + ("(Karpenter NodePool)" if plan.provisioner == "karpenter" else "(static)"),
        nodepool_yaml(result) if plan.provisioner == "karpenter" else
        "static nodes: no NodePool; label them phaselens.io/accelerator=nvidia-gpu and taint nvidia.com/gpu",
        "",
        "== Layer 2: scheduler (KAI Scheduler queue" + (", gang PodGroups)" if max(
            plan.prefill.gpus_per_replica, plan.decode.gpus_per_replica) > 1 else ")"),
        kai_yaml(result),
        "",
        "== Layer 3: autoscalers (two independent loops)",
    ]
    for pool in (p, d):
        lines.append(
            f"{pool.role:8s} signal {pool.signal} (AverageValue {pool.hpa_target} per pod); capacity "
            f"{pool.per_pod_requests_per_second:.3f} req/s/pod; steady {pool.steady_pods} pods, warm pool "
            f"{pool.warm_pods} pods (minReplicas {pool.steady_pods + pool.warm_pods})")
    lines += [
        "behavior: scale-up at once, at most +4 pods or x2 / 60 s; scale-down 1 pod / 300 s after a 300 s window; "
        "held while pool pods are Pending",
        f"break-even: add a pod on a warm node only when queued work > {result.break_even_pod_seconds:g} s "
        f"to drain; add a GPU node only when > {result.break_even_node_seconds:g} s "
        f"({plan.break_even_multiple:g} x cold start)",
        "",
        "== Watch these five",
        "1 sum(phaselens_prefill_backlog_seconds{role=\"prefill\"})       prefill autoscaler input",
        "2 sum(phaselens_decode_saturation_ratio{role=\"decode\"})        decode autoscaler input",
        "3 max(phaselens_ttft_seconds{percentile=\"99\"})                 against the TTFT SLO",
        "4 phaselens:slo_attainment_ratio:pool{slo=\"joint\"}               goodput bounds",
        "5 phaselens:pool_phase_imbalance_ratio                          which pool is short",
        "",
        "== Kill switch",
        f"if max(phaselens_ttft_seconds{{percentile=\"99\"}}) > {plan.ttft_p99_seconds:g} for 10m after an "
        "autoscaler change: kubectl apply -f last-known-good/ (the HPA objects saved before the change) and "
        "pin minReplicas to the current replica count until P99 TTFT is back under the SLO.",
    ]
    if result.warnings:
        lines += ["", "== Warnings", *result.warnings]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phaselens plan",
        description="Print a one-page, three-layer autoscaling plan (Karpenter nodes, KAI Scheduler, per-pool "
        "signals, warm pool, kill switch) from a PLAN.yaml; exit 2 with the reason when the plan is refused "
        "(for example, scaling on GPU utilization). Examples: deploy/examples/plan-*.yaml.",
    )
    parser.add_argument("plan", metavar="PLAN.yaml", help="the plan: pools, SLOs, node and cold-start figures")
    return parser


def main(argv: list[str]) -> int:
    """`phaselens plan PLAN.yaml`: print the plan; exit 2 with the reason when it is refused."""
    path = Path(build_parser().parse_args(argv).plan)
    try:
        result = build_plan(load_plan(path))
    except PlanRefused as exc:
        print(f"phaselens plan: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except PlanError as exc:
        print(f"phaselens plan: invalid plan: {exc}", file=sys.stderr)
        return 1
    print(render(result))
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
