"""Out-of-range and inconsistent engine values (issue 17, item 3).

A canonical series whose value cannot be true is missing for that scrape: never clamped into a
plausible number, counted in `phaselens_parse_errors_total`, logged once per (target, series,
reason). The real aggregated vLLM 0.32 capture is replayed with the last scrapes corrupted; the
expected result is the same replay with the corrupted family removed from those scrapes (what
"missing" means), so every assertion compares two runs of the real pipeline.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from phaselens.assembly import build_pipeline
from phaselens.clock import ManualClock
from phaselens.model import EngineSnapshot, Histogram, Signal, TickResult, make_labels
from phaselens.parsers.engines import canonical as c
from phaselens.parsers.engines import to_snapshot
from phaselens.parsers.engines.validate import check_histogram, check_scalar, validate_snapshot
from phaselens.parsers.exposition import parse_exposition
from phaselens.pipeline import replay_targets
from phaselens.settings import Settings
from phaselens.sources.recording import load_sources
from phaselens.sources.scraper import ScrapeResult

AGG_TAR = Path(__file__).parent / "fixtures" / "vllm-0.32.0-cpu-aggregated" / "scrapes.tar.gz"
FIRST, LAST, CORRUPT = 35, 56, 3  # a loaded stretch of the capture; its last 3 scrapes corrupted
Edit = Callable[[str], str | None]  # a body line -> the line to keep (changed or not), or None to drop it


@pytest.fixture(scope="module")
def scrapes() -> list[tuple[float, str]]:
    (source,) = load_sources(str(AGG_TAR))
    return [(s.time, s.load().decode()) for s in source.scrapes[FIRST:LAST]]


def replay(scrapes: Sequence[tuple[float, str]], edit: Edit | None) -> list[TickResult]:
    (source,) = load_sources(f"aggregated={AGG_TAR}")
    settings = Settings(targets=replay_targets([source]), gpu_telemetry=False)
    clock = ManualClock()
    pipeline = build_pipeline(settings, clock, targets=settings.targets, replay=True)
    ticks = []
    for index, (time_, body) in enumerate(scrapes):
        if edit is not None and index >= len(scrapes) - CORRUPT:
            lines = (edit(line) for line in body.split("\n"))
            body = "\n".join(line for line in lines if line is not None)
        clock.set(time_)
        pipeline.submit(ScrapeResult("aggregated", time_, 0.01, body.encode(), None))
        ticks.append(pipeline.tick())
    return ticks


def value(tick: TickResult, name: str, **labels: str) -> float | None:
    found = [s.value for s in tick.signals if s.name == name and all(dict(s.labels).get(k) == v
                                                                      for k, v in labels.items())]
    assert len(found) <= 1
    return found[0] if found else None


def replacing(prefix: str, new_value: str) -> Edit:
    return lambda line: f"{line.rsplit(' ', 1)[0]} {new_value}" if line.startswith(prefix) else line


def dropping(*prefixes: str) -> Edit:
    return lambda line: None if line.startswith(prefixes) else line


def analyzer_signals(tick: TickResult) -> list[Signal]:
    own = ("phaselens_parse_errors_total", "phaselens_tick_duration_seconds")
    return [s for s in tick.signals if s.name not in own]


KV = "vllm:kv_cache_usage_perc{"


@pytest.mark.parametrize("bad", ["+Inf", "7.5", "-0.2", "NaN"])
def test_kv_usage_out_of_range_is_missing_not_one(
    scrapes: list[tuple[float, str]], bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="phaselens")
    corrupted = replay(scrapes, replacing(KV, bad))
    missing = replay(scrapes, dropping(KV))
    before = value(corrupted[-CORRUPT - 1], "phaselens_decode_kv_utilization_ratio")
    assert before is not None and 0 < before < 1  # the engine's true value before the corruption
    assert value(corrupted[-1], "phaselens_decode_kv_utilization_ratio") is None  # was 1.0 (clamped)
    assert analyzer_signals(corrupted[-1]) == analyzer_signals(missing[-1])
    errors = [value(t, "phaselens_parse_errors_total") for t in corrupted]
    logged = [r for r in caplog.records if getattr(r, "event", None) == "series_rejected"]
    if bad == "NaN":  # "no value" in the exposition format: missing, but not an error
        assert errors[-1] == 0 and not logged
        return
    assert errors[-1] == CORRUPT and errors[-CORRUPT - 1] == 0
    assert len(logged) == 1  # once per (target, series, reason), not per scrape
    assert logged[0].series == c.KV_CACHE_USAGE and logged[0].target == "aggregated"  # type: ignore[attr-defined]


def test_an_infinite_queue_predicts_no_wait(scrapes: list[tuple[float, str]]) -> None:
    edit = replacing("vllm:num_requests_waiting{", "+Inf")
    corrupted = replay(scrapes, edit)
    missing = replay(scrapes, dropping("vllm:num_requests_waiting{"))
    waits = [s.value for s in corrupted[-1].signals if s.name == "phaselens_predicted_queue_wait_seconds"]
    assert all(w < 3600 for w in waits)  # was 86,400 s
    # the queue depth falls back to the by-reason gauge, a finite series the engine also reports
    assert value(corrupted[-1], "phaselens_prefill_queue_depth") == value(missing[-1], "phaselens_prefill_queue_depth")
    assert analyzer_signals(corrupted[-1]) == analyzer_signals(missing[-1])


def test_non_monotonic_buckets_are_missing(scrapes: list[tuple[float, str]]) -> None:
    low = 'vllm:inter_token_latency_seconds_bucket{engine="0",le="0.01",'

    def swell(line: str) -> str:  # the lowest bucket above every later one: not cumulative
        if not line.startswith(low):
            return line
        head, count = line.rsplit(" ", 1)
        return f"{head} {float(count) + 1e6}"

    corrupted = replay(scrapes, swell)
    missing = replay(scrapes, dropping("vllm:inter_token_latency_seconds_"))
    p50 = value(corrupted[-1], "phaselens_itl_seconds", percentile="50")
    assert p50 == value(missing[-1], "phaselens_itl_seconds", percentile="50")
    assert p50 is not None and p50 <= 0.01  # the true p50 lies in the first bucket
    assert analyzer_signals(corrupted[-1]) == analyzer_signals(missing[-1])
    assert value(corrupted[-1], "phaselens_parse_errors_total") == CORRUPT


def test_a_duplicated_series_is_missing_with_its_siblings(scrapes: list[tuple[float, str]]) -> None:
    length = 'vllm:request_success_total{engine="0",finished_reason="length",model_name="tiny"}'

    def duplicate(line: str) -> str:
        if not line.startswith(length):
            return line
        count = float(line.rsplit(" ", 1)[1])
        return f"{line}\n{length} {count * 3}"  # a second, different value for the same series

    corrupted = replay(scrapes, duplicate)
    missing = replay(scrapes, dropping("vllm:request_success_total{"))
    clean = replay(scrapes, None)
    rate = value(corrupted[-1], "phaselens_request_rate_per_second")
    assert rate == value(missing[-1], "phaselens_request_rate_per_second")
    true_rate = value(clean[-1], "phaselens_request_rate_per_second")
    assert rate is not None and true_rate is not None and rate <= true_rate * 1.01  # was 3x the truth
    assert analyzer_signals(corrupted[-1]) == analyzer_signals(missing[-1])
    assert value(corrupted[-1], "phaselens_parse_errors_total") == CORRUPT


# ---------------------------------------------------------------------- the rules on their own

TINY = make_labels({"model_name": "m", "engine": "0"})


@pytest.mark.parametrize(("name", "number", "reason"), [
    (c.KV_CACHE_USAGE, 1.0000001, "ratio outside 0..1"),
    (c.KV_CACHE_USAGE, math.inf, "not finite"),
    (c.PREFIX_CACHE_HIT_RATE_GAUGE, -0.5, "ratio outside 0..1"),
    (c.REQUESTS_WAITING, -1.0, "negative count"),
    (c.REQUESTS_RUNNING, -math.inf, "not finite"),
    (c.PROMPT_TOKENS, -3.0, "negative count"),
    (c.KV_CACHE_USAGE, 1.0, None),
    (c.REQUESTS_WAITING, 0.0, None),
    (c.PROMPT_TOKENS, 1e15, None),
])
def test_scalar_rules(name: str, number: float, reason: str | None) -> None:
    assert check_scalar(name, number) == reason


def hist(buckets: tuple[tuple[float, float], ...], total: float | None = 1.0, count: float | None = None
         ) -> Histogram:
    return Histogram(c.TTFT_SECONDS, TINY, buckets, total, buckets[-1][1] if count is None else count)


INF = math.inf


@pytest.mark.parametrize(("histogram", "problem"), [
    (hist(((0.1, 1), (1.0, 3), (INF, 3))), None),
    (hist(((0.1, 5), (1.0, 3), (INF, 5))), "non-monotonic"),
    (hist(((0.1, 1), (1.0, 3), (INF, 3)), count=4), "+Inf bucket differs"),
    (hist(((0.1, 1), (1.0, INF), (INF, INF))), "not finite"),
    (hist(((0.1, -1), (INF, 2))), "negative"),
    (hist(((0.1, 1), (INF, 2)), total=-1.0), "sum"),
    (hist(((0.1, 1), (INF, 2)), total=math.nan), "sum"),
    (hist(((1.0, 1), (0.1, 2), (INF, 2))), "bounds"),
])
def test_histogram_rules(histogram: Histogram, problem: str | None) -> None:
    found = check_histogram(histogram)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_validation_drops_only_the_bad_series_and_its_siblings() -> None:
    other = make_labels({"model_name": "n", "engine": "0"})
    snapshot = EngineSnapshot("vllm", 1.0, {
        (c.REQUEST_SUCCESS, (*TINY[:1], ("finished_reason", "length"), *TINY[1:])): -1.0,
        (c.REQUEST_SUCCESS, (*TINY[:1], ("finished_reason", "stop"), *TINY[1:])): 5.0,
        (c.REQUEST_SUCCESS, (*other[:1], ("finished_reason", "stop"), *other[1:])): 7.0,
        (c.REQUESTS_RUNNING, TINY): 2.0,
    }, {})
    checked = validate_snapshot(snapshot)
    assert sorted(checked.scalars.values()) == [2.0, 7.0]  # m's other reason went with it; n's stayed
    assert [(r.series, r.reason) for r in checked.rejected] == [(c.REQUEST_SUCCESS, "negative count")]
    assert checked.parse_issues == 1


def test_the_adapter_validates_every_engine(scrapes: list[tuple[float, str]]) -> None:
    body = re.sub(r"(vllm:kv_cache_usage_perc\{[^}]*\}) \S+", r"\1 7.5", scrapes[-1][1])
    snapshot = to_snapshot(parse_exposition(body), 1.0, "vllm")
    assert all(name != c.KV_CACHE_USAGE for name, _ in snapshot.scalars)
    assert [r.reason for r in snapshot.rejected] == ["ratio outside 0..1"]


def test_every_adapter_scalar_has_a_validation_kind() -> None:
    """A canonical gauge or counter without a kind would be validated only for finiteness and summed
    into `__other__` even if it were a ratio: each adapter rule's name must be classified."""
    from phaselens.parsers.engines.detect import TABLES

    kinds: dict[str, set[str]] = {}
    for table in TABLES.values():
        for binding in table.values():
            rule = binding.rule
            names = [rule.canonical, *[name for _, name, _ in (rule.by_label[1] if rule.by_label else ())]]
            for name in names:
                if name and not name.startswith("info:"):
                    kinds.setdefault(name, set()).add(rule.kind)
    classified = c.RATIOS | c.COUNT_GAUGES | c.LATEST_GAUGES | c.COUNTERS
    for name, found in kinds.items():
        if "counter" in found:
            assert name in c.COUNTERS, name
        elif "gauge" in found:
            assert name in classified - c.COUNTERS, name
        elif found == {"histogram"}:
            assert name not in classified, name
