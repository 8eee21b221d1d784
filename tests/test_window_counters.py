"""TargetWindow counters, gauges and histogram deltas: engine restarts, missing scrapes, series that
come and go. Real scrape sequences go through the real parser and adapter; expected values are
read from the raw text by a line reader in this file."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from pathlib import Path

import pytest
from phaselens.analyzers.window import TargetWindow, fraction_at_most
from phaselens.model import EngineSnapshot, Histogram, Labels, make_labels
from phaselens.parsers.engines import canonical as c
from phaselens.parsers.engines import to_snapshot
from phaselens.parsers.exposition import parse_exposition

GROUP = ("tiny", "0")
TINY: Labels = (("engine", "0"), ("model_name", "tiny"))


def load(paths: list[Path]) -> list[tuple[EngineSnapshot, str]]:
    out = []
    for path in paths:
        text = path.read_text()
        time = float(text.split("\n", 1)[0].split()[-1])
        out.append((to_snapshot(parse_exposition(text), time), text))
    return out


def raw_value(text: str, line_prefix: str) -> float:
    """Value of the first sample line starting with `line_prefix` (name plus label block)."""
    for line in text.splitlines():
        if line.startswith(line_prefix):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(line_prefix)


PROMPT = 'vllm:prompt_tokens_total{engine="0",model_name="tiny"}'
TTFT_COUNT = 'vllm:time_to_first_token_seconds_count{engine="0",model_name="tiny"}'


@pytest.fixture(scope="module")
def aggregated(aggregated_dir: Path) -> list[tuple[EngineSnapshot, str]]:
    return load(sorted(aggregated_dir.glob("*.prom")))


@pytest.fixture(scope="module")
def prefill(pd_dir: Path) -> list[tuple[EngineSnapshot, str]]:
    return load(sorted((pd_dir / "prefill").glob("*.prom"))[:60])


def test_counter_reset_across_engine_restart(
    aggregated: list[tuple[EngineSnapshot, str]], prefill: list[tuple[EngineSnapshot, str]]
) -> None:
    """The aggregated server's scrapes, then another server's (counters restart low), spliced
    1 s apart as if the engine restarted between them."""
    first_run = aggregated
    offset = first_run[-1][0].time + 1.0 - prefill[0][0].time
    second_run = [(replace(s, time=s.time + offset), text) for s, text in prefill]
    window = TargetWindow(horizon_seconds=10_000)
    for snap, _ in first_run + second_run:
        window.add(snap)

    before, after = raw_value(first_run[-1][1], PROMPT), raw_value(second_run[0][1], PROMPT)
    assert after < before  # really a reset
    # Prometheus' increase(): after a drop the new value itself is the increase.
    expected = (before - raw_value(first_run[0][1], PROMPT)) + raw_value(second_run[-1][1], PROMPT)
    increase = window.increase(c.PROMPT_TOKENS, GROUP)
    assert increase == pytest.approx(expected)
    span = second_run[-1][0].time - first_run[0][0].time
    rate = window.rate(c.PROMPT_TOKENS, GROUP)
    assert rate == pytest.approx(expected / span) and rate > 0

    delta = window.histogram_delta(c.TTFT_SECONDS, GROUP)
    assert delta is not None
    expected_count = (
        raw_value(first_run[-1][1], TTFT_COUNT)
        - raw_value(first_run[0][1], TTFT_COUNT)
        + raw_value(second_run[-1][1], TTFT_COUNT)
    )
    assert delta.count == expected_count
    assert delta.buckets[-1][1] == expected_count
    assert all(count >= 0 for _, count in delta.buckets)
    assert delta.seconds == pytest.approx(span)

    # Over only the second run's last 20 s, the reset is outside the window: a plain difference.
    recent = window.increase(c.PROMPT_TOKENS, GROUP, horizon=20.0)
    inside = [text for s, text in second_run if s.time >= second_run[-1][0].time - 20.0]
    assert recent == raw_value(inside[-1], PROMPT) - raw_value(inside[0], PROMPT)


def test_missing_scrapes_leave_a_gap_not_an_error(aggregated: list[tuple[EngineSnapshot, str]]) -> None:
    kept = aggregated[:20] + aggregated[40:]  # 20 scrapes lost
    window = TargetWindow(horizon_seconds=10_000)
    for snap, _ in kept:
        window.add(snap)
    first, last = kept[0], kept[-1]
    assert window.increase(c.PROMPT_TOKENS, GROUP) == raw_value(last[1], PROMPT) - raw_value(first[1], PROMPT)
    span = last[0].time - first[0].time
    assert window.span() == pytest.approx(span)
    assert window.rate(c.PROMPT_TOKENS, GROUP) == pytest.approx(
        (raw_value(last[1], PROMPT) - raw_value(first[1], PROMPT)) / span
    )
    times = [t for t, _ in window.gauge_series(c.REQUESTS_WAITING, GROUP)]
    assert times == [s.time for s, _ in kept]
    lost = {s.time for s, _ in aggregated[20:40]}
    assert not lost.intersection(times)


def test_histogram_delta_over_window(aggregated: list[tuple[EngineSnapshot, str]]) -> None:
    window = TargetWindow(horizon_seconds=30.0)
    for snap, _ in aggregated:
        window.add(snap)
    # The window keeps the points within 30 s of the newest one.
    inside = [(s, text) for s, text in aggregated if s.time >= aggregated[-1][0].time - 30.0]
    assert len(window) == len(inside)
    old, new = (
        inside[0][0].histograms[(c.TTFT_SECONDS, TINY)],
        inside[-1][0].histograms[(c.TTFT_SECONDS, TINY)],
    )
    delta = window.histogram_delta(c.TTFT_SECONDS, GROUP)
    assert delta is not None
    assert delta.buckets == tuple((b, n - o) for (b, n), (_, o) in zip(new.buckets, old.buckets, strict=True))
    assert delta.count == raw_value(inside[-1][1], TTFT_COUNT) - raw_value(inside[0][1], TTFT_COUNT)
    assert delta.sum == pytest.approx((new.sum or 0) - (old.sum or 0))
    assert delta.mean == pytest.approx(delta.sum / delta.count)
    # A shorter horizon is a sub-window of the same points.
    short = window.histogram_delta(c.TTFT_SECONDS, GROUP, horizon=10.0)
    recent = [s for s, _ in inside if s.time >= inside[-1][0].time - 10.0]
    start = recent[0].histograms[(c.TTFT_SECONDS, TINY)]
    assert short is not None and short.count == (new.count or 0) - (start.count or 0)


# ---------------------------------------------------------------------- synthetic series


def snap(time: float, scalars: dict[tuple[str, Labels], float], hists: tuple[Histogram, ...] = ()) -> EngineSnapshot:
    return EngineSnapshot(
        engine_kind="vllm",
        time=time,
        scalars=scalars,
        histograms={(h.name, h.labels): h for h in hists},
    )


def labels(**extra: str) -> Labels:
    return make_labels({"model_name": "tiny", "engine": "0", **extra})


def test_series_appearing_and_disappearing() -> None:
    capacity, deferred = labels(reason="capacity"), labels(reason="deferred")
    name = c.REQUESTS_WAITING_BY_REASON
    counter = c.PREEMPTIONS
    steps: list[dict[tuple[str, Labels], float]] = [
        {(name, capacity): 1.0, (counter, labels(src="a")): 10.0},
        {(name, capacity): 2.0, (counter, labels(src="a")): 12.0},
        # a new series appears with history we never saw: it contributes no increase yet
        {
            (name, capacity): 3.0,
            (name, deferred): 4.0,
            (counter, labels(src="a")): 13.0,
            (counter, labels(src="b")): 100.0,
        },
        {
            (name, capacity): 3.0,
            (name, deferred): 5.0,
            (counter, labels(src="a")): 13.0,
            (counter, labels(src="b")): 130.0,
        },
        # b disappears for two scrapes
        {(name, capacity): 3.0, (counter, labels(src="a")): 14.0},
        {(name, capacity): 3.0, (counter, labels(src="a")): 15.0},
        # ... and comes back higher: the difference from its last value counts
        {(name, capacity): 3.0, (counter, labels(src="a")): 16.0, (counter, labels(src="b")): 140.0},
    ]
    window = TargetWindow(horizon_seconds=100.0)
    for i, scalars in enumerate(steps):
        window.add(snap(float(i), scalars))
        if i == 3:
            assert window.gauge(name, GROUP) == 8.0  # both reasons summed
            assert window.gauge(name, GROUP, {"reason": "deferred"}) == 5.0
        if i == 4:
            assert window.gauge(name, GROUP, {"reason": "deferred"}) is None  # gone: no value, not 0
            assert window.gauge(name, GROUP) == 3.0
    assert window.increase(counter, GROUP, {"src": "a"}) == 6.0
    assert window.increase(counter, GROUP, {"src": "b"}) == 40.0
    assert window.increase(counter, GROUP) == 46.0
    assert window.increase(counter, ("other-model", "0")) is None
    assert window.has(counter, GROUP) and not window.has(c.KV_CACHE_USAGE, GROUP)
    assert window.groups() == [GROUP]


def test_series_back_lower_after_disappearing_is_a_reset() -> None:
    window = TargetWindow(horizon_seconds=100.0)
    for time, value in ((0.0, 50.0), (1.0, 60.0), (2.0, None), (3.0, 5.0), (4.0, 9.0)):
        window.add(snap(time, {} if value is None else {(c.PROMPT_TOKENS, labels()): value}))
    assert window.increase(c.PROMPT_TOKENS, GROUP) == 10.0 + 5.0 + 4.0


def test_histogram_series_reset_and_new_series() -> None:
    def hist(count_small: float, count_all: float, total: float, **extra: str) -> Histogram:
        return Histogram(c.TTFT_SECONDS, labels(**extra), ((0.5, count_small), (math.inf, count_all)), total, count_all)

    window = TargetWindow(horizon_seconds=100.0)
    window.add(snap(0.0, {}, (hist(2, 3, 3.0),)))
    window.add(snap(1.0, {}, (hist(4, 6, 5.0),)))
    window.add(snap(2.0, {}, (hist(1, 1, 0.2), hist(7, 7, 1.0, pid="9"))))  # restart; new series
    window.add(snap(3.0, {}, (hist(1, 2, 1.2), hist(8, 9, 3.0, pid="9"))))
    delta = window.histogram_delta(c.TTFT_SECONDS, GROUP)
    assert delta is not None
    # series 1: +2/+3 then reset (1/1 counted whole) then +0/+1; series 2: +1/+2 from its first sight
    assert delta.buckets == ((0.5, 2 + 1 + 0 + 1), (math.inf, 3 + 1 + 1 + 2))
    assert delta.count == 7 and delta.sum == pytest.approx(2.0 + 0.2 + 1.0 + 2.0)
    assert delta.seconds == 3.0
    assert TargetWindow(horizon_seconds=1.0).histogram_delta(c.TTFT_SECONDS, GROUP) is None


def test_histogram_delta_across_a_bucket_layout_change_stays_cumulative() -> None:
    """An engine upgraded across a restart may change its bucket bounds (vLLM did in 2025-04)."""

    def hist(buckets: tuple[tuple[float, float], ...], total: float) -> Histogram:
        return Histogram(c.TTFT_SECONDS, labels(), buckets, total, buckets[-1][1])

    window = TargetWindow(horizon_seconds=100.0)
    window.add(snap(0.0, {}, (hist(((0.5, 0.0), (math.inf, 0.0)), 0.0),)))
    window.add(snap(1.0, {}, (hist(((0.5, 3.0), (math.inf, 3.0)), 0.6),)))  # 3 observations <= 0.5
    window.add(snap(2.0, {}, (hist(((1.0, 0.0), (math.inf, 1.0)), 4.0),)))  # restart, new bounds; 1 > 1.0
    delta = window.histogram_delta(c.TTFT_SECONDS, GROUP)
    assert delta is not None and delta.count == 4.0
    counts = [n for _, n in delta.buckets]
    assert counts == sorted(counts), delta.buckets  # cumulative: never decreasing
    assert dict(delta.buckets)[1.0] == 3.0  # the 3 early observations are <= 0.5 <= 1.0
    assert fraction_at_most(1.0, delta.buckets) == (0.75, 0.75)


def test_histogram_count_series_sums_the_groups_series_per_point() -> None:
    """The queue model's fallback for finished requests (Dynamo's mocker exports no success counter)."""

    def hist(count: float, **extra: str) -> Histogram:
        return Histogram(c.E2E_LATENCY_SECONDS, labels(**extra), ((math.inf, count),), count, count)

    window = TargetWindow(horizon_seconds=100.0)
    window.add(snap(0.0, {}, (hist(3),)))
    window.add(snap(1.0, {}, (hist(5), hist(2, pid="9"))))
    window.add(snap(2.0, {}, ()))  # no series of it: no point
    assert window.histogram_count_series(c.E2E_LATENCY_SECONDS, GROUP) == [(0.0, 3.0), (1.0, 7.0)]
    assert window.histogram_count_series(c.E2E_LATENCY_SECONDS, ("other", "0")) == []


def _walked_delta(window: TargetWindow, horizon: float | None) -> tuple[tuple[tuple[float, float], ...], float, float]:
    """The reference: every series' histogram delta by walking each step of the window (no shortcut)."""
    from phaselens.analyzers.window import _histogram_step, _merge_cumulative

    per_series: dict[Labels, list[Histogram]] = {}
    for s in window.snapshots(horizon):
        for (name, lab), hist in s.histograms.items():
            if name == c.TTFT_SECONDS:
                per_series.setdefault(lab, []).append(hist)
    steps, total_sum, total_count = [], 0.0, 0.0
    for hists in per_series.values():
        for prev, cur in itertools.pairwise(hists):
            b, sm, n = _histogram_step(prev, cur)
            steps.append(b)
            total_sum += sm
            total_count += n
    return _merge_cumulative(steps), total_sum, total_count


@pytest.mark.parametrize("seed", range(12))
def test_incremental_reset_tracking_agrees_with_walking_every_step(seed: int) -> None:
    """Resets, layout changes, series that vanish and come back, windows cut before or after a
    reset: the delta (which skips the walk when no reset is known inside the window) equals the
    walk over every step."""
    import random

    rng = random.Random(seed)
    window = TargetWindow(horizon_seconds=8.0)
    counts = {"a": 0.0, "b": 0.0}
    bounds = {"a": 0.5, "b": 0.5}
    for t in range(40):
        hists = []
        for pid in ("a", "b"):
            roll = rng.random()
            if roll < 0.1:
                continue  # absent from this scrape
            if roll < 0.18:
                counts[pid] = 0.0  # restart
            elif roll < 0.22:
                bounds[pid] = 1.0 if bounds[pid] == 0.5 else 0.5  # new layout across a restart
                counts[pid] = 0.0
            counts[pid] += rng.randint(0, 5)
            small = math.floor(counts[pid] / 2)
            hists.append(
                Histogram(
                    c.TTFT_SECONDS,
                    labels(pid=pid),
                    ((bounds[pid], small), (math.inf, counts[pid])),
                    counts[pid],
                    counts[pid],
                )
            )
        window.add(snap(float(t), {}, tuple(hists)))
        for horizon in (None, 3.0, 6.5):
            delta = window.histogram_delta(c.TTFT_SECONDS, GROUP, horizon)
            buckets, total_sum, total_count = _walked_delta(window, horizon)
            if delta is None:
                assert total_count == 0 and not buckets
                continue
            assert (delta.buckets, delta.sum, delta.count) == (buckets, total_sum, total_count), (t, horizon)
