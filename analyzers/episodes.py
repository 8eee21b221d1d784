"""Episode detection over a run's signal timelines (offline report).

An episode is a maximal stretch of ticks where a condition holds, with short gaps bridged and
blips dropped. Pure functions: lists in, episodes out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Episode:
    kind: str  # "kv_pressure" | "overload" | "idle" | "prefix_reuse"
    target: str
    start: float
    end: float
    evidence: Mapping[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.end - self.start


def stretches(
    times: Sequence[float], flags: Sequence[bool], *, merge_gap: float, min_seconds: float
) -> list[tuple[int, int]]:
    """Index ranges [first, last] where `flags` hold, gaps up to `merge_gap` s bridged,
    stretches shorter than `min_seconds` dropped."""
    if len(times) != len(flags):
        raise ValueError("times and flags differ in length")
    ranges: list[tuple[int, int]] = []
    start: int | None = None
    last_true: int | None = None
    for index, flag in enumerate(flags):
        if not flag:
            continue
        if start is None:
            start = index
        elif last_true is not None and times[index] - times[last_true] > merge_gap:
            ranges.append((start, last_true))
            start = index
        last_true = index
    if start is not None and last_true is not None:
        ranges.append((start, last_true))
    return [(a, b) for a, b in ranges if times[b] - times[a] >= min_seconds]


def integrate(times: Sequence[float], rates: Sequence[float], first: int, last: int) -> float:
    """Trapezoid integral of a per-second rate between two tick indexes."""
    total = 0.0
    for i in range(first, last):
        total += (times[i + 1] - times[i]) * (rates[i] + rates[i + 1]) / 2
    return total
