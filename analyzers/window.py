"""Rolling window over one target's canonical snapshots.

Memory is bounded twice: by time (the horizon) and by a point count. It stores the canonical
snapshots the adapters produce (a few hundred numbers each), never raw payloads.

Counter and histogram increases follow Prometheus' `increase()` rules: a value that goes down
is a reset (engine restart), and the increase across the reset is the new value itself, so a
restart never yields a negative or huge rate. A series seen for the first time contributes no
increase (its earlier history is unknown), as in Prometheus.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from phaselens.model import EngineSnapshot, Histogram, Labels, label_value

Group = tuple[str, str]
"""(model_name, engine): the unit every per-target signal is computed for."""


@dataclass(frozen=True, slots=True)
class HistogramDelta:
    """Observations that arrived during the window: per-bucket counts (cumulative), sum and count."""

    buckets: tuple[tuple[float, float], ...]
    sum: float
    count: float
    seconds: float

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None


def _matches(labels: Labels, group: Group, match: Mapping[str, str] | None) -> bool:
    if label_value(labels, "model_name") != group[0] or label_value(labels, "engine") != group[1]:
        return False
    if match:
        return all(label_value(labels, k) == v for k, v in match.items())
    return True


def _counter_increase(values: list[float]) -> float:
    total = 0.0
    for prev, cur in itertools.pairwise(values):
        total += cur - prev if cur >= prev else cur
    return total


@dataclass(frozen=True, slots=True)
class _Point:
    """A snapshot plus its series indexed by canonical name, built once when added."""

    snapshot: EngineSnapshot
    scalars: Mapping[str, tuple[tuple[Labels, float], ...]]
    histograms: Mapping[str, tuple[tuple[Labels, Histogram], ...]]

    @property
    def time(self) -> float:
        return self.snapshot.time


def _index(snapshot: EngineSnapshot) -> _Point:
    scalars: dict[str, list[tuple[Labels, float]]] = {}
    for (name, labels), value in snapshot.scalars.items():
        scalars.setdefault(name, []).append((labels, value))
    hists: dict[str, list[tuple[Labels, Histogram]]] = {}
    for (name, labels), hist in snapshot.histograms.items():
        hists.setdefault(name, []).append((labels, hist))
    return _Point(
        snapshot,
        {k: tuple(v) for k, v in scalars.items()},
        {k: tuple(v) for k, v in hists.items()},
    )


class TargetWindow:
    """Snapshots of one target within `horizon` seconds, oldest first."""

    def __init__(self, horizon_seconds: float, max_points: int = 3600) -> None:
        if horizon_seconds <= 0:
            raise ValueError("window horizon must be positive")
        self.horizon = horizon_seconds
        self._points: deque[_Point] = deque(maxlen=max_points)

    def add(self, snapshot: EngineSnapshot) -> None:
        if self._points and snapshot.time < self._points[-1].time:
            # Out-of-order data (clock step back): start over rather than compute nonsense rates.
            self._points.clear()
        self._points.append(_index(snapshot))
        cutoff = snapshot.time - self.horizon
        while len(self._points) > 1 and self._points[0].time < cutoff:
            self._points.popleft()

    def __len__(self) -> int:
        return len(self._points)

    @property
    def latest(self) -> EngineSnapshot | None:
        return self._points[-1].snapshot if self._points else None

    def snapshots(self, horizon: float | None = None) -> list[EngineSnapshot]:
        return [p.snapshot for p in self._within(horizon)]

    def _within(self, horizon: float | None) -> list[_Point]:
        if not self._points:
            return []
        if horizon is None:
            return list(self._points)
        cutoff = self._points[-1].time - horizon
        return [p for p in self._points if p.time >= cutoff]

    def groups(self) -> list[Group]:
        """(model_name, engine) pairs present in the latest snapshot."""
        snap = self.latest
        if snap is None:
            return []
        found = {
            (label_value(labels, "model_name"), label_value(labels, "engine"))
            for _, labels in (*snap.scalars.keys(), *snap.histograms.keys())
        }
        return sorted(found)

    def has(self, name: str, group: Group) -> bool:
        if not self._points:
            return False
        point = self._points[-1]
        series = (*point.scalars.get(name, ()), *point.histograms.get(name, ()))
        return any(_matches(labels, group, None) for labels, _ in series)

    # ------------------------------------------------------------------ gauges

    def gauge(self, name: str, group: Group, match: Mapping[str, str] | None = None) -> float | None:
        """Sum of the matching series in the latest snapshot; None when no series matches."""
        if not self._points:
            return None
        values = [v for labels, v in self._points[-1].scalars.get(name, ()) if _matches(labels, group, match)]
        if not values or any(math.isnan(v) for v in values):
            return None
        return sum(values)

    def gauge_series(self, name: str, group: Group, horizon: float | None = None) -> list[tuple[float, float]]:
        """(time, value) of a gauge across the window, for trends."""
        out: list[tuple[float, float]] = []
        for point in self._within(horizon):
            values = [v for labels, v in point.scalars.get(name, ()) if _matches(labels, group, None)]
            if values and not any(math.isnan(v) for v in values):
                out.append((point.time, sum(values)))
        return out

    def histogram_count_series(
        self, name: str, group: Group, horizon: float | None = None
    ) -> list[tuple[float, float]]:
        """(time, observation count summed over the matching series) across the window."""
        out: list[tuple[float, float]] = []
        for point in self._within(horizon):
            counts = [h.count for labels, h in point.histograms.get(name, ()) if _matches(labels, group, None)]
            if counts and all(c is not None and not math.isnan(c) for c in counts):
                out.append((point.time, sum(c for c in counts if c is not None)))
        return out

    # ------------------------------------------------------------------ counters

    def span(self, horizon: float | None = None) -> float:
        points = self._within(horizon)
        return points[-1].time - points[0].time if len(points) >= 2 else 0.0

    def _counter_series(
        self, name: str, group: Group, match: Mapping[str, str] | None, horizon: float | None
    ) -> dict[Labels, list[tuple[float, float]]]:
        per_series: dict[Labels, list[tuple[float, float]]] = {}
        for point in self._within(horizon):
            for labels, value in point.scalars.get(name, ()):
                if not math.isnan(value) and _matches(labels, group, match):
                    per_series.setdefault(labels, []).append((point.time, value))
        return {labels: pts for labels, pts in per_series.items() if len(pts) >= 2}

    def increase(
        self, name: str, group: Group, match: Mapping[str, str] | None = None, horizon: float | None = None
    ) -> float | None:
        """Reset-aware increase summed over matching series; None without two points of any series."""
        usable = self._counter_series(name, group, match, horizon)
        if not usable:
            return None
        return sum(_counter_increase([v for _, v in pts]) for pts in usable.values())

    def rate(
        self, name: str, group: Group, match: Mapping[str, str] | None = None, horizon: float | None = None
    ) -> float | None:
        """Per-second increase, each series over the time it was actually seen (a series that appeared
        mid-window is not diluted by the time before it existed); summed over matching series."""
        usable = self._counter_series(name, group, match, horizon)
        total = 0.0
        found = False
        for pts in usable.values():
            seconds = pts[-1][0] - pts[0][0]
            if seconds > 0:
                total += _counter_increase([v for _, v in pts]) / seconds
                found = True
        return total if found else None

    # ------------------------------------------------------------------ histograms

    def histogram_delta(
        self, name: str, group: Group, horizon: float | None = None
    ) -> HistogramDelta | None:
        """Observations added during the window, merged over matching series (same bucket layout)."""
        per_series: dict[Labels, list[Histogram]] = {}
        times: dict[Labels, list[float]] = {}
        for point in self._within(horizon):
            for labels, hist in point.histograms.get(name, ()):
                if _matches(labels, group, None):
                    per_series.setdefault(labels, []).append(hist)
                    times.setdefault(labels, []).append(point.time)
        steps: list[list[tuple[float, float]]] = []
        total_sum = 0.0
        total_count = 0.0
        seconds = 0.0
        found = False
        for labels, hists in per_series.items():
            if len(hists) < 2:
                continue
            found = True
            seconds = max(seconds, times[labels][-1] - times[labels][0])
            if _no_reset(hists):
                # The common case: one subtraction of the ends instead of a walk over every step.
                bucket_delta, sum_delta, count_delta = _histogram_step(hists[0], hists[-1])
                steps.append(bucket_delta)
                total_sum += sum_delta
                total_count += count_delta
                continue
            for prev, cur in itertools.pairwise(hists):
                bucket_delta, sum_delta, count_delta = _histogram_step(prev, cur)
                steps.append(bucket_delta)
                total_sum += sum_delta
                total_count += count_delta
        if not found:
            return None
        buckets = _merge_cumulative(steps)
        return HistogramDelta(buckets=buckets, sum=total_sum, count=total_count, seconds=seconds)

    def info(self, engine: str) -> Mapping[str, str]:
        snap = self.latest
        if snap is None:
            return {}
        return snap.info.get(engine) or snap.info.get("", {})


def _merge_cumulative(steps: list[list[tuple[float, float]]]) -> tuple[tuple[float, float], ...]:
    """Sum cumulative bucket lists. When layouts differ (bounds changed across an engine restart),
    each list is read as a step function at every bound of the union (its count at its largest
    bound <= that one), so the sum stays cumulative instead of dropping to 0 at foreign bounds."""
    bounds = sorted({bound for step in steps for bound, _ in step})
    merged = dict.fromkeys(bounds, 0.0)
    for step in steps:
        if len(step) == len(bounds) and all(b == u for (b, _), u in zip(step, bounds, strict=True)):
            for bound, value in step:
                merged[bound] += value
            continue
        own = iter(step)
        current = next(own, None)
        carried = 0.0
        for bound in bounds:
            while current is not None and current[0] <= bound:
                carried = current[1]
                current = next(own, None)
            merged[bound] += carried
    return tuple(merged.items())


def _count(hist: Histogram) -> float:
    return hist.count if hist.count is not None else (hist.buckets[-1][1] if hist.buckets else 0.0)


def _no_reset(hists: list[Histogram]) -> bool:
    """True when counts never go down and the bucket layout never changes across the points."""
    bounds = [b for b, _ in hists[0].buckets]
    previous = _count(hists[0])
    for hist in hists[1:]:
        current = _count(hist)
        if current < previous or [b for b, _ in hist.buckets] != bounds:
            return False
        previous = current
    return True


def _histogram_step(prev: Histogram, cur: Histogram) -> tuple[list[tuple[float, float]], float, float]:
    cur_count = cur.count if cur.count is not None else (cur.buckets[-1][1] if cur.buckets else 0.0)
    prev_count = prev.count if prev.count is not None else (prev.buckets[-1][1] if prev.buckets else 0.0)
    same_layout = [b for b, _ in prev.buckets] == [b for b, _ in cur.buckets]
    reset = cur_count < prev_count or not same_layout
    if reset:
        return list(cur.buckets), (cur.sum or 0.0), cur_count
    deltas = [(b, max(0.0, c - p)) for (b, c), (_, p) in zip(cur.buckets, prev.buckets, strict=True)]
    sum_delta = (cur.sum or 0.0) - (prev.sum or 0.0)
    return deltas, max(0.0, sum_delta), cur_count - prev_count


# ---------------------------------------------------------------------- quantiles and fractions


def histogram_quantile(q: float, buckets: tuple[tuple[float, float], ...]) -> float | None:
    """Prometheus `histogram_quantile` on cumulative buckets: linear inside the bucket holding the rank.

    Returns None with no observations. A rank in the +Inf bucket returns the highest finite bound,
    as Prometheus does. The first bucket interpolates from 0 (Prometheus' rule for positive bounds).
    """
    if not buckets or not 0.0 <= q <= 1.0:
        return None
    total = buckets[-1][1]
    if not math.isinf(buckets[-1][0]):
        total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower_bound = 0.0
    lower_count = 0.0
    for index, (bound, count) in enumerate(buckets):
        if count >= rank and count > lower_count:
            if math.isinf(bound):
                return buckets[index - 1][0] if index > 0 else None
            if index == 0 and bound <= 0:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    # rank beyond the last finite bucket without +Inf: clamp to the highest bound.
    return buckets[-1][0] if not math.isinf(buckets[-1][0]) else None


def fraction_at_most(threshold: float, buckets: tuple[tuple[float, float], ...]) -> tuple[float, float] | None:
    """Bounds on the share of observations <= threshold.

    Exact (lower == upper) when the threshold is a bucket bound; otherwise the two bounds around it.
    """
    if not buckets:
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    below = 0.0
    for bound, count in buckets:
        if bound == threshold:
            return count / total, count / total
        if bound > threshold:
            return below / total, count / total
        below = count
    return below / total, below / total
