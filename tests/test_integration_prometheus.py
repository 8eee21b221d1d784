"""A real Prometheus scrapes `phaselens run`, which scrapes an engine serving the real capture."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("prometheus") is None, reason="needs the prometheus binary (bash scripts/system-deps.sh)"
    ),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def waiting_of(body: bytes) -> float:
    line = next(x for x in body.decode().splitlines() if x.startswith("vllm:num_requests_waiting{"))
    return float(line.split()[-1])


async def query(session: aiohttp.ClientSession, base: str, promql: str) -> list[dict[str, Any]]:
    async with session.get(f"{base}/api/v1/query", params={"query": promql}) as response:
        data = await response.json()
        assert data["status"] == "success", data
        result: list[dict[str, Any]] = data["data"]["result"]
        return result


async def test_prometheus_sees_the_served_queue_depth(aggregated_dir: Path, tmp_path: Path) -> None:
    bodies = [p.read_bytes().split(b"\n", 1)[1] for p in sorted(aggregated_dir.glob("*.prom"))]
    # The burst phase, where the queue is long: hold one scrape so every component agrees on it.
    held = next(b for b in bodies[45:] if waiting_of(b) >= 5)
    served = {"body": bodies[40]}

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=served["body"], content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    engine_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", engine_port).start()
    sidecar_port, prom_port = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: phaselens\n    static_configs: [{{targets: ['127.0.0.1:{sidecar_port}']}}]\n"
    )
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC  # the children write their logs here
    log_fds = [os.open(tmp_path / name, flags, 0o644) for name in ("sidecar.log", "prometheus.log")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    sidecar = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "phaselens",
        "run",
        "--target",
        f"prefill=http://127.0.0.1:{engine_port}/metrics",
        "--listen",
        f"127.0.0.1:{sidecar_port}",
        "--interval",
        "0.2",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log_fds[0],
        env=env,
    )
    prometheus = await asyncio.create_subprocess_exec(
        "prometheus",
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log_fds[1],
    )
    base = f"http://127.0.0.1:{prom_port}"
    try:
        served["body"] = held
        expected = waiting_of(held)
        deadline = time.monotonic() + 40
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    found = await query(session, base, 'phaselens_prefill_queue_depth{target="prefill"}')
                except aiohttp.ClientError:
                    found = []
                if found and float(found[0]["value"][1]) == expected:
                    break
                assert time.monotonic() < deadline, f"Prometheus never saw {expected}: {found}"
                await asyncio.sleep(0.5)
            assert found[0]["metric"]["role"] == "prefill"
            assert found[0]["metric"]["model_name"] == "tiny"
            (up,) = await query(session, base, 'phaselens_target_up{target="prefill"}')
            assert up["value"][1] == "1"
            targets = await query(session, base, 'up{job="phaselens"}')
            assert targets[0]["value"][1] == "1"
    finally:
        for process in (sidecar, prometheus):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        sidecar_rc = await asyncio.wait_for(sidecar.wait(), 15)
        await asyncio.wait_for(prometheus.wait(), 15)
        await runner.cleanup()
        for fd in log_fds:
            os.close(fd)
    log = (tmp_path / "sidecar.log").read_text()
    assert sidecar_rc == 0, log
    assert '"event":"settings"' in log and '"event":"shutdown"' in log
    assert "Traceback" not in log
