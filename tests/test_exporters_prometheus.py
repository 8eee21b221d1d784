"""The Prometheus collector renders exactly the published tick, with spec names and HELP."""

from __future__ import annotations

from phaselens.exporters.prometheus import build_registry, render
from phaselens.exporters.specs import SPECS_BY_NAME
from phaselens.model import Signal, TickResult, make_labels
from prometheus_client.parser import text_string_to_metric_families

LABELS = make_labels({"target": "t", "role": "prefill", "model_name": "m", "engine": "0"})
TICK = TickResult(
    100.0,
    (
        Signal("phaselens_prefill_queue_depth", LABELS, 12.0),
        Signal("phaselens_ttft_seconds", make_labels({**dict(LABELS), "percentile": "90"}), 0.25),
        Signal("phaselens_parse_errors_total", make_labels({"target": "t", "role": "prefill"}), 3.0),
        Signal("phaselens_tick_duration_seconds", (), 0.002),
    ),
)


def _parsed(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_render_matches_the_tick_exactly() -> None:
    registry = build_registry(lambda: TICK)
    body, content_type = render(registry, None)
    assert content_type.startswith("text/plain")
    assert _parsed(body) == {(s.name, s.labels): s.value for s in TICK.signals}
    text = body.decode()
    assert "# TYPE phaselens_parse_errors_total counter" in text
    assert f"# HELP phaselens_prefill_queue_depth {SPECS_BY_NAME['phaselens_prefill_queue_depth'].help}" in text
    assert "_created" not in text


def test_openmetrics_when_asked_and_nothing_before_first_tick() -> None:
    body, content_type = render(build_registry(lambda: TICK), "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
    empty, _ = render(build_registry(lambda: None), None)
    assert empty == b""


def test_cached_renderer_renders_once_per_tick() -> None:
    from phaselens.exporters.prometheus import CachedRenderer

    current = {"tick": TICK}
    renderer = CachedRenderer(lambda: current["tick"])
    first = renderer.render(None)
    assert renderer.render(None) is first
    assert renderer.render("application/openmetrics-text; version=1.0.0")[1] != first[1]
    current["tick"] = TickResult(101.0, TICK.signals[:1])
    assert renderer.render(None)[0] != first[0]
    assert _parsed(renderer.render(None)[0]) == {(s.name, s.labels): s.value for s in TICK.signals[:1]}


def test_signals_document_keys_window_quantiles_by_percentile() -> None:
    # KEDA's valueLocation for the 0.9 TTFT quantile of target t: signals.phaselens_ttft_seconds.t.90
    from phaselens.server import signals_document

    doc = signals_document(TICK)
    assert doc["signals"]["phaselens_ttft_seconds"] == {"t": {"90": 0.25}}
    assert doc["signals"]["phaselens_prefill_queue_depth"] == {"t": 12.0}
