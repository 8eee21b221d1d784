"""The live sidecar against a misbehaving engine: it keeps serving and never shows stale data as fresh."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from phaselens.model import Target
from phaselens.server import Sidecar
from phaselens.settings import Settings

SELF = {
    "phaselens_target_up",
    "phaselens_parse_errors_total",
    "phaselens_scrape_duration_seconds",
    "phaselens_signal_age_seconds",
    "phaselens_tick_duration_seconds",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Engine:
    """A real HTTP engine double serving captured scrapes; `mode` switches its misbehaviour."""

    def __init__(self, bodies: list[bytes], port: int) -> None:
        self.bodies = bodies
        self.port = port
        self.index = 0
        self.mode = "ok"
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "garbage":
            return web.Response(body=b"\x00garbage" * (50 * 1024 * 1024 // 8))
        if self.mode == "malformed":
            return web.Response(text="vllm:num_requests_waiting{{{ broken\nnot a metric line\n")
        body = self.bodies[min(self.index, len(self.bodies) - 1)]
        self.index += 1
        return web.Response(body=body, content_type="text/plain")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
def bodies(aggregated_dir: Path) -> list[bytes]:
    return [p.read_bytes().split(b"\n", 1)[1] for p in sorted(aggregated_dir.glob("*.prom"))]


@pytest.fixture
async def live(bodies: list[bytes]) -> AsyncIterator[tuple[Engine, str, aiohttp.ClientSession]]:
    engine = Engine(bodies[40:], free_port())
    target = Target("engine", "aggregated", f"http://127.0.0.1:{engine.port}/metrics")
    settings = Settings(
        targets=(target,),
        interval_seconds=0.1,
        jitter_ratio=0.0,
        scrape_timeout_seconds=0.4,
        stale_after_seconds=0.8,
        window_seconds=10.0,
    )
    sidecar = Sidecar(settings)
    runner = web.AppRunner(sidecar.build_app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    async with aiohttp.ClientSession(base) as client:
        try:
            yield engine, base, client
        finally:
            await engine.stop()
            await runner.cleanup()


async def signals(client: aiohttp.ClientSession) -> dict[str, Any]:
    async with client.get("/signals") as response:
        assert response.status == 200
        document: dict[str, Any] = await response.json()
        return document


async def wait_for(
    client: aiohttp.ClientSession, check: Callable[[dict[str, Any]], bool], seconds: float = 20.0
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        document = await signals(client)
        if check(document):
            return document
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met; last /signals: {document['signals']}")
        await asyncio.sleep(0.05)


def up(document: dict[str, Any]) -> float | None:
    return document["signals"].get("phaselens_target_up", {}).get("engine")


def analyzer_names(document: dict[str, Any]) -> set[str]:
    return {s["name"] for s in document["series"]} - SELF


async def test_engine_faults_keep_the_sidecar_serving_truthfully(
    live: tuple[Engine, str, aiohttp.ClientSession], caplog: pytest.LogCaptureFixture
) -> None:
    engine, _, client = live
    caplog.set_level(logging.INFO, logger="phaselens")
    # engine down at start: serving, not ready, target_up 0, nothing else
    document = await wait_for(client, lambda d: up(d) == 0.0)
    assert analyzer_names(document) == set()
    async with client.get("/readyz") as response:
        assert response.status == 503
    async with client.get("/metrics") as response:
        assert response.status == 200 and "phaselens_target_up" in await response.text()
    async with client.get("/healthz") as response:
        assert response.status == 200

    await engine.start()
    document = await wait_for(client, lambda d: up(d) == 1.0 and "phaselens_prefill_queue_depth" in d["signals"])
    async with client.get("/readyz") as response:
        assert response.status == 200

    # engine gone mid-run: up 0 at once, analyzer signals withheld once stale, age grows
    await engine.stop()
    await wait_for(client, lambda d: up(d) == 0.0)
    document = await wait_for(client, lambda d: not analyzer_names(d))
    assert document["signals"]["phaselens_signal_age_seconds"]["engine"] > 0.8
    await engine.start()
    await wait_for(client, lambda d: up(d) == 1.0 and bool(analyzer_names(d)))

    # an engine that never answers: timeouts, then stale
    engine.mode = "hang"
    document = await wait_for(client, lambda d: up(d) == 0.0 and not analyzer_names(d))
    assert document["signals"]["phaselens_scrape_duration_seconds"]["engine"] >= 0.35

    # a 50 MB garbage body is rejected by the size cap
    engine.mode = "garbage"
    await wait_for(client, lambda d: up(d) == 0.0)
    await asyncio.sleep(0.5)
    assert up(await signals(client)) == 0.0

    # malformed exposition: counted, target down
    engine.mode = "malformed"
    before = (await signals(client))["signals"]["phaselens_parse_errors_total"]["engine"]
    document = await wait_for(client, lambda d: d["signals"]["phaselens_parse_errors_total"]["engine"] > before)
    assert up(document) == 0.0

    # back to good data, then a counter reset (engine restart): rates never go negative
    engine.mode = "ok"
    await wait_for(client, lambda d: up(d) == 1.0 and bool(analyzer_names(d)), seconds=40.0)
    engine.index = 0
    for _ in range(10):
        document = await signals(client)
        for series in document["series"]:
            if series["name"].endswith("_per_second"):
                assert series["value"] >= 0, series
        await asyncio.sleep(0.1)
    assert up(document) == 1.0

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == [], [r.getMessage() for r in errors]
    events = {getattr(r, "event", "") for r in caplog.records}
    assert {"scrape_failed", "target_recovered", "parse_failed"} <= events


@pytest.mark.slow
async def test_200_concurrent_metrics_clients(live: tuple[Engine, str, aiohttp.ClientSession]) -> None:
    engine, base, _ = live
    await engine.start()
    failures: list[str] = []
    count = 0
    deadline = time.monotonic() + 10.0

    async def client_loop(session: aiohttp.ClientSession) -> None:
        nonlocal count
        while time.monotonic() < deadline:
            try:
                async with session.get(base + "/metrics") as response:
                    body = await response.read()
                    if response.status != 200 or b"phaselens_target_up" not in body:
                        failures.append(f"status {response.status}")
                    count += 1
            except aiohttp.ClientError as exc:
                failures.append(repr(exc))

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.sleep(0.5)  # first scrape
        await asyncio.gather(*(client_loop(session) for _ in range(200)))
    assert failures == []
    assert count > 200
