"""OpenTelemetry export: observable instruments reading the latest TickResult, pushed over OTLP/HTTP.

Configured by the standard `OTEL_*` variables (endpoint, headers, timeout, service name and
resource attributes are read by the SDK itself); `--otlp-temporality` picks cumulative or delta.
Callbacks run on the SDK's reader thread: they only read the one published TickResult reference.
Names (`otel_name`) and units come from `specs.SPECS`, so OTel and Prometheus never drift apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from phaselens import __version__
from phaselens.exporters.specs import SPECS, SignalSpec
from phaselens.model import Signal, TickResult

LatestTick = Callable[[], "TickResult | None"]
TEMPORALITIES = ("cumulative", "delta")
SCOPE = "phaselens"


def temporality_preference(kind: str) -> dict[type, AggregationTemporality]:
    """Instrument type -> temporality. Gauges are unaffected; sums follow the choice."""
    if kind not in TEMPORALITIES:
        raise ValueError(f"temporality must be one of {TEMPORALITIES}, not {kind!r}")
    chosen = AggregationTemporality.DELTA if kind == "delta" else AggregationTemporality.CUMULATIVE
    return {
        Counter: chosen,
        ObservableCounter: chosen,
        Histogram: chosen,
        UpDownCounter: AggregationTemporality.CUMULATIVE,
        ObservableUpDownCounter: AggregationTemporality.CUMULATIVE,
        ObservableGauge: AggregationTemporality.CUMULATIVE,
    }


def default_resource() -> Resource:
    """Resource from OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES; service.name defaults to phaselens."""
    detected = Resource.create({"service.version": __version__})
    name = str(detected.attributes.get(SERVICE_NAME, ""))
    if not name or name.startswith("unknown_service"):
        detected = detected.merge(Resource({SERVICE_NAME: "phaselens"}))
    return detected


class _SignalIndex:
    """Signals of the latest tick grouped by name, rebuilt only when a new tick is published."""

    def __init__(self, latest: LatestTick) -> None:
        self._latest = latest
        self._cache: tuple[TickResult | None, dict[str, list[Signal]]] = (None, {})

    def get(self, name: str) -> list[Signal]:
        tick = self._latest()
        cached_tick, index = self._cache
        if tick is not cached_tick:
            index = {}
            for signal in tick.signals if tick else ():
                index.setdefault(signal.name, []).append(signal)
            self._cache = (tick, index)  # one reference swap: safe if two threads race here
        return index.get(name, [])


def _callback(index: _SignalIndex, spec: SignalSpec) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(signal.value, dict(signal.labels)) for signal in index.get(spec.name)]

    return observe


class OtelExporter:
    """Owns the MeterProvider; `shutdown` flushes and stops it without blocking the event loop."""

    def __init__(
        self,
        latest: LatestTick,
        *,
        temporality: str = "cumulative",
        interval_seconds: float = 10.0,
        exporter: MetricExporter | None = None,
        readers: Sequence[MetricReader] = (),
        resource: Resource | None = None,
    ) -> None:
        preference = temporality_preference(temporality)
        all_readers = list(readers)
        if exporter is None and not readers:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            exporter = OTLPMetricExporter(preferred_temporality=preference)
        if exporter is not None:
            all_readers.append(
                PeriodicExportingMetricReader(exporter, export_interval_millis=interval_seconds * 1000.0)
            )
        self.provider = MeterProvider(
            metric_readers=all_readers, resource=resource or default_resource(), shutdown_on_exit=False
        )
        meter = self.provider.get_meter(SCOPE, __version__)
        index = _SignalIndex(latest)
        for spec in SPECS:
            if spec.kind == "counter":
                meter.create_observable_counter(
                    spec.otel_name, callbacks=[_callback(index, spec)], unit=spec.unit, description=spec.help
                )
            else:
                meter.create_observable_gauge(
                    spec.otel_name, callbacks=[_callback(index, spec)], unit=spec.unit, description=spec.help
                )
        self._closed = False

    def force_flush(self, timeout_seconds: float = 10.0) -> bool:
        return self.provider.force_flush(int(timeout_seconds * 1000))

    async def shutdown(self, timeout_seconds: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        # MeterProvider.shutdown blocks (final collect + export): keep it off the event loop.
        await asyncio.to_thread(self.provider.shutdown, timeout_millis=timeout_seconds * 1000.0)
