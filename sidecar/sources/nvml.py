"""GPU telemetry through NVML (`nvidia-ml-py`, import name `pynvml`).

Optional by design: no library, no driver, no GPU -> `read()` returns an empty list and
`available` is False with the reason; nothing raises. The first failure is logged once as a
warning, not on every tick. A field a GPU does not support (power on some boards, ECC on consumer
cards) is None rather than a made-up zero.

The NVML module is injected (`NvmlSource(nvml=...)`) so tests can put a fake at exactly this
boundary; production passes nothing and the real `pynvml` is imported lazily.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any

from phaselens.logs import get_logger, log_event
from phaselens.model import GpuReading

_log = get_logger("nvml")

# NVML clock-event ("throttle") reason bits, from nvml.h; named here so a fake need not define them.
THROTTLE_REASONS: tuple[tuple[int, str], ...] = (
    (0x0000000000000004, "sw_power_cap"),
    (0x0000000000000008, "hw_slowdown"),
    (0x0000000000000020, "sw_thermal_slowdown"),
    (0x0000000000000040, "hw_thermal_slowdown"),
    (0x0000000000000080, "hw_power_brake_slowdown"),
)
TEMPERATURE_GPU = 0  # NVML_TEMPERATURE_GPU
TEMPERATURE_THRESHOLD_SLOWDOWN = 1  # NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
MEMORY_ERROR_TYPE_UNCORRECTED = 1  # NVML_MEMORY_ERROR_TYPE_UNCORRECTED
VOLATILE_ECC = 0  # NVML_VOLATILE_ECC


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class NvmlSource:
    """Reads every visible GPU once per call. Not thread-safe; one instance per process."""

    def __init__(self, nvml: ModuleType | Any | None = None) -> None:
        self._nvml: Any = nvml
        self._initialised = False
        self._failed_reason: str | None = None
        self._warned = False

    @property
    def available(self) -> bool:
        return self._initialised and self._failed_reason is None

    @property
    def unavailable_reason(self) -> str | None:
        return self._failed_reason

    def _start(self) -> bool:
        if self._initialised:
            return self._failed_reason is None
        self._initialised = True
        try:
            if self._nvml is None:
                self._nvml = importlib.import_module("pynvml")
            self._nvml.nvmlInit()
        except ImportError:
            self._fail("nvidia-ml-py is not installed (pip install 'phaselens[gpu]')")
        except Exception as exc:  # NVMLError subclasses: library not found, driver not loaded, ...
            self._fail(f"NVML unavailable: {exc}")
        return self._failed_reason is None

    def _fail(self, reason: str) -> None:
        self._failed_reason = reason
        if not self._warned:
            self._warned = True
            log_event(_log, "gpu_telemetry_unavailable", logging.WARNING, reason=reason)

    def read(self, now: float) -> list[GpuReading]:
        """One reading per GPU; [] when NVML is unavailable or the count cannot be read."""
        if not self._start():
            return []
        nvml = self._nvml
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except Exception as exc:
            log_event(_log, "gpu_telemetry_error", logging.WARNING, error=str(exc))
            return []
        out: list[GpuReading] = []
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
            except Exception as exc:
                log_event(_log, "gpu_telemetry_error", logging.WARNING, gpu=index, error=str(exc))
                continue
            out.append(self._read_one(index, handle, now))
        return out

    def _optional(self, call: Callable[[], Any]) -> Any | None:
        """A field some GPUs or drivers do not support: None instead of an error."""
        try:
            return call()
        except Exception:
            return None

    def _read_one(self, index: int, handle: Any, now: float) -> GpuReading:
        nvml = self._nvml
        util = self._optional(lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
        memory = self._optional(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
        power_mw = self._optional(lambda: nvml.nvmlDeviceGetPowerUsage(handle))
        limit_mw = self._optional(lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle))
        temperature = self._optional(lambda: nvml.nvmlDeviceGetTemperature(handle, TEMPERATURE_GPU))
        slowdown = self._optional(
            lambda: nvml.nvmlDeviceGetTemperatureThreshold(handle, TEMPERATURE_THRESHOLD_SLOWDOWN)
        )
        reasons_mask = self._optional(lambda: nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle))
        ecc = self._optional(
            lambda: nvml.nvmlDeviceGetTotalEccErrors(handle, MEMORY_ERROR_TYPE_UNCORRECTED, VOLATILE_ECC)
        )
        reasons = tuple(name for bit, name in THROTTLE_REASONS if reasons_mask is not None and int(reasons_mask) & bit)
        return GpuReading(
            index=index,
            uuid=_text(self._optional(lambda: nvml.nvmlDeviceGetUUID(handle)) or f"gpu-{index}"),
            name=_text(self._optional(lambda: nvml.nvmlDeviceGetName(handle)) or "unknown"),
            time=now,
            utilization_ratio=float(util.gpu) / 100.0 if util is not None else None,
            memory_used_bytes=float(memory.used) if memory is not None else None,
            memory_total_bytes=float(memory.total) if memory is not None else None,
            power_watts=float(power_mw) / 1000.0 if power_mw is not None else None,
            power_limit_watts=float(limit_mw) / 1000.0 if limit_mw is not None else None,
            temperature_celsius=float(temperature) if temperature is not None else None,
            slowdown_temperature_celsius=float(slowdown) if slowdown is not None else None,
            throttle_reasons=reasons,
            ecc_uncorrected_errors=float(ecc) if ecc is not None else None,
        )

    def close(self) -> None:
        if self.available and self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
        self._initialised = False
        self._failed_reason = None
