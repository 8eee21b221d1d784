"""Plain-language recommendations from one window's measurements.

Rules, thresholds and the confidence formula are documented in docs/recommendations.md. Every
rule needs traffic in the window, so an idle engine gets no recommendation.

confidence = 0.5 + 0.49 x excess x coverage, where `excess` (0-1) says how far past its threshold
the evidence is and `coverage` = min(1, window span / horizon) x min(1, n / min_requests_for_confidence)
says how much data it rests on (n = the events the rule counts). Just past a threshold, or on
little data, a finding is `escalate` (< 0.60); far past it on a full window it reaches `act`.
"""

from __future__ import annotations

from dataclasses import dataclass

from phaselens.analyzers.backlog import PrefillBacklog
from phaselens.analyzers.disaggregation import DisaggregationScore
from phaselens.analyzers.goodput import GoodputSummary
from phaselens.analyzers.kv_cache import KvCacheHealth, clamp01, pressure_peak
from phaselens.analyzers.phase import PhaseLoad
from phaselens.model import Recommendation
from phaselens.settings import Settings, Thresholds

HEURISTIC_CONFIDENCE_CAP = 0.59
"""Cap for findings that rest on indirect evidence: always escalated to a person."""


@dataclass(frozen=True, slots=True)
class Scope:
    """Who a finding is about and how much window it rests on."""

    target: str
    role: str
    model_name: str
    engine: str
    span_seconds: float
    horizon_seconds: float


@dataclass(frozen=True, slots=True)
class TargetFindings:
    scope: Scope
    kv: KvCacheHealth
    phase: PhaseLoad | None
    prefill_load: float | None
    """Share of the TTFT budget the prefill path uses (`phase.prefill_load` when there is a phase load)."""
    goodput: GoodputSummary
    backlog: PrefillBacklog
    requests_in_window: float
    prompt_tokens_per_second: float | None
    uncached_prompt_tokens: float | None


def confidence(excess: float, scope: Scope, events: float, thresholds: Thresholds) -> float:
    span_cover = clamp01(scope.span_seconds / scope.horizon_seconds) if scope.horizon_seconds > 0 else 0.0
    data_cover = clamp01(events / thresholds.min_requests_for_confidence) \
        if thresholds.min_requests_for_confidence > 0 else 1.0
    return round(0.5 + 0.49 * clamp01(excess) * span_cover * data_cover, 3)


def _rec(
    code: str, severity: str, message: str, evidence: dict[str, float | str], conf: float, scope: Scope
) -> Recommendation:
    evidence = {"model_name": scope.model_name, "engine": scope.engine, **evidence}
    level = "critical" if severity == "critical" else "warning" if severity == "warning" else "info"
    return Recommendation(code=code, severity=level, message=message, evidence=evidence,
                          confidence=conf, target=scope.target, role=scope.role)


def _r(value: float) -> float:
    return round(value, 4)


# ---------------------------------------------------------------------------------------------- rules


def kv_cache_pressure(f: TargetFindings, t: Thresholds) -> Recommendation | None:
    """The cache ran full in the window while the engine preempted requests.

    Full means the sampled peak reached the threshold, or the engine preempted at all: it preempts
    only when no block is free, so a preemption is a full cache the scrapes may have missed."""
    sampled, pre = f.kv.utilization_peak, f.kv.preemptions_per_second
    u = pressure_peak(sampled, f.kv.exhausted)
    if u is None or pre is None:
        return None
    if u < t.kv_pressure_utilization or pre <= t.kv_pressure_min_preemptions_per_second:
        return None
    u_excess = clamp01((u - t.kv_pressure_utilization) / max(1e-9, 1.0 - t.kv_pressure_utilization))
    p_excess = clamp01(pre / t.kv_pressure_clear_preemptions_per_second) \
        if t.kv_pressure_clear_preemptions_per_second > 0 else 1.0
    excess = 0.5 * u_excess + 0.5 * p_excess
    conf = confidence(excess, f.scope, pre * f.scope.span_seconds, t)
    evidence: dict[str, float | str] = {
        "kv_utilization_peak": _r(u), "preemptions_per_second": _r(pre),
        "threshold_utilization": t.kv_pressure_utilization,
    }
    if f.backlog.queue_depth is not None:
        evidence["queue_depth"] = f.backlog.queue_depth
    if f.kv.headroom_tokens is not None:
        evidence["headroom_tokens"] = _r(f.kv.headroom_tokens)
    if sampled is not None and sampled < u:
        evidence["kv_utilization_sampled_peak"] = _r(sampled)
        full = f"KV cache ran out of blocks (the scrapes saw at most {sampled:.0%}) and requests are being preempted"
    else:
        full = f"KV cache reached {u:.0%} full and requests are being preempted"
    message = (
        f"{full} ({pre:.2f}/s): give the KV cache "
        "more memory (raise gpu_memory_utilization or use an fp8 kv_cache_dtype), lower max_num_seqs, "
        f"or add {'decode ' if f.scope.role == 'decode' else ''}replicas."
    )
    severity = "critical" if excess >= 0.8 else "warning"
    return _rec("KV_CACHE_PRESSURE", severity, message, evidence, conf, f.scope)


def _phase_evidence(load: PhaseLoad) -> dict[str, float | str]:
    return {
        "imbalance_ratio": _r(load.imbalance), "prefill_load": _r(load.prefill_load),
        "decode_load": _r(load.decode_load), "decode_saturation": _r(load.decode_saturation),
    }


def prefill_bottleneck(
    load: PhaseLoad | None, scope: Scope, requests: float, t: Thresholds, pool: bool
) -> Recommendation | None:
    if load is None or load.prefill_load < t.bottleneck_min_load:
        return None
    if load.imbalance < t.bottleneck_imbalance_high:
        return None
    excess = clamp01(load.imbalance / t.bottleneck_imbalance_high - 1.0)
    if pool:
        message = (
            f"The prefill pool is the bottleneck (imbalance {load.imbalance:.2f}, prefill at "
            f"{load.prefill_load:.0%} of its TTFT budget): add prefill workers, "
            "i.e. raise the prefill:decode ratio."
        )
    else:
        message = (
            f"Prefill is the bottleneck (imbalance {load.imbalance:.2f}, prefill uses "
            f"{load.prefill_load:.0%} of the TTFT budget): raise the chunked-prefill budget "
            "max_num_batched_tokens, keep prefix caching on, or add replicas; with long prompts "
            "consider prefill/decode disaggregation."
        )
    return _rec("PREFILL_BOTTLENECK", "warning", message, _phase_evidence(load),
                confidence(excess, scope, requests, t), scope)


def decode_bottleneck(
    load: PhaseLoad | None,
    scope: Scope,
    requests: float,
    t: Thresholds,
    pool: bool,
    kv_pressure: bool = False,
) -> Recommendation | None:
    if load is None or load.decode_load < t.bottleneck_min_load:
        return None
    if load.imbalance > t.bottleneck_imbalance_low:
        return None
    excess = clamp01(t.bottleneck_imbalance_low / max(load.imbalance, 1e-9) - 1.0)
    if pool:
        message = (
            f"The decode pool is the bottleneck (imbalance {load.imbalance:.2f}, decode load "
            f"{load.decode_load:.0%}): add decode workers, i.e. lower the prefill:decode ratio."
        )
    elif kv_pressure:
        message = (
            f"Decode is the bottleneck (imbalance {load.imbalance:.2f}, decode load {load.decode_load:.0%}) "
            "and the KV cache is what binds it (see KV_CACHE_PRESSURE): add replicas or KV capacity; "
            "lowering max_num_seqs trades throughput for fewer preemptions."
        )
    else:
        message = (
            f"Decode is the bottleneck (imbalance {load.imbalance:.2f}, decode load {load.decode_load:.0%}): "
            "lower max_num_seqs to cut inter-token latency, or add replicas."
        )
    return _rec("DECODE_BOTTLENECK", "warning", message, _phase_evidence(load),
                confidence(excess, scope, requests, t), scope)


def enable_prefix_caching(f: TargetFindings, t: Thresholds) -> Recommendation | None:
    """Caching is off, prefill work is substantial and prompts span several blocks.

    With caching off the engine counts no lookups, so repeated prompts cannot be observed: the
    finding rests on indirect evidence and is capped below `recommend` (a person decides).
    """
    rate = f.prompt_tokens_per_second
    block = f.kv.block_size or 16
    prompt = f.uncached_prompt_tokens
    if f.kv.prefix_caching_enabled is not False or rate is None or prompt is None:
        return None
    if rate < t.prefix_repeat_min_prompt_tokens_per_second or prompt < 2 * block:
        return None
    if f.requests_in_window < t.min_requests_for_latency:
        return None
    if f.prefill_load is None or f.prefill_load < t.prefix_reuse_min_prefill_load:
        return None  # prefill is cheap here: caching would not change latency or capacity
    excess = clamp01(f.prefill_load / max(t.bottleneck_min_load, 1e-9))
    conf = min(HEURISTIC_CONFIDENCE_CAP, confidence(excess, f.scope, f.requests_in_window, t))
    message = (
        f"Prefix caching is off while prompts average {prompt:.0f} tokens ({prompt / block:.1f} blocks): "
        "enable it (--enable-prefix-caching) if requests share system prompts or context; it costs "
        "almost nothing when they do not."
    )
    evidence: dict[str, float | str] = {
        "prompt_tokens_per_second": _r(rate), "mean_prompt_tokens": _r(prompt), "block_size": block,
        "prefill_load": _r(f.prefill_load), "repetition_observable": "no",
    }
    return _rec("ENABLE_PREFIX_CACHING", "info", message, evidence, conf, f.scope)


def low_prefix_reuse(f: TargetFindings, t: Thresholds) -> Recommendation | None:
    hit, queries = f.kv.hit_ratio, f.kv.prefix_queries
    if f.scope.role == "decode" or f.kv.prefix_caching_enabled is False:
        return None  # a P/D decode instance gets its prompt KV by transfer, not from its own cache
    if hit is None or queries is None or hit >= t.prefix_reuse_low_hit_ratio:
        return None
    if queries / max(f.scope.span_seconds, 1e-9) < t.prefix_repeat_min_prompt_tokens_per_second:
        return None
    if f.requests_in_window < t.min_requests_for_latency:
        return None
    if f.prefill_load is None or f.prefill_load < t.prefix_reuse_min_prefill_load:
        return None  # reuse only matters where prefill costs a noticeable share of TTFT
    excess = clamp01(1.0 - hit / t.prefix_reuse_low_hit_ratio) if t.prefix_reuse_low_hit_ratio > 0 else 0.0
    message = (
        f"Only {hit:.0%} of prompt tokens are found in the prefix cache: put shared content (system "
        "prompt, examples, documents) first and byte-identical, and route requests that share a prefix "
        "to the same replica (prefix-aware routing)."
    )
    evidence: dict[str, float | str] = {"hit_ratio": _r(hit), "lookups_in_window": _r(queries),
                                        "threshold": t.prefix_reuse_low_hit_ratio,
                                        "prefill_load": _r(f.prefill_load)}
    return _rec("LOW_PREFIX_REUSE", "info", message, evidence,
                confidence(excess, f.scope, f.requests_in_window, t), f.scope)


def slo_at_risk(f: TargetFindings, settings: Settings) -> Recommendation | None:
    t = settings.thresholds
    g = f.goodput
    if g.joint is None or g.joint.lower >= t.slo_at_risk_attainment:
        return None
    if g.requests_in_window < t.min_requests_for_latency:
        return None
    # Only when even the optimistic bound misses is the miss certain; 10 points below is "clear".
    excess = clamp01((t.slo_at_risk_attainment - g.joint.upper) / 0.10)
    parts = []
    evidence: dict[str, float | str] = {
        "joint_attainment_lower": _r(g.joint.lower), "joint_attainment_upper": _r(g.joint.upper),
        "target_attainment": t.slo_at_risk_attainment,
    }
    if g.ttft is not None and settings.slo_ttft_seconds is not None:
        parts.append(f"TTFT <= {settings.slo_ttft_seconds:g}s: {g.ttft.lower:.0%}")
        evidence["ttft_attainment_lower"] = _r(g.ttft.lower)
    if g.itl is not None and settings.slo_itl_seconds is not None:
        parts.append(f"ITL <= {settings.slo_itl_seconds:g}s: {g.itl.lower:.0%}")
        evidence["itl_attainment_lower"] = _r(g.itl.lower)
        evidence["itl_source"] = g.itl_source or ""
    worst = ""
    if g.ttft is not None and g.itl is not None:
        worst = " TTFT (prefill and queueing)" if g.ttft.upper < g.itl.upper else " ITL (decode)"
    share = (
        f"{g.joint.lower:.0%}"
        if f"{g.joint.lower:.0%}" == f"{g.joint.upper:.0%}"
        else f"between {g.joint.lower:.0%} and {g.joint.upper:.0%}"
    )
    message = (
        f"Only {share} of requests meet every SLO ({'; '.join(parts)}): "
        f"the binding SLO is{worst or ' the configured one'}; act on the bottleneck findings or add capacity."
    )
    severity = "critical" if g.joint.upper < t.slo_at_risk_attainment - 0.2 else "warning"
    return _rec("SLO_AT_RISK", severity, message, evidence,
                confidence(excess, f.scope, g.requests_in_window, t), f.scope)


def disaggregation_not_paying(
    result: DisaggregationScore | None, scope: Scope, requests: float, t: Thresholds
) -> Recommendation | None:
    if result is None or result.score >= t.disaggregation_score_low or requests < t.min_requests_for_latency:
        return None
    parts = result.components
    reasons = []
    if parts.get("kv_transfer_ttft_share", 0.0) >= 0.3:
        share = parts["kv_transfer_ttft_share"]
        reasons.append(f"KV transfer takes {share:.0%} of TTFT (use a faster fabric)")
    if "prefill_heavy" in parts and parts["prefill_heavy"] < 0.3:
        reasons.append("uncached prompts are short relative to outputs")
    if "interference_avoided" in parts and parts["interference_avoided"] < 0.3:
        reasons.append("prefill workers are mostly idle")
    if parts.get("kv_capacity_pressure", 0.0) >= 0.5:
        reasons.append("decode KV is near full")
    why = "; ".join(reasons) or "the benefit components are small"
    excess = clamp01((t.disaggregation_score_low - result.score) / t.disaggregation_score_low) \
        if t.disaggregation_score_low > 0 else 0.0
    message = (
        f"Prefill/decode disaggregation is paying little (score {result.score:.2f}): {why}; consider serving "
        "this model aggregated, or fewer prefill workers."
    )
    evidence: dict[str, float | str] = {"score": _r(result.score), **{k: _r(v) for k, v in parts.items()}}
    return _rec("DISAGGREGATION_NOT_PAYING", "info", message, evidence,
                confidence(excess, scope, requests, t), scope)


def recommend_for_target(f: TargetFindings, settings: Settings, idle: bool) -> list[Recommendation]:
    """All target rules; an engine idle right now gets none (its window may still hold old load)."""
    if idle:
        return []
    t = settings.thresholds
    found: list[Recommendation | None] = []
    pressure = kv_cache_pressure(f, t)
    found.append(pressure)
    if f.scope.role == "aggregated":
        found.append(prefill_bottleneck(f.phase, f.scope, f.requests_in_window, t, pool=False))
        # With KV pressure too, the bottleneck line names the cause: the operator sees which phase
        # binds (the question the autoscalers split on) and why.
        found.append(
            decode_bottleneck(f.phase, f.scope, f.requests_in_window, t, pool=False, kv_pressure=pressure is not None)
        )
    found.append(enable_prefix_caching(f, t))
    found.append(low_prefix_reuse(f, t))
    found.append(slo_at_risk(f, settings))
    return [r for r in found if r is not None]
