"""Which KV signal means decode pressure, and its value: `phaselens_decode_kv_pressure_ratio`.

KV utilization is a fine pressure signal until the engine keeps KV in a second tier (LMCache, vLLM's
offloading connector, SGLang HiCache, TensorRT-LLM's host pool, the Dynamo mocker's
`--num-host-blocks`). Offloading engines report the GPU pool pinned near full (llm-d WVA #927):
blocks are parked there for the tier, not held by requests that need them. Utilization then says
nothing about whether decode lacks memory. What still does: requests preempted (retracted) for
KV, requests waiting for KV blocks, and the KV actually held by running requests.

The pressure (0-1), with its `basis` label:
- `utilization`: the KV utilization, whenever it is not pinned by a host tier (the normal case,
  and whenever requests were preempted in the window: that is pressure whatever the tier does);
- `held_tokens`: when pinned, the share of KV capacity held by running requests, where the engine
  reports it (SGLang `kv_used_tokens` over `max_total_num_tokens`);
- `preemptions`: when pinned and nothing reports held KV: 1 if requests waited for KV blocks in
  the window (SGLang's decode prealloc queue, vLLM's capacity-blocked waiting), else 0 (no
  preemption and no KV wait in the window: the pool is full of parked blocks, not of demand).

Pinned: every KV utilization sample of the window >= `PINNED_AT` (0.95),
over at least `_MIN_SAMPLES` scrapes. A host tier is active when the operator declares it
(`--kv-offload-tier`) or the engine shows one (a host-tier capacity or use, offload traffic in
the window, or vLLM's `cache_config_info` with `kv_offloading_size` / `num_cpu_blocks` set). "Nothing
preempted" needs the preemption counter: without one (TensorRT-LLM) the pinned case is not
claimed and the utilization is kept.

Pure: reads a window, returns a frozen result; the suspect it carries is logged by the pipeline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

from phaselens.analyzers.kv_cache import kv_utilization
from phaselens.analyzers.view import WindowView
from phaselens.analyzers.window import Group, TargetWindow
from phaselens.model import Suspect, Target
from phaselens.parsers.engines import canonical as c
from phaselens.settings import Settings

Basis = Literal["utilization", "held_tokens", "preemptions"]
PINNED_AT = 0.95
"""KV utilization at or above this in every scrape of the window counts as pinned."""
_MIN_SAMPLES = 3
_NOT_SET = ("", "none", "null", "0", "false")


class WindowLike(Protocol):
    def gauge(self, name: str, group: Group, labels: dict[str, str] | None = None) -> float | None: ...

    def gauge_series(self, name: str, group: Group) -> list[tuple[float, float]]: ...

    def increase(self, name: str, group: Group, labels: dict[str, str] | None = None) -> float | None: ...

    def info(self, engine: str) -> dict[str, str]: ...


@dataclass(frozen=True, slots=True)
class KvPressure:
    value: float
    basis: Basis
    host_tier: str | None
    """What shows a host tier is active (None: none seen or declared)."""
    pinned: bool
    suspect: Suspect | None


def host_tier_evidence(window: WindowLike, group: Group, declared: bool) -> str | None:
    """The first sign of an active host/offload tier, or None."""
    if declared:
        return "declared (--kv-offload-tier)"
    for name in (c.HOST_KV_TOTAL_TOKENS, c.HOST_KV_USED_TOKENS, c.HOST_KV_USAGE):
        value = window.gauge(name, group)
        if value is not None and value > 0:
            return f"{name}={value:g}"
    for name in (c.HOST_KV_OFFLOAD_BYTES, c.HOST_KV_EVICTED_TOKENS, c.HOST_KV_ONBOARD_BYTES, c.HOST_KV_LOADED_TOKENS):
        moved = window.increase(name, group)
        if moved is not None and moved > 0:
            return f"{name} +{moved:g} in the window"
    info = window.info(group[1])
    for key in ("kv_offloading_size", "num_cpu_blocks"):
        raw = info.get(key)
        if raw is not None and raw.strip().lower() not in _NOT_SET:
            return f"cache_config_info {key}={raw}"
    return None


def _waited_for_kv(window: WindowLike, group: Group) -> bool:
    series = window.gauge_series(c.PD_DECODE_PREALLOC_QUEUE, group)
    if any(v > 0 for _, v in series):
        return True
    capacity = window.gauge(c.REQUESTS_WAITING_BY_REASON, group, {"reason": "capacity"})
    return capacity is not None and capacity > 0


def _held_share(window: WindowLike, group: Group) -> float | None:
    held = window.gauge(c.KV_USED_TOKENS, group)
    raw = window.info(group[1]).get(c.INFO_KV_CACHE_SIZE_TOKENS)
    try:
        capacity = float(raw) if raw is not None else None
    except ValueError:
        capacity = None
    if held is None or capacity is None or not math.isfinite(capacity) or capacity <= 0:
        return None
    return min(1.0, max(0.0, held / capacity))


def kv_pressure(
    window: WindowLike, group: Group, utilization: float | None, pinned_at: float, offload_declared: bool
) -> KvPressure | None:
    """None when there is no KV utilization to start from."""
    if utilization is None:
        return None
    usage = [v for _, v in window.gauge_series(c.KV_CACHE_USAGE, group)]
    tier = host_tier_evidence(window, group, offload_declared)
    preempted = window.increase(c.PREEMPTIONS, group)
    pinned = len(usage) >= _MIN_SAMPLES and min(usage) >= pinned_at
    if tier is None or not pinned or preempted is None or preempted > 0:
        return KvPressure(utilization, "utilization", tier, pinned, None)
    held = _held_share(window, group)
    basis: Basis
    if held is not None:
        value, basis = held, "held_tokens"
    else:
        value, basis = (1.0 if _waited_for_kv(window, group) else 0.0), "preemptions"
    suspect = Suspect(
        code="kv_utilization_pinned",
        metric=c.KV_CACHE_USAGE,
        message=(
            f"KV utilization stayed >= {pinned_at:g} (min {min(usage):.3f}) for the whole window while a "
            f"host/offload tier is active ({tier}) and no request was preempted: utilization shows blocks "
            "parked for the tier, not decode pressure. Scale decode on phaselens_decode_kv_pressure_ratio "
            f"(basis={basis}) and phaselens_kv_preemptions_per_second, not on "
            "phaselens_decode_kv_utilization_ratio."
        ),
        value=min(usage),
    )
    return KvPressure(value, basis, tier, True, suspect)


def window_suspects(window: TargetWindow, target: Target, settings: Settings) -> list[Suspect]:
    """The pinned-by-a-host-tier finding for each group of a target's window (pipeline hook)."""
    view = WindowView(window, settings.window_seconds)
    out: list[Suspect] = []
    for group in view.groups():
        pressure = kv_pressure(view, group, kv_utilization(view, group), PINNED_AT, settings.kv_offload_tier)
        if pressure is not None and pressure.suspect is not None:
            out.append(pressure.suspect)
    return out
