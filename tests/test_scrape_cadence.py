"""The scrape loop's cadence: each scrape starts one interval after the previous one STARTED.

Before, the loop slept a full interval after each scrape ended, so a scrape that took 150 ms at
`--interval 0.25` made the period 0.4 s, and one that timed out (2 s) left the data 2 s + one
interval old; benchmarks/bench_freshness.py measures the effect live.
"""

from __future__ import annotations

import random

import pytest
from phaselens.clock import ManualClock
from phaselens.model import Target
from phaselens.sources.scraper import Backoff, ScrapeLoop


def loop(interval: float = 0.25) -> ScrapeLoop:
    target = Target("t", "aggregated", "http://127.0.0.1:1/metrics")
    sl = ScrapeLoop(target, None, ManualClock(), lambda r: None, interval, 2.0, jitter_ratio=0.0)  # type: ignore[arg-type]
    sl.backoff = Backoff(interval, 30.0, random.Random(7))
    return sl


def test_next_scrape_is_one_interval_after_the_previous_start() -> None:
    # a 150 ms scrape: the next one starts 100 ms after it ended, not 250 ms
    assert loop().next_start(started=10.0, now=10.15) == pytest.approx(10.25)


def test_an_overrun_skips_the_missed_beats_instead_of_firing_them_late() -> None:
    # a 600 ms scrape missed the beats at 10.25 and 10.5: the next is at 10.75, on the grid
    assert loop().next_start(started=10.0, now=10.6) == pytest.approx(10.75)
    # a timed-out scrape (2 s): never scheduled in the past
    nxt = loop().next_start(started=10.0, now=12.0)
    assert 12.0 <= nxt < 12.25 + 1e-9


def test_after_a_failure_the_backoff_counts_from_the_start_too() -> None:
    sl = loop()
    sl.backoff.failed()
    nxt = sl.next_start(started=10.0, now=10.01)
    assert 10.25 <= nxt <= 10.5  # full jitter over [base, 2 x base] after one failure


def test_jitter_spreads_starts_around_the_interval() -> None:
    target = Target("t", "aggregated", "http://127.0.0.1:1/metrics")
    sl = ScrapeLoop(target, None, ManualClock(), lambda r: None, 1.0, 2.0, jitter_ratio=0.1)  # type: ignore[arg-type]
    starts = [sl.next_start(started=0.0, now=0.2) for _ in range(200)]
    assert all(0.9 <= s <= 1.1 for s in starts)
    assert max(starts) - min(starts) > 0.1  # jittered, not a constant
