"""The scaling policies compared, each read from a manifest: its HPA (targets, behavior) and the
PromQL that feeds its metrics. Every duration is compressed by the lab's factor K.

- phaselens: deploy/kubernetes/base/hpa.yaml (aggregated pool) with the external metric names
  mapped to the recording rules the way deploy/prometheus-adapter/values.yaml maps them;
- production-stack: baselines/production-stack-keda.yaml (KEDA, vllm:num_requests_waiting > 5);
- llm-d-wva: baselines/llm-d-wva-hpa.yaml (the saturation analyzer's desired replicas);
- gpu-util: baselines/gpu-utilization-hpa.yaml (busy fraction, 70 %);
- static: a fixed pool sized for the trace's peak.

P/D (`role` "prefill" or "decode"): one policy per pool, scaled independently. phaselens reads
the base HPA with the pool's overlay patch (deploy/kubernetes/overlays/disaggregated/<role>/
hpa-patch.yaml); a baseline applies its rule to that pool's own workers' series (its query's
`pod_role="aggregated"` becomes the pool's role).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hpa
import prom
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
NAMESPACE = "fleet"
ROLE = "aggregated"
PD_ROLES = ("prefill", "decode")
OVERLAYS = REPO / "deploy" / "kubernetes" / "overlays" / "disaggregated"
POLICIES = ("phaselens", "production-stack", "llm-d-wva", "gpu-util", "static")


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    spec: hpa.HpaSpec
    queries: dict[str, str]  # metric name -> PromQL returning the pool total
    source: str
    wva: dict[str, float] | None = None
    static_replicas: int | None = None

    def totals(self, prom_url: str, current: int, ready: int) -> dict[str, float | None]:
        if self.wva is not None:
            return {"wva_desired_replicas": wva_desired(prom_url, self.queries, self.wva, current, ready)}
        return {name: prom.scalar(prom_url, q) for name, q in self.queries.items()}


def adapter_series(external_name: str, values: Path = REPO / "deploy" / "prometheus-adapter" / "values.yaml") -> str:
    """The recording rule behind a prometheus-adapter external metric name (reverses `name.as`)."""
    doc = yaml.safe_load(values.read_text())
    for rule in doc["rules"]["external"]:
        pattern = rule["name"]["matches"].strip("^$")
        template = rule["name"]["as"]
        prefix = template.split("${1}")[0]
        if external_name.startswith(prefix):
            return pattern.replace("(.*)", external_name[len(prefix):])
    raise ValueError(f"no prometheus-adapter rule makes {external_name!r}")


def _annotations(doc: dict[str, Any], prefix: str) -> dict[str, str]:
    notes = (doc.get("metadata") or {}).get("annotations") or {}
    return {k[len(prefix):]: str(v) for k, v in notes.items() if k.startswith(prefix)}


def _manifest(path: Path) -> dict[str, Any]:
    return dict(next(d for d in yaml.safe_load_all(path.read_text()) if d))


def for_pool(promql: str, role: str) -> str:
    """A baseline's query on one pool's workers: its aggregated-pool matcher, re-pointed."""
    if role == ROLE:
        return promql
    if f'pod_role="{ROLE}"' not in promql:
        raise ValueError(f"cannot point the query at the {role} pool: {promql}")
    return promql.replace(f'pod_role="{ROLE}"', f'pod_role="{role}"')


def load(name: str, compression: float, static_replicas: int = 1, role: str = ROLE) -> Policy:
    if role != ROLE and role not in PD_ROLES:
        raise ValueError(f"unknown pool role {role!r}")
    if name == "phaselens":
        path = REPO / "deploy" / "kubernetes" / "base" / "hpa.yaml"
        patch = None if role == ROLE else OVERLAYS / role / "hpa-patch.yaml"
        spec = hpa.load_hpa(path, patch)
        queries = {}
        for m in spec.metrics:
            sel = ",".join(f'{k}="{v}"' for k, v in {"namespace": NAMESPACE, **m.selector}.items())
            queries[m.name] = f"sum({adapter_series(m.name)}{{{sel}}})"
        source = str(path.relative_to(REPO)) + ("" if patch is None else f" + {patch.relative_to(REPO)}")
        return Policy(name, spec.scaled(compression), queries, source)
    if name == "production-stack":
        path = HERE / "baselines" / "production-stack-keda.yaml"
        spec, triggers = hpa.load_scaled_object(path, "production-stack")
        queries = {str(t.get("name") or t["type"]):
                   for_pool(prom.compress_ranges(t["metadata"]["query"], compression), role)
                   for t in triggers}  # fmt: skip
        return Policy(name, spec.scaled(compression), queries, str(path.relative_to(REPO)))
    if name in ("gpu-util", "llm-d-wva"):
        path = HERE / "baselines" / ("gpu-utilization-hpa.yaml" if name == "gpu-util" else "llm-d-wva-hpa.yaml")
        doc = _manifest(path)
        spec = hpa.parse_hpa(doc)
        queries = {k: for_pool(prom.compress_ranges(v, compression), role)
                   for k, v in _annotations(doc, "fleet.phaselens.io/query.").items()}  # fmt: skip
        wva = None
        if name == "llm-d-wva":
            wva = {k: float(v) for k, v in _annotations(doc, "fleet.phaselens.io/wva.").items()}
        return Policy(name, spec.scaled(compression), queries, str(path.relative_to(REPO)), wva=wva)
    if name == "static":
        spec = hpa.HpaSpec("static", static_replicas, static_replicas, ())
        return Policy(name, spec, {}, "fixed pool sized for the trace's peak", static_replicas=static_replicas)
    raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}")


def _per_pod(prom_url: str, promql: str) -> dict[str, float]:
    return {labels.get("pod", ""): v for labels, v in prom.query(prom_url, promql) if not math.isnan(v)}


def wva_desired(prom_url: str, queries: dict[str, str], p: dict[str, float], current: int, ready: int) -> float | None:
    """llm-d WVA's saturation analyzer (V1) for one pool: current +1, -1 or unchanged."""
    kv = _per_pod(prom_url, queries["kv"])
    queue = _per_pod(prom_url, queries["queue"])
    pods = sorted(set(kv) & set(queue))
    if not pods:
        return None
    if ready < current:
        return float(current)  # a replica is still starting: one step at a time
    unsat = [x for x in pods if kv[x] < p["kv_saturated"] and queue[x] < p["queue_saturated"]]
    if not unsat:
        return float(current + 1)
    spare_kv = sum(p["kv_saturated"] - kv[x] for x in unsat) / len(unsat)
    spare_q = sum(p["queue_saturated"] - queue[x] for x in unsat) / len(unsat)
    if spare_kv < p["spare_kv"] or spare_q < p["spare_queue"]:
        return float(current + 1)
    n = len(pods)
    if n > 1 and len(unsat) == n:
        # N/(N-1): the pool's load over one replica fewer must still leave both margins.
        kv_after = sum(kv.values()) / (n - 1)
        q_after = sum(queue.values()) / (n - 1)
        if p["kv_saturated"] - kv_after >= p["spare_kv"] and p["queue_saturated"] - q_after >= p["spare_queue"]:
            return float(current - 1)
    return float(current)


