"""GPU telemetry signals, a health score, and the GPU_UTIL_IS_NOT_A_SCALING_SIGNAL detector.

NVML's `utilization.gpu` is the share of the sample period in which *one or more kernels* ran
(NVML API reference, nvmlUtilization_t). A single small decode request keeps a kernel resident and
reads near 100 %, so the number says nothing about SM occupancy, memory bandwidth or KV headroom.
When utilization is pinned high while the engine's queue is empty and at most one request runs,
we say so: scaling on it would add GPUs for nothing. Scale on queue depth / backlog (prefill) and
KV utilization (decode) instead.

Health score (0-1, a product of factors; 1 = nothing wrong we can see):
* thermal: 1 below (slowdown threshold - 10 C), falling linearly to 0.5 at the slowdown threshold
  (0.5 past it); without a known threshold, 85 C stands in for it;
* clock throttling for hardware, thermal or power-brake reasons: x0.5 (a software power cap: x0.9);
* uncorrected ECC errors since boot: x0.25.
"""

from __future__ import annotations

from collections.abc import Sequence

from phaselens.model import GpuReading, Recommendation, Signal, make_labels

DEFAULT_SLOWDOWN_CELSIUS = 85.0
PINNED_UTILIZATION = 0.90
SEVERE_THROTTLES = frozenset({"hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"})


def health_score(reading: GpuReading) -> float:
    score = 1.0
    if reading.temperature_celsius is not None:
        slowdown = reading.slowdown_temperature_celsius or DEFAULT_SLOWDOWN_CELSIUS
        margin = slowdown - reading.temperature_celsius
        if margin < 10:
            score *= max(0.5, 0.5 + 0.5 * margin / 10)
    if SEVERE_THROTTLES.intersection(reading.throttle_reasons):
        score *= 0.5
    elif "sw_power_cap" in reading.throttle_reasons:
        score *= 0.9
    if reading.ecc_uncorrected_errors:
        score *= 0.25
    return score


def gpu_signals(readings: Sequence[GpuReading]) -> list[Signal]:
    """Signals per GPU (label `gpu` = NVML index); a field the GPU did not report is absent."""
    out: list[Signal] = []
    for r in readings:
        labels = make_labels({"gpu": str(r.index)})
        if r.utilization_ratio is not None:
            out.append(Signal("phaselens_gpu_utilization_ratio", labels, r.utilization_ratio))
        if r.memory_used_bytes is not None and r.memory_total_bytes:
            out.append(Signal("phaselens_gpu_memory_used_ratio", labels, r.memory_used_bytes / r.memory_total_bytes))
        if r.power_watts is not None:
            out.append(Signal("phaselens_gpu_power_watts", labels, r.power_watts))
        if r.temperature_celsius is not None:
            out.append(Signal("phaselens_gpu_temperature_celsius", labels, r.temperature_celsius))
        out.append(Signal("phaselens_gpu_health_ratio", labels, health_score(r)))
    return out


def detect_util_not_scaling_signal(
    utilization_history: Sequence[float],
    *,
    waiting: float,
    running: float,
    target: str = "",
    role: str = "",
    min_points: int = 3,
) -> Recommendation | None:
    """GPU_UTIL_IS_NOT_A_SCALING_SIGNAL when the mean of recent utilization readings (max over GPUs,
    0-1) is >= 90 % while the engine's queue is empty and at most one request runs."""
    if len(utilization_history) < min_points:
        return None
    mean_util = sum(utilization_history) / len(utilization_history)
    if mean_util < PINNED_UTILIZATION or waiting > 0 or running > 1:
        return None
    return Recommendation(
        code="GPU_UTIL_IS_NOT_A_SCALING_SIGNAL",
        severity="info",
        message=(
            f"GPU utilization reads {mean_util:.0%} with an empty queue and {running:.0f} running "
            "request(s): NVML utilization only means a kernel was resident, not that the GPU is full; "
            "do not autoscale on it, scale prefill on queue depth and decode on KV utilization."
        ),
        evidence={
            "gpu_utilization_ratio": round(mean_util, 4),
            "requests_waiting": waiting,
            "requests_running": running,
            "readings": len(utilization_history),
            "basis": "measurement",
        },
        confidence=0.9,
        target=target,
        role=role,
    )
