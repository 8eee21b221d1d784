"""phaselens_prefill_saturation_ratio from a prefill engine's own sidecar, on the real vLLM 0.32 1P1D
capture (tests/fixtures/vllm-0.32.0-cpu-pd-1p1d): expected values computed from the raw text with
prometheus_client's parser, independently of phaselens' parser and window. The Dynamo frontend's
pool form is tested on its real capture in tests/test_dynamo_real.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FIXTURES, unpack
from phaselens.analyzers.prefill_saturation import demand_over_dispatched
from phaselens.analyzers.target import analyze_target
from phaselens.analyzers.window import TargetWindow
from phaselens.model import Signal, Target, label_value
from phaselens.parsers.engines import to_snapshot
from phaselens.parsers.exposition import parse_exposition
from phaselens.settings import Settings
from prometheus_client.parser import text_string_to_metric_families

SETTINGS = Settings(window_seconds=30.0)


def _time(text: str) -> float:
    return float(text.splitlines()[0].split()[2])


def _raw(text: str, name: str) -> float:
    body = "\n".join(line for line in text.splitlines() if not line.startswith("# scrape_time"))
    return sum(s.value for fam in text_string_to_metric_families(body) for s in fam.samples if s.name == name)


def _expected(inside: list[str]) -> tuple[float, str]:
    running = [_raw(t, "vllm:num_requests_running") for t in inside]
    waiting = [_raw(t, "vllm:num_requests_waiting") for t in inside]
    if min(waiting) > 0 and len(inside) >= 2:
        finished = _raw(inside[-1], "vllm:e2e_request_latency_seconds_count") - _raw(
            inside[0], "vllm:e2e_request_latency_seconds_count")
        arrivals = finished + (running[-1] + waiting[-1]) - (running[0] + waiting[0])
        return arrivals / max(1.0, arrivals - (waiting[-1] - waiting[0])), "arrivals"
    return sum(1 for r in running if r > 0) / len(running), "busy"


def _saturation(signals: list[Signal]) -> list[tuple[float, str]]:
    return [(s.value, label_value(s.labels, "basis"))
            for s in signals if s.name == "phaselens_prefill_saturation_ratio"]


@pytest.fixture(scope="module")
def prefill_texts(pd_dir: Path) -> list[str]:
    return [p.read_text() for p in sorted((pd_dir / "prefill").glob("*.prom"))]


def _golden(texts: list[str], target: Target) -> dict[str, list[float]]:
    window = TargetWindow(SETTINGS.window_seconds)
    bases: dict[str, list[float]] = {}
    for i, text in enumerate(texts):
        window.add(to_snapshot(parse_exposition(text), _time(text)))
        signals, _ = analyze_target(window, target, SETTINGS)
        end = _time(text)
        inside = [t for t in texts[: i + 1] if _time(t) >= end - SETTINGS.window_seconds]
        value, basis = _expected(inside)
        assert _saturation(signals) == [(pytest.approx(value, rel=1e-9), basis)], i
        bases.setdefault(basis, []).append(value)
    return bases


def test_golden_on_the_real_prefill_worker(prefill_texts: list[str]) -> None:
    bases = _golden(prefill_texts, Target("prefill", "prefill", "file://prefill", "vllm"))
    # the capture's prefill worker mostly prefills between scrapes (seen running at one scrape) and
    # queued once, for two scrapes (a burst of 8): no window with a queue throughout, the busy basis
    assert set(bases) == {"busy"} and 0 < max(bases["busy"]) <= 0.1


def test_golden_on_a_real_sustained_queue(tmp_path_factory: pytest.TempPathFactory) -> None:
    # A real engine queue that only grows (a Dynamo 1.6.1 mocker worker, 7 -> 240 waiting, its
    # vllm:* series), read as a prefill pod's sidecar would read it: once the window holds the queue
    # at every scrape the arrivals basis says by how much demand exceeds what the engine admits
    folder = unpack(FIXTURES / "dynamo-1.6.1-mocker-queue" / "scrapes.tar.gz", tmp_path_factory, "queue") / "scrapes"
    texts = [p.read_text() for p in sorted(folder.glob("*.prom"), key=lambda p: int(p.stem))]
    bases = _golden(texts, Target("prefill", "prefill", "file://prefill", "dynamo"))
    assert bases["busy"] == [1.0]  # the first scrape alone: no window yet, a running engine
    assert len(bases["arrivals"]) == len(texts) - 1 and min(bases["arrivals"]) > 1


def test_only_a_prefill_target_exports_it(prefill_texts: list[str], pd_dir: Path) -> None:
    decode_texts = [p.read_text() for p in sorted((pd_dir / "decode").glob("*.prom"))]
    for role, texts in (("decode", decode_texts), ("aggregated", prefill_texts)):
        window = TargetWindow(SETTINGS.window_seconds)
        for text in texts[:200]:
            window.add(to_snapshot(parse_exposition(text), _time(text)))
        signals, _ = analyze_target(window, Target("t", role, "file://t", "vllm"), SETTINGS)
        assert _saturation(signals) == []


def test_demand_over_dispatched() -> None:
    assert demand_over_dispatched(30.0, 10.0) == pytest.approx(1.5)  # 20 dispatched
    assert demand_over_dispatched(30.0, -10.0) == pytest.approx(0.75)  # draining: 40 dispatched
    assert demand_over_dispatched(7.0, 7.0) == 7.0  # nothing dispatched: at least one request
    assert demand_over_dispatched(-2.0, 0.0) == 0.0
