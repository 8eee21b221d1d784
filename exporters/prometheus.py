"""Prometheus exposition of the latest TickResult, from our own registry (never the global one).

`collect()` renders cached data only (no I/O, no analysis), so it is safe on the event loop and
cheap under many concurrent scrapes. Family names, types and HELP come from `specs.SPECS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from phaselens.exporters.specs import SPECS, SignalSpec
from phaselens.model import Signal, TickResult
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

LatestTick = Callable[[], "TickResult | None"]


def _family(spec: SignalSpec) -> GaugeMetricFamily | CounterMetricFamily:
    if spec.kind == "counter":
        # prometheus_client names counter families without `_total` and adds it to the sample.
        return CounterMetricFamily(spec.name.removesuffix("_total"), spec.help, labels=list(spec.labels))
    return GaugeMetricFamily(spec.name, spec.help, labels=list(spec.labels))


class TickResultCollector:
    """Yields one family per spec row that has series in the latest tick."""

    def __init__(self, latest: LatestTick) -> None:
        self._latest = latest

    def describe(self) -> Iterator[Metric]:
        # Declares the names up front so registration never calls collect().
        for spec in SPECS:
            yield _family(spec)

    def collect(self) -> Iterator[Metric]:
        tick = self._latest()
        if tick is None:
            return
        by_name: dict[str, list[Signal]] = {}
        for signal in tick.signals:
            by_name.setdefault(signal.name, []).append(signal)
        for spec in SPECS:
            series = by_name.get(spec.name)
            if not series:
                continue
            family = _family(spec)
            for signal in series:
                values = dict(signal.labels)
                family.add_metric([values.get(label, "") for label in spec.labels], signal.value)
            yield family


def build_registry(latest: LatestTick) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TickResultCollector(latest))
    return registry


def render(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """Body and Content-Type for a scrape with this Accept header (text 0.0.4 or OpenMetrics)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


class CachedRenderer:
    """Renders once per published tick and Content-Type: concurrent scrapes of one tick share the bytes."""

    def __init__(self, latest: LatestTick) -> None:
        self._latest = latest
        self.registry = build_registry(latest)
        self._cache: tuple[TickResult | None, dict[str, tuple[bytes, str]]] = (None, {})

    def render(self, accept: str | None) -> tuple[bytes, str]:
        tick = self._latest()
        cached_tick, bodies = self._cache
        if tick is not cached_tick or tick is None:
            bodies = {}
            self._cache = (tick, bodies)
        _, content_type = choose_encoder(accept or "")
        found = bodies.get(content_type)
        if found is None:
            found = render(self.registry, accept)
            bodies[content_type] = found
        return found
