"""Burst, KV-pressure precursor, cascading delay and peak-hour detectors."""

from __future__ import annotations

import pytest
from phaselens.analyzers import patterns as pt


def test_burst_detected_after_a_jump_and_not_when_steady() -> None:
    trend = pt.ArrivalTrend()
    for t in range(0, 300):
        trend.update(1.0, float(t))
    assert pt.detect_burst(trend, target="t", role="prefill") is None
    for t in range(300, 320):
        trend.update(6.0, float(t))
    found = pt.detect_burst(trend, target="t", role="prefill")
    assert found is not None and found.code == "ARRIVAL_BURST"
    assert found.evidence["ratio"] >= 2.0


def test_burst_needs_history() -> None:
    trend = pt.ArrivalTrend()
    trend.update(0.1, 0.0)
    trend.update(10.0, 5.0)
    assert pt.detect_burst(trend, target="t", role="prefill") is None


def test_kv_precursor_predicts_time_to_full() -> None:
    series = [(float(t), 0.6 + 0.01 * t) for t in range(20)]  # 0.79 now, +0.01/s
    slope, eta = pt.seconds_until_kv_full(series) or (0.0, 0.0)
    assert slope == pytest.approx(0.01)
    assert eta == pytest.approx(21.0)
    found = pt.detect_kv_pressure_precursor(series, target="t", role="decode")
    assert found is not None and found.evidence["seconds_until_full"] == pytest.approx(21.0)
    flat = [(float(t), 0.85) for t in range(20)]
    assert pt.detect_kv_pressure_precursor(flat, target="t", role="decode") is None
    slow = [(float(t), 0.6 + 0.0001 * t) for t in range(20)]
    assert pt.detect_kv_pressure_precursor(slow, target="t", role="decode") is None  # hours away


def test_cascading_delay_needs_flat_throughput() -> None:
    waits = [(float(t), 0.1 * t) for t in range(20)]
    flat = [(float(t), 5.0 + (0.1 if t % 2 else -0.1)) for t in range(20)]
    found = pt.detect_cascading_delay(waits, flat, target="t", role="aggregated")
    assert found is not None and found.code == "CASCADING_QUEUE_DELAY"
    growing = [(float(t), 1.0 + t) for t in range(20)]
    assert pt.detect_cascading_delay(waits, growing, target="t", role="aggregated") is None
    steady_waits = [(float(t), 0.5) for t in range(20)]
    assert pt.detect_cascading_delay(steady_waits, flat, target="t", role="aggregated") is None


def _fill_two_days(profile: pt.DailyProfile, start: float) -> float:
    t = start
    while t < start + 2 * pt.SECONDS_PER_DAY:
        hour = pt.DailyProfile.hour_of(t)
        util = 0.95 if hour == 14 else 0.3
        profile.update(t, 10.0 * util, util)
        t += 60.0
    return t


def test_peak_hour_after_a_day_of_history() -> None:
    profile = pt.DailyProfile()
    day0 = 1_700_000_000.0 - (1_700_000_000.0 % pt.SECONDS_PER_DAY)
    early = day0 + 13.5 * 3600
    profile.update(early, 1.0, 0.9)
    assert pt.detect_peak_hour(profile, early, knee=0.8, target="t", role="prefill") is None  # < 1 day
    end = _fill_two_days(profile, day0)
    expected = profile.expected(14)
    assert expected is not None and expected[1] == pytest.approx(0.95, abs=0.01)
    before_peak = end + 13.5 * 3600 - (end % pt.SECONDS_PER_DAY)
    found = pt.detect_peak_hour(profile, before_peak, knee=0.8, target="t", role="prefill")
    assert found is not None and found.evidence["hour_utc"] == 14
    quiet = end + 3 * 3600 - (end % pt.SECONDS_PER_DAY)
    assert pt.detect_peak_hour(profile, quiet, knee=0.8, target="t", role="prefill") is None


def test_profile_state_round_trip_and_damage() -> None:
    profile = pt.DailyProfile()
    _fill_two_days(profile, 0.0)
    restored = pt.DailyProfile.from_state(profile.to_state())
    assert restored.hours == profile.hours and restored.first_seen == profile.first_seen
    assert pt.DailyProfile.from_state({"hours": [[1, 2]]}).first_seen is None
    assert pt.ArrivalTrend.from_state({"short": "x", "long": 1, "last_time": 0}).short is None
