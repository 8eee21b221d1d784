"""The HTML report opened in real headless Chromium: loads with no console errors, every chart decodes,
and no chart's legend covers its data.

Chromium is driven over the DevTools protocol (a websocket, via aiohttp) so console messages and
uncaught exceptions are seen as the browser reports them. A screenshot is kept under
artifacts/ (a CI artifact).
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _open_in_chromium(page: Path, screenshot: Path) -> dict[str, Any]:
    assert CHROMIUM is not None
    port = _free_port()
    profile = tempfile.mkdtemp(prefix="phaselens-chromium-")
    proc = subprocess.Popen(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--remote-debugging-port={port}",
            "--window-size=1100,1400", "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as http:
            targets: list[dict[str, Any]] = []
            for _ in range(100):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/json") as resp:
                        targets = [t for t in await resp.json() if t.get("type") == "page"]
                    if targets:
                        break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            assert targets, "chromium did not open a page target"
            async with http.ws_connect(targets[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                next_id = 0
                events: list[dict[str, Any]] = []

                async def call(method: str, **params: Any) -> dict[str, Any]:
                    nonlocal next_id
                    next_id += 1
                    my_id = next_id
                    await ws.send_json({"id": my_id, "method": method, "params": params})
                    while True:
                        msg = json.loads((await ws.receive(timeout=30)).data)
                        if msg.get("id") == my_id:
                            assert "error" not in msg, msg
                            return dict(msg.get("result", {}))
                        events.append(msg)

                await call("Runtime.enable")
                await call("Log.enable")
                await call("Page.enable")
                await call("Page.navigate", url=page.as_uri())
                for _ in range(100):
                    state = await call("Runtime.evaluate", expression="document.readyState", returnByValue=True)
                    if state["result"].get("value") == "complete":
                        break
                    await asyncio.sleep(0.1)
                probe = await call(
                    "Runtime.evaluate",
                    expression=(
                        "JSON.stringify({total: document.body.getAttribute('data-charts-total'),"
                        " loaded: document.body.getAttribute('data-charts-loaded'),"
                        " imgs: Array.from(document.querySelectorAll('img.chart')).map(i => [i.id, i.naturalWidth]),"
                        " layouts: Array.from(document.querySelectorAll('img.chart')).map(i => ({id: i.id,"
                        "   natural: [i.naturalWidth, i.naturalHeight], shown: [i.clientWidth, i.clientHeight],"
                        "   layout: JSON.parse(i.getAttribute('data-layout'))})),"
                        " text: document.body.innerText})"
                    ),
                    returnByValue=True,
                )
                shot = await call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
                screenshot.write_bytes(base64.b64decode(shot["data"]))
                await asyncio.sleep(0.2)
                errors = [
                    e for e in events
                    if e.get("method") == "Runtime.exceptionThrown"
                    or (e.get("method") == "Runtime.consoleAPICalled" and e["params"].get("type") == "error")
                    or (e.get("method") == "Log.entryAdded" and e["params"]["entry"].get("level") == "error")
                ]
                result: dict[str, Any] = json.loads(probe["result"]["value"])
                result["errors"] = errors
                return result
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (scripts/system-deps.sh installs it)")
def test_report_opens_in_chromium_without_errors(aggregated_report: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report-aggregated.png"
    result = asyncio.run(_open_in_chromium(aggregated_report, shot))
    assert result["errors"] == []
    total = int(result["total"])
    assert total >= 5, result["imgs"]
    assert int(result["loaded"]) == total
    assert all(width > 0 for _, width in result["imgs"])
    assert "KV-cache pressure" in result["text"]
    assert shot.stat().st_size > 10_000


def _overlap(a: list[float], b: list[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (scripts/system-deps.sh installs it)")
def test_report_legends_sit_outside_the_data_and_name_every_series(aggregated_report: Path) -> None:
    """Each chart image, as Chromium decoded and laid it out, with the layout matplotlib measured for
    it: the legend box lies inside the image and off every plot area (the data area of the left and
    the right y axis), and names every line, band and episode kind drawn."""
    ARTIFACTS.mkdir(exist_ok=True)
    result = asyncio.run(_open_in_chromium(aggregated_report, ARTIFACTS / "report-aggregated-legends.png"))
    assert result["errors"] == []
    charts = result["layouts"]
    assert len(charts) >= 5
    for chart in charts:
        layout = chart["layout"]
        name = chart["id"]
        # The boxes are in the PNG's pixels; the browser decoded the same PNG and shows it unclipped.
        assert chart["natural"] == [layout["width"], layout["height"]], name
        assert chart["shown"][0] > 0 and chart["shown"][1] > 0, name
        legend = layout["legend"]
        assert legend is not None, f"{name}: no legend"
        assert 0 <= legend[0] < legend[2] <= layout["width"] and 0 <= legend[1] < legend[3] <= layout["height"], name
        for plot in layout["plots"]:
            assert not _overlap(legend, plot), f"{name}: legend {legend} covers the plot area {plot}"
        missing = [s for s in layout["series"] if s not in layout["legend_labels"]]
        assert missing == [], f"{name}: drawn but not in the legend: {missing}"
    by_key = {c["id"].rsplit("-", 1)[1]: c["layout"] for c in charts}
    # Right-axis series are in their legends too.
    assert any("prefill backlog" in label for label in by_key["queue"]["legend_labels"])
    assert any("preemptions/s" in label for label in by_key["kv"]["legend_labels"])
    assert len(by_key["queue"]["plots"]) == 2 and len(by_key["kv"]["plots"]) == 2
