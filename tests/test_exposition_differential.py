"""Differential tests: parse_exposition must agree with prometheus_client's own parsers.

Real captures (every scrape), the public sample files, and random registries rendered by
prometheus_client in both formats are parsed by both; family names, sample names, labels, values
and timestamps must be equal (NaN equal to NaN), and the grouped histograms must agree with the
raw samples they were built from.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from phaselens.model import Exposition, Labels, MetricFamily, make_labels
from phaselens.parsers.exposition import parse_exposition
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Info,
    Summary,
)
from prometheus_client import Histogram as PromHistogram
from prometheus_client import generate_latest as generate_text
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as reference_openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families as reference_text_families

SeriesValues = dict[tuple[str, Labels], tuple[float, float | None]]


def _reference(text: str, openmetrics: bool) -> tuple[dict[str, SeriesValues], dict[str, str]]:
    """prometheus_client's view, families with one name merged (it may yield a name twice)."""
    parse = reference_openmetrics_families if openmetrics else reference_text_families
    series: dict[str, SeriesValues] = {}
    types: dict[str, str] = {}
    for family in parse(text):
        values = series.setdefault(family.name, {})
        if types.get(family.name, "unknown") == "unknown":
            types[family.name] = family.type
        for sample in family.samples:
            timestamp = None if sample.timestamp is None else float(sample.timestamp)
            values[(sample.name, make_labels(sample.labels))] = (float(sample.value), timestamp)
    return series, types


def _same_number(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=1e-15)


def assert_matches_reference(text: str, parsed: Exposition, openmetrics: bool = False) -> None:
    expected, expected_types = _reference(text, openmetrics)
    assert set(parsed.families) == set(expected)
    for name, family in parsed.families.items():
        assert family.name == name
        assert family.type == expected_types[name], name
        got: SeriesValues = {(s.name, s.labels): (s.value, s.timestamp) for s in family.samples}
        assert len(got) == len(family.samples), f"{name}: a series appears twice"
        assert got.keys() == expected[name].keys(), name
        for key, (value, timestamp) in got.items():
            want_value, want_timestamp = expected[name][key]
            assert _same_number(value, want_value), (name, key, value, want_value)
            assert _same_number(timestamp, want_timestamp), (name, key, timestamp, want_timestamp)
        assert_histograms_consistent(family)


def assert_histograms_consistent(family: MetricFamily) -> None:
    """Each grouped Histogram holds exactly the family's raw _bucket/_sum/_count samples."""
    if family.type not in ("histogram", "gaugehistogram"):
        assert family.histograms == ()
        return
    name = family.name
    buckets: dict[Labels, list[tuple[float, float]]] = {}
    sums: dict[Labels, float] = {}
    counts: dict[Labels, float] = {}
    for sample in family.samples:
        if sample.name == name + "_bucket":
            le = dict(sample.labels)["le"]
            rest = tuple(pair for pair in sample.labels if pair[0] != "le")
            buckets.setdefault(rest, []).append((float(le), sample.value))
        elif sample.name in (name + "_sum", name + "_gsum"):
            sums[sample.labels] = sample.value
        elif sample.name in (name + "_count", name + "_gcount"):
            counts[sample.labels] = sample.value
    grouped = {h.labels: h for h in family.histograms}
    assert len(grouped) == len(family.histograms), "two histograms with one label set"
    assert set(grouped) == set(buckets) | set(sums) | set(counts)
    for labels, histogram in grouped.items():
        assert histogram.name == name
        assert [bound for bound, _ in histogram.buckets] == sorted(b for b, _ in histogram.buckets)
        assert sorted(histogram.buckets) == sorted(buckets.get(labels, []))
        assert _same_number(histogram.sum, sums.get(labels))
        assert _same_number(histogram.count, counts.get(labels))


# --------------------------------------------------------------------------- real captures


def _prom_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.prom"))
    assert files, f"no scrapes in {folder}"
    return files


def _check_capture(files: Iterable[Path]) -> int:
    checked = 0
    for path in files:
        text = path.read_text(encoding="utf-8")
        parsed = parse_exposition(text)
        assert parsed.issues == (), (path.name, parsed.issues[:3])
        assert parsed.format == "prometheus"
        assert_matches_reference(text, parsed)
        checked += 1
    return checked


@pytest.mark.slow
def test_every_aggregated_scrape_matches_prometheus_client(aggregated_dir: Path) -> None:
    assert _check_capture(_prom_files(aggregated_dir)) > 50


@pytest.mark.slow
@pytest.mark.parametrize("role", ["prefill", "decode"])
def test_every_pd_scrape_matches_prometheus_client(pd_dir: Path, role: str) -> None:
    assert _check_capture(_prom_files(pd_dir / role)) > 50


def test_real_scrape_histograms_are_grouped(aggregated_dir: Path) -> None:
    parsed = parse_exposition((aggregated_dir / "0060.prom").read_bytes())
    ttft = parsed.families["vllm:time_to_first_token_seconds"]
    assert ttft.type == "histogram"
    (histogram,) = ttft.histograms
    assert dict(histogram.labels).keys() == {"engine", "model_name"}
    assert histogram.buckets[-1][0] == math.inf
    assert histogram.buckets[-1][1] == histogram.count
    counts = [count for _, count in histogram.buckets]
    assert counts == sorted(counts)
    # counters lose `_total` in the family name and keep it on the samples; `_created` is its own gauge
    prompt = parsed.families["vllm:prompt_tokens"]
    assert prompt.type == "counter"
    assert {s.name for s in prompt.samples} == {"vllm:prompt_tokens_total"}
    assert parsed.families["vllm:prompt_tokens_created"].type == "gauge"


@pytest.mark.parametrize(
    "relative",
    [
        "public-samples/dynamo/frontend_metrics.prom",
        "public-samples/dynamo/vllm_worker_metrics_excerpt.prom",
    ],
)
def test_public_samples_match_prometheus_client(fixtures_dir: Path, relative: str) -> None:
    text = (fixtures_dir / relative).read_text(encoding="utf-8")
    parsed = parse_exposition(text)
    assert parsed.issues == ()
    assert_matches_reference(text, parsed)


def test_nixl_exporter_scrape_keeps_all_but_its_cut_last_line(fixtures_dir: Path) -> None:
    """The real NIXL exporter capture ends in a cut line (`agent_erro`): prometheus_client raises on
    it; we report that one line and agree with prometheus_client on everything else."""
    text = (fixtures_dir / "nixl-1.5.1-cpu-ucx-loopback/nixl-prometheus-exporter.prom").read_text()
    parsed = parse_exposition(text)
    lines = text.split("\n")
    assert [(i.line_no, i.text) for i in parsed.issues] == [(len(lines) - 1, "agent_erro")]
    assert parsed.issues[0].reason == "missing value"
    with pytest.raises(ValueError):
        list(reference_text_families(text))
    without_cut = "\n".join(lines[:-2]) + "\n"
    assert_matches_reference(without_cut, parsed)
    assert parsed.families["agent_xfer_post_time"].type == "counter"


# --------------------------------------------------------------------------- random registries

_METRIC_SUFFIX = st.from_regex(r"[a-z]{1,5}(:[a-z]{1,3})?", fullmatch=True)
# prometheus_client 0.26 writes OpenMetrics `# TYPE a:b` but samples `a_b_total`: no colons there.
_OPENMETRICS_METRIC_SUFFIX = st.from_regex(r"[a-z]{1,5}", fullmatch=True)
_LABEL_NAME = st.from_regex(r"[a-zA-Z][a-zA-Z0-9_]{0,7}", fullmatch=True).filter(lambda n: n not in ("le", "quantile"))
_LABEL_VALUE = st.one_of(
    st.text(max_size=12),
    st.text(alphabet='\\"\n{},= #\r\tab\u00e9\u2028\U0001f600', max_size=10),
)
_ANY_FLOAT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, 5e-324, 1e-300, 1.1701968896e10, 0.0, -0.0, 1.0]),
)
_FINITE_NONNEGATIVE = st.one_of(
    st.floats(min_value=0, max_value=1e300, allow_nan=False),
    st.sampled_from([0.0, 5e-324, 1e-9, 1e15]),
)


@st.composite
def _label_sets(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    names = draw(st.lists(_LABEL_NAME, max_size=3, unique=True))
    rows = draw(st.lists(st.lists(_LABEL_VALUE, min_size=len(names), max_size=len(names)), max_size=3))
    if not names:
        rows = rows[:1] or [[]]
    return names, rows


class _TimestampedCollector:
    """A custom collector: gauges with explicit timestamps (registries never write timestamps)."""

    def __init__(self, name: str, rows: list[tuple[str, float, float]]) -> None:
        self.name = name
        self.rows = rows

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.name, "with timestamps", labels=["row"])
        for row, value, timestamp in self.rows:
            family.add_metric([row], value, timestamp=timestamp)
        yield family


@st.composite
def registries(draw: st.DrawFn, openmetrics: bool = False) -> CollectorRegistry:
    """Random registries. For OpenMetrics, histograms and summaries observe only values >= 0:
    prometheus_client drops `_sum` when a bucket bound is negative and then its own OpenMetrics
    parser rejects the output (and negative `_sum` is not allowed by the format); and names
    have no colon (see _OPENMETRICS_METRIC_SUFFIX)."""
    registry = CollectorRegistry()
    low = 0.0 if openmetrics else -1e300
    observation = st.floats(min_value=low, max_value=1e300, allow_nan=False)
    bound = st.floats(min_value=max(low, -1e6), max_value=1e6, allow_nan=False)
    kinds = draw(
        st.lists(
            st.sampled_from(["counter", "gauge", "histogram", "summary", "info", "enum", "timestamped"]),
            min_size=1,
            max_size=6,
        )
    )
    for index, kind in enumerate(kinds):
        name = f"m{index}_{draw(_OPENMETRICS_METRIC_SUFFIX if openmetrics else _METRIC_SUFFIX)}"
        doc = draw(st.text(max_size=20))
        label_names, rows = draw(_label_sets())
        if kind == "counter":
            counter_name = name + draw(st.sampled_from(["", "_total"]))
            counter = Counter(counter_name, doc, label_names, registry=registry)
            for row in rows:
                child = counter.labels(*row) if label_names else counter
                child.inc(draw(_FINITE_NONNEGATIVE))
        elif kind == "gauge":
            unit = draw(st.sampled_from(["", "seconds"]))
            gauge = Gauge(name, doc, label_names, registry=registry, unit=unit)
            for row in rows:
                (gauge.labels(*row) if label_names else gauge).set(draw(_ANY_FLOAT))
        elif kind == "histogram":
            bounds = draw(st.lists(bound, min_size=1, max_size=5, unique=True))
            histogram = PromHistogram(name, doc, label_names, registry=registry, buckets=sorted(bounds))
            for row in rows:
                child = histogram.labels(*row) if label_names else histogram
                for value in draw(st.lists(observation, max_size=4)):
                    child.observe(value)
        elif kind == "summary":
            summary = Summary(name, doc, label_names, registry=registry)
            for row in rows:
                child = summary.labels(*row) if label_names else summary
                for value in draw(st.lists(observation, max_size=3)):
                    child.observe(value)
        elif kind == "info":
            info = Info(name, doc, registry=registry)
            keys = draw(st.lists(_LABEL_NAME, max_size=3, unique=True))
            info.info({key: draw(_LABEL_VALUE) for key in keys})
        elif kind == "enum":
            states = draw(st.lists(st.from_regex(r"[a-z]{1,5}", fullmatch=True), min_size=1, max_size=3, unique=True))
            enum = Enum(name, doc, registry=registry, states=states)
            enum.state(draw(st.sampled_from(states)))
        else:
            # whole milliseconds: the text format carries no more (and prometheus_client's OpenMetrics
            # parser misreads exponent timestamps such as 1.2e-38)
            timestamps = st.integers(0, 4_000_000_000_000).map(lambda ms: ms / 1000)
            row_values = st.lists(st.tuples(_LABEL_VALUE, _ANY_FLOAT, timestamps), max_size=3, unique_by=lambda r: r[0])
            registry.register(_TimestampedCollector(name, draw(row_values)))
    return registry


# prometheus_client's OpenMetrics parser is about 5x slower than its text parser: fewer examples.
_TEXT_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_OPENMETRICS_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_TEXT_SETTINGS
@given(registries())
def test_random_registry_text_format_matches_prometheus_client(registry: CollectorRegistry) -> None:
    payload = generate_text(registry)
    parsed = parse_exposition(payload, "text/plain; version=0.0.4; charset=utf-8")
    assert parsed.format == "prometheus"
    assert parsed.issues == ()
    assert_matches_reference(payload.decode("utf-8"), parsed)


@_OPENMETRICS_SETTINGS
@given(registries(openmetrics=True))
def test_random_registry_openmetrics_matches_prometheus_client(registry: CollectorRegistry) -> None:
    payload = generate_openmetrics(registry)
    parsed = parse_exposition(payload)  # detected from the trailing `# EOF`
    assert parsed.format == "openmetrics"
    assert parsed.issues == ()
    assert_matches_reference(payload.decode("utf-8"), parsed, openmetrics=True)
