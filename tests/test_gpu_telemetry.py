"""NVML source (FakeNvml at the library boundary; the real library without a driver), GPU signals,
health score and the GPU_UTIL_IS_NOT_A_SCALING_SIGNAL detector."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from phaselens.analyzers import gpu
from phaselens.analyzers.queue_intelligence import QueueIntelligence
from phaselens.analyzers.window import TargetWindow
from phaselens.exporters.specs import SPECS_BY_NAME
from phaselens.model import EngineSnapshot, GpuReading, Target, make_labels
from phaselens.parsers.engines import canonical as cn
from phaselens.settings import Settings
from phaselens.sources.nvml import NvmlSource


class NotSupported(Exception):
    pass


@dataclass
class FakeGpu:
    util: int = 97
    used: int = 70 * 2**30
    total: int = 80 * 2**30
    power_mw: int | None = 350_000
    temp: int = 60
    throttle: int = 0


class FakeNvml:
    """Stands in for the `pynvml` module: same function names, a fixed list of GPUs."""

    def __init__(self, gpus: list[FakeGpu], fail_init: bool = False) -> None:
        self.gpus = gpus
        self.fail_init = fail_init
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise RuntimeError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> FakeGpu:
        return self.gpus[i]

    def nvmlDeviceGetUUID(self, h: FakeGpu) -> bytes:
        return f"GPU-{self.gpus.index(h)}".encode()

    def nvmlDeviceGetName(self, h: FakeGpu) -> str:
        return "NVIDIA H100"

    def nvmlDeviceGetUtilizationRates(self, h: FakeGpu) -> Any:
        return SimpleNamespace(gpu=h.util, memory=10)

    def nvmlDeviceGetMemoryInfo(self, h: FakeGpu) -> Any:
        return SimpleNamespace(used=h.used, total=h.total, free=h.total - h.used)

    def nvmlDeviceGetPowerUsage(self, h: FakeGpu) -> int:
        if h.power_mw is None:
            raise NotSupported("Not Supported")
        return h.power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, h: FakeGpu) -> int:
        return 700_000

    def nvmlDeviceGetTemperature(self, h: FakeGpu, sensor: int) -> int:
        return h.temp

    def nvmlDeviceGetTemperatureThreshold(self, h: FakeGpu, kind: int) -> int:
        return 90

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h: FakeGpu) -> int:
        return h.throttle

    def nvmlDeviceGetTotalEccErrors(self, h: FakeGpu, kind: int, counter: int) -> int:
        raise NotSupported("Not Supported")


def test_fake_nvml_readings() -> None:
    source = NvmlSource(nvml=FakeNvml([FakeGpu(), FakeGpu(util=5, power_mw=None, throttle=0x40, temp=88)]))
    readings = source.read(100.0)
    assert source.available
    assert [r.uuid for r in readings] == ["GPU-0", "GPU-1"]
    first, second = readings
    assert first.utilization_ratio == pytest.approx(0.97)
    assert first.power_watts == pytest.approx(350.0) and first.power_limit_watts == pytest.approx(700.0)
    assert first.ecc_uncorrected_errors is None  # not supported -> None, not 0
    assert second.power_watts is None
    assert second.throttle_reasons == ("hw_thermal_slowdown",)
    assert gpu.health_score(first) == 1.0
    assert gpu.health_score(second) < 0.5  # 2 C from slowdown and thermally throttled


def test_init_failure_gives_no_data_once(caplog: pytest.LogCaptureFixture) -> None:
    source = NvmlSource(nvml=FakeNvml([FakeGpu()], fail_init=True))
    assert source.read(0.0) == [] and source.read(1.0) == []
    assert not source.available and "Driver Not Loaded" in (source.unavailable_reason or "")


def test_real_pynvml_without_driver_reports_no_data() -> None:
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("a real NVIDIA driver is present here")
    source = NvmlSource()
    assert source.read(0.0) == []
    assert not source.available and source.unavailable_reason


def test_gpu_signals_are_in_the_spec_table() -> None:
    readings = NvmlSource(nvml=FakeNvml([FakeGpu()])).read(0.0)
    signals = gpu.gpu_signals(readings)
    names = {s.name for s in signals}
    assert names == {
        "phaselens_gpu_utilization_ratio",
        "phaselens_gpu_memory_used_ratio",
        "phaselens_gpu_power_watts",
        "phaselens_gpu_temperature_celsius",
        "phaselens_gpu_health_ratio",
    }
    for s in signals:
        assert tuple(k for k, _ in s.labels) == SPECS_BY_NAME[s.name].labels


def test_detector_fires_only_with_an_idle_queue() -> None:
    pinned = [0.98, 0.99, 0.97]
    found = gpu.detect_util_not_scaling_signal(pinned, waiting=0, running=1)
    assert found is not None and found.code == "GPU_UTIL_IS_NOT_A_SCALING_SIGNAL"
    assert "kernel" in found.message
    assert gpu.detect_util_not_scaling_signal(pinned, waiting=4, running=8) is None
    assert gpu.detect_util_not_scaling_signal([0.4, 0.5, 0.3], waiting=0, running=1) is None
    assert gpu.detect_util_not_scaling_signal([0.99], waiting=0, running=1) is None  # too few readings


def test_queue_intelligence_wires_gpu_readings() -> None:
    labels = make_labels({"model_name": "m", "engine": "0"})
    w = TargetWindow(30.0)
    for t in range(4):
        w.add(
            EngineSnapshot(
                "vllm", float(t), {(cn.REQUESTS_WAITING, labels): 0.0, (cn.REQUESTS_RUNNING, labels): 1.0}, {}
            )
        )
    qi = QueueIntelligence()
    recs = []
    for t in range(4):
        reading = GpuReading(0, "GPU-0", "H100", float(t), utilization_ratio=0.99)
        signals, recs = qi.tick({"t": (Target("t", "aggregated", "x"), w)}, float(t), Settings(), gpus=[reading])
    assert any(s.name == "phaselens_gpu_utilization_ratio" for s in signals)
    assert [r.code for r in recs] == ["GPU_UTIL_IS_NOT_A_SCALING_SIGNAL"]
