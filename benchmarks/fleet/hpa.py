"""The Kubernetes HPA algorithm (autoscaling/v2), as Kubernetes documents and implements it, and
the HPA settings parsed from the manifests the project ships (never copied by hand).

Algorithm (pkg/controller/podautoscaler, horizontal.go and replica_calculator.go):
- per metric, an External AverageValue target: usage = total / (target x current); within the
  tolerance (|1 - usage| <= 0.1) the metric proposes `current`, otherwise ceil(total / target);
  the largest proposal of all metrics wins, clamped to [minReplicas, maxReplicas];
- stabilization: the recommendation is stored; a scale-up goes no higher than the lowest
  recommendation of the scale-up window, a scale-down no lower than the highest of the scale-down
  window;
- scaling policies limit the change per period, counted from the scale events of the period
  (`Pods`: +-value, `Percent`: x(1 +- value/100)); selectPolicy Max takes the policy allowing the
  larger change, Min the smaller, Disabled forbids the direction.
Pure: the caller passes the clock (`now`, seconds) and the metric totals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TOLERANCE = 0.1


@dataclass(frozen=True, slots=True)
class Policy:
    kind: str  # "Pods" or "Percent"
    value: int
    period_s: float


@dataclass(frozen=True, slots=True)
class Rules:
    """One direction of `behavior` (scaleUp or scaleDown)."""

    stabilization_s: float
    policies: tuple[Policy, ...]
    select: str = "Max"  # Max | Min | Disabled


# Kubernetes' defaults when a manifest sets no `behavior` (docs: "Default Behavior").
DEFAULT_UP = Rules(0.0, (Policy("Percent", 100, 15.0), Policy("Pods", 4, 15.0)), "Max")
DEFAULT_DOWN = Rules(300.0, (Policy("Percent", 100, 15.0),), "Max")


@dataclass(frozen=True, slots=True)
class MetricTarget:
    """An External metric with an AverageValue target: the pool total is divided by `average`."""

    name: str
    selector: Mapping[str, str]
    average: float


@dataclass(frozen=True, slots=True)
class HpaSpec:
    name: str
    min_replicas: int
    max_replicas: int
    metrics: tuple[MetricTarget, ...]
    up: Rules = DEFAULT_UP
    down: Rules = DEFAULT_DOWN

    def scaled(self, factor: float) -> HpaSpec:
        """Every duration divided by `factor` (the fleet lab's time compression)."""

        def rules(r: Rules) -> Rules:
            return Rules(
                r.stabilization_s / factor,
                tuple(Policy(p.kind, p.value, p.period_s / factor) for p in r.policies),
                r.select,
            )

        return HpaSpec(self.name, self.min_replicas, self.max_replicas, self.metrics, rules(self.up), rules(self.down))


def quantity(value: Any) -> float:
    """A Kubernetes quantity as a float: 1500m -> 1.5, "5" -> 5.0, 2 -> 2.0."""
    text = str(value).strip()
    suffixes = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}
    if text and text[-1] in suffixes:
        return float(text[:-1]) * suffixes[text[-1]]
    return float(text)


def _rules(doc: Mapping[str, Any] | None, default: Rules) -> Rules:
    if not doc:
        return default
    policies = tuple(
        Policy(str(p["type"]), int(p["value"]), float(p["periodSeconds"])) for p in doc.get("policies") or ()
    ) or default.policies
    stab = doc.get("stabilizationWindowSeconds")
    return Rules(
        float(stab) if stab is not None else default.stabilization_s,
        policies,
        str(doc.get("selectPolicy", "Max")),
    )


def _metric(doc: Mapping[str, Any]) -> MetricTarget:
    if doc.get("type") != "External":
        raise ValueError(f"only External metrics are supported, got {doc.get('type')!r}")
    ext = doc["external"]
    target = ext["target"]
    if target.get("type") != "AverageValue":
        raise ValueError(f"only AverageValue targets are supported, got {target.get('type')!r}")
    selector = (ext["metric"].get("selector") or {}).get("matchLabels") or {}
    return MetricTarget(str(ext["metric"]["name"]), dict(selector), quantity(target["averageValue"]))


def parse_hpa(doc: Mapping[str, Any]) -> HpaSpec:
    """An autoscaling/v2 HorizontalPodAutoscaler document."""
    if doc.get("kind") != "HorizontalPodAutoscaler":
        raise ValueError(f"not an HPA: kind {doc.get('kind')!r}")
    spec = doc["spec"]
    behavior = spec.get("behavior") or {}
    return HpaSpec(
        name=str(doc["metadata"]["name"]),
        min_replicas=int(spec.get("minReplicas", 1)),
        max_replicas=int(spec["maxReplicas"]),
        metrics=tuple(_metric(m) for m in spec.get("metrics") or ()),
        up=_rules(behavior.get("scaleUp"), DEFAULT_UP),
        down=_rules(behavior.get("scaleDown"), DEFAULT_DOWN),
    )


def apply_json_patch(doc: dict[str, Any], patch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The `replace` and `add` operations of a kustomize JSON6902 patch on top-level-path keys."""
    out = yaml.safe_load(yaml.safe_dump(doc))
    for op in patch:
        if op["op"] not in ("replace", "add"):
            raise ValueError(f"unsupported patch op {op['op']!r}")
        keys = [k for k in str(op["path"]).split("/") if k]
        node = out
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        node[keys[-1]] = op["value"]
    return dict(out)


def load_hpa(path: Path, patch: Path | None = None) -> HpaSpec:
    """The HPA in a manifest file, optionally with a kustomize JSON patch applied."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    hpas = [d for d in docs if d.get("kind") == "HorizontalPodAutoscaler"]
    if len(hpas) != 1:
        raise ValueError(f"{path}: expected one HorizontalPodAutoscaler, found {len(hpas)}")
    doc = hpas[0]
    if patch is not None:
        doc = apply_json_patch(doc, yaml.safe_load(patch.read_text()))
    return parse_hpa(doc)


def load_scaled_object(path: Path, name: str) -> tuple[HpaSpec, list[dict[str, Any]]]:
    """A KEDA ScaledObject as the HPA KEDA creates from it, plus its triggers.

    KEDA's Prometheus trigger is an External AverageValue metric with `threshold` as the target;
    `advanced.horizontalPodAutoscalerConfig.behavior` becomes the HPA's behavior.
    """
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "ScaledObject" and doc["metadata"]["name"] == name:
            spec = doc["spec"]
            behavior = ((spec.get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}).get("behavior") or {}
            triggers = list(spec.get("triggers") or ())
            metrics = tuple(
                MetricTarget(str(t.get("name") or t["type"]), {}, quantity(t["metadata"]["threshold"]))
                for t in triggers
            )
            hpa = HpaSpec(
                name=name,
                min_replicas=int(spec.get("minReplicaCount", 0)),
                max_replicas=int(spec.get("maxReplicaCount", 100)),
                metrics=metrics,
                up=_rules(behavior.get("scaleUp"), DEFAULT_UP),
                down=_rules(behavior.get("scaleDown"), DEFAULT_DOWN),
            )
            return hpa, triggers
    raise ValueError(f"{path}: no ScaledObject named {name!r}")


# ---------------------------------------------------------------------------- the algorithm


def metric_proposal(total: float, target: float, current: int, tolerance: float = TOLERANCE) -> int:
    """replica_calculator GetExternalPerPodMetricReplicas: AverageValue over the pool total."""
    if current <= 0:
        return max(1, math.ceil(total / target))
    usage = total / (target * current)
    if abs(1.0 - usage) <= tolerance:
        return current
    return math.ceil(total / target)


@dataclass
class HpaState:
    """What the HPA controller remembers between syncs: recommendations and scale events."""

    recommendations: list[tuple[float, int]] = field(default_factory=list)
    events: list[tuple[float, int]] = field(default_factory=list)  # (time, replica change)


@dataclass(frozen=True, slots=True)
class Decision:
    proposal: int  # from the metrics alone (after min/max)
    stabilized: int
    desired: int  # after the scaling policies


def _changed_in_period(state: HpaState, now: float, period_s: float, up: bool) -> int:
    cutoff = now - period_s
    return sum(abs(d) for t, d in state.events if t > cutoff and (d > 0) == up)


def _up_limit(rules: Rules, state: HpaState, now: float, current: int) -> int:
    limits = []
    for p in rules.policies:
        start = current - _changed_in_period(state, now, p.period_s, up=True)
        limits.append(start + p.value if p.kind == "Pods" else math.ceil(start * (1 + p.value / 100)))
    return max(limits) if rules.select == "Max" else min(limits)


def _down_limit(rules: Rules, state: HpaState, now: float, current: int) -> int:
    limits = []
    for p in rules.policies:
        start = current + _changed_in_period(state, now, p.period_s, up=False)
        limits.append(start - p.value if p.kind == "Pods" else math.ceil(start * (1 - p.value / 100)))
    return min(limits) if rules.select == "Max" else max(limits)


def decide(spec: HpaSpec, state: HpaState, now: float, current: int, proposal: int) -> Decision:
    """One HPA sync given the metrics' proposal; records the recommendation and the scale event."""
    proposal = min(spec.max_replicas, max(spec.min_replicas, proposal))
    up_rec = down_rec = proposal
    for t, rec in state.recommendations:
        if t > now - spec.up.stabilization_s:
            up_rec = min(up_rec, rec)
        if t > now - spec.down.stabilization_s:
            down_rec = max(down_rec, rec)
    stabilized = current
    if stabilized < up_rec:
        stabilized = up_rec
    if stabilized > down_rec:
        stabilized = down_rec
    horizon = max(spec.up.stabilization_s, spec.down.stabilization_s)
    state.recommendations = [(t, r) for t, r in state.recommendations if t > now - horizon]
    state.recommendations.append((now, proposal))

    desired = stabilized
    if desired > current:
        limit = current if spec.up.select == "Disabled" else _up_limit(spec.up, state, now, current)
        desired = min(desired, limit, spec.max_replicas)
    elif desired < current:
        limit = current if spec.down.select == "Disabled" else _down_limit(spec.down, state, now, current)
        desired = max(desired, limit, spec.min_replicas)
    if desired != current:
        state.events.append((now, desired - current))
    longest = max((p.period_s for p in (*spec.up.policies, *spec.down.policies)), default=0.0)
    state.events = [(t, d) for t, d in state.events if t > now - longest]
    return Decision(proposal, stabilized, desired)


def proposal_from_totals(spec: HpaSpec, totals: Mapping[str, float | None], current: int) -> int | None:
    """The largest proposal over the spec's metrics; None when no metric has a value (the HPA then
    keeps the current count). As the HPA controller does, when a metric is missing the others may
    still scale up, but not down (horizontal.go computeReplicasForMetrics: invalid metrics block a
    scale-down)."""
    proposals = [
        metric_proposal(v, m.average, current) for m in spec.metrics if (v := totals.get(m.name)) is not None
    ]
    if not proposals:
        return None
    best = max(proposals)
    if len(proposals) < len(spec.metrics) and best < current:
        return current
    return best
