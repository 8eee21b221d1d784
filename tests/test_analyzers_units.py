"""Unit checks of the analyzer formulas: fragmentation, disaggregation score, phase load, confidence."""

from __future__ import annotations

import random

import pytest
from phaselens.analyzers.disaggregation import DisaggregationInputs, disaggregation_score
from phaselens.analyzers.kv_cache import fragmentation_estimate
from phaselens.analyzers.phase import Moments, PhaseTimes, aggregated_phase_load, prefill_time_share
from phaselens.analyzers.recommend import Scope, confidence
from phaselens.settings import Thresholds


def test_fragmentation_estimate_stays_within_paged_attention_bounds() -> None:
    rng = random.Random(1)
    for _ in range(1000):
        block = rng.choice([1, 8, 16, 32, 128])
        running = rng.randint(1, 64)
        used = rng.uniform(0.1, 4000)
        frag = fragmentation_estimate(running, used, block)
        assert frag is not None
        assert 0.0 <= frag <= (block - 1) / block
        # never above the worst case: every sequence wastes B-1 slots
        assert frag <= running * (block - 1) / (used * block) + 1e-12


def test_fragmentation_known_value_and_absent_cases() -> None:
    # 10 sequences, B = 16, 100 blocks: expected waste 10 x 7.5 slots of 1600
    assert fragmentation_estimate(10, 100, 16) == pytest.approx(75 / 1600)
    assert fragmentation_estimate(0, 100, 16) is None
    assert fragmentation_estimate(10, 0, 16) is None
    assert fragmentation_estimate(10, 100, None) is None
    assert fragmentation_estimate(5, 100, 1) == 0.0  # one-token blocks waste nothing


def inputs(**overrides: float | None) -> DisaggregationInputs:
    base: dict[str, float | None] = dict(
        prefill_concurrency_per_instance=0.8, uncached_prompt_tokens=4000, output_tokens=400,
        transfer_seconds_total=1.0, decode_ttft_seconds_total=20.0, decode_kv_utilization=0.5,
    )
    base.update(overrides)
    return DisaggregationInputs(kv_knee=0.8, **base)  # type: ignore[arg-type]


def test_disaggregation_score_moves_the_right_way() -> None:
    good = disaggregation_score(inputs())
    assert good is not None and 0.0 <= good.score <= 1.0
    short_prompts = disaggregation_score(inputs(uncached_prompt_tokens=200, output_tokens=200))
    slow_transfer = disaggregation_score(inputs(transfer_seconds_total=15.0))
    full_kv = disaggregation_score(inputs(decode_kv_utilization=0.98))
    idle_prefill = disaggregation_score(inputs(prefill_concurrency_per_instance=0.01))
    for worse in (short_prompts, slow_transfer, full_kv, idle_prefill):
        assert worse is not None and worse.score < good.score
    assert short_prompts is not None and short_prompts.components["prefill_heavy"] == 0.0
    assert all(0.0 <= v <= 1.0 for v in good.components.values())


def test_disaggregation_score_needs_a_benefit() -> None:
    no_benefit = inputs(prefill_concurrency_per_instance=None, uncached_prompt_tokens=None)
    assert disaggregation_score(no_benefit) is None
    partial = disaggregation_score(inputs(transfer_seconds_total=None))
    assert partial is not None and "kv_transfer_ttft_share" not in partial.components


def times(queue: float, prefill: float, itl: float) -> PhaseTimes:
    return PhaseTimes(seconds=30, queue=Moments(queue * 10, 10), prefill=Moments(prefill * 10, 10),
                      decode=Moments(50.0, 10), ttft=Moments((queue + prefill) * 10, 10),
                      itl=Moments(itl * 100, 100))


def test_queue_behind_full_kv_is_blamed_on_decode() -> None:
    t = times(queue=2.0, prefill=0.05, itl=0.02)
    kv_full = aggregated_phase_load(t, 0.97, preemptions_per_second=1.0, slo_ttft=0.5, slo_itl=0.1)
    kv_free = aggregated_phase_load(t, 0.2, preemptions_per_second=0.0, slo_ttft=0.5, slo_itl=0.1)
    assert kv_full is not None and kv_full.bottleneck == "decode"
    assert kv_free is not None and kv_free.bottleneck == "prefill"
    assert kv_free.prefill_load == pytest.approx((0.05 + 2.0 * 0.8) / 0.5)


def test_slow_decode_steps_make_decode_the_bottleneck() -> None:
    load = aggregated_phase_load(times(queue=0.0, prefill=0.05, itl=0.3), 0.3, 0.0, 0.5, 0.1)
    assert load is not None and load.bottleneck == "decode" and load.decode_load == pytest.approx(3.0)


def test_prefill_time_share() -> None:
    assert prefill_time_share(Moments(1.0, 1), Moments(3.0, 1)) == 0.25
    assert prefill_time_share(Moments(), Moments()) is None


def test_confidence_grows_with_excess_and_data() -> None:
    t = Thresholds()
    full = Scope("t", "aggregated", "m", "0", span_seconds=30, horizon_seconds=30)
    short = Scope("t", "aggregated", "m", "0", span_seconds=5, horizon_seconds=30)
    assert confidence(0.0, full, 100, t) == 0.5
    assert confidence(1.0, full, 100, t) == pytest.approx(0.99)
    assert confidence(1.0, short, 100, t) < confidence(1.0, full, 100, t)
    assert confidence(1.0, full, 2, t) < confidence(1.0, full, 100, t)
    assert confidence(0.3, full, 100, t) < confidence(0.9, full, 100, t)
