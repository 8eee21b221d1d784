"""Shutdown never hangs: a cancellation swallowed by a request timer is honoured, and the server's
teardown gives up on a task that will not stop instead of waiting forever."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
import pytest
from phaselens.clock import SystemClock
from phaselens.model import Target
from phaselens.server import _cancel_all
from phaselens.sources.scraper import ScrapeLoop, ScrapeResult


async def test_scrape_loop_stops_when_a_timeout_swallowed_its_cancellation() -> None:
    """aiohttp's timer turns a cancellation that lands as the request times out into a TimeoutError,
    which a scrape reports as a failed attempt. The loop must still stop."""
    delivered: list[ScrapeResult] = []
    async with aiohttp.ClientSession() as session:
        loop = ScrapeLoop(Target("t", "aggregated", "http://127.0.0.1:9/metrics"), session, SystemClock(),
                          delivered.append, 0.01, 0.5)  # fmt: skip

        swallowed = [0]

        async def swallowing_scrape() -> ScrapeResult:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed[0]:
                    raise
                swallowed[0] += 1  # what the timer does, once: the cancellation becomes a failed attempt
            return ScrapeResult("t", 0.0, 0.0, error="timed out after 0.5 s")

        loop.scrape_once = swallowing_scrape  # type: ignore[method-assign]
        task = asyncio.create_task(loop.run())
        await asyncio.sleep(0.05)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2.0)
        if not done:  # the loop scraped on; stop it for good (this cancellation is not swallowed)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert done, "the scrape loop kept running after it was cancelled"
    assert swallowed == [1] and task.cancelled()
    assert delivered == []  # the swallowed attempt is not reported as a scrape


async def test_cancel_all_recancels_and_finally_gives_up(caplog: pytest.LogCaptureFixture) -> None:
    async def ignores_once() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        await asyncio.sleep(3600)

    stop = asyncio.Event()

    async def ignores_always() -> None:
        while not stop.is_set():
            try:
                await stop.wait()
            except asyncio.CancelledError:
                continue

    once = asyncio.create_task(ignores_once(), name="once")
    stubborn = asyncio.create_task(ignores_always(), name="stubborn")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING):
        await asyncio.wait_for(_cancel_all([once, stubborn], rounds=3, wait_seconds=0.05), timeout=5.0)
    assert once.cancelled()
    assert not stubborn.done()
    assert any(getattr(r, "event", "") == "shutdown_tasks_stuck" for r in caplog.records)
    stop.set()  # the test's own cleanup: let the stubborn task end
    await asyncio.wait_for(stubborn, timeout=2.0)
