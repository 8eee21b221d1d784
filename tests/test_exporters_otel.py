"""OTLP/HTTP export decoded by a real receiver: names, units, values, temporality."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality as ProtoTemporality
from phaselens.exporters.otel import OtelExporter
from phaselens.exporters.specs import SPECS_BY_NAME
from phaselens.model import Signal, TickResult, make_labels

LABELS = make_labels({"target": "t", "role": "decode", "model_name": "m", "engine": "0"})
SELF = make_labels({"target": "t", "role": "decode"})
TTFT_P99 = make_labels({**dict(LABELS), "percentile": "99"})


def _tick(errors: float) -> TickResult:
    return TickResult(
        1.0,
        (
            Signal("phaselens_decode_kv_utilization_ratio", LABELS, 0.75),
            Signal("phaselens_parse_errors_total", SELF, errors),
            Signal("phaselens_ttft_seconds", TTFT_P99, 0.5),
        ),
    )


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[ExportMetricsServiceRequest]]]:
    received: list[ExportMetricsServiceRequest] = []

    async def handle(request: web.Request) -> web.Response:
        message = ExportMetricsServiceRequest()
        message.ParseFromString(await request.read())
        received.append(message)
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/metrics", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/v1/metrics", received
    await runner.cleanup()


def _metrics(requests: list[ExportMetricsServiceRequest]) -> dict[str, list]:  # type: ignore[type-arg]
    out: dict[str, list] = {}  # type: ignore[type-arg]
    for request in requests:
        for resource in request.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    out.setdefault(metric.name, []).append(metric)
    return out


@pytest.mark.parametrize("temporality", ["cumulative", "delta"])
async def test_otlp_export_names_units_values_temporality(
    receiver: tuple[str, list[ExportMetricsServiceRequest]], monkeypatch: pytest.MonkeyPatch, temporality: str
) -> None:
    endpoint, received = receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "phaselens-test")
    current = {"tick": _tick(3.0)}
    exporter = OtelExporter(lambda: current["tick"], temporality=temporality, interval_seconds=3600)
    await asyncio.to_thread(exporter.force_flush)
    current["tick"] = _tick(5.0)
    await asyncio.to_thread(exporter.force_flush)
    await exporter.shutdown()
    metrics = _metrics(received)
    kv_spec = SPECS_BY_NAME["phaselens_decode_kv_utilization_ratio"]
    errors_spec = SPECS_BY_NAME["phaselens_parse_errors_total"]
    kv = metrics[kv_spec.otel_name][0]
    assert kv.unit == kv_spec.unit and kv.HasField("gauge")
    point = kv.gauge.data_points[0]
    assert point.as_double == 0.75
    assert {a.key: a.value.string_value for a in point.attributes} == dict(LABELS)
    errors = metrics[errors_spec.otel_name]
    assert errors[0].unit == errors_spec.unit and errors[0].sum.is_monotonic
    values = [m.sum.data_points[0].as_double or m.sum.data_points[0].as_int for m in errors[:2]]
    expected = (
        ProtoTemporality.AGGREGATION_TEMPORALITY_DELTA
        if temporality == "delta"
        else ProtoTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    )
    assert errors[0].sum.aggregation_temporality == expected
    assert values == ([3.0, 2.0] if temporality == "delta" else [3.0, 5.0])
    # a window quantile is a gauge whose `percentile` attribute says which one (phaselens.ttft, "99")
    ttft = metrics[SPECS_BY_NAME["phaselens_ttft_seconds"].otel_name][0]
    assert ttft.HasField("gauge") and ttft.gauge.data_points[0].as_double == 0.5
    assert {a.key: a.value.string_value for a in ttft.gauge.data_points[0].attributes} == dict(TTFT_P99)
    service = {a.key: a.value.string_value for a in received[0].resource_metrics[0].resource.attributes}
    assert service["service.name"] == "phaselens-test"
