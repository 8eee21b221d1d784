"""/signals is built once per published tick and follows every tick (pollers read it far more often
than ticks publish; the body must never lag the tick the endpoints already serve)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from phaselens.model import Target
from phaselens.server import Sidecar, signals_document
from phaselens.settings import Settings
from phaselens.sources.scraper import ScrapeResult


def test_signals_body_is_the_published_ticks_document_and_changes_with_each_tick(aggregated_dir: Path) -> None:
    scrapes = [p.read_bytes().split(b"\n", 1)[1] for p in sorted(aggregated_dir.glob("*.prom"))[60:64]]
    target = Target("engine", "aggregated", "http://127.0.0.1:1/metrics")
    side = Sidecar(Settings(targets=(target,), gpu_telemetry=False))
    assert json.loads(side.signals_body()) == signals_document(None)  # before the first tick
    bodies = []
    for offset, payload in enumerate(scrapes):
        side.pipeline.submit(ScrapeResult("engine", time.time() + offset, 0.01, payload, "text/plain"))
        side.run_tick()
        body = side.signals_body()
        assert body is side.signals_body()  # asked again within the tick: the same bytes
        assert json.loads(body) == json.loads(json.dumps(signals_document(side.pipeline.latest)))
        bodies.append(body)
    assert len(set(bodies)) == len(bodies)  # each tick published a new document
