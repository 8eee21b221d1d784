"""histogram_quantile and fraction_at_most on histograms rendered by prometheus_client from known
observations, checked against Prometheus' own interpolation rule (re-derived here from
promql/quantile.go `bucketQuantile`) and against the exact sample quantile."""

from __future__ import annotations

import math
from bisect import bisect_left

import numpy as np
import pytest
from phaselens.analyzers.window import TargetWindow, fraction_at_most, histogram_quantile
from phaselens.model import EngineSnapshot
from phaselens.parsers.engines import canonical as c
from phaselens.parsers.engines import to_snapshot
from phaselens.parsers.exposition import parse_exposition
from prometheus_client import CollectorRegistry, Histogram, generate_latest

TTFT_BUCKETS = [
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
]  # vLLM's TTFT buckets
GROUP = ("m", "0")
KEY = (c.TTFT_SECONDS, (("engine", "0"), ("model_name", "m")))
QS = [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0]


def render(
    observations: np.ndarray, time: float = 0.0, buckets: list[float] = TTFT_BUCKETS
) -> EngineSnapshot:
    """Observe the values into a real prometheus_client histogram, scrape it, parse it, adapt it."""
    registry = CollectorRegistry()
    hist = Histogram(
        "vllm:time_to_first_token_seconds",
        "TTFT.",
        ["engine", "model_name"],
        buckets=buckets,
        registry=registry,
    )
    child = hist.labels("0", "m")
    for value in observations:
        child.observe(float(value))
    return to_snapshot(parse_exposition(generate_latest(registry)), time)


def prometheus_bucket_quantile(q: float, buckets: tuple[tuple[float, float], ...]) -> float:
    """promql bucketQuantile: sort.Search for the first finite bucket whose count >= rank."""
    bounds = [b for b, _ in buckets]
    counts = [n for _, n in buckets]
    assert math.isinf(bounds[-1])
    finite = len(buckets) - 1
    rank = q * counts[-1]
    b = bisect_left(counts[:finite], rank)
    if b == finite:
        return bounds[finite - 1]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, below = (0.0, 0.0) if b == 0 else (bounds[b - 1], counts[b - 1])
    return start + (bounds[b] - start) * (rank - below) / (counts[b] - below)


RNG = np.random.default_rng(20261122)
DISTRIBUTIONS = {
    "lognormal": RNG.lognormal(mean=-1.0, sigma=1.0, size=4000),
    "exponential": RNG.exponential(scale=0.3, size=4000),
    "uniform": RNG.uniform(0.0, 9.0, size=4000),
    "bimodal": np.concatenate([RNG.normal(0.05, 0.01, 3000).clip(0.0001), RNG.normal(3.0, 0.5, 1000)]),
}


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_quantiles_match_prometheus_and_the_exact_quantile(name: str) -> None:
    observations = DISTRIBUTIONS[name]
    hist = render(observations).histograms[KEY]
    assert hist.count == len(observations)
    bounds = [b for b, _ in hist.buckets]
    for q in QS:
        estimate = histogram_quantile(q, hist.buckets)
        assert estimate is not None
        assert estimate == pytest.approx(prometheus_bucket_quantile(q, hist.buckets), rel=1e-12, abs=1e-15)
        # The exact sample quantile lies in the bucket the estimate interpolates in.
        exact = float(np.quantile(observations, q, method="inverted_cdf"))
        upper = bisect_left(bounds, estimate)
        lower_bound = bounds[upper - 1] if upper > 0 else 0.0
        width = bounds[upper] - lower_bound
        assert abs(estimate - exact) <= width + 1e-12, (q, estimate, exact, width)


def test_uniform_observations_interpolate_closely() -> None:
    # Linear interpolation is exact for uniformly spread observations: only sampling noise remains.
    observations = DISTRIBUTIONS["uniform"]
    hist = render(observations, buckets=[1.0 * i for i in range(1, 10)]).histograms[KEY]
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        estimate = histogram_quantile(q, hist.buckets)
        assert estimate is not None
        assert estimate == pytest.approx(float(np.quantile(observations, q)), abs=0.05)


def test_quantile_of_the_window_delta_is_the_quantile_of_the_new_observations() -> None:
    early = DISTRIBUTIONS["exponential"][:1000]
    late = DISTRIBUTIONS["lognormal"][:2000]
    window = TargetWindow(horizon_seconds=60.0)
    window.add(render(early, time=0.0))
    window.add(render(np.concatenate([early, late]), time=10.0))
    delta = window.histogram_delta(c.TTFT_SECONDS, GROUP)
    only_late = render(late).histograms[KEY]
    assert delta is not None and delta.count == len(late)
    assert delta.buckets == only_late.buckets
    assert delta.sum == pytest.approx(float(late.sum()))
    for q in QS:
        assert histogram_quantile(q, delta.buckets) == pytest.approx(
            prometheus_bucket_quantile(q, only_late.buckets)
        )


def test_quantile_edges() -> None:
    assert histogram_quantile(0.5, ()) is None
    assert histogram_quantile(0.5, ((1.0, 0.0), (math.inf, 0.0))) is None  # no observations
    assert histogram_quantile(1.5, ((1.0, 1.0), (math.inf, 1.0))) is None
    # Rank beyond the last finite bucket: the highest finite bound, as Prometheus answers.
    tail = render(np.array([0.5, 3000.0, 4000.0])).histograms[KEY]
    assert histogram_quantile(0.99, tail.buckets) == 2560.0 == prometheus_bucket_quantile(0.99, tail.buckets)


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_fraction_at_most_is_exact_on_bucket_bounds(name: str) -> None:
    # Add observations exactly on bounds: `le` is inclusive.
    observations = np.concatenate([DISTRIBUTIONS[name], np.array([0.1, 0.25, 0.25, 1.0, 2.5])])
    hist = render(observations).histograms[KEY]
    for bound in TTFT_BUCKETS:
        exact = float(np.count_nonzero(observations <= bound)) / len(observations)
        assert fraction_at_most(bound, hist.buckets) == (pytest.approx(exact), pytest.approx(exact))
    for threshold in (0.003, 0.3, 0.333, 1.7, 3000.0):
        exact = float(np.count_nonzero(observations <= threshold)) / len(observations)
        bounds = fraction_at_most(threshold, hist.buckets)
        assert bounds is not None
        low, high = bounds
        assert low - 1e-12 <= exact <= high + 1e-12
        assert low <= high


def test_fraction_at_most_without_observations() -> None:
    assert fraction_at_most(0.5, ()) is None
    assert fraction_at_most(0.5, ((0.5, 0.0), (math.inf, 0.0))) is None
