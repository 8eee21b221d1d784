"""Seat-aware decode saturation: `phaselens_decode_saturation_ratio{basis}`.

A decode worker is full when its KV cache is full or when every sequence slot (the engine's
batch cap, vLLM/Dynamo `max_num_seqs`) is taken. KV utilization alone misses the second case:
with short sequences the batch cap binds first (the fleet lab's `decode-heavy` trace: 16 seats
held about half of the KV cache while requests queued for a seat, docs/fleet.md finding 9).

saturation = max(KV utilization, running / batch cap), with `basis` naming the larger term
(`kv` on a tie or when the cap is unknown, `seats` otherwise). The batch cap, first found wins:
- `config`: the engine exports it (vLLM `cache_config_info`, a Dynamo model card);
- `declared`: the operator passed `--max-num-seqs`;
- `plateau`: inferred from a plateau of the running count while requests waited
  (analyzers/diagnosis.py `batch_cap`).
Without a cap the value is the KV utilization (basis `kv`): never worse than the KV signal.

Pure: reads a window, returns a frozen result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from phaselens.analyzers.diagnosis import batch_cap
from phaselens.analyzers.kv_cache import info_number
from phaselens.analyzers.view import WindowView
from phaselens.analyzers.window import Group
from phaselens.parsers.engines import canonical as c
from phaselens.settings import Settings

Basis = Literal["kv", "seats"]
CapSource = Literal["config", "declared", "plateau"]


@dataclass(frozen=True, slots=True)
class DecodeSaturation:
    value: float
    basis: Basis
    seats_ratio: float | None
    """running / batch cap, None without a cap or a running count."""
    cap: float | None
    cap_source: CapSource | None


def resolve_cap(window: WindowView, group: Group, settings: Settings) -> tuple[float | None, CapSource | None]:
    """The engine's batch cap and where it came from: its own config, the operator, a plateau."""
    configured = info_number(window, group, c.INFO_MAX_NUM_SEQS)
    if configured is not None:
        return configured, "config"
    if settings.max_num_seqs is not None:
        return float(settings.max_num_seqs), "declared"
    running = window.gauge_series(c.REQUESTS_RUNNING, group)
    waiting = window.gauge_series(c.REQUESTS_WAITING, group)
    cap, source = batch_cap(window, group, running, waiting, settings.thresholds)
    return (cap, "plateau") if cap is not None and source == "plateau" else (None, None)


def combine(kv: float | None, running: float | None, cap: float | None,
            cap_source: CapSource | None = None) -> DecodeSaturation | None:
    """max(KV utilization, running / cap), clamped to 0..1; None when neither term exists."""
    seats = min(1.0, max(0.0, running / cap)) if running is not None and cap is not None and cap > 0 else None
    if kv is None and seats is None:
        return None
    if seats is None or (kv is not None and kv >= seats):
        return DecodeSaturation(kv if kv is not None else 0.0, "kv", seats, cap, cap_source)
    return DecodeSaturation(seats, "seats", seats, cap, cap_source)


def decode_saturation(window: WindowView, group: Group, kv: float | None,
                      settings: Settings) -> DecodeSaturation | None:
    """The seat-aware saturation of one (model_name, engine) group; `kv` is its KV utilization."""
    cap, source = resolve_cap(window, group, settings)
    return combine(kv, window.gauge(c.REQUESTS_RUNNING, group), cap, source)
