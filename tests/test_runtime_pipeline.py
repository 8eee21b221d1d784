"""The pipeline on the real capture: staleness, stage isolation, publishable signals."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from phaselens.analyzers.window import TargetWindow
from phaselens.clock import ManualClock
from phaselens.model import Recommendation, Signal, Target, make_labels
from phaselens.pipeline import Findings, Pipeline, replay_targets, replay_ticks
from phaselens.settings import Settings
from phaselens.sources.recording import load_sources, merge_by_time
from phaselens.sources.scraper import ScrapeResult

AGG_TAR = Path(__file__).parent / "fixtures" / "vllm-0.32.0-cpu-aggregated" / "scrapes.tar.gz"
TARGET = Target("engine", "aggregated", "http://engine/metrics")
SELF_NAMES = {
    "phaselens_target_up",
    "phaselens_parse_errors_total",
    "phaselens_scrape_duration_seconds",
    "phaselens_signal_age_seconds",
    "phaselens_tick_duration_seconds",
}


def _value(signals: Sequence[Signal], name: str, **labels: str) -> float | None:
    for signal in signals:
        if signal.name == name and all(dict(signal.labels).get(k) == v for k, v in labels.items()):
            return signal.value
    return None


def _payloads() -> list[tuple[float, bytes]]:
    (source,) = load_sources(str(AGG_TAR))
    return [(s.time, s.load()) for s in source.scrapes]


def test_replay_of_real_capture_exports_queue_depth_from_the_scrape() -> None:
    sources = load_sources(f"aggregated={AGG_TAR}")
    settings = Settings(targets=replay_targets(sources))
    clock = ManualClock()
    ticks = list(replay_ticks(Pipeline(settings, clock), clock, merge_by_time(sources)))
    assert len(ticks) == 84
    payload = sources[0].scrapes[50].load().decode()
    waiting = next(
        float(line.split()[-1]) for line in payload.splitlines() if line.startswith("vllm:num_requests_waiting{")
    )
    assert waiting > 0
    assert _value(ticks[50].signals, "phaselens_prefill_queue_depth", target="aggregated") == waiting
    assert all(_value(t.signals, "phaselens_target_up") == 1.0 for t in ticks)
    assert ticks[50].time == sources[0].scrapes[50].time


def test_stale_target_exports_only_self_signals() -> None:
    clock = ManualClock(1000.0)
    settings = Settings(targets=(TARGET,), stale_after_seconds=3.0)
    pipeline = Pipeline(settings, clock)
    for index, (_, payload) in enumerate(_payloads()[40:44]):
        clock.set(1000.0 + index)
        pipeline.submit(ScrapeResult("engine", clock.wall(), 0.01, payload, "text/plain"))
        fresh = pipeline.tick()
    assert {s.name for s in fresh.signals} - SELF_NAMES  # analyzer signals while fresh
    last_good = clock.wall()
    for _ in range(5):  # the engine stops answering
        clock.advance(1.0)
        pipeline.submit(ScrapeResult("engine", clock.wall(), 2.0, error="timed out"))
        result = pipeline.tick()
    assert {s.name for s in result.signals} <= SELF_NAMES
    assert _value(result.signals, "phaselens_target_up") == 0.0
    assert _value(result.signals, "phaselens_signal_age_seconds") == pytest.approx(clock.wall() - last_good)
    assert _value(result.signals, "phaselens_scrape_duration_seconds") == 2.0
    assert result.recommendations == ()


def test_failing_analyzer_is_logged_and_others_still_publish(caplog: pytest.LogCaptureFixture) -> None:
    def broken(window: TargetWindow, target: Target, settings: Settings) -> Findings:
        raise RuntimeError("boom")

    def constant(window: TargetWindow, target: Target, settings: Settings) -> Findings:
        labels = make_labels({"target": target.name, "role": target.role, "model_name": "m", "engine": "0"})
        rec = Recommendation("TEST", "info", "m", {}, 0.9, target.name, target.role)
        return [Signal("phaselens_prefill_queue_depth", labels, 7.0)], [rec]

    clock = ManualClock(10.0)
    pipeline = Pipeline(
        Settings(targets=(TARGET,)), clock, target_analyzers=[("broken", broken), ("ok", constant)], pool_analyzers=[]
    )
    pipeline.submit(ScrapeResult("engine", 10.0, 0.01, _payloads()[0][1], None))
    with caplog.at_level(logging.ERROR, logger="phaselens"):
        result = pipeline.tick()
    assert _value(result.signals, "phaselens_prefill_queue_depth") == 7.0
    assert [r.code for r in result.recommendations] == ["TEST"]
    assert pipeline.analyzer_failures_total == 1
    assert any(getattr(r, "event", "") == "analyzer_failed" and r.analyzer == "broken" for r in caplog.records)


def test_only_spec_conforming_signals_are_published() -> None:
    base = {"target": "engine", "role": "aggregated", "model_name": "m", "engine": "0"}

    def noisy(window: TargetWindow, target: Target, settings: Settings) -> Findings:
        return [
            Signal("phaselens_not_in_spec", make_labels(base), 1.0),
            Signal("phaselens_prefill_queue_depth", make_labels({"target": "engine"}), 1.0),  # labels missing
            Signal("phaselens_decode_kv_utilization_ratio", make_labels(base), float("nan")),
            Signal("phaselens_kv_headroom_tokens", make_labels(base), 5.0),
            Signal("phaselens_kv_headroom_tokens", make_labels(base), 6.0),  # duplicate series
        ], []

    clock = ManualClock(10.0)
    pipeline = Pipeline(Settings(targets=(TARGET,)), clock, target_analyzers=[("noisy", noisy)], pool_analyzers=[])
    pipeline.submit(ScrapeResult("engine", 10.0, 0.01, _payloads()[0][1], None))
    names = [s.name for s in pipeline.tick().signals]
    assert names.count("phaselens_kv_headroom_tokens") == 1
    assert not {
        "phaselens_not_in_spec",
        "phaselens_prefill_queue_depth",
        "phaselens_decode_kv_utilization_ratio",
    } & set(names)


def test_pool_analyzer_sees_only_fresh_targets() -> None:
    seen: list[set[str]] = []

    def pool(windows: Mapping[str, tuple[Target, TargetWindow]], settings: Settings) -> Findings:
        seen.append(set(windows))
        return [], []

    dead = Target("decode", "decode", "http://d/metrics")
    clock = ManualClock(10.0)
    pipeline = Pipeline(Settings(targets=(TARGET, dead)), clock, target_analyzers=[], pool_analyzers=[("p", pool)])
    pipeline.submit(ScrapeResult("engine", 10.0, 0.01, _payloads()[0][1], None))
    pipeline.submit(ScrapeResult("decode", 10.0, 0.01, error="connection refused"))
    result = pipeline.tick()
    assert seen == [{"engine"}]
    assert _value(result.signals, "phaselens_target_up", target="decode") == 0.0
    assert _value(result.signals, "phaselens_signal_age_seconds", target="decode") is None  # never fresh


def test_malformed_body_is_a_parse_failure() -> None:
    clock = ManualClock(10.0)
    pipeline = Pipeline(Settings(targets=(TARGET,)), clock, target_analyzers=[], pool_analyzers=[])
    pipeline.submit(ScrapeResult("engine", 10.0, 0.01, b"garbage {{{\nnot metrics at all\n", None))
    result = pipeline.tick()
    assert _value(result.signals, "phaselens_target_up") == 0.0
    assert _value(result.signals, "phaselens_parse_errors_total") == 2.0
    assert not pipeline.ever_scraped_ok
