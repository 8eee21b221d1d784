"""Disaggregation score: is splitting prefill and decode onto separate pools paying off?

Our composite, built only from published reasons (docs/signals.md has the sources):

benefit components (higher = disaggregation helps more)
  interference_avoided   min(1, mean requests in prefill per prefill instance). Little's law gives
                         the mean prefill concurrency; by Markov's inequality it bounds the share of
                         time a colocated engine would carry a prefill chunk in its decode steps,
                         the interference DistServe and TetriInfer measured (decode steps up to 5x
                         slower when mixed with prefill).
  prefill_heavy          uncached prompt share r = ISL_eff / (ISL_eff + OSL), mapped linearly from
                         r = 0.5 (llm-d: "200 | 200" does not pay) to r = 0.9 ("10k | 1k" pays);
                         ISL_eff discounts prefix-cache hits (llm-d's prefix-based P/D decider).
cost components (higher = disaggregation costs more)
  kv_transfer_ttft_share sum of NIXL transfer time / sum of decode-side TTFT over the window, as
                         phaselens_nixl_ttft_share_ratio (Splitwise: KV transfer is the price of
                         splitting); overlapping per-rank transfers overstate it, so it is clamped.
  kv_capacity_pressure   decode KV utilization above the knee, (u - knee) / (1 - knee): Dynamo's
                         tuning guide notes disaggregation takes the prefill GPUs' KV away from
                         decode, so it hurts when KV capacity is the bottleneck.

score = mean(benefits) x (1 - kv_transfer_ttft_share) x (1 - kv_capacity_pressure), each factor
in [0, 1]; a cost component that cannot be measured is left out (counts as no cost) and a score
needs at least one benefit component.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

PREFILL_HEAVY_LOW = 0.5
"""Uncached prompt share at which disaggregation stops paying (llm-d: ISL 200 | OSL 200)."""
PREFILL_HEAVY_HIGH = 0.9
"""Uncached prompt share at which it clearly pays (llm-d: ISL 10k | OSL 1k)."""

BENEFITS: tuple[str, ...] = ("interference_avoided", "prefill_heavy")
COSTS: tuple[str, ...] = ("kv_transfer_ttft_share", "kv_capacity_pressure")


@dataclass(frozen=True, slots=True)
class DisaggregationInputs:
    prefill_concurrency_per_instance: float | None
    uncached_prompt_tokens: float | None
    output_tokens: float | None
    transfer_seconds_total: float | None
    decode_ttft_seconds_total: float | None
    decode_kv_utilization: float | None
    kv_knee: float


@dataclass(frozen=True, slots=True)
class DisaggregationScore:
    score: float
    components: Mapping[str, float]


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, value))


def components(inputs: DisaggregationInputs) -> dict[str, float]:
    out: dict[str, float] = {}
    if inputs.prefill_concurrency_per_instance is not None:
        out["interference_avoided"] = _clamp(inputs.prefill_concurrency_per_instance)
    isl, osl = inputs.uncached_prompt_tokens, inputs.output_tokens
    if isl is not None and osl is not None and isl + osl > 0:
        share = isl / (isl + osl)
        out["prefill_heavy"] = _clamp((share - PREFILL_HEAVY_LOW) / (PREFILL_HEAVY_HIGH - PREFILL_HEAVY_LOW))
    if (
        inputs.transfer_seconds_total is not None
        and inputs.decode_ttft_seconds_total is not None
        and inputs.decode_ttft_seconds_total > 0
    ):
        # Clamped: overlapping transfers of one request (one per remote rank) can sum past its TTFT.
        share = inputs.transfer_seconds_total / inputs.decode_ttft_seconds_total
        out["kv_transfer_ttft_share"] = _clamp(share)
    if inputs.decode_kv_utilization is not None and 0 < inputs.kv_knee < 1:
        out["kv_capacity_pressure"] = _clamp(
            (inputs.decode_kv_utilization - inputs.kv_knee) / (1.0 - inputs.kv_knee)
        )
    return out


def disaggregation_score(inputs: DisaggregationInputs) -> DisaggregationScore | None:
    parts = components(inputs)
    benefits = [parts[name] for name in BENEFITS if name in parts]
    if not benefits:
        return None
    score = sum(benefits) / len(benefits)
    for name in COSTS:
        if name in parts:
            score *= 1.0 - parts[name]
    return DisaggregationScore(score=_clamp(score), components=parts)
