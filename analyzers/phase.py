"""Phase times and the prefill/decode imbalance.

Both phases are scored as a *load*: the share of its own budget a phase uses, where 1 means "at
the limit". The budgets are the phases' own SLOs, as DistServe splits them: TTFT belongs to
prefill, time per output token to decode, and goodput is capped by whichever SLO binds first.

  decode saturation  s = 1 when the engine preempted in the window (KV demand exceeded the pool),
                         else KV utilization (vLLM admits a waiting request only when KV blocks
                         and a batch slot are free, so a full pool holds the queue)
  prefill load   L_P = (mean prefill time + mean queue wait x (1 - s)) / TTFT budget
  decode load    L_D = max(mean inter-token latency / ITL budget, s)
  imbalance      R   = L_P / L_D          (> 1: prefill is the bottleneck)

In an aggregated engine the queue wait is blamed on prefill only in the share not explained by
KV saturation. In a disaggregated pool the prefill pool's whole queue wait is its own
(`pool_phase_load`), and the decode pool brings its KV utilization and ITL.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from phaselens.analyzers.view import WindowView
from phaselens.analyzers.window import Group
from phaselens.parsers.engines import canonical as c

Phase = Literal["prefill", "decode"]

DEFAULT_TTFT_BUDGET_SECONDS = 0.5
"""Budget used when no TTFT SLO is configured (vLLM's TTFT bucket bound 0.5 s)."""
DEFAULT_ITL_BUDGET_SECONDS = 0.1
"""Budget used when no ITL SLO is configured (vLLM's ITL bucket bound 0.1 s)."""


@dataclass(frozen=True, slots=True)
class Moments:
    """Sum and count of a histogram's observations in the window."""

    sum: float = 0.0
    count: float = 0.0

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.sum + other.sum, self.count + other.count)


@dataclass(frozen=True, slots=True)
class PhaseTimes:
    """Per-request phase times that completed in the window (vLLM request_*_time_seconds)."""

    seconds: float
    queue: Moments
    prefill: Moments
    decode: Moments
    ttft: Moments
    itl: Moments

    def merge(self, other: PhaseTimes) -> PhaseTimes:
        return PhaseTimes(
            seconds=max(self.seconds, other.seconds),
            queue=self.queue + other.queue,
            prefill=self.prefill + other.prefill,
            decode=self.decode + other.decode,
            ttft=self.ttft + other.ttft,
            itl=self.itl + other.itl,
        )

    @property
    def prefill_concurrency(self) -> float | None:
        """Mean number of requests in prefill (Little's law: time in prefill per second of window)."""
        return self.prefill.sum / self.seconds if self.seconds > 0 else None

    @property
    def decode_concurrency(self) -> float | None:
        return self.decode.sum / self.seconds if self.seconds > 0 else None


@dataclass(frozen=True, slots=True)
class PhaseLoad:
    prefill_load: float
    decode_load: float
    decode_saturation: float
    imbalance: float

    @property
    def bottleneck(self) -> Phase:
        return "prefill" if self.imbalance > 1.0 else "decode"


def _moments(window: WindowView, name: str, group: Group) -> tuple[Moments, float]:
    delta = window.histogram_delta(name, group)
    if delta is None:
        return Moments(), 0.0
    return Moments(delta.sum, delta.count), delta.seconds


def phase_times(window: WindowView, group: Group) -> PhaseTimes | None:
    """None when the engine exports neither prefill nor decode time histograms."""
    if not window.has(c.PREFILL_TIME_SECONDS, group) and not window.has(c.DECODE_TIME_SECONDS, group):
        return None
    parts = {
        name: _moments(window, name, group)
        for name in (c.QUEUE_TIME_SECONDS, c.PREFILL_TIME_SECONDS, c.DECODE_TIME_SECONDS, c.TTFT_SECONDS,
                     c.ITL_SECONDS)
    }
    seconds = max((s for _, s in parts.values()), default=0.0)
    if seconds <= 0:
        return None
    return PhaseTimes(
        seconds=seconds,
        queue=parts[c.QUEUE_TIME_SECONDS][0],
        prefill=parts[c.PREFILL_TIME_SECONDS][0],
        decode=parts[c.DECODE_TIME_SECONDS][0],
        ttft=parts[c.TTFT_SECONDS][0],
        itl=parts[c.ITL_SECONDS][0],
    )


def merge_times(times: Iterable[PhaseTimes]) -> PhaseTimes | None:
    merged: PhaseTimes | None = None
    for item in times:
        merged = item if merged is None else merged.merge(item)
    return merged


def prefill_time_share(prefill: Moments, decode: Moments) -> float | None:
    """prefill / (prefill + decode) request-time over the window; a part over its whole, so in [0, 1]."""
    total = prefill.sum + decode.sum
    if total <= 0:
        return None
    return min(1.0, max(0.0, prefill.sum / total))


def decode_saturation(kv_utilization: float | None, preemptions_per_second: float | None) -> float:
    """1 when the engine preempted in the window, else KV utilization (0 when unknown)."""
    if preemptions_per_second is not None and preemptions_per_second > 0:
        return 1.0
    return kv_utilization if kv_utilization is not None else 0.0  # validated to 0..1 by the adapter


def _budgets(slo_ttft: float | None, slo_itl: float | None) -> tuple[float, float]:
    ttft = slo_ttft if slo_ttft is not None and slo_ttft > 0 else DEFAULT_TTFT_BUDGET_SECONDS
    itl = slo_itl if slo_itl is not None and slo_itl > 0 else DEFAULT_ITL_BUDGET_SECONDS
    return ttft, itl


def _load(
    prefill_mean: float, queue_mean: float, queue_blame: float, itl_mean: float | None, saturation: float,
    slo_ttft: float | None, slo_itl: float | None,
) -> PhaseLoad | None:
    ttft_budget, itl_budget = _budgets(slo_ttft, slo_itl)
    prefill_load = (prefill_mean + queue_mean * queue_blame) / ttft_budget
    itl_load = itl_mean / itl_budget if itl_mean is not None else 0.0
    decode_load = max(itl_load, saturation)
    if decode_load <= 0:
        return None  # nothing decoded and no KV held: no meaningful ratio
    return PhaseLoad(prefill_load, decode_load, saturation, prefill_load / decode_load)


def aggregated_phase_load(
    times: PhaseTimes, kv_utilization: float | None, preemptions_per_second: float | None,
    slo_ttft: float | None, slo_itl: float | None,
) -> PhaseLoad | None:
    """Imbalance for one engine running both phases; None when no request finished in the window."""
    prefill_mean = times.prefill.mean
    if prefill_mean is None:
        return None
    saturation = decode_saturation(kv_utilization, preemptions_per_second)
    return _load(prefill_mean, times.queue.mean or 0.0, 1.0 - saturation, times.itl.mean, saturation,
                 slo_ttft, slo_itl)


def pool_phase_load(
    prefill_pool: PhaseTimes, decode_pool: PhaseTimes, decode_kv_utilization: float | None,
    decode_preemptions_per_second: float | None, slo_ttft: float | None, slo_itl: float | None,
) -> PhaseLoad | None:
    """Imbalance between a prefill pool and a decode pool (each merged over its targets)."""
    prefill_mean = prefill_pool.prefill.mean
    if prefill_mean is None:
        return None
    saturation = decode_saturation(decode_kv_utilization, decode_preemptions_per_second)
    return _load(prefill_mean, prefill_pool.queue.mean or 0.0, 1.0, decode_pool.itl.mean, saturation,
                 slo_ttft, slo_itl)


def pool_phase_load_with_admission(
    prefill_pool: PhaseTimes, decode_pool: PhaseTimes, decode_kv_utilization: float | None,
    decode_preemptions_per_second: float | None, slo_ttft: float | None, slo_itl: float | None,
) -> PhaseLoad | None:
    """`pool_phase_load` where the decode pool's own TTFT is its admission wait (plus its first
    step): in a P/D deployment the user's TTFT holds the prefill pool's time *and* the wait for a
    decode seat, and a decode pool that makes requests wait for a seat uses the TTFT budget too.
    L_D = max(mean ITL / ITL budget, saturation, mean decode-side TTFT / TTFT budget)."""
    load = pool_phase_load(prefill_pool, decode_pool, decode_kv_utilization, decode_preemptions_per_second,
                           slo_ttft, slo_itl)
    admission = decode_pool.ttft.mean
    if load is None or admission is None:
        return load
    ttft_budget, _ = _budgets(slo_ttft, slo_itl)
    decode_load = max(load.decode_load, admission / ttft_budget)
    return PhaseLoad(load.prefill_load, decode_load, load.decode_saturation, load.prefill_load / decode_load)


def prefill_path_load(times: PhaseTimes | None, role: str, slo_ttft: float | None) -> float | None:
    """Share of the TTFT budget a dedicated prefill engine's (queue + prefill) uses; None elsewhere.

    For an aggregated engine use `PhaseLoad.prefill_load`, which discounts KV-caused queueing.
    """
    if times is None or role != "prefill" or times.prefill.mean is None:
        return None
    ttft_budget, _ = _budgets(slo_ttft, None)
    return (times.prefill.mean + (times.queue.mean or 0.0)) / ttft_budget
