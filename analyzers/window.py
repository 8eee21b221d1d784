"""Rolling window over one target's canonical snapshots.

Memory is bounded twice: by time (the horizon) and by a point count. It stores the canonical
snapshots the adapters produce (a few hundred numbers each), never raw payloads.

Counter and histogram increases follow Prometheus' `increase()` rules: a value that goes down
is a reset (engine restart), and the increase across the reset is the new value itself, so a
restart never yields a negative or huge rate. A series seen for the first time contributes no
increase (its earlier history is unknown), as in Prometheus.

Cost. Each snapshot is indexed by (model_name, engine) group, then canonical name, when it is
added, so a query reads only its group's series: a tick is linear in the series it reads, not
groups x series. With `max_groups` (the sidecar's `--max-models-per-target`), only the busiest
groups keep their own series; the others are summed into one `__other__` group when the snapshot
is added, so memory and analysis cost stay bounded however many models an engine reports.

Gauge and counter queries read columns (`_GaugeColumn`, `_CounterColumn`): one per queried name
and group, caught up with the points added since the last query and trimmed with the window, so
a tick reads each new point once instead of walking the whole window for every query (the
sidecar ticks on every scrape: at `--interval 0.25` over a 30 s window that was 120 points per
query, 60 queries per tick). Results are the walk's, to the bit (tests/test_window_columns.py).
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import operator
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from operator import itemgetter
from typing import Any

from phaselens.model import EngineSnapshot, Histogram, Labels, label_value
from phaselens.parsers.engines.canonical import (
    COUNTERS,
    FINISHED_REQUESTS,
    MAX_COMBINED,
    REQUESTS_RUNNING,
    REQUESTS_WAITING,
)

Group = tuple[str, str]
"""(model_name, engine): the unit every per-target signal is computed for."""
MatchKey = tuple[tuple[str, str], ...]
"""An extra-label filter as a hashable key (for memoizing queries by their filter)."""


def match_key(match: Mapping[str, str] | None) -> MatchKey:
    return tuple(sorted(match.items())) if match else ()


OTHER_MODEL = "__other__"
"""model_name of the group that sums every group beyond `max_groups` (docs/hardening.md)."""
GENERATION_LABEL = "__generation__"
"""Internal label of a folded counter or histogram series (never exported): see `TargetWindow._fold`."""


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


def _matches(labels: Labels, match: Mapping[str, str] | None) -> bool:
    """The extra-label filter; the group is already selected by the index."""
    return not match or all(label_value(labels, k) == v for k, v in match.items())


def _added(incs: list[float]) -> float:
    """The increases added left to right from 0.0, as the walk over pairs of values added them (the same bits)."""
    return functools.reduce(operator.add, incs, 0.0)


_first_item = itemgetter(0)


def _point_time(point: _Point) -> float:
    return point.snapshot.time


def group_of(labels: Labels) -> Group:
    return label_value(labels, "model_name"), label_value(labels, "engine")


@dataclass(frozen=True, slots=True)
class _GroupSeries:
    """One group's series of one snapshot, by canonical name."""

    scalars: Mapping[str, tuple[tuple[Labels, float], ...]]
    histograms: Mapping[str, tuple[tuple[Labels, Histogram], ...]]


_NO_SERIES = _GroupSeries({}, {})


@dataclass(frozen=True, slots=True)
class _Point:
    """A snapshot (as kept: capped groups folded) plus its series indexed by group, then name."""

    snapshot: EngineSnapshot
    groups: Mapping[Group, _GroupSeries]
    seq: int = 0  # position in the stream of added snapshots (see `TargetWindow._breaks`)

    @property
    def time(self) -> float:
        return self.snapshot.time

    def scalars(self, name: str, group: Group) -> tuple[tuple[Labels, float], ...]:
        return self.groups.get(group, _NO_SERIES).scalars.get(name, ())

    def histograms(self, name: str, group: Group) -> tuple[tuple[Labels, Histogram], ...]:
        return self.groups.get(group, _NO_SERIES).histograms.get(name, ())


@dataclass(slots=True)
class _GaugeColumn:
    """A gauge's (time, sum over its series) at each point that had it without NaN, with the point's seq
    and the series' own values."""

    last_seq: int = 0  # the newest point read
    seqs: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    rows: list[tuple[float, float]] = field(default_factory=list)
    per_series: list[tuple[float, ...]] = field(default_factory=list)


@dataclass(slots=True)
class _CounterSeries:
    """One counter series' non-NaN values, with each point's seq and time, the series' row position in
    the point (the walk's order), and the reset-aware increase from the previous value (`incs[0]`: 0)."""

    seqs: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    incs: list[float] = field(default_factory=list)
    last: float = 0.0


@dataclass(slots=True)
class _CounterColumn:
    last_seq: int = 0
    series: dict[Labels, _CounterSeries] = field(default_factory=dict)


def _trim(seqs: list[int], first_seq: int, *parallel: list[Any]) -> None:
    """Drop the leading entries of points that left the window."""
    cut = bisect.bisect_left(seqs, first_seq)
    if cut:
        del seqs[:cut]
        for values in parallel:
            del values[:cut]


_RawGroup = tuple[dict[str, list[tuple[Labels, float]]], dict[str, list[tuple[Labels, Histogram]]]]


def _split(snapshot: EngineSnapshot, groups_of: dict[Labels, Group]) -> dict[Group, _RawGroup]:
    """One pass over the snapshot: series by group, then canonical name. `groups_of` caches each
    label set's group (the same label tuples recur every scrape) and is refilled with this
    snapshot's label sets only, so it stays as small as one snapshot."""
    out: dict[Group, _RawGroup] = {}
    known = dict(groups_of)
    groups_of.clear()
    for (name, labels), value in snapshot.scalars.items():
        group = known.get(labels) or group_of(labels)
        groups_of[labels] = group
        entry = out.get(group)
        if entry is None:
            entry = out[group] = ({}, {})
        entry[0].setdefault(name, []).append((labels, value))
    for (name, labels), hist in snapshot.histograms.items():
        group = known.get(labels) or group_of(labels)
        groups_of[labels] = group
        entry = out.get(group)
        if entry is None:
            entry = out[group] = ({}, {})
        entry[1].setdefault(name, []).append((labels, hist))
    return out


def _freeze(raw: _RawGroup) -> _GroupSeries:
    return _GroupSeries({k: tuple(v) for k, v in raw[0].items()}, {k: tuple(v) for k, v in raw[1].items()})


@dataclass(slots=True)
class _Traffic:
    """A group's traffic: finished requests per second (EWMA over the horizon) and its last count."""

    finished: float
    rate: float
    time: float


@dataclass(slots=True)
class _Folded:
    """One `__other__` series: its member composition, last value and generation (see `_fold`)."""

    members: tuple[int, int]
    value: float
    generation: int


class TargetWindow:
    """Snapshots of one target within `horizon` seconds, oldest first.

    `max_groups` caps the (model_name, engine) groups kept per snapshot: the busiest keep their own
    series, the rest are folded into one `__other__` group (see `_fold`). None: no cap.
    """

    def __init__(self, horizon_seconds: float, max_points: int = 3600, max_groups: int | None = None) -> None:
        if horizon_seconds <= 0:
            raise ValueError("window horizon must be positive")
        if max_groups is not None and max_groups < 1:
            raise ValueError("max_groups must be at least 1")
        self.horizon = horizon_seconds
        self.max_groups = max_groups
        self._points: deque[_Point] = deque(maxlen=max_points)
        self._traffic: dict[Group, _Traffic] = {}
        self._kept: set[Group] = set()
        self._folded: dict[tuple[str, Labels], _Folded] = {}
        self._generations = 0  # the last generation number handed out (see `_generation`)
        self._groups_of: dict[Labels, Group] = {}
        # Per histogram series of the latest snapshot: its last count and bounds, and the seq of the last point
        # where its count went down or its layout changed. Kept as snapshots are added, so a window
        # query knows "no reset in the window" without walking every point of every series.
        self._seq = 0
        self._last_hist: dict[tuple[Group, str, Labels], tuple[float, tuple[float, ...]]] = {}
        self._breaks: dict[tuple[Group, str, Labels], int] = {}
        # Per (group, histogram name) of the latest snapshot: its series' label sets and the seq
        # since which every snapshot had exactly those (then a window query reads only its ends).
        self._series_sets: dict[tuple[Group, str], tuple[frozenset[Labels], int]] = {}
        self._relabelled: dict[Labels, Labels] = {}
        self._relabelled_for: Group | None = None
        self._gauges: dict[tuple[str, Group, MatchKey], _GaugeColumn] = {}
        self._counters: dict[tuple[str, Group], _CounterColumn] = {}
        self._deltas: dict[tuple[str, Group, int], HistogramDelta | None] = {}  # until the next `add`
        self.folded_groups = 0
        """How many groups the latest snapshot folded into `__other__` (0: not capped)."""
        self.seen_groups = 0
        """How many groups the latest snapshot had before capping."""

    def add(self, snapshot: EngineSnapshot) -> None:
        if self._points and snapshot.time < self._points[-1].time:
            # Out-of-order data (clock step back): start over rather than compute nonsense rates.
            self._points.clear()
            self._traffic.clear()
            self._folded.clear()
            self._last_hist.clear()
            self._breaks.clear()
            self._series_sets.clear()
            self._gauges.clear()
            self._counters.clear()
        self._deltas.clear()
        self._seq += 1
        point = replace(self._index(snapshot), seq=self._seq)
        self._track_breaks(point)
        self._points.append(point)
        cutoff = snapshot.time - self.horizon
        while len(self._points) > 1 and self._points[0].time < cutoff:
            self._points.popleft()
        self._prune_columns(point)

    def _prune_columns(self, point: _Point) -> None:
        """Forget the columns of groups the latest snapshot lacks (the state stays bounded by the groups
        of one scrape; a group that comes back is read from the window again on its next query)."""
        for gauge in [key for key in self._gauges if key[1] not in point.groups]:
            del self._gauges[gauge]
        for counter in [key for key in self._counters if key[1] not in point.groups]:
            del self._counters[counter]

    def _new_points(self, last_seq: int) -> Iterable[_Point]:
        """The points added after the one with seq `last_seq` (seqs are consecutive), oldest first."""
        points = self._points
        count = min(len(points), self._seq - last_seq)
        return itertools.islice(points, len(points) - count, None)

    def _track_breaks(self, point: _Point) -> None:
        """Update each histogram series' last break (reset or layout change) with this point.

        A series not in the previous snapshot starts with a break at this point: its history is
        unknown here, so a query over a window reaching back past it walks the points (exact).
        Only the latest snapshot's series are kept: the state stays as small as one snapshot.
        """
        last_hist, breaks = self._last_hist, self._breaks
        new_last: dict[tuple[Group, str, Labels], tuple[float, tuple[float, ...]]] = {}
        new_breaks: dict[tuple[Group, str, Labels], int] = {}
        seq = point.seq
        sets = self._series_sets
        new_sets: dict[tuple[Group, str], tuple[frozenset[Labels], int]] = {}
        for group, series in point.groups.items():
            for name, rows in series.histograms.items():
                label_set = frozenset(labels for labels, _ in rows)
                held = sets.get((group, name))
                new_sets[(group, name)] = (label_set, held[1] if held is not None and held[0] == label_set else seq)
                for labels, hist in rows:
                    key = (group, name, labels)
                    count, bounds = _count(hist), tuple(map(_bound, hist.buckets))
                    new_last[key] = (count, bounds)
                    prev = last_hist.get(key)
                    # continued: the count did not go down and the bucket layout is the same
                    if prev is not None and count >= prev[0] and bounds == prev[1]:
                        new_breaks[key] = breaks[key]
                    else:
                        new_breaks[key] = seq
        self._last_hist, self._breaks, self._series_sets = new_last, new_breaks, new_sets

    # ------------------------------------------------------------------ capping

    def _index(self, snapshot: EngineSnapshot) -> _Point:
        raw = _split(snapshot, self._groups_of)
        self.seen_groups = len(raw)
        self._update_traffic(raw, snapshot.time)
        limit = self.max_groups
        if limit is None or (len(raw) <= limit and OTHER_MODEL not in {g[0] for g in raw}):
            self.folded_groups = 0
            self._kept = set(raw)
            self._folded.clear()  # folding stopped: a later fold starts new series
            return _Point(snapshot, {group: _freeze(series) for group, series in raw.items()})
        kept = self._select(raw, limit)
        members = [group for group in raw if group not in kept]
        self.folded_groups = len(members)
        groups = {group: _freeze(raw[group]) for group in sorted(kept)}
        if members:
            engines = {engine for _, engine in members}
            other: Group = (OTHER_MODEL, engines.pop() if len(engines) == 1 else OTHER_MODEL)
            groups[other] = self._fold(other, [raw[group] for group in members])
        scalars = {
            (name, labels): value
            for series in groups.values()
            for name, rows in series.scalars.items()
            for labels, value in rows
        }
        histograms = {
            (name, labels): hist
            for series in groups.values()
            for name, rows in series.histograms.items()
            for labels, hist in rows
        }
        kept_snapshot = replace(snapshot, scalars=scalars, histograms=histograms)
        return _Point(kept_snapshot, groups)

    def _update_traffic(self, raw: Mapping[Group, _RawGroup], time: float) -> None:
        """Finished requests per second per group, an EWMA with the horizon as time constant.
        Groups absent from the snapshot are forgotten (the state stays bounded by one scrape)."""
        traffic: dict[Group, _Traffic] = {}
        for group, (scalars, _) in raw.items():
            finished = sum(
                value for name in FINISHED_REQUESTS for _, value in scalars.get(name, ()) if math.isfinite(value)
            )
            held = self._traffic.get(group)
            if held is None or time <= held.time:
                traffic[group] = held or _Traffic(finished, 0.0, time)
                continue
            seconds = time - held.time
            increase = finished - held.finished if finished >= held.finished else finished
            weight = 1.0 - math.exp(-seconds / self.horizon)
            traffic[group] = _Traffic(finished, held.rate + weight * (increase / seconds - held.rate), time)
        self._traffic = traffic

    def _select(self, raw: Mapping[Group, _RawGroup], limit: int) -> set[Group]:
        """The `limit` busiest groups. A kept group's score counts 25 % more, so two groups of
        nearly equal traffic do not swap places every scrape (stable series for dashboards)."""

        def score(group: Group) -> tuple[float, int, Group]:
            scalars = raw[group][0]
            in_flight = sum(
                v for name in (REQUESTS_RUNNING, REQUESTS_WAITING) for _, v in scalars.get(name, ()) if math.isfinite(v)
            )
            held = self._traffic.get(group)
            value = (held.rate * self.horizon if held else 0.0) + in_flight
            incumbent = group in self._kept
            return -(value * (1.25 if incumbent else 1.0)), 0 if incumbent else 1, group

        candidates = sorted((g for g in raw if g[0] != OTHER_MODEL), key=score)
        kept = set(candidates[:limit])
        self._kept = kept
        return kept

    def _fold(self, other: Group, members: list[_RawGroup]) -> _GroupSeries:
        """Sum the members' series into `other`, per (name, extra labels).

        Counts and counters are summed, ratios take the max, histograms are added bucket by bucket.
        A summed counter is a new series (a new `__generation__`, so it adds no increase across the
        change) whenever its set of members changes or its value goes down (a member restarted):
        a window query then never reads a jump in membership as traffic.
        """
        scalars: dict[tuple[str, Labels], list[tuple[float, Labels]]] = {}
        hists: dict[tuple[str, Labels], list[tuple[Histogram, Labels]]] = {}
        known = self._relabelled if self._relabelled_for == other else {}
        relabelled: dict[Labels, Labels] = {}  # this snapshot's label sets only: bounded
        for member_scalars, member_hists in members:
            for name, rows in member_scalars.items():
                for labels, value in rows:
                    new = known.get(labels) or _relabel(labels, other)
                    relabelled[labels] = new
                    scalars.setdefault((name, new), []).append((value, labels))
            for name, hist_rows in member_hists.items():
                for labels, hist in hist_rows:
                    new = known.get(labels) or _relabel(labels, other)
                    relabelled[labels] = new
                    hists.setdefault((name, new), []).append((hist, labels))
        self._relabelled, self._relabelled_for = relabelled, other
        out_scalars: dict[str, list[tuple[Labels, float]]] = {}
        folded: dict[tuple[str, Labels], _Folded] = {}
        for (name, labels), parts in scalars.items():
            values = [value for value, _ in parts if not math.isnan(value)]
            if not values:
                continue
            value = max(values) if name in MAX_COMBINED else sum(values)
            if name in COUNTERS:
                labels = self._generation(folded, (name, labels), parts, value)
            out_scalars.setdefault(name, []).append((labels, value))
        out_hists: dict[str, list[tuple[Labels, Histogram]]] = {}
        for (name, labels), hist_parts in hists.items():
            merged = _sum_histograms(name, labels, [hist for hist, _ in hist_parts])
            labels = self._generation(folded, (name, labels), hist_parts, _count(merged))
            out_hists.setdefault(name, []).append((labels, replace(merged, labels=labels)))
        self._folded = folded
        return _GroupSeries({k: tuple(v) for k, v in out_scalars.items()}, {k: tuple(v) for k, v in out_hists.items()})

    def _generation(
        self,
        folded: dict[tuple[str, Labels], _Folded],
        key: tuple[str, Labels],
        parts: list[tuple[Any, Labels]],
        value: float,
    ) -> Labels:
        """The series' labels with its generation: unchanged while its members and a non-decreasing
        value continue it, else a number never used before in this window (so no later fold, even
        after folding stopped or the engine label changed, can continue an old series)."""
        members = (len(parts), hash(frozenset(labels for _, labels in parts)))
        held = self._folded.get(key)
        if held is not None and held.members == members and value >= held.value:
            generation = held.generation
        else:
            self._generations += 1
            generation = self._generations
        folded[key] = _Folded(members, value, generation)
        return tuple(sorted((*key[1], (GENERATION_LABEL, str(generation)))))

    def __len__(self) -> int:
        return len(self._points)

    @property
    def latest(self) -> EngineSnapshot | None:
        """The latest snapshot as kept (with `max_groups`, the folded groups are in `__other__`)."""
        return self._points[-1].snapshot if self._points else None

    def snapshots(self, horizon: float | None = None) -> list[EngineSnapshot]:
        return [p.snapshot for p in self._within(horizon)]

    def _within(self, horizon: float | None) -> list[_Point]:
        if not self._points:
            return []
        return list(itertools.islice(self._points, self._first_within(horizon), None))

    def _first_within(self, horizon: float | None) -> int:
        """Index of the oldest point within `horizon` of the latest (times never go down in the window)."""
        points = self._points
        if horizon is None or horizon >= self.horizon or not points:
            return 0  # `add` already dropped every point older than the window's own horizon
        return bisect.bisect_left(points, points[-1].time - horizon, key=_point_time)

    def groups(self) -> list[Group]:
        """(model_name, engine) pairs of the latest snapshot, sorted, `__other__` last."""
        if not self._points:
            return []
        found = sorted(self._points[-1].groups)
        return [g for g in found if g[0] != OTHER_MODEL] + [g for g in found if g[0] == OTHER_MODEL]

    def has(self, name: str, group: Group) -> bool:
        if not self._points:
            return False
        point = self._points[-1]
        return bool(point.scalars(name, group) or point.histograms(name, group))

    def latest_histograms(self, name: str, group: Group) -> list[Histogram]:
        """The group's series of histogram `name` in the latest snapshot."""
        return [hist for _, hist in self._points[-1].histograms(name, group)] if self._points else []

    # ------------------------------------------------------------------ gauges

    def gauge(self, name: str, group: Group, match: Mapping[str, str] | None = None) -> float | None:
        """Sum of the matching series in the latest snapshot; None when no series matches."""
        if not self._points:
            return None
        values = [v for labels, v in self._points[-1].scalars(name, group) if _matches(labels, match)]
        if not values or any(math.isnan(v) for v in values):
            return None
        return sum(values)

    def gauge_series(
        self, name: str, group: Group, horizon: float | None = None, match: Mapping[str, str] | None = None
    ) -> list[tuple[float, float]]:
        """(time, value) of a gauge across the window, for trends: the sum of its matching series at
        each point that had one (without NaN)."""
        column, start = self._gauge_column(name, group, horizon, match)
        return column.rows[start:] if column is not None else []

    def gauge_series_values(
        self, name: str, group: Group, horizon: float | None = None, match: Mapping[str, str] | None = None
    ) -> list[tuple[float, tuple[float, ...]]]:
        """(time, each matching series' value) of a gauge across the window, at the points `gauge_series`
        has (a pool's per-worker gauge: the workers present at that scrape and each one's value)."""
        column, start = self._gauge_column(name, group, horizon, match)
        if column is None:
            return []
        return list(zip(column.times[start:], column.per_series[start:], strict=True))

    def _gauge_column(
        self, name: str, group: Group, horizon: float | None, match: Mapping[str, str] | None
    ) -> tuple[_GaugeColumn | None, int]:
        """The gauge's column brought up to the newest point, and where the horizon starts in it."""
        if not self._points:
            return None, 0
        key = (name, group, match_key(match))
        column = self._gauges.get(key)
        if column is None:
            column = self._gauges[key] = _GaugeColumn()
        if column.last_seq != self._seq:
            _trim(column.seqs, self._points[0].seq, column.times, column.rows, column.per_series)
            for point in self._new_points(column.last_seq):
                values = [v for labels, v in point.scalars(name, group) if _matches(labels, match)]
                if values and not any(math.isnan(v) for v in values):
                    column.seqs.append(point.seq)
                    column.times.append(point.time)
                    column.rows.append((point.time, sum(values)))
                    column.per_series.append(tuple(values))
            column.last_seq = self._seq
        if horizon is None or horizon >= self.horizon:
            return column, 0
        return column, bisect.bisect_left(column.times, self._points[-1].time - horizon)

    def histogram_count_series(
        self, name: str, group: Group, horizon: float | None = None
    ) -> list[tuple[float, float]]:
        """(time, observation count summed over the matching series) across the window."""
        out: list[tuple[float, float]] = []
        for point in self._within(horizon):
            counts = [h.count for _, h in point.histograms(name, group)]
            if counts and all(c is not None and not math.isnan(c) for c in counts):
                out.append((point.time, sum(c for c in counts if c is not None)))
        return out

    # ------------------------------------------------------------------ counters

    def span(self, horizon: float | None = None) -> float:
        points = self._points
        first = self._first_within(horizon)
        return points[-1].time - points[first].time if len(points) - first >= 2 else 0.0

    def _counter_column(self, name: str, group: Group) -> _CounterColumn:
        """The counter's column, caught up with the window."""
        column = self._counters.get((name, group))
        if column is None:
            column = self._counters[(name, group)] = _CounterColumn()
        if column.last_seq == self._seq:
            return column
        first_seq = self._points[0].seq
        series = column.series
        for labels in list(series):
            kept = series[labels]
            _trim(kept.seqs, first_seq, kept.positions, kept.times, kept.incs)
            if not kept.seqs:
                del series[labels]
        for point in self._new_points(column.last_seq):
            seq, time = point.seq, point.time
            for position, (labels, value) in enumerate(point.scalars(name, group)):
                if value != value:  # NaN: not a reading
                    continue
                held = series.get(labels)
                if held is None:
                    held = series[labels] = _CounterSeries()
                    inc = 0.0
                else:
                    prev = held.last
                    inc = value - prev if value >= prev else value  # a reset: the new value is the increase
                held.seqs.append(seq)
                held.positions.append(position)
                held.times.append(time)
                held.incs.append(inc)
                held.last = value
        column.last_seq = self._seq
        return column

    def _counter_series(
        self, name: str, group: Group, match: Mapping[str, str] | None, horizon: float | None
    ) -> list[tuple[float, list[float]]]:
        """Per matching series with two points or more in the horizon: its seconds seen and its
        increases between them, in the order a walk over the points first meets the series."""
        if not self._points:
            return []
        cutoff = None if horizon is None or horizon >= self.horizon else self._points[-1].time - horizon
        found: list[tuple[tuple[int, int], float, list[float]]] = []
        for labels, held in self._counter_column(name, group).series.items():
            if match and not _matches(labels, match):
                continue
            first = 0 if cutoff is None else bisect.bisect_left(held.times, cutoff)
            if len(held.times) - first < 2:
                continue
            order = (held.seqs[first], held.positions[first])
            found.append((order, held.times[-1] - held.times[first], held.incs[first + 1 :]))
        found.sort(key=_first_item)
        return [(seconds, incs) for _, seconds, incs in found]

    def increase(
        self, name: str, group: Group, match: Mapping[str, str] | None = None, horizon: float | None = None
    ) -> float | None:
        """Reset-aware increase summed over matching series; None without two points of any series."""
        usable = self._counter_series(name, group, match, horizon)
        if not usable:
            return None
        return sum(_added(incs) for _, incs in usable)

    def rate(
        self, name: str, group: Group, match: Mapping[str, str] | None = None, horizon: float | None = None
    ) -> float | None:
        """Per-second increase, each series over the time it was actually seen (a series that appeared
        mid-window is not diluted by the time before it existed); summed over matching series."""
        total = 0.0
        found = False
        for seconds, incs in self._counter_series(name, group, match, horizon):
            if seconds > 0:
                total += _added(incs) / seconds
                found = True
        return total if found else None

    # ------------------------------------------------------------------ histograms

    def histogram_delta(self, name: str, group: Group, horizon: float | None = None) -> HistogramDelta | None:
        """Observations added during the window, merged over matching series (same bucket layout).

        Kept until the next snapshot is added: the analyzers of one tick ask for the same deltas
        (the result is frozen, so they can share it)."""
        first = self._first_within(horizon)
        key = (name, group, first)
        if key in self._deltas:
            return self._deltas[key]
        found = self._delta_from_ends(name, group, first)
        if found is None:
            found = self._walk_delta(name, group, list(itertools.islice(self._points, first, None)))
        self._deltas[key] = found
        return found

    def _walk_delta(self, name: str, group: Group, points: list[_Point]) -> HistogramDelta | None:
        per_series: dict[Labels, list[Histogram]] = {}
        times: dict[Labels, list[float]] = {}
        first_seq: dict[Labels, int] = {}
        for point in points:
            for labels, hist in point.histograms(name, group):
                if labels not in per_series:
                    per_series[labels] = []
                    times[labels] = []
                    first_seq[labels] = point.seq
                per_series[labels].append(hist)
                times[labels].append(point.time)
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
            brk = self._breaks.get((group, name, labels))
            # The series' last break at or before its first point here: none inside the window.
            # A series gone from the latest snapshot has no record: walk it (rare, exact).
            if (brk <= first_seq[labels]) if brk is not None else _no_reset(hists):
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

    def _delta_from_ends(self, name: str, group: Group, first_index: int) -> HistogramDelta | None:
        """The common case in one subtraction per series, without reading the points between the
        ends: every point of the window had the same series and none of them reset. None: not so
        (or nothing to report); the caller walks the points."""
        if len(self._points) - first_index < 2:
            return None
        first, last = self._points[first_index], self._points[-1]
        held = self._series_sets.get((group, name))
        if held is None or held[1] > first.seq or last.seq != self._seq:
            return None
        ends = dict(last.histograms(name, group))
        steps: list[list[tuple[float, float]]] = []
        total_sum = total_count = 0.0
        for labels, start in first.histograms(name, group):
            brk = self._breaks.get((group, name, labels))
            if brk is None or brk > first.seq:
                return None
            bucket_delta, sum_delta, count_delta = _histogram_step(start, ends[labels])
            steps.append(bucket_delta)
            total_sum += sum_delta
            total_count += count_delta
        if not steps:
            return None
        return HistogramDelta(_merge_cumulative(steps), total_sum, total_count, last.time - first.time)

    def info(self, engine: str) -> Mapping[str, str]:
        snap = self.latest
        if snap is None:
            return {}
        return snap.info.get(engine) or snap.info.get("", {})


def _relabel(labels: Labels, other: Group) -> Labels:
    """A member's labels with model_name and engine replaced by the `__other__` group's."""
    return tuple(
        ("model_name", other[0]) if key == "model_name" else ("engine", other[1]) if key == "engine" else (key, value)
        for key, value in labels
    )


def _sum_histograms(name: str, labels: Labels, hists: list[Histogram]) -> Histogram:
    """Bucket-by-bucket sum; differing layouts are summed as step functions (`_merge_cumulative`)."""
    buckets = _merge_cumulative([list(hist.buckets) for hist in hists])
    sums = [hist.sum for hist in hists]
    total = None if any(v is None for v in sums) else sum(v for v in sums if v is not None)
    return Histogram(name=name, labels=labels, buckets=buckets, sum=total, count=sum(_count(h) for h in hists))


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
    first = hists[0].buckets
    bounds = list(map(_bound, first))  # in C: this runs for every series at every point of the window
    previous = _count(hists[0])
    for hist in hists[1:]:
        current = _count(hist)
        if current < previous or (hist.buckets is not first and list(map(_bound, hist.buckets)) != bounds):
            return False
        previous = current
    return True


_bound = itemgetter(0)


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
