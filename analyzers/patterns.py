"""Patterns over longer spans than one window, each turned into a Recommendation with evidence.

* Burst submissions: ratio of a short to a long exponentially weighted arrival rate (the KPA
  "panic" idea: short/long > 2 means the arrival rate doubled faster than the long average can follow).
* Memory-pressure precursor: least-squares slope of KV usage; seconds until usage reaches 1.0 at that
  slope, i.e. until the engine must preempt.
* Cascading delay: queue wait growing while throughput stays flat (the engine is not speeding up
  to absorb it, so every new arrival waits longer than the last).
* Peak-hour contention: an hourly daily profile of arrival rate and utilization, kept in the state
  file; once a full day is known, warn ahead of an hour whose expected utilization is past the knee.

Everything here is pure: state objects are small dataclasses the caller owns; `update` methods
return nothing and mutate only that object (documented in docs/queueing.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from phaselens.model import Recommendation

SECONDS_PER_DAY = 86400.0
SECONDS_PER_HOUR = 3600.0


# ----------------------------------------------------------------------------- bursts


@dataclass
class ArrivalTrend:
    """Short and long EWMAs of the arrival rate, with irregular-tick time constants."""

    short_tau_seconds: float = 10.0
    long_tau_seconds: float = 300.0
    short: float | None = None
    long: float | None = None
    last_time: float | None = None
    seconds_seen: float = 0.0

    def update(self, rate: float, now: float) -> None:
        if not math.isfinite(rate) or rate < 0:
            return
        if self.last_time is None or self.short is None or self.long is None or now <= self.last_time:
            if self.last_time is None or now > self.last_time:
                self.short = self.long = rate
                self.last_time = now
            return
        dt = now - self.last_time
        self.short += (rate - self.short) * (1 - math.exp(-dt / self.short_tau_seconds))
        self.long += (rate - self.long) * (1 - math.exp(-dt / self.long_tau_seconds))
        self.seconds_seen += dt
        self.last_time = now

    def to_state(self) -> dict[str, Any]:
        return {
            "short": self.short,
            "long": self.long,
            "last_time": self.last_time,
            "seen": self.seconds_seen,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ArrivalTrend:
        out = cls()
        try:
            short, long_, last = state.get("short"), state.get("long"), state.get("last_time")
            if short is not None and long_ is not None and last is not None:
                out.short, out.long, out.last_time = float(short), float(long_), float(last)
                out.seconds_seen = float(state.get("seen", 0.0))
        except (TypeError, ValueError, AttributeError):
            return cls()
        return out


def detect_burst(
    trend: ArrivalTrend,
    *,
    target: str,
    role: str,
    ratio_limit: float = 2.0,
    min_rate: float = 0.5,
    min_history_seconds: float = 60.0,
) -> Recommendation | None:
    """ARRIVAL_BURST when the short arrival average exceeds `ratio_limit` x the long one."""
    if trend.short is None or trend.long is None or trend.seconds_seen < min_history_seconds:
        return None
    if trend.short < min_rate:
        return None
    baseline = max(trend.long, min_rate / ratio_limit)
    ratio = trend.short / baseline
    if ratio < ratio_limit:
        return None
    return Recommendation(
        code="ARRIVAL_BURST",
        severity="warning",
        message=(
            f"Arrivals jumped to {trend.short:.2f}/s, {ratio:.1f}x the {trend.long:.2f}/s baseline: "
            "expect queueing; add capacity ahead of the queue or enable admission control."
        ),
        evidence={
            "arrival_rate_short_per_second": round(trend.short, 4),
            "arrival_rate_long_per_second": round(trend.long, 4),
            "ratio": round(ratio, 3),
            "ratio_limit": ratio_limit,
            "basis": "measurement",
        },
        confidence=min(0.95, 0.6 + 0.1 * (ratio - ratio_limit + 1)),
        target=target,
        role=role,
    )


# ----------------------------------------------------------------------------- KV pressure


def linear_slope(series: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope (units per second); None with fewer than 3 points or no time span."""
    if len(series) < 3:
        return None
    n = len(series)
    mt = sum(t for t, _ in series) / n
    mv = sum(v for _, v in series) / n
    stt = sum((t - mt) ** 2 for t, _ in series)
    if stt <= 0:
        return None
    return sum((t - mt) * (v - mv) for t, v in series) / stt


def seconds_until_kv_full(series: Sequence[tuple[float, float]]) -> tuple[float, float] | None:
    """(slope per second, seconds until usage reaches 1.0) when usage is rising; else None."""
    slope = linear_slope(series)
    if slope is None or slope <= 0 or not series:
        return None
    current = series[-1][1]
    return slope, max(0.0, (1.0 - current) / slope)


def detect_kv_pressure_precursor(
    series: Sequence[tuple[float, float]],
    *,
    target: str,
    role: str,
    horizon_seconds: float = 120.0,
    min_usage: float = 0.5,
) -> Recommendation | None:
    """KV_PRESSURE_IMMINENT when KV usage, at its current slope, hits 1.0 within the horizon."""
    found = seconds_until_kv_full(series)
    if found is None or not series:
        return None
    slope, eta = found
    current = series[-1][1]
    if current < min_usage or current >= 1.0 or eta > horizon_seconds:
        return None
    return Recommendation(
        code="KV_PRESSURE_IMMINENT",
        severity="warning",
        message=(
            f"KV-cache usage is {current:.0%} and rising {slope * 60:.1%} per minute: preemptions start in "
            f"about {eta:.0f} s; add KV capacity or replicas, or cap concurrency now."
        ),
        evidence={
            "kv_usage_ratio": round(current, 4),
            "slope_per_second": round(slope, 6),
            "seconds_until_full": round(eta, 1),
            "points": len(series),
            "basis": "prediction",
        },
        confidence=0.9 if len(series) >= 10 else 0.7,
        target=target,
        role=role,
    )


# ----------------------------------------------------------------------------- cascading delay


def detect_cascading_delay(
    waits: Sequence[tuple[float, float]],
    completions: Sequence[tuple[float, float]],
    *,
    target: str,
    role: str,
    min_growth_ratio: float = 1.5,
    flat_throughput_tolerance: float = 0.2,
    min_wait_seconds: float = 0.05,
) -> Recommendation | None:
    """CASCADING_QUEUE_DELAY: the queue-wait estimate grows by `min_growth_ratio` from the first half of
    the span to the second while completions per second change by less than the tolerance.

    `waits`: (time, estimated wait of the queue); `completions`: (time, completions per second).
    """
    if len(waits) < 6 or len(completions) < 6:
        return None
    half_w = len(waits) // 2
    early_w = sum(v for _, v in waits[:half_w]) / half_w
    late_w = sum(v for _, v in waits[half_w:]) / (len(waits) - half_w)
    half_c = len(completions) // 2
    early_c = sum(v for _, v in completions[:half_c]) / half_c
    late_c = sum(v for _, v in completions[half_c:]) / (len(completions) - half_c)
    if late_w < min_wait_seconds or late_w < min_growth_ratio * max(early_w, 1e-9):
        return None
    if early_c <= 0 or late_c <= 0:
        return None
    change = abs(late_c - early_c) / early_c
    if change > flat_throughput_tolerance:
        return None
    return Recommendation(
        code="CASCADING_QUEUE_DELAY",
        severity="warning",
        message=(
            f"Queue wait grew from {early_w:.2f} s to {late_w:.2f} s while throughput stayed at "
            f"{late_c:.2f} req/s: the engine is at capacity and each arrival waits longer; add replicas."
        ),
        evidence={
            "queue_wait_early_seconds": round(early_w, 4),
            "queue_wait_late_seconds": round(late_w, 4),
            "throughput_early_per_second": round(early_c, 4),
            "throughput_late_per_second": round(late_c, 4),
            "throughput_change_ratio": round(change, 4),
            "basis": "measurement",
        },
        confidence=0.85 if late_w >= 2 * early_w else 0.7,
        target=target,
        role=role,
    )


# ----------------------------------------------------------------------------- daily profile


@dataclass
class DailyProfile:
    """Per hour of day (UTC): exponentially forgotten means of arrival rate and utilization.

    Each hour bucket keeps (weight, mean arrival rate, mean utilization); new samples get weight 1
    and old weight decays with a half-life of `half_life_days`, so the profile follows a changing
    workload within a week without forgetting yesterday.
    """

    half_life_days: float = 3.0
    first_seen: float | None = None
    hours: list[list[float]] = field(default_factory=lambda: [[0.0, 0.0, 0.0] for _ in range(24)])
    last_update: float | None = None

    @staticmethod
    def hour_of(now: float) -> int:
        return int((now % SECONDS_PER_DAY) // SECONDS_PER_HOUR)

    def update(self, now: float, arrival_rate: float, utilization: float | None) -> None:
        if not math.isfinite(arrival_rate) or arrival_rate < 0:
            return
        if self.first_seen is None:
            self.first_seen = now
        if self.last_update is not None and now <= self.last_update:
            return
        dt = 0.0 if self.last_update is None else now - self.last_update
        self.last_update = now
        decay = 0.5 ** (dt / (self.half_life_days * SECONDS_PER_DAY)) if dt > 0 else 1.0
        for bucket in self.hours:
            bucket[0] *= decay
        # Sample weight proportional to the time it stands for (ticks may be irregular), in seconds.
        weight = max(dt, 1.0) if dt < SECONDS_PER_HOUR else 1.0
        bucket = self.hours[self.hour_of(now)]
        total = bucket[0] + weight
        bucket[1] += (arrival_rate - bucket[1]) * weight / total
        if utilization is not None and math.isfinite(utilization):
            bucket[2] += (utilization - bucket[2]) * weight / total
        bucket[0] = total

    def ready(self, now: float) -> bool:
        return self.first_seen is not None and now - self.first_seen >= SECONDS_PER_DAY

    def expected(self, hour: int) -> tuple[float, float] | None:
        """(arrival rate, utilization) expected in that hour; None when never observed."""
        weight, rate, util = self.hours[hour % 24]
        return (rate, util) if weight > 0 else None

    def to_state(self) -> dict[str, Any]:
        return {"first_seen": self.first_seen, "last_update": self.last_update, "hours": self.hours}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> DailyProfile:
        out = cls()
        try:
            hours = [[float(x) for x in h] for h in state.get("hours", [])]
            if len(hours) == 24 and all(len(h) == 3 and all(math.isfinite(x) for x in h) for h in hours):
                out.hours = hours
                fs, lu = state.get("first_seen"), state.get("last_update")
                out.first_seen = float(fs) if fs is not None else None
                out.last_update = float(lu) if lu is not None else None
        except (TypeError, ValueError, AttributeError):
            return cls()
        return out


def detect_peak_hour(
    profile: DailyProfile, now: float, *, knee: float, target: str, role: str, lookahead_hours: int = 1
) -> Recommendation | None:
    """PEAK_HOUR_CONTENTION: a full day is known and the next hour(s) historically run past the knee."""
    if not profile.ready(now):
        return None
    current_hour = DailyProfile.hour_of(now)
    for ahead in range(lookahead_hours + 1):
        hour = (current_hour + ahead) % 24
        expected = profile.expected(hour)
        if expected is None:
            continue
        rate, util = expected
        if util >= knee:
            when = "this hour" if ahead == 0 else f"from {hour:02d}:00 UTC"
            return Recommendation(
                code="PEAK_HOUR_CONTENTION",
                severity="warning",
                message=(
                    f"Utilization historically reaches {util:.0%} {when} ({rate:.2f} req/s), past the "
                    f"{knee:.0%} knee: scale up before the peak rather than after the queue forms."
                ),
                evidence={
                    "hour_utc": hour,
                    "expected_utilization_ratio": round(util, 4),
                    "expected_arrival_rate_per_second": round(rate, 4),
                    "knee": knee,
                    "basis": "prediction",
                },
                confidence=0.75,
                target=target,
                role=role,
            )
    return None
