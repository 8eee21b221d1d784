"""Every Grafana panel query returns data from a real Prometheus scraping a real `phaselens run`
fed with the real vLLM captures (aggregated and 1P1D), with the recording rules loaded.

Also checks, without any process, that the dashboard uses only exported names and recorded rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from phaselens.exporters.specs import SPECS_BY_NAME

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "phaselens-dashboard.json"
RULES = ROOT / "deploy" / "prometheus" / "phaselens-rules.yaml"
FIXTURES = Path(__file__).parent / "fixtures"
# Series that need something this test does not run (kube-state-metrics for Pending pods).
NEEDS_KUBE_STATE_METRICS = ("phaselens:pool_pending_pods:count",)


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"])
            for panel in dashboard["panels"] for target in panel.get("targets", [])]


def concrete(expr: str) -> str:
    """Grafana variables replaced the way the test needs them."""
    return (expr.replace("$__rate_interval", "5s").replace("$__interval", "1s")
            .replace("$namespace", ".*").replace("$target", ".*"))


def test_dashboard_uses_only_exported_and_recorded_names() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    names = set()
    for _, expr in panel_queries():
        names |= set(re.findall(r"\b(phaselens[_:][A-Za-z0-9_:]+)", expr))
    assert names
    unknown = {n for n in names if n not in SPECS_BY_NAME and n not in recorded}
    assert not unknown, unknown
    assert not any("gpu" in n.lower() for n in names)


# ------------------------------------------------------------------ the live stack


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrapes(tar_path: Path, prefix: str) -> list[str]:
    with tarfile.open(tar_path) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.startswith(prefix)),
                         key=lambda m: m.name)
        texts = []
        for member in members:
            handle = tar.extractfile(member)
            assert handle is not None
            lines = handle.read().decode().splitlines(keepends=True)
            texts.append("".join(line for line in lines if not line.startswith("# scrape_time")))
    return texts


@contextlib.contextmanager
def replay_server(captures: dict[str, list[str]]) -> Iterator[int]:
    """aiohttp server: GET /<name>/metrics returns the next recorded scrape (wrapping around)."""
    port = _free_port()
    position = dict.fromkeys(captures, 0)

    async def handle(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        texts = captures[name]
        text = texts[position[name] % len(texts)]
        position[name] += 1
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_get("/{name}/metrics", handle)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _wait_http(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(url, timeout=1).close()
            return
        time.sleep(0.2)
    raise AssertionError(f"{url} did not come up")


def _phaselens_run_available() -> bool:
    proc = subprocess.run([sys.executable, "-m", "phaselens.cli", "run", "--help"], capture_output=True,
                          timeout=60, cwd=ROOT)
    return proc.returncode == 0


@pytest.mark.integration
@pytest.mark.slow
def test_every_panel_query_returns_data(tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("prometheus missing: run `bash scripts/system-deps.sh`")
    if not _phaselens_run_available():
        pytest.skip("`phaselens run` is not implemented yet (python -m phaselens.cli run --help fails)")
    captures = {
        "aggregated": _scrapes(FIXTURES / "vllm-0.32.0-cpu-aggregated" / "scrapes.tar.gz", "rec/"),
        "prefill": _scrapes(FIXTURES / "vllm-0.32.0-cpu-pd-1p1d" / "scrapes.tar.gz", "prefill/"),
        "decode": _scrapes(FIXTURES / "vllm-0.32.0-cpu-pd-1p1d" / "scrapes.tar.gz", "decode/"),
    }
    sidecar_port, prom_port = _free_port(), _free_port()
    # Same rules, evaluated every second instead of every 15 s so a short test sees them.
    (tmp_path / "rules.yaml").write_text(RULES.read_text().replace("interval: 15s", "interval: 1s"))
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yaml")],
        "scrape_configs": [{
            "job_name": "phaselens", "honor_labels": True,
            "static_configs": [{"targets": [f"127.0.0.1:{sidecar_port}"],
                                "labels": {"namespace": "test", "pod": "sidecar-0"}}],
        }],
    }))
    with contextlib.ExitStack() as stack, replay_server(captures) as engine_port:
        base = f"http://127.0.0.1:{engine_port}"
        sidecar = subprocess.Popen(
            [sys.executable, "-m", "phaselens.cli", "run",
             "--target", f"aggregated={base}/aggregated/metrics",
             "--target", f"prefill={base}/prefill/metrics",
             "--target", f"decode={base}/decode/metrics",
             "--listen", f"127.0.0.1:{sidecar_port}", "--interval", "0.2"],
            stdout=subprocess.DEVNULL, stderr=stack.enter_context(open(tmp_path / "sidecar.err", "w")), cwd=ROOT)
        stack.callback(lambda: (sidecar.terminate(), sidecar.wait(10)))
        server = subprocess.Popen(
            [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=subprocess.DEVNULL, stderr=stack.enter_context(open(tmp_path / "prometheus.err", "w")))
        stack.callback(lambda: (server.terminate(), server.wait(10)))
        start = time.time()
        deadline = time.monotonic() + 60
        _wait_http(f"http://127.0.0.1:{sidecar_port}/metrics", deadline)
        api = f"http://127.0.0.1:{prom_port}/api/v1"
        _wait_http(f"{api}/status/buildinfo", deadline)

        def run_range(expr: str) -> list[Any]:
            query = urllib.parse.urlencode({"query": expr, "start": start, "end": time.time(), "step": "1"})
            body = _get_json(f"{api}/query_range?{query}")
            assert body["status"] == "success", (expr, body)
            return list(body["data"]["result"])

        pending = {expr for _, expr in panel_queries()
                   if not any(n in expr for n in NEEDS_KUBE_STATE_METRICS)}
        # Keep scraping until every query has data (the replay loops, so traffic always comes back).
        data_deadline = time.monotonic() + 40
        while pending and time.monotonic() < data_deadline:
            time.sleep(2)
            pending = {expr for expr in pending if not run_range(concrete(expr))}
        assert sidecar.poll() is None, (tmp_path / "sidecar.err").read_text()[-2000:]
        assert not pending, "panel queries without data:\n" + "\n".join(sorted(pending))
        # every query, including the kube-state-metrics ones, at least parses and evaluates
        for _, expr in panel_queries():
            run_range(concrete(expr))
        rule_health = _get_json(f"{api}/rules")["data"]["groups"]
        bad = [r["name"] for g in rule_health for r in g["rules"] if r.get("health") == "err"]
        assert not bad, bad
