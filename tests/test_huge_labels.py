"""Huge label values (issue 17, item 2): a label value over 1 KiB makes its line malformed (counted,
never parsed with a regex, never exported), and the parse caches are bounded by bytes as well as
by count, so distinct long labels cannot grow memory without bound."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import pytest
from phaselens.clock import ManualClock
from phaselens.model import Target
from phaselens.parsers import exposition
from phaselens.parsers.engines import mapping
from phaselens.parsers.exposition import MAX_LABEL_VALUE_BYTES, parse_exposition
from phaselens.pipeline import Pipeline, parse_payload
from phaselens.settings import Settings
from phaselens.sources.recording import load_sources
from phaselens.sources.scraper import ScrapeResult

AGG_TAR = Path(__file__).parent / "fixtures" / "vllm-0.32.0-cpu-aggregated" / "scrapes.tar.gz"
TARGET = Target("engine", "aggregated", "http://engine/metrics")


def running(model: str, value: float = 3.0) -> str:
    return f'vllm:num_requests_running{{engine="0",model_name="{model}"}} {value}\n'


@pytest.mark.parametrize(("value", "accepted"), [
    ("a" * MAX_LABEL_VALUE_BYTES, True),
    ("a" * (MAX_LABEL_VALUE_BYTES + 1), False),
    ("é" * (MAX_LABEL_VALUE_BYTES // 2), True),  # 2 bytes each in UTF-8: exactly the limit
    ("é" * (MAX_LABEL_VALUE_BYTES // 2 + 1), False),
])
def test_the_limit_is_in_utf8_bytes(value: str, accepted: bool) -> None:
    parsed = parse_exposition("# TYPE g gauge\n" + f'g{{a="{value}"}} 1\n' + 'g{a="short"} 2\n')
    values = [s.value for s in parsed.families["g"].samples]
    assert values == ([1.0, 2.0] if accepted else [2.0])
    assert parsed.issue_count == (0 if accepted else 1)
    if not accepted:
        assert "longer than 1024 bytes" in parsed.issues[0].reason


def test_a_10_mb_model_name_is_a_malformed_line_with_a_bounded_peak() -> None:
    (source,) = load_sources(str(AGG_TAR))
    body = source.scrapes[50].load()
    huge = running("x" * 10_000_000).encode()
    payload = body + huge
    gc.collect()
    tracemalloc.start()
    try:
        snapshot = parse_payload(payload, None, 1.0, "auto")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The body is 10 MB: its text, its lines and one copy of the long line fit well within 120 MB.
    # Before the limit the label regexes' backtracking stacks took 1.84 GB.
    assert peak < 120 * 1024 * 1024
    assert snapshot.parse_issues == 1
    assert all(len(value) <= MAX_LABEL_VALUE_BYTES for _, labels in snapshot.scalars for _, value in labels)
    assert any(name == "requests_running" for name, _ in snapshot.scalars)  # the real series are kept


def test_the_sidecar_counts_and_never_exports_a_huge_label() -> None:
    (source,) = load_sources(str(AGG_TAR))
    clock = ManualClock()
    pipeline = Pipeline(Settings(targets=(TARGET,)), clock)
    for scrape in source.scrapes[40:44]:
        clock.set(scrape.time)
        payload = scrape.load() + running("y" * 100_000).encode()
        pipeline.submit(ScrapeResult(TARGET.name, scrape.time, 0.01, payload, None))
        tick = pipeline.tick()
    errors = [s.value for s in tick.signals if s.name == "phaselens_parse_errors_total"]
    assert errors == [4.0]
    assert max(len(value) for s in tick.signals for _, value in s.labels) <= MAX_LABEL_VALUE_BYTES
    assert {dict(s.labels).get("model_name") for s in tick.signals} <= {None, "tiny"}


def test_caches_are_bounded_by_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Distinct 1 KiB label values, scrape after scrape (a label-churning engine): the caches are emptied
    when the text they hold passes the byte limit, long before their 200,000-entry limit."""
    limit = 2 * 1024 * 1024
    monkeypatch.setattr(exposition, "MAX_CACHE_BYTES", limit)
    monkeypatch.setattr(mapping, "_CACHE_BYTES_LIMIT", limit)
    exposition._LABEL_CACHE.clear()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for scrape in range(12):  # 12 x 500 distinct 1000-byte values: 6 MB of label text
            text = "# TYPE vllm:num_requests_running gauge\n" + "".join(
                running(f"{scrape:03d}-{index:04d}-" + "z" * 990) for index in range(500))
            parse_payload(text.encode(), None, float(scrape), "vllm")
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert exposition.cache_bytes()["labels"] <= limit
    assert len(exposition._LABEL_CACHE) < 12 * 500
    # parser and adapter caches each hold at most `limit` of text (plus their keys' copies and tuples)
    assert held < 8 * limit
