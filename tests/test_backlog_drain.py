"""Prefill backlog on an engine without prompt-token counters: the queue's drain time.

Replays a real Dynamo 1.6.1 mocker worker capture (tests/fixtures/dynamo-1.6.1-mocker-queue,
taken in the fleet lab while its queue grew from 7 to 240 requests).
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from phaselens.analyzers.backlog import prefill_backlog
from phaselens.analyzers.target import analyze_target
from phaselens.analyzers.view import WindowView
from phaselens.analyzers.window import TargetWindow
from phaselens.model import EngineSnapshot, Target, label_value
from phaselens.parsers.engines import canonical as c
from phaselens.parsers.engines import to_snapshot
from phaselens.parsers.exposition import parse_exposition
from phaselens.settings import Settings

FIXTURE = Path(__file__).parent / "fixtures" / "dynamo-1.6.1-mocker-queue" / "scrapes.tar.gz"
TARGET = Target("w01", "aggregated", "file://w01")
SETTINGS = Settings()


@pytest.fixture(scope="module")
def snaps(tmp_path_factory: pytest.TempPathFactory) -> list[EngineSnapshot]:
    out = tmp_path_factory.mktemp("mocker-queue")
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(out, filter="data")
    result = []
    for path in sorted((out / "scrapes").glob("*.prom")):
        text = path.read_text()
        ts = float(text.splitlines()[0].split()[2])
        result.append(to_snapshot(parse_exposition(text), ts))
    return result


def test_capture_has_a_queue_and_no_token_counters(snaps: list[EngineSnapshot]) -> None:
    window = TargetWindow(SETTINGS.window_seconds)
    for s in snaps:
        window.add(s)
    view = WindowView(window, SETTINGS.window_seconds)
    group = view.groups()[0]
    assert view.gauge(c.REQUESTS_WAITING, group) == 240
    assert view.gauge_series(c.PROMPT_TOKENS, group) == []
    assert view.histogram_delta(c.REQUEST_PROMPT_TOKENS, group) is None


def test_backlog_is_the_drain_time_and_grows_with_the_queue(snaps: list[EngineSnapshot]) -> None:
    window = TargetWindow(SETTINGS.window_seconds)
    values = []
    for s in snaps:
        window.add(s)
        view = WindowView(window, SETTINGS.window_seconds)
        group = view.groups()[0]
        b = prefill_backlog(view, group, None)
        if b.finished_per_second is not None:
            assert b.tokens_source == "drain"
            assert b.backlog_seconds == pytest.approx(b.queue_depth / b.finished_per_second)  # type: ignore[operator]
            delta = view.histogram_delta(c.E2E_LATENCY_SECONDS, group)
            assert delta is not None
            assert b.finished_per_second == pytest.approx(delta.count / delta.seconds)
            values.append(b.backlog_seconds)
    assert len(values) >= len(snaps) - 5
    # 7 queued at the start, 240 at the end at a similar finish rate: the drain time grows ~30x
    assert values[-1] > 10 * values[0] > 0


def test_the_sidecar_exports_it(snaps: list[EngineSnapshot]) -> None:
    window = TargetWindow(SETTINGS.window_seconds)
    last = None
    for s in snaps:
        window.add(s)
        signals, _ = analyze_target(window, TARGET, SETTINGS)
        last = [x for x in signals if x.name == "phaselens_prefill_backlog_seconds"]
    assert last and last[0].value > 10  # 240 waiting at a few requests per second
    assert label_value(last[0].labels, "role") == "aggregated"
