"""Offline runs of the full pipeline over recordings (used by `report` and benchmarks)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

from phaselens.assembly import build_pipeline
from phaselens.clock import ManualClock
from phaselens.model import TickResult
from phaselens.pipeline import replay_targets
from phaselens.pipeline import replay_ticks as _feed
from phaselens.settings import Settings
from phaselens.sources.recording import load_all, merge_by_time


def replay_ticks(paths: Sequence[str], settings: Settings, engine: str = "auto") -> Iterator[TickResult]:
    """Every tick of the pipeline over recorded scrapes ([ROLE=]PATH, folders or .tar.gz),
    with the scrape times as the clock. Raises RecordingError on unreadable input."""
    sources = load_all(paths)
    targets = replay_targets(sources, engine)
    settings = replace(settings, targets=targets)
    clock = ManualClock()
    pipeline = build_pipeline(settings, clock, targets=targets, replay=True)
    try:
        yield from _feed(pipeline, clock, merge_by_time(sources))
    finally:
        pipeline.close()
