"""The tick loop waits a few ms for other targets' scrapes so one tick takes them all, but not once
every target has delivered (with one target it never waited for anything: at `--interval 0.25`
that wait was most of the delay between a scrape's arrival and its tick; bench_freshness.py)."""

from __future__ import annotations

import asyncio
import time

from phaselens.model import Target
from phaselens.server import Sidecar
from phaselens.settings import Settings
from phaselens.sources.scraper import ScrapeResult


def sidecar(*names: str) -> Sidecar:
    targets = tuple(Target(n, "aggregated", f"http://127.0.0.1:1/{n}") for n in names)
    return Sidecar(Settings(targets=targets, gpu_telemetry=False))


def failed(name: str) -> ScrapeResult:
    return ScrapeResult(name, time.time(), 0.001, error="connection refused")


async def test_no_wait_once_every_target_has_delivered() -> None:
    side = sidecar("engine")
    side._deliver(failed("engine"))
    t0 = time.monotonic()
    await side._coalesce(10.0)
    assert time.monotonic() - t0 < 5.0


async def test_waits_for_the_other_target_then_stops_waiting() -> None:
    side = sidecar("prefill", "decode")
    side._deliver(failed("prefill"))
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, side._deliver, failed("decode"))
    t0 = time.monotonic()
    await side._coalesce(10.0)
    waited = time.monotonic() - t0
    assert 0.04 <= waited < 5.0, waited


async def test_a_silent_target_is_waited_for_only_up_to_the_coalescing_time() -> None:
    side = sidecar("prefill", "decode")
    side._deliver(failed("prefill"))
    t0 = time.monotonic()
    await side._coalesce(0.1)
    waited = time.monotonic() - t0
    assert 0.09 <= waited < 5.0, waited
