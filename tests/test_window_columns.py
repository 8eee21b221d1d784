"""TargetWindow's gauge and counter columns (kept as points are added, read by every tick) give the
same bits as a walk over the window's points, the way every query was answered before.

The oracle below is that walk (the pre-column code of analyzers/window.py). It is compared with
`==` on floats, query after query while snapshots are added, on the real vLLM captures (with an
engine restart spliced in) and on synthetic streams with what a column must survive: resets, NaN,
series that come and go or change order, groups that leave and come back, points pushed out by
`max_points`, short horizons and time stepping back.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest
from phaselens.analyzers.window import Group, TargetWindow, _matches
from phaselens.model import EngineSnapshot, Labels
from phaselens.parsers.engines import canonical as c
from phaselens.parsers.engines import to_snapshot
from phaselens.parsers.exposition import parse_exposition

# ---------------------------------------------------------------- the walk (the oracle)


def _points(window: TargetWindow, horizon: float | None) -> list[EngineSnapshot]:
    snaps = window.snapshots()
    if horizon is None or not snaps:
        return snaps
    cutoff = snaps[-1].time - horizon
    return [s for s in snaps if s.time >= cutoff]


def _rows(snap: EngineSnapshot, name: str, group: Group) -> list[tuple[Labels, float]]:
    return [
        (labels, v)
        for (n, labels), v in snap.scalars.items()
        if n == name and (dict(labels).get("model_name", ""), dict(labels).get("engine", "")) == group
    ]


def walk_gauge_series_values(
    window: TargetWindow, name: str, group: Group, horizon: float | None
) -> list[tuple[float, tuple[float, ...]]]:
    out = []
    for snap in _points(window, horizon):
        values = tuple(v for _, v in _rows(snap, name, group))
        if values and not any(math.isnan(v) for v in values):
            out.append((snap.time, values))
    return out


def walk_gauge_series(
    window: TargetWindow, name: str, group: Group, horizon: float | None
) -> list[tuple[float, float]]:
    return [(t, sum(values)) for t, values in walk_gauge_series_values(window, name, group, horizon)]


def _walk_counter_series(
    window: TargetWindow, name: str, group: Group, match: Mapping[str, str] | None, horizon: float | None
) -> dict[Labels, list[tuple[float, float]]]:
    per_series: dict[Labels, list[tuple[float, float]]] = {}
    for snap in _points(window, horizon):
        for labels, value in _rows(snap, name, group):
            if value == value and (not match or _matches(labels, match)):
                per_series.setdefault(labels, []).append((snap.time, value))
    return {labels: pts for labels, pts in per_series.items() if len(pts) >= 2}


def _increase(values: list[float]) -> float:
    total = 0.0
    for prev, cur in itertools.pairwise(values):
        total += cur - prev if cur >= prev else cur
    return total


def walk_increase(
    window: TargetWindow, name: str, group: Group, match: Mapping[str, str] | None, horizon: float | None
) -> float | None:
    usable = _walk_counter_series(window, name, group, match, horizon)
    if not usable:
        return None
    return sum(_increase([v for _, v in pts]) for pts in usable.values())


def walk_rate(
    window: TargetWindow, name: str, group: Group, match: Mapping[str, str] | None, horizon: float | None
) -> float | None:
    total, found = 0.0, False
    for pts in _walk_counter_series(window, name, group, match, horizon).values():
        seconds = pts[-1][0] - pts[0][0]
        if seconds > 0:
            total += _increase([v for _, v in pts]) / seconds
            found = True
    return total if found else None


def walk_span(window: TargetWindow, horizon: float | None) -> float:
    points = _points(window, horizon)
    return points[-1].time - points[0].time if len(points) >= 2 else 0.0


# ---------------------------------------------------------------- the comparison

HORIZONS = (None, 30.0, 5.0, 1.0, 0.3)


def assert_same(window: TargetWindow, gauges: list[str], counters: list[tuple[str, dict[str, str] | None]]) -> int:
    """Every query against the walk; returns how many were compared."""
    compared = 0
    groups = window.groups() or [("tiny", "0")]
    for group, horizon in itertools.product(groups, HORIZONS):
        assert window.span(horizon) == walk_span(window, horizon)
        for name in gauges:
            assert window.gauge_series(name, group, horizon) == walk_gauge_series(window, name, group, horizon)
            assert window.gauge_series_values(name, group, horizon) == (
                walk_gauge_series_values(window, name, group, horizon))
            compared += 2
        for name, match in counters:
            got, want = window.increase(name, group, match, horizon), walk_increase(window, name, group, match, horizon)
            assert got == want, (name, group, match, horizon, got, want)
            got, want = window.rate(name, group, match, horizon), walk_rate(window, name, group, match, horizon)
            assert got == want, (name, group, match, horizon, got, want)
            compared += 2
    return compared


def load(paths: list[Path]) -> list[EngineSnapshot]:
    out = []
    for path in paths:
        text = path.read_text()
        time = float(text.split("\n", 1)[0].split()[-1])
        out.append(to_snapshot(parse_exposition(text), time))
    return out


REAL_GAUGES = [c.KV_CACHE_USAGE, c.REQUESTS_RUNNING, c.REQUESTS_WAITING, c.PROMPT_TOKENS, c.REQUEST_SUCCESS]
REAL_COUNTERS: list[tuple[str, dict[str, str] | None]] = [
    (c.REQUEST_SUCCESS, None),
    (c.REQUEST_SUCCESS, {"finished_reason": "length"}),
    (c.REQUEST_SUCCESS, {"finished_reason": "abort"}),
    (c.PROMPT_TOKENS, None),
    (c.PREEMPTIONS, None),
    (c.PREFIX_CACHE_QUERIES, None),
    (c.PREFIX_CACHE_HITS, None),
]


def test_real_capture_with_a_restart_every_query_equals_the_walk(aggregated_dir: Path, pd_dir: Path) -> None:
    """The real vLLM 0.32 aggregated capture, then the prefill server's (its counters start low: a
    reset), queried after every snapshot as the sidecar's ticks do; horizons as the analyzers use."""
    first = load(sorted(aggregated_dir.glob("*.prom")))
    second = load(sorted((pd_dir / "prefill").glob("*.prom"))[:80])
    offset = first[-1].time + 0.25 - second[0].time
    stream = first + [replace(s, time=s.time + offset) for s in second]
    window = TargetWindow(30.0)
    compared = 0
    for snap in stream:
        window.add(snap)
        compared += assert_same(window, REAL_GAUGES, REAL_COUNTERS)
    assert compared > 10_000
    # the stream did reset, and the walk saw increases: the comparison was not of empty results
    assert window.increase(c.REQUEST_SUCCESS, ("tiny", "0")) is not None


def _synthetic(seed: int, count: int) -> list[EngineSnapshot]:
    """Counters with resets and NaN, a gauge, series and groups that come and go, rows reordered."""
    rng = random.Random(seed)
    values: dict[tuple[str, Labels], float] = {}
    out = []
    time = 1000.0
    groups = [("a", "0"), ("b", "0")]
    reasons = ["stop", "length", "abort"]
    for _ in range(count):
        time += rng.choice([0.25, 0.25, 0.5, 1.0, 3.0])
        scalars: dict[tuple[str, Labels], float] = {}
        for model, engine in groups:
            if model == "b" and rng.random() < 0.3:
                continue  # the group is missing from this scrape
            base = (("engine", engine), ("model_name", model))
            for reason in rng.sample(reasons, k=rng.randint(1, 3)):  # series come and go, any order
                labels = tuple(sorted((*base, ("finished_reason", reason))))
                key = (c.REQUEST_SUCCESS, labels)
                roll = rng.random()
                if roll < 0.05:
                    values[key] = rng.uniform(0, 3)  # engine restart: the counter starts over
                elif roll < 0.08:
                    scalars[key] = math.nan
                    continue
                else:
                    values[key] = values.get(key, 0.0) + rng.choice([0.0, 1.0, 0.1, 7.3])
                scalars[key] = values[key]
            gauge = rng.choice([rng.uniform(0, 1), math.nan]) if rng.random() < 0.1 else rng.uniform(0, 1)
            scalars[(c.KV_CACHE_USAGE, base)] = gauge
        out.append(EngineSnapshot("vllm", time, scalars, {}))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_synthetic_streams_every_query_equals_the_walk(seed: int) -> None:
    window = TargetWindow(10.0, max_points=25)  # max_points also pushes points out
    counters: list[tuple[str, dict[str, str] | None]] = [
        (c.REQUEST_SUCCESS, None),
        (c.REQUEST_SUCCESS, {"finished_reason": "abort"}),
    ]
    for index, snap in enumerate(_synthetic(seed, 300)):
        if index == 150:
            snap = replace(snap, time=snap.time - 100.0)  # the clock stepped back: the window starts over
        window.add(snap)
        if index % 3 == 0 or 148 <= index <= 160:  # queried not after every point: columns catch up
            assert_same(window, [c.KV_CACHE_USAGE], counters)


def test_a_group_that_leaves_and_comes_back_is_read_again() -> None:
    window = TargetWindow(60.0)
    a = (("engine", "0"), ("model_name", "a"))
    b = (("engine", "0"), ("model_name", "b"))
    for i in range(20):
        scalars = {(c.REQUEST_SUCCESS, a): float(i)}
        if not 5 <= i < 10:
            scalars[(c.REQUEST_SUCCESS, b)] = float(2 * i)
        window.add(EngineSnapshot("vllm", 100.0 + i, scalars, {}))
        got = window.increase(c.REQUEST_SUCCESS, ("b", "0"))
        assert got == walk_increase(window, c.REQUEST_SUCCESS, ("b", "0"), None, None)
    assert window.increase(c.REQUEST_SUCCESS, ("b", "0")) == 38.0 - 0.0


def test_histogram_deltas_kept_for_a_tick_follow_every_added_snapshot(aggregated_dir: Path) -> None:
    """A delta asked twice between two adds is one answer; after an add it is the new window's,
    equal to what a window that never answered before gives for the same snapshots."""
    snaps = load(sorted(aggregated_dir.glob("*.prom")))[:120]
    window = TargetWindow(10.0)
    changed = 0
    previous = None
    for index, snap in enumerate(snaps):
        window.add(snap)
        if index % 7:
            continue
        fresh = TargetWindow(10.0)
        for s in snaps[: index + 1]:
            fresh.add(s)
        for horizon in (None, 5.0):
            got = window.histogram_delta(c.TTFT_SECONDS, ("tiny", "0"), horizon)
            assert got is window.histogram_delta(c.TTFT_SECONDS, ("tiny", "0"), horizon)
            assert got == fresh.histogram_delta(c.TTFT_SECONDS, ("tiny", "0"), horizon)
        changed += got != previous
        previous = got
    assert changed > 5
