"""Windowed latency quantiles from histogram deltas (what arrived during the window, not since start)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from phaselens.analyzers.view import WindowView
from phaselens.analyzers.window import Group, histogram_quantile
from phaselens.parsers.engines import canonical as c

QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.95, 0.99)

LATENCY_SIGNALS: Mapping[str, str] = {
    "phaselens_ttft_seconds": c.TTFT_SECONDS,
    "phaselens_itl_seconds": c.ITL_SECONDS,
    "phaselens_queue_wait_seconds": c.QUEUE_TIME_SECONDS,
    "phaselens_e2e_latency_seconds": c.E2E_LATENCY_SECONDS,
}
"""Exported signal name -> canonical histogram it is computed from."""


@dataclass(frozen=True, slots=True)
class LatencyQuantiles:
    """Quantiles of one histogram over the window, with the number of observations behind them."""

    values: Mapping[float, float]
    observations: float
    mean: float | None


def window_quantiles(
    window: WindowView, group: Group, histogram: str, quantiles: tuple[float, ...] = QUANTILES
) -> LatencyQuantiles | None:
    """Prometheus-style `histogram_quantile` over the window's delta; None without observations.

    Linear interpolation inside the bucket holding the rank, so the error is at most that bucket's
    width; a rank in the +Inf bucket reports the highest finite bound (a lower bound).
    """
    delta = window.histogram_delta(histogram, group)
    if delta is None or delta.count <= 0:
        return None
    values: dict[float, float] = {}
    for q in quantiles:
        value = histogram_quantile(q, delta.buckets)
        if value is not None:
            values[q] = value
    if not values:
        return None
    return LatencyQuantiles(values=values, observations=delta.count, mean=delta.mean)


def latency_summary(window: WindowView, group: Group) -> dict[str, LatencyQuantiles]:
    """Exported signal name -> quantiles, for each latency histogram the engine exposes."""
    out: dict[str, LatencyQuantiles] = {}
    for signal, histogram in LATENCY_SIGNALS.items():
        found = window_quantiles(window, group, histogram)
        if found is not None:
            out[signal] = found
    return out
