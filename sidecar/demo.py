"""`phaselens demo`: the bundled real capture (vLLM 0.32.0, CPU, aggregated) through the pipeline.

Both modes print the verdict first (primary cause per episode, remedy, expected effect). `--once`
then prints the recommendations in order and a summary. Without it the replay is paced (10x by
default) while `/metrics` is served (the verdict comes from a quick unpaced pass first),
recommendations print as they happen, and the last state keeps being served until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from phaselens.assembly import build_pipeline
from phaselens.clock import ManualClock
from phaselens.config import parse_listen
from phaselens.exporters.recommendations import RecommendationSink, recommendation_line
from phaselens.model import Recommendation, TickResult
from phaselens.pipeline import Pipeline, replay_targets, replay_ticks
from phaselens.settings import ConfigError, Settings
from phaselens.sources.recording import RecordedSource, load_sources, merge_by_time
from phaselens.verdict import VerdictLog, human_line

CAPTURE = "vllm-0.32.0-cpu-aggregated.tar.gz"
HEADLINES = (
    ("phaselens_prefill_queue_depth", "peak prefill queue", "{:.0f} requests"),
    ("phaselens_decode_kv_utilization_ratio", "peak KV-cache utilization", "{:.0%}"),
    ("phaselens_request_rate_per_second", "peak request rate", "{:.2f} req/s"),
    ("phaselens_kv_prefix_cache_hit_ratio", "peak prefix-cache hit ratio", "{:.0%}"),
    ("phaselens_kv_preemptions_per_second", "peak preemptions", "{:.1f} /s"),
)

_HEADLINE_NAMES = frozenset(name for name, _, _ in HEADLINES)


@contextlib.contextmanager
def bundled_capture() -> Iterator[Path]:
    resource = importlib.resources.files("phaselens.data") / CAPTURE
    with importlib.resources.as_file(resource) as path:
        yield path


def load_demo_sources() -> list[RecordedSource]:
    with bundled_capture() as path:
        return load_sources(f"aggregated={path}")


@dataclass
class DemoSummary:
    ticks: int = 0
    start: float | None = None
    end: float | None = None
    peaks: dict[str, float] = field(default_factory=dict)
    printed: list[Recommendation] = field(default_factory=list)

    def observe(self, tick: TickResult) -> None:
        self.ticks += 1
        self.start = tick.time if self.start is None else self.start
        self.end = tick.time
        for signal in tick.signals:
            if signal.name in _HEADLINE_NAMES:
                self.peaks[signal.name] = max(self.peaks.get(signal.name, signal.value), signal.value)

    def lines(self) -> list[str]:
        seconds = (self.end or 0.0) - (self.start or 0.0)
        out = [f"Replayed {self.ticks} scrapes ({seconds:.0f} s of a real vLLM 0.32.0 server)."]
        for name, text, fmt in HEADLINES:
            if name in self.peaks:
                out.append(f"  {text}: {fmt.format(self.peaks[name])}")
        codes = sorted({rec.code for rec in self.printed})
        out.append(f"  recommendations: {len(self.printed)} ({', '.join(codes) or 'none'})")
        return out


def run_demo(
    once: bool,
    listen: str = "127.0.0.1:9469",
    speed: float = 10.0,
    as_json: bool = False,
    out: TextIO | None = None,
) -> int:
    stream = out or sys.stdout
    sources = load_demo_sources()
    settings = Settings(targets=replay_targets(sources), recommendation_min_interval_seconds=60.0)
    clock = ManualClock()
    pipeline = build_pipeline(settings, clock, replay=True)
    sink = RecommendationSink(settings.recommendation_min_interval_seconds)  # its rate limit only
    summary = DemoSummary()
    verdict = VerdictLog()
    held: list[str] | None = [] if once else None  # --once: the verdict goes first, so lines wait

    def show(tick: TickResult) -> None:
        summary.observe(tick)
        verdict.observe(tick)
        for rec in tick.recommendations:
            if not sink.admit(rec, tick.time):
                continue
            summary.printed.append(rec)
            line = recommendation_line(rec, tick.time) if as_json else human_line(rec, tick.time - (summary.start or 0))
            if held is not None:
                held.append(line)
            else:
                stream.write(line + "\n")
        stream.flush()

    ticks = replay_ticks(pipeline, clock, merge_by_time(sources))
    if once:
        for tick in ticks:
            show(tick)
        if not as_json:
            stream.write("\n".join(verdict.lines()) + "\n\nDetails:\n")
        stream.write("".join(line + "\n" for line in held or []))
        stream.write("\n".join(summary.lines()) + "\n")
        return 0
    try:
        host, port = parse_listen(listen)
    except ConfigError as exc:
        print(f"phaselens demo: {exc}", file=sys.stderr)
        return 2
    if not as_json:
        # The verdict first here too: an unpaced pass over the same capture (about a second).
        stream.write("\n".join(run_verdict(sources, settings)) + "\n\n")
    stream.write(f"Serving http://{host}:{port}/metrics while replaying at {speed:g}x (Ctrl-C to stop).\n")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_paced(pipeline, ticks, show, host, port, speed, summary, stream))
    return 0


def run_verdict(sources: list[RecordedSource], settings: Settings) -> list[str]:
    """The verdict of a whole capture, from a separate unpaced pipeline."""
    clock = ManualClock()
    pipeline = build_pipeline(settings, clock, replay=True)
    verdict = VerdictLog()
    try:
        verdict.observe_all(replay_ticks(pipeline, clock, merge_by_time(sources)))
    finally:
        pipeline.close()
    return verdict.lines()


async def _serve_paced(
    pipeline: Pipeline,
    ticks: Iterator[TickResult],
    show: Callable[[TickResult], None],
    host: str,
    port: int,
    speed: float,
    summary: DemoSummary,
    stream: TextIO,
) -> None:
    from phaselens.server import Sidecar, serve

    sidecar = Sidecar(pipeline.settings, pipeline.clock, pipeline=pipeline)
    app = sidecar.build_app(background=False)
    stop = asyncio.Event()

    async def pace() -> None:
        previous: float | None = None
        for tick in ticks:
            if previous is not None:
                await asyncio.sleep(max(0.0, (tick.time - previous) / speed))
            previous = tick.time
            show(tick)
        stream.write("\n".join(summary.lines()) + "\nReplay finished; still serving the last state.\n")
        stream.flush()

    task = asyncio.create_task(pace())
    try:
        await serve(app, host, port, pipeline.settings.shutdown_timeout_seconds, stop)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
