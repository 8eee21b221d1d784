"""The pipeline: scrape results -> parse -> snapshot -> window -> analyzers -> published TickResult.

The same object runs live (`run`: scrape loops `submit` results, a timer calls `tick`) and
offline (`replay`: the scrape times drive a ManualClock). Every stage and every analyzer call is
wrapped: an exception is logged (`parse_failed`, `analyzer_failed`) and counted, and the rest of
the tick still publishes. Publishing swaps one reference (`latest`); exporters only read it.

Engine warnings: each scrape's `suspects` (parsers/engines/semantics.py) and the window checks
(`suspect_checks`, e.g. a KV utilization pinned by an offload tier) are logged once per target,
code and metric (`engine_metric_suspect`), and the ones seen in the tick are published with it.

Staleness: a target whose last good scrape is older than `settings.stale_after_seconds` exports
only its self signals (`phaselens_target_up` 0, `phaselens_signal_age_seconds` saying how old);
its analyzer signals and recommendations are withheld, so stale data is never shown as fresh.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from phaselens.analyzers.window import TargetWindow
from phaselens.clock import Clock, ManualClock
from phaselens.exporters.specs import SPECS_BY_NAME
from phaselens.logs import get_logger, log_event
from phaselens.model import (
    EngineSnapshot,
    EngineWarning,
    Recommendation,
    Signal,
    Suspect,
    Target,
    TickResult,
    make_labels,
)
from phaselens.settings import Settings
from phaselens.sources.recording import RecordedSource, Tick
from phaselens.sources.scraper import ScrapeResult

Findings = tuple[Sequence[Signal], Sequence[Recommendation]]
ParseStage = Callable[[bytes, "str | None", float, str], EngineSnapshot]
TargetAnalyzer = Callable[[TargetWindow, Target, Settings], Findings]
PoolAnalyzer = Callable[[Mapping[str, tuple[Target, TargetWindow]], Settings], Findings]
FreshWindows = Mapping[str, tuple[Target, TargetWindow]]
ExtraStage = Callable[[float, FreshWindows], Findings]
"""Stages with state or inputs other than scrapes (NIXL telemetry, logs, queue intelligence):
called with the tick's wall time and the fresh targets' windows, after the pure analyzers."""
SuspectCheck = Callable[[TargetWindow, Target, Settings], Sequence[Suspect]]
"""Window-level plausibility checks of one target (pure), run for every fresh target each tick."""
RecommendationGate = Callable[[list[Recommendation]], list[Recommendation]]
"""Applied to every recommendation of a tick (calibration gating) before it is published."""
DiagnoseStage = Callable[[float, FreshWindows, Sequence[Signal], Sequence[Recommendation]], Findings]
"""The last stage (analyzers/diagnosis.py): one cause per target and pool, the tick's gated
recommendations reconciled with it; returns the diagnosis signals and the recommendations to publish."""

_log = get_logger("pipeline")
_MAX_PENDING = 16
_MAX_REJECTIONS_LOGGED = 10_000  # (target, canonical series, reason) keys: a bounded set


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def parse_payload(payload: bytes, content_type: str | None, time_: float, engine: str) -> EngineSnapshot:
    """Default parse stage: exposition text -> canonical snapshot (the parsers' entry points)."""
    from phaselens.parsers.engines import to_snapshot
    from phaselens.parsers.exposition import parse_exposition

    exposition = parse_exposition(payload, content_type)
    return to_snapshot(exposition, time_, engine)


def default_target_analyzers() -> list[tuple[str, TargetAnalyzer]]:
    """The per-target analyzers, in order (the one place they are wired)."""
    from phaselens.analyzers.target import analyze_target

    return [("target", analyze_target)]


def default_pool_analyzers() -> list[tuple[str, PoolAnalyzer]]:
    """The cross-target analyzers, in order (the one place they are wired)."""
    from phaselens.analyzers.pool import analyze_pool

    return [("pool", analyze_pool)]


def default_suspect_checks() -> list[tuple[str, SuspectCheck]]:
    """The window-level engine semantic checks (logged once as `engine_metric_suspect`)."""
    from phaselens.analyzers.kv_pressure import window_suspects

    return [("kv_pressure", window_suspects)]


@dataclass(slots=True)
class TargetState:
    target: Target
    window: TargetWindow
    up: bool = False
    last_good: float | None = None
    scrape_duration: float | None = None
    parse_errors_total: float = 0.0
    parse_failures: int = 0  # consecutive scrapes that did not parse; the first one is logged as a warning
    capped: bool = False
    superseded_total: int = 0
    pending: deque[ScrapeResult] = field(default_factory=lambda: deque(maxlen=_MAX_PENDING))


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        *,
        parse: ParseStage = parse_payload,
        target_analyzers: Sequence[tuple[str, TargetAnalyzer]] | None = None,
        pool_analyzers: Sequence[tuple[str, PoolAnalyzer]] | None = None,
        extra_stages: Sequence[tuple[str, ExtraStage]] = (),
        suspect_checks: Sequence[tuple[str, SuspectCheck]] | None = None,
        gate: RecommendationGate | None = None,
        diagnose: DiagnoseStage | None = None,
        cpu_time: Callable[[], float] = time.thread_time,  # the tick runs in one thread: its CPU alone
        targets: Iterable[Target] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._parse = parse
        self._target_analyzers = list(default_target_analyzers() if target_analyzers is None else target_analyzers)
        self._pool_analyzers = list(default_pool_analyzers() if pool_analyzers is None else pool_analyzers)
        self._extra_stages = list(extra_stages)
        self._suspect_checks = list(default_suspect_checks() if suspect_checks is None else suspect_checks)
        self._warnings_seen: dict[tuple[str, str, str], float] = {}
        self._gate = gate
        self._diagnose = diagnose
        self.closers: list[Callable[[], None]] = []
        self._cpu_time = cpu_time
        self.states: dict[str, TargetState] = {}
        for target in settings.targets if targets is None else targets:
            window = TargetWindow(settings.window_seconds, max_groups=settings.max_models_per_target)
            self.states[target.name] = TargetState(target, window)
        self.analyzer_failures_total = 0
        self.ticks_total = 0
        self.heartbeat_monotonic: float | None = None
        self._latest: TickResult | None = None
        self._dropped_logged: set[tuple[str, str]] = set()
        self._rejections_logged: set[tuple[str, str, str]] = set()

    # ------------------------------------------------------------------ inputs

    @property
    def latest(self) -> TickResult | None:
        """The last published tick (one reference, swapped whole; safe to read from any thread)."""
        return self._latest

    @property
    def ever_scraped_ok(self) -> bool:
        return any(state.last_good is not None for state in self.states.values())

    def submit(self, result: ScrapeResult) -> None:
        """Queue a scrape result for the next tick (called by the scrape loops; never blocks)."""
        state = self.states.get(result.target)
        if state is None:
            raise KeyError(f"unknown target {result.target!r}")
        state.pending.append(result)

    def _ingest(self, state: TargetState, result: ScrapeResult) -> None:
        # Parsing and indexing allocate a few objects per series and create no cycles; with many
        # models, collections triggered by those allocations scanned the whole heap again and again.
        with gc_paused():
            self._ingest_one(state, result)

    def _ingest_one(self, state: TargetState, result: ScrapeResult) -> None:
        if result.duration_seconds is not None:
            state.scrape_duration = result.duration_seconds
        if result.payload is None:
            state.up = False
            return
        try:
            snapshot = self._parse(result.payload, result.content_type, result.time, state.target.engine)
        except Exception as exc:
            self._parse_failed(state, 1, f"{type(exc).__name__}: {exc}")
            return
        if not snapshot.scalars and not snapshot.histograms and snapshot.parse_issues:
            # Nothing usable, only malformed lines: a failed scrape, not an idle engine.
            reason = f"no valid metrics ({snapshot.parse_issues} malformed lines)"
            self._parse_failed(state, snapshot.parse_issues, reason)
            return
        state.window.add(snapshot)
        self._log_capping(state)
        self._log_rejections(state, snapshot)
        state.parse_errors_total += snapshot.parse_issues
        state.up = True
        if state.parse_failures:
            log_event(_log, "parse_recovered", target=state.target.name, after_failures=state.parse_failures)
            state.parse_failures = 0
        state.last_good = result.time

    def _log_rejections(self, state: TargetState, snapshot: EngineSnapshot) -> None:
        """`series_rejected` once per (target, series, reason): a bad engine is visible, not a flood."""
        for rejection in snapshot.rejected:
            key = (state.target.name, rejection.series, rejection.reason)
            if key in self._rejections_logged or len(self._rejections_logged) >= _MAX_REJECTIONS_LOGGED:
                continue
            self._rejections_logged.add(key)
            log_event(
                _log,
                "series_rejected",
                logging.WARNING,
                target=state.target.name,
                series=rejection.series,
                reason=rejection.reason,
                labels=dict(rejection.labels),
                action="treated as missing for the scrape",
            )

    def _log_capping(self, state: TargetState) -> None:
        """One `models_capped` line when a target starts having more groups than the cap."""
        folded = state.window.folded_groups
        if folded and not state.capped:
            log_event(
                _log,
                "models_capped",
                logging.WARNING,
                target=state.target.name,
                groups=state.window.seen_groups,
                kept=state.window.seen_groups - folded,
                folded_into="__other__",
                max_models_per_target=self.settings.max_models_per_target,
            )
        state.capped = bool(folded)

    def _parse_failed(self, state: TargetState, errors: int, reason: str) -> None:
        """One warning when a target's scrapes stop parsing, then debug until `parse_recovered`."""
        state.up = False
        state.parse_errors_total += errors
        state.parse_failures += 1
        level = logging.WARNING if state.parse_failures == 1 else logging.DEBUG
        log_event(_log, "parse_failed", level, target=state.target.name, err=reason, failures=state.parse_failures)

    # ------------------------------------------------------------------ the tick

    def _is_fresh(self, state: TargetState, now: float) -> bool:
        return state.last_good is not None and now - state.last_good <= self.settings.stale_after_seconds

    def _call(self, stage: str, name: str, func: Callable[[], Findings], **context: str) -> Findings:
        try:
            signals, recommendations = func()
            return list(signals), list(recommendations)
        except Exception:
            self.analyzer_failures_total += 1
            log_event(_log, "analyzer_failed", logging.ERROR, stage=stage, analyzer=name, exc_info=True, **context)
            return [], []

    def _self_signals(self, state: TargetState, now: float) -> list[Signal]:
        labels = make_labels({"target": state.target.name, "role": state.target.role})
        out = [
            Signal("phaselens_target_up", labels, 1.0 if state.up and self._is_fresh(state, now) else 0.0),
            Signal("phaselens_parse_errors_total", labels, state.parse_errors_total),
        ]
        if state.scrape_duration is not None:
            out.append(Signal("phaselens_scrape_duration_seconds", labels, state.scrape_duration))
        if state.last_good is not None:
            out.append(Signal("phaselens_signal_age_seconds", labels, max(0.0, now - state.last_good)))
        return out

    def tick(self) -> TickResult:
        cpu_start = self._cpu_time()
        now = self.clock.wall()
        signals: list[Signal] = []
        recommendations: list[Recommendation] = []
        warnings: list[EngineWarning] = []
        fresh: dict[str, tuple[Target, TargetWindow]] = {}
        for state in self.states.values():
            while state.pending:
                result = state.pending.popleft()
                if state.pending and result.payload is not None:
                    # A newer scrape is already waiting: the tick fell behind (a huge body). Parsing
                    # this one too would make the next tick longer still, and so on, so only the
                    # newest is parsed; the window simply has one point fewer.
                    if not state.superseded_total:
                        log_event(_log, "scrape_superseded", logging.WARNING, target=state.target.name,
                                  reason="the tick fell behind; only the newest pending scrape is parsed")
                    state.superseded_total += 1
                    continue
                self._ingest(state, result)
            signals.extend(self._self_signals(state, now))
            if not self._is_fresh(state, now) or not len(state.window):
                continue
            fresh[state.target.name] = (state.target, state.window)
            warnings.extend(self._target_warnings(state, now))
            for name, analyze in self._target_analyzers:
                call = functools.partial(analyze, state.window, state.target, self.settings)
                found = self._call("target", name, call, target=state.target.name)
                signals.extend(found[0])
                recommendations.extend(found[1])
        if fresh:
            for name, analyze_pool in self._pool_analyzers:
                found = self._call("pool", name, functools.partial(analyze_pool, fresh, self.settings))
                signals.extend(found[0])
                recommendations.extend(found[1])
        for name, stage in self._extra_stages:
            found = self._call("extra", name, functools.partial(stage, now, fresh))
            signals.extend(found[0])
            recommendations.extend(found[1])
        if self._gate is not None and recommendations:
            gate = self._gate
            gated = self._call("gate", "gate", lambda: ((), gate(recommendations)))
            # A failing gate must not let ungated advice through as `act`: publish none this tick.
            recommendations = list(gated[1])
        if self._diagnose is not None:
            diagnose = self._diagnose
            found = self._call("diagnose", "diagnosis",
                               functools.partial(diagnose, now, fresh, tuple(signals), tuple(recommendations)))
            signals.extend(found[0])
            # A failing diagnosis must not let unreconciled advice through: publish none this tick.
            recommendations = list(found[1])
        exported = self._publishable(signals)
        exported.append(Signal("phaselens_tick_duration_seconds", (), max(0.0, self._cpu_time() - cpu_start)))
        result = TickResult(now, tuple(exported), tuple(recommendations), tuple(warnings))
        self._latest = result
        self.ticks_total += 1
        self.heartbeat_monotonic = self.clock.monotonic()
        return result

    def _target_warnings(self, state: TargetState, now: float) -> list[EngineWarning]:
        """The target's current suspects (latest scrape + window checks), each logged the first time."""
        latest = state.window.latest
        suspects: list[Suspect] = list(latest.suspects) if latest is not None else []
        for name, check in self._suspect_checks:
            try:
                suspects.extend(check(state.window, state.target, self.settings))
            except Exception:
                self.analyzer_failures_total += 1
                log_event(_log, "analyzer_failed", logging.ERROR, stage="suspect", analyzer=name,
                          target=state.target.name, exc_info=True)
        out: list[EngineWarning] = []
        seen_now: set[tuple[str, str, str]] = set()
        for suspect in suspects:
            key = (state.target.name, suspect.code, suspect.metric)
            if key in seen_now:
                continue
            seen_now.add(key)
            first = self._warnings_seen.get(key)
            if first is None:
                first = self._warnings_seen[key] = now
                log_event(_log, "engine_metric_suspect", logging.WARNING, target=state.target.name,
                          code=suspect.code, metric=suspect.metric, value=suspect.value, detail=suspect.message)
            out.append(EngineWarning(state.target.name, suspect, first))
        return out

    def close(self) -> None:
        """Release side inputs and save learned state (called once on shutdown)."""
        for close in self.closers:
            try:
                close()
            except Exception:
                log_event(_log, "close_failed", logging.WARNING, exc_info=True)

    def _publishable(self, signals: Iterable[Signal]) -> list[Signal]:
        """Only what the spec table allows: known name, exactly its labels, finite value, no duplicates."""
        out: list[Signal] = []
        seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        for signal in signals:
            spec = SPECS_BY_NAME.get(signal.name)
            reason = None
            if spec is None:
                reason = "unknown name"
            elif sorted(spec.labels) != [key for key, _ in signal.labels]:
                reason = f"labels {[key for key, _ in signal.labels]} differ from {sorted(spec.labels)}"
            elif not math.isfinite(signal.value):
                reason = "non-finite value"
            elif (signal.name, signal.labels) in seen:
                reason = "duplicate series"
            if reason is None:
                seen.add((signal.name, signal.labels))
                out.append(signal)
            elif (signal.name, reason) not in self._dropped_logged:
                # Once per (name, reason): a producer bug should be visible without flooding the log.
                self._dropped_logged.add((signal.name, reason))
                log_event(_log, "signal_dropped", logging.WARNING, signal=signal.name, reason=reason)
        return out


# ---------------------------------------------------------------------- offline (replay, demo, benchmarks)


def replay_targets(sources: Sequence[RecordedSource], engine: str = "auto") -> tuple[Target, ...]:
    return tuple(
        Target(name=source.name, role=source.role, url=f"recording:{source.name}", engine=cast(Any, engine))
        for source in sources
    )


def replay_ticks(pipeline: Pipeline, clock: ManualClock, ticks: Iterable[Tick]) -> Iterator[TickResult]:
    """Feed recorded ticks through the pipeline with their scrape times as the clock."""
    for tick in ticks:
        clock.set(tick.time)
        for name, scrape in tick.scrapes.items():
            pipeline.submit(ScrapeResult(name, scrape.time, None, scrape.load(), None))
        yield pipeline.tick()
