"""Builds the one pipeline every command runs: analyzers, NIXL and log inputs, queue
intelligence with its state file, GPU telemetry, and calibration gating."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

from phaselens.analyzers.diagnosis import Diagnosis
from phaselens.analyzers.queue_intelligence import QueueIntelligence
from phaselens.analyzers.window import TargetWindow
from phaselens.clock import Clock
from phaselens.dynamo_stage import DynamoStage
from phaselens.inputs import NixlStage
from phaselens.logs import get_logger, log_event
from phaselens.model import GpuReading, Recommendation, Signal, Target
from phaselens.pipeline import Pipeline
from phaselens.settings import Settings
from phaselens.sources.nvml import NvmlSource
from phaselens.state import StateFile

_log = get_logger("assembly")


class QueueStage:
    """Queue intelligence as a pipeline stage: owns the learned state, saves it now and then."""

    def __init__(self, settings: Settings, *, replay: bool = False) -> None:
        self.settings = settings
        self.state_file = StateFile(settings.state_file) if settings.state_file and not replay else None
        self.model = QueueIntelligence.from_state(self.state_file.load() if self.state_file else None)
        self.gpu = NvmlSource() if settings.gpu_telemetry and not replay else None
        self._last_save: float | None = None
        if self.gpu is not None and not self.gpu.available:
            log_event(_log, "gpu_telemetry_unavailable", logging.INFO, reason=self.gpu.unavailable_reason)

    def __call__(
        self, now: float, fresh: Mapping[str, tuple[Target, TargetWindow]]
    ) -> tuple[Sequence[Signal], Sequence[Recommendation]]:
        gpus: list[GpuReading] = self.gpu.read(now) if self.gpu is not None and self.gpu.available else []
        found = self.model.tick(fresh, now, self.settings, gpus=gpus)
        if self.state_file is not None and (
            self._last_save is None or now - self._last_save >= self.settings.state_save_interval_seconds
        ):
            self._last_save = now
            self.save()
        return found

    def gate(self, recommendations: list[Recommendation]) -> list[Recommendation]:
        return self.model.gate(recommendations, self.settings)

    def save(self) -> None:
        if self.state_file is not None:
            try:
                self.state_file.save(self.model.to_state())
            except OSError as exc:
                log_event(_log, "state_save_failed", logging.WARNING, path=str(self.state_file.path), error=str(exc))

    def close(self) -> None:
        self.save()
        if self.gpu is not None:
            self.gpu.close()


def build_pipeline(
    settings: Settings, clock: Clock, *, targets: Iterable[Target] | None = None, replay: bool = False
) -> Pipeline:
    """The full pipeline. `replay` reads side inputs as recorded files and keeps no state file."""
    nixl = NixlStage(settings, replay=replay)
    queue = QueueStage(settings, replay=replay)
    diagnosis = Diagnosis(settings)

    def diagnose(
        now: float, fresh: Mapping[str, tuple[Target, TargetWindow]], signals: Sequence[Signal],
        recommendations: Sequence[Recommendation],
    ) -> tuple[Sequence[Signal], Sequence[Recommendation]]:
        result = diagnosis.tick(now, fresh, signals, recommendations)
        return result.signals, result.recommendations

    pipeline = Pipeline(
        settings,
        clock,
        targets=targets,
        extra_stages=[("nixl", nixl), ("dynamo", DynamoStage(settings)), ("queue", queue)],
        gate=queue.gate,
        diagnose=diagnose,
    )
    pipeline.closers.extend([nixl.close, queue.close])
    return pipeline
