"""Quantiles and SLO attainment from histograms against the exact values of known observations.

Observations go into a real prometheus_client registry with vLLM's metric names and buckets, are
rendered, parsed and adapted like a scrape, and analyzed over a window of two scrapes.
"""

from __future__ import annotations

import math
import random

import pytest
from phaselens.analyzers.goodput import Attainment, frechet_joint
from phaselens.analyzers.target import analyze_target
from phaselens.analyzers.window import TargetWindow
from phaselens.exporters.specs import percentile_label
from phaselens.model import Signal, Target, label_value
from phaselens.parsers.engines import to_snapshot
from phaselens.parsers.exposition import parse_exposition
from phaselens.settings import Settings
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0)
LABELS = {"model_name": "m", "engine": "0"}
TARGET = Target("t", "aggregated", "file://t")


class FakeEngine:
    """A vLLM-shaped /metrics exposition backed by a real prometheus_client registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        names = list(LABELS)
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "ttft", names, buckets=TTFT_BUCKETS,
                              registry=self.registry)
        self.itl = Histogram("vllm:inter_token_latency_seconds", "itl", names, buckets=ITL_BUCKETS,
                             registry=self.registry)
        self.success = Counter("vllm:request_success", "done", [*names, "finished_reason"],
                               registry=self.registry)
        self.running = Gauge("vllm:num_requests_running", "running", names, registry=self.registry)
        self.waiting = Gauge("vllm:num_requests_waiting", "waiting", names, registry=self.registry)
        self.ttft.labels(**LABELS)
        self.itl.labels(**LABELS)
        self.success.labels(**LABELS, finished_reason="length")
        self.running.labels(**LABELS).set(1)
        self.waiting.labels(**LABELS).set(0)

    def observe(self, ttfts: list[float], itls: list[float]) -> None:
        for value in ttfts:
            self.ttft.labels(**LABELS).observe(value)
        for value in itls:
            self.itl.labels(**LABELS).observe(value)
        self.success.labels(**LABELS, finished_reason="length").inc(len(ttfts))

    def scrape(self, time: float) -> object:
        return to_snapshot(parse_exposition(generate_latest(self.registry).decode()), time)


def analyze(ttfts: list[float], itls: list[float], settings: Settings, before: int = 0) -> list[Signal]:
    engine = FakeEngine()
    rng = random.Random(7)
    engine.observe([rng.uniform(0, 10) for _ in range(before)], [])  # history before the window
    window = TargetWindow(settings.window_seconds)
    window.add(engine.scrape(1000.0))  # type: ignore[arg-type]
    engine.observe(ttfts, itls)
    window.add(engine.scrape(1010.0))  # type: ignore[arg-type]
    signals, _ = analyze_target(window, TARGET, settings)
    return signals


def value(signals: list[Signal], name: str, **labels: str) -> float:
    for s in signals:
        if s.name == name and all(label_value(s.labels, k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"{name} {labels} not emitted")


def exact_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def bucket_width_at(x: float, bounds: tuple[float, ...]) -> float:
    lower = 0.0
    for bound in bounds:
        if x <= bound:
            return bound - lower
        lower = bound
    return math.inf


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_quantiles_within_one_bucket_of_exact(seed: int) -> None:
    rng = random.Random(seed)
    ttfts = [rng.lognormvariate(-2.0, 1.0) for _ in range(400)]
    itls = [rng.uniform(0.005, 0.3) for _ in range(2000)]
    signals = analyze(ttfts, itls, Settings(), before=50)  # earlier observations must not leak in
    for q in (0.5, 0.9, 0.95, 0.99):
        for name, data, bounds in (("phaselens_ttft_seconds", ttfts, TTFT_BUCKETS),
                                   ("phaselens_itl_seconds", itls, ITL_BUCKETS)):
            exact = exact_quantile(data, q)
            got = value(signals, name, percentile=percentile_label(q))
            assert abs(got - exact) <= bucket_width_at(exact, bounds) + 1e-12, (name, q, got, exact)


def test_attainment_exact_on_a_bucket_bound() -> None:
    rng = random.Random(11)
    ttfts = [rng.uniform(0.0, 1.0) for _ in range(300)]
    itls = [rng.uniform(0.0, 0.2) for _ in range(900)]
    settings = Settings(slo_ttft_seconds=0.5, slo_itl_seconds=0.1)
    signals = analyze(ttfts, itls, settings)
    a_ttft = sum(t <= 0.5 for t in ttfts) / len(ttfts)
    a_itl = sum(t <= 0.1 for t in itls) / len(itls)
    for slo, exact in (("ttft", a_ttft), ("itl", a_itl)):
        for bound in ("lower", "upper"):
            got = value(signals, "phaselens_slo_attainment_ratio", slo=slo, bound=bound)
            assert got == pytest.approx(exact)
    lower = value(signals, "phaselens_slo_attainment_ratio", slo="joint", bound="lower")
    upper = value(signals, "phaselens_slo_attainment_ratio", slo="joint", bound="upper")
    assert lower == pytest.approx(max(0.0, a_ttft + a_itl - 1))
    assert upper == pytest.approx(min(a_ttft, a_itl))
    rate = value(signals, "phaselens_request_rate_per_second")
    assert rate == pytest.approx(len(ttfts) / 10.0)
    goodput = "phaselens_goodput_requests_per_second"
    assert value(signals, goodput, bound="upper") == pytest.approx(upper * rate)
    assert value(signals, goodput, bound="lower") == pytest.approx(lower * rate)


def test_attainment_between_bounds_brackets_the_exact_share() -> None:
    rng = random.Random(5)
    ttfts = [rng.uniform(0.0, 1.0) for _ in range(500)]
    settings = Settings(slo_ttft_seconds=0.3, slo_itl_seconds=None)  # 0.3 lies between 0.25 and 0.5
    signals = analyze(ttfts, [], settings)
    exact = sum(t <= 0.3 for t in ttfts) / len(ttfts)
    lower = value(signals, "phaselens_slo_attainment_ratio", slo="ttft", bound="lower")
    upper = value(signals, "phaselens_slo_attainment_ratio", slo="ttft", bound="upper")
    assert lower <= exact <= upper
    assert lower < upper
    # one SLO: the joint bounds are that SLO's
    assert value(signals, "phaselens_slo_attainment_ratio", slo="joint", bound="lower") == lower
    assert value(signals, "phaselens_slo_attainment_ratio", slo="joint", bound="upper") == upper
    assert not any(s.name == "phaselens_slo_attainment_ratio" and label_value(s.labels, "slo") == "itl"
                   for s in signals)


def test_no_observations_in_window_emits_no_latency() -> None:
    signals = analyze([], [], Settings(), before=100)
    names = {s.name for s in signals}
    assert "phaselens_ttft_seconds" not in names
    assert "phaselens_slo_attainment_ratio" not in names
    assert value(signals, "phaselens_request_rate_per_second") == 0.0  # measured: nothing finished


def test_frechet_bounds_properties() -> None:
    rng = random.Random(3)
    for _ in range(500):
        a = sorted((rng.random(), rng.random()))
        b = sorted((rng.random(), rng.random()))
        joint = frechet_joint(Attainment(*a), Attainment(*b))
        assert joint is not None
        assert 0.0 <= joint.lower <= joint.upper <= min(a[1], b[1])
    only = Attainment(0.4, 0.6)
    assert frechet_joint(only, None) == only
    assert frechet_joint(None, only) == only
    assert frechet_joint(None, None) is None
