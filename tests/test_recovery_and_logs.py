"""Recovery after an outage is prompt, and the log says when things come back or go away.

- a target down long enough for the scrape backoff to grow is scraped again within the
  stale-after time once its engine answers (the backoff is capped there);
- `parse_failed` is one warning per failure streak, and `parse_recovered` ends it;
- a followed log file that disappears gives `log_file_gone`, and `log_file_back` on return.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from engine_replay import ReplayEngine, free_port, recorded_bodies
from phaselens.clock import ManualClock
from phaselens.inputs import SideInputs
from phaselens.model import Target
from phaselens.pipeline import Pipeline
from phaselens.server import Sidecar
from phaselens.settings import Settings
from phaselens.sources.scraper import ScrapeResult


def _events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == name]


async def test_target_back_after_a_long_outage_is_scraped_within_stale_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="phaselens")
    port = free_port()
    stale_after = 0.5
    settings = Settings(
        targets=(Target("engine", "aggregated", f"http://127.0.0.1:{port}/metrics"),),
        interval_seconds=0.1,
        jitter_ratio=0.0,
        scrape_timeout_seconds=0.4,
        stale_after_seconds=stale_after,
        gpu_telemetry=False,
    )
    runner = web.AppRunner(Sidecar(settings).build_app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        # Down until 8 failures in a row: an uncapped backoff would now wait up to 25.6 s.
        deadline = time.monotonic() + 30
        while not any(getattr(r, "failures", 0) >= 8 for r in _events(caplog, "scrape_failed")):
            assert time.monotonic() < deadline, "the target never failed 8 times"
            await asyncio.sleep(0.05)
        with ReplayEngine.on_port(port):
            back = time.monotonic()
            async with aiohttp.ClientSession(base) as client:
                while True:
                    async with client.get("/readyz") as response:
                        if response.status == 200:
                            break
                    assert time.monotonic() - back < stale_after + 1.0, "still not scraped after the engine came back"
                    await asyncio.sleep(0.02)
    finally:
        await runner.cleanup()
    assert _events(caplog, "target_recovered")


def test_parse_failures_warn_once_per_streak_and_recovery_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="phaselens")
    good = recorded_bodies(2)
    clock = ManualClock(1_800_000_000.0)
    pipeline = Pipeline(Settings(targets=(Target("engine", "aggregated", "http://x/metrics"),)), clock)
    bodies = [good[0], b"\x00\x01 not metrics\n{{{\n", b"nope{\n", b"still nope{\n", good[1]]
    for body in bodies:
        clock.advance(1.0)
        pipeline.submit(ScrapeResult("engine", clock.wall(), 0.01, body, None))
        pipeline.tick()
    failed = _events(caplog, "parse_failed")
    assert [r.levelno for r in failed] == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    recovered = _events(caplog, "parse_recovered")
    assert len(recovered) == 1 and getattr(recovered[0], "after_failures", None) == 3
    assert recovered[0].levelno == logging.INFO


def test_followed_log_file_that_disappears_and_returns_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="phaselens")
    log = tmp_path / "engine.log"
    log.write_text("INFO 11-30 05:00:00 [loggers.py:123] Engine 000: Avg prompt throughput: 1.0 tokens/s\n")
    inputs = SideInputs(Settings(log_files=(f"decode={log}",)))
    inputs.poll(1.0)
    assert not _events(caplog, "log_file_gone")
    log.unlink()
    inputs.poll(2.0)
    inputs.poll(3.0)
    gone = _events(caplog, "log_file_gone")
    assert len(gone) == 1 and getattr(gone[0], "path", None) == str(log) and gone[0].levelno == logging.WARNING
    log.write_text("back\n")
    inputs.poll(4.0)
    assert len(_events(caplog, "log_file_back")) == 1
    inputs.close()
