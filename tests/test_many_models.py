"""Many models (LoRA adapters) or engines behind one target (issue 17, item 1).

The window reads only a group's own series (a tick is linear in the series it reads, not
groups x series); at most `max_groups` groups keep their own series, the others are summed into
`model_name="__other__"`; the live tick runs off the event loop, so /healthz answers and SIGTERM
stops the sidecar while a tick is running. Real scrapes: the aggregated vLLM 0.32 capture with its
model's series copied under more `model_name` values.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from phaselens.analyzers import window as window_module
from phaselens.analyzers.target import analyze_target
from phaselens.analyzers.window import GENERATION_LABEL, OTHER_MODEL, TargetWindow
from phaselens.clock import ManualClock
from phaselens.model import EngineSnapshot, Histogram, Labels, Recommendation, Signal, Target, make_labels
from phaselens.parsers.engines import canonical as c
from phaselens.pipeline import Pipeline, parse_payload
from phaselens.server import Sidecar, serve
from phaselens.settings import Settings
from phaselens.sources.recording import load_sources
from phaselens.sources.scraper import ScrapeResult

AGG_TAR = Path(__file__).parent / "fixtures" / "vllm-0.32.0-cpu-aggregated" / "scrapes.tar.gz"
TARGET = Target("engine", "aggregated", "http://engine/metrics")
SCALARS = (
    "vllm:num_requests_running{",
    "vllm:num_requests_waiting{",
    "vllm:kv_cache_usage_perc{",
    "vllm:prompt_tokens_total{",
    "vllm:generation_tokens_total{",
    "vllm:request_success_total{",
)


def with_models(body: bytes, models: int, families: Sequence[str] = SCALARS) -> bytes:
    """The real body plus `models` copies of its model's series in `families`, counters divided by
    the model's rank + 1 (so their traffic differs), each copy inside its family's block."""
    out: list[str] = []
    for line in body.decode().splitlines():
        out.append(line)
        if line.startswith(tuple(families)):
            head, value = line.rsplit(" ", 1)
            for index in range(models):
                number = float(value) / (index + 1) if "_total{" in head else float(value)
                copy = head.replace('model_name="tiny"', f'model_name="m{index:04d}"')
                out.append(f"{copy} {number!r}")
    return ("\n".join(out) + "\n").encode()


@pytest.fixture(scope="module")
def bodies() -> list[tuple[float, bytes]]:
    (source,) = load_sources(str(AGG_TAR))
    return [(s.time, s.load()) for s in source.scrapes]


def labels(model: str, engine: str = "0", **extra: str) -> Labels:
    return make_labels({"model_name": model, "engine": engine, **extra})


def snap(time_: float, per_model: dict[str, dict[str, float]], hists: dict[str, Histogram] | None = None
         ) -> EngineSnapshot:
    scalars = {(name, labels(model)): value for model, series in per_model.items() for name, value in series.items()}
    histograms = {(c.TTFT_SECONDS, labels(model)): hist for model, hist in (hists or {}).items()}
    return EngineSnapshot("vllm", time_, scalars, histograms)


def hist(model: str, fast: float, count: float) -> Histogram:
    return Histogram(c.TTFT_SECONDS, labels(model), ((0.1, fast), (1.0, count), (float("inf"), count)),
                     0.05 * count, count)


# ---------------------------------------------------------------------- the window


def test_queries_read_only_their_groups_series(monkeypatch: pytest.MonkeyPatch, bodies: list[tuple[float, bytes]]
                                               ) -> None:
    """Before the index, every query matched every series' labels: groups x series label reads."""
    window = TargetWindow(30.0)
    for time_, body in bodies[40:45]:
        window.add(parse_payload(with_models(body, 200), None, time_, "auto"))
    series = len(window.latest.scalars) + len(window.latest.histograms)  # type: ignore[union-attr]
    reads = 0
    real = window_module.label_value

    def counting(labels: Labels, name: str, default: str = "") -> str:
        nonlocal reads
        reads += 1
        return real(labels, name, default)

    monkeypatch.setattr(window_module, "label_value", counting)
    signals, _ = analyze_target(window, TARGET, Settings())
    assert len({dict(s.labels)["model_name"] for s in signals}) == 201
    # Label reads are left only for extra-label filters (`reason`, `finished_reason`) over a group's own
    # series at each of the 5 points: a few per series. Before the index each of the ~30 queries of each of
    # the 201 groups read every series of its name at every point: about 6 million.
    assert reads <= 10 * series


def test_the_busiest_groups_keep_their_series_and_the_rest_are_summed() -> None:
    window = TargetWindow(30.0, max_groups=2)
    finished = {"a": 100.0, "b": 10.0, "c": 1.0, "d": 2.0}  # requests per scrape
    for step in range(5):
        window.add(snap(float(step), {
            model: {c.REQUEST_SUCCESS: rate * step, c.REQUESTS_RUNNING: 1.0, c.KV_CACHE_USAGE: 0.1 * (i + 1)}
            for i, (model, rate) in enumerate(finished.items())
        }, {model: hist(model, step, 2 * step) for model in finished}))
    other = (OTHER_MODEL, "0")
    assert window.groups() == [("a", "0"), ("b", "0"), other]
    assert window.folded_groups == 2 and window.seen_groups == 4
    assert window.increase(c.REQUEST_SUCCESS, other) == pytest.approx((1.0 + 2.0) * 4)  # c + d
    assert window.gauge(c.REQUESTS_RUNNING, other) == 2.0  # counts add up
    assert window.gauge(c.KV_CACHE_USAGE, other) == pytest.approx(0.4)  # a ratio: the max, never a sum
    delta = window.histogram_delta(c.TTFT_SECONDS, other)
    assert delta is not None and delta.count == 2 * (2 * 4) and dict(delta.buckets)[0.1] == 2 * 4
    assert window.increase(c.REQUEST_SUCCESS, ("a", "0")) == 400.0  # kept groups are untouched
    # the internal generation label never reaches a group's own labels
    assert all(GENERATION_LABEL not in dict(lb) for (_, lb) in window.latest.scalars if  # type: ignore[union-attr]
               dict(lb)["model_name"] != OTHER_MODEL)


def test_ranking_does_not_flap_between_nearly_equal_groups() -> None:
    window = TargetWindow(30.0, max_groups=1)
    kept = []
    total = {"a": 0.0, "b": 0.0}
    for step in range(40):
        # b is 5 % busier on odd scrapes, a on even ones
        total["a"] += 100.0 if step % 2 == 0 else 95.0
        total["b"] += 95.0 if step % 2 == 0 else 100.0
        window.add(snap(float(step), {m: {c.REQUEST_SUCCESS: v} for m, v in total.items()}))
        kept.append(window.groups()[0])
    assert len(set(kept[5:])) == 1


def test_a_group_joining_other_is_not_read_as_traffic() -> None:
    """A member with a big cumulative count appears: `__other__`'s sum jumps, its increase must not."""
    window = TargetWindow(30.0, max_groups=1)
    for step in range(6):
        series = {"a": {c.REQUEST_SUCCESS: 1000.0 * step}, "b": {c.REQUEST_SUCCESS: 1.0 * step}}
        if step >= 3:
            series["c"] = {c.REQUEST_SUCCESS: 1e6 + step}  # an adapter loaded with a long history
        window.add(snap(float(step), series))
    other = (OTHER_MODEL, "0")
    increase = window.increase(c.REQUEST_SUCCESS, other)
    assert increase is not None and increase <= 5.0 + 2.0  # b's 5 plus c's 2: never c's million
    # an engine restart of a member (its counter drops) is a new generation too, not a negative rate
    window.add(snap(6.0, {"a": {c.REQUEST_SUCCESS: 6000.0}, "b": {c.REQUEST_SUCCESS: 6.0},
                          "c": {c.REQUEST_SUCCESS: 1.0}}))
    assert (window.rate(c.REQUEST_SUCCESS, other) or 0.0) >= 0.0


def test_a_model_named_other_by_the_engine_is_always_folded() -> None:
    window = TargetWindow(30.0, max_groups=5)
    window.add(snap(0.0, {"a": {c.REQUESTS_RUNNING: 1.0}, OTHER_MODEL: {c.REQUESTS_RUNNING: 7.0}}))
    assert window.groups() == [("a", "0"), (OTHER_MODEL, "0")]
    assert window.gauge(c.REQUESTS_RUNNING, (OTHER_MODEL, "0")) == 7.0


# ---------------------------------------------------------------------- the pipeline


def test_export_is_capped_and_capping_is_logged_once(
    bodies: list[tuple[float, bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="phaselens")
    clock = ManualClock()
    pipeline = Pipeline(Settings(targets=(TARGET,), max_models_per_target=5), clock)
    for time_, body in bodies[30:40]:
        clock.set(time_)
        pipeline.submit(ScrapeResult(TARGET.name, time_, 0.01, with_models(body, 300), None))
        result = pipeline.tick()
    models = {dict(s.labels).get("model_name") for s in result.signals} - {None}
    assert len(models) == 6 and OTHER_MODEL in models
    assert "tiny" in models and {"m0000", "m0001", "m0002", "m0003"} <= models  # the busiest by requests
    capped = [r for r in caplog.records if getattr(r, "event", None) == "models_capped"]
    assert len(capped) == 1
    # the summed group carries the folded models' queue: 300 copies of the capture's running gauge
    running_line = next(line for line in bodies[39][1].decode().splitlines()
                        if line.startswith("vllm:num_requests_running{"))
    running = float(running_line.rsplit(" ", 1)[1])
    (window_state,) = pipeline.states.values()
    assert window_state.window.gauge(c.REQUESTS_RUNNING, (OTHER_MODEL, "0")) == pytest.approx(running * 296)


# ---------------------------------------------------------------------- the event loop


class _Blocking:
    """A target analyzer that blocks until the test releases it (a very long tick)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.released = threading.Event()
        self.returned = threading.Event()
        self.released_during_tick = False

    def __call__(self, window: TargetWindow, target: Target, settings: Settings
                 ) -> tuple[Sequence[Signal], Sequence[Recommendation]]:
        self.entered.set()
        self.released_during_tick = self.released.wait(timeout=5.0)
        self.returned.set()
        return [], []


async def _until(event: threading.Event, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not event.is_set():
        assert time.monotonic() < deadline, "the tick never started"
        await asyncio.sleep(0.01)


async def test_healthz_answers_and_sigterm_stops_during_a_long_tick(bodies: list[tuple[float, bytes]]) -> None:
    engine_body = bodies[40][1].split(b"\n", 1)[1]

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=engine_body, content_type="text/plain")

    engine_app = web.Application()
    engine_app.router.add_get("/metrics", metrics)
    engine = web.AppRunner(engine_app)
    await engine.setup()
    engine_site = web.TCPSite(engine, "127.0.0.1", 0)
    await engine_site.start()
    engine_port = engine.addresses[0][1]
    target = Target("engine", "aggregated", f"http://127.0.0.1:{engine_port}/metrics")
    settings = Settings(targets=(target,), interval_seconds=0.2, jitter_ratio=0.0, shutdown_timeout_seconds=2.0,
                        gpu_telemetry=False)
    blocking = _Blocking()
    pipeline = Pipeline(settings, ManualClock(), target_analyzers=[("blocking", blocking)])
    sidecar = Sidecar(settings, pipeline=pipeline)
    stop = asyncio.Event()
    port_holder = web.AppRunner(web.Application())
    await port_holder.setup()
    probe = web.TCPSite(port_holder, "127.0.0.1", 0)
    await probe.start()
    port = port_holder.addresses[0][1]
    await port_holder.cleanup()
    server = asyncio.create_task(serve(sidecar.build_app(), "127.0.0.1", port, settings.shutdown_timeout_seconds,
                                       stop))
    try:
        await _until(blocking.entered, 10.0)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3.0)) as client, \
                client.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200
        blocking.released.set()
        await _until(blocking.returned, 10.0)
        assert blocking.released_during_tick  # /healthz answered while the tick was running
        blocking.released.clear()
        blocking.entered.clear()
        await _until(blocking.entered, 10.0)  # the next tick is running (and never released)
        started = time.monotonic()
        stop.set()
        await asyncio.wait_for(server, timeout=10.0)
        assert time.monotonic() - started < settings.shutdown_timeout_seconds + 1.0
    finally:
        blocking.released.set()
        stop.set()
        if not server.done():
            server.cancel()
        await engine.cleanup()


def test_folding_that_stops_and_resumes_starts_new_series() -> None:
    window = TargetWindow(30.0, max_groups=2)
    for step in range(6):
        series = {"a": {c.REQUEST_SUCCESS: 1000.0 * step}, "b": {c.REQUEST_SUCCESS: 10.0 * step}}
        if step != 3:  # c leaves for one scrape (under the cap: nothing folded), then comes back higher
            series["c"] = {c.REQUEST_SUCCESS: 1.0 * step + (500.0 if step > 3 else 0.0)}
        window.add(snap(float(step), series))
        assert window.folded_groups == (0 if step == 3 else 1)
    increase = window.increase(c.REQUEST_SUCCESS, (OTHER_MODEL, "0"))
    assert increase is not None and increase <= 5.0  # c's own 1 a scrape at most: never its jump of 500


def test_the_cap_is_a_setting_like_every_other(tmp_path: Path) -> None:
    from phaselens.config import load_settings
    from phaselens.settings import ConfigError

    assert Settings().max_models_per_target == 20
    assert load_settings({}, {"PHASELENS_MAX_MODELS_PER_TARGET": "7"}).max_models_per_target == 7
    config = tmp_path / "phaselens.yaml"
    config.write_text("max_models_per_target: 3\n")
    assert load_settings({}, {}, str(config)).max_models_per_target == 3
    flags = {"max_models_per_target": "9"}
    assert load_settings(flags, {"PHASELENS_MAX_MODELS_PER_TARGET": "7"}, str(config)).max_models_per_target == 9
    with pytest.raises(ConfigError, match="max-models-per-target"):
        load_settings({"max_models_per_target": "0"})


def test_a_tick_that_fell_behind_parses_only_the_newest_scrape(
    bodies: list[tuple[float, bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="phaselens")
    parsed: list[float] = []

    def parse(payload: bytes, content_type: str | None, time_: float, engine: str) -> EngineSnapshot:
        parsed.append(time_)
        return parse_payload(payload, content_type, time_, engine)

    clock = ManualClock()
    pipeline = Pipeline(Settings(targets=(TARGET,)), clock, parse=parse)
    for _ in range(2):  # two ticks, each finding three scrapes queued behind it
        for time_, body in bodies[40:43] if not parsed else bodies[43:46]:
            pipeline.submit(ScrapeResult(TARGET.name, time_, 0.01, body, None))
        clock.set(time_)
        pipeline.tick()
    assert parsed == [bodies[42][0], bodies[45][0]]
    logged = [r for r in caplog.records if getattr(r, "event", None) == "scrape_superseded"]
    assert len(logged) == 1
