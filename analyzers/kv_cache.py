"""KV-cache health over one window: utilization, prefix-cache hits, preemptions, evictions,
internal fragmentation (estimate) and headroom.

Formulas and sources are in docs/signals.md (generated from exporters/specs.py). Every value is
None when the engine does not expose what it needs: an absent value is never replaced by 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from phaselens.analyzers.view import WindowView
from phaselens.analyzers.window import Group
from phaselens.parsers.engines import canonical as c

HitSource = Literal["tokens", "blocks", "counters", "gauge", "frontend", "router"]


@dataclass(frozen=True, slots=True)
class KvCacheHealth:
    utilization: float | None
    """Share of the block pool held by running requests, 0-1 (latest scrape)."""
    utilization_peak: float | None
    """Highest utilization seen in the window (the gauge swings between scrapes under pressure)."""
    hit_ratio: float | None
    hit_source: HitSource | None
    prefix_queries: float | None
    """Prefix-cache lookups in the window (tokens or blocks): how much data the hit ratio rests on."""
    preemptions_per_second: float | None
    evictions_per_second: float | None
    evictions_scaled: bool
    """True when the residency sample rate was known and the eviction rate was divided by it."""
    fragmentation_ratio: float | None
    headroom_tokens: float | None
    capacity_tokens: float | None
    block_size: int | None
    running: float | None
    prefix_caching_enabled: bool | None

    @property
    def exhausted(self) -> bool:
        """True when the engine preempted requests in the window. vLLM's scheduler (and the Dynamo
        mocker, which copies it; SGLang's retract) preempts only when no free block is left, so the
        cache was full at that instant even when no scrape caught it: preempting frees the blocks at
        once, and a 1 s sample of the usage gauge can peak at 0.8 while the engine preempts hundreds
        of times."""
        return self.preemptions_per_second is not None and self.preemptions_per_second > 0


def pressure_peak(utilization_peak: float | None, exhausted: bool) -> float | None:
    """The utilization the pressure rules judge: 1 when the engine ran out of blocks (it preempted),
    else the highest sampled value."""
    return 1.0 if exhausted else utilization_peak


def info_number(window: WindowView, group: Group, key: str) -> float | None:
    """A positive, finite number from the engine's static configuration, or None."""
    raw = window.info(group[1]).get(key)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def info_flag(window: WindowView, group: Group, key: str) -> bool | None:
    raw = window.info(group[1]).get(key)
    if raw is None:
        return None
    lowered = raw.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    return None


def clamp01(value: float) -> float:
    """Clamp to [0, 1]: used only for quantities that are ratios of a part to its whole."""
    return min(1.0, max(0.0, value))


def kv_utilization(window: WindowView, group: Group) -> float | None:
    """vLLM's usage gauge, else Dynamo's active/total blocks. A fraction of the pool.

    Never clamped: the adapters drop a usage gauge outside 0..1 (parsers/engines/validate.py),
    and more active blocks than the pool holds is an inconsistent scrape, so no value."""
    usage = window.gauge(c.KV_CACHE_USAGE, group)
    if usage is not None:
        return usage
    active = window.gauge(c.KV_ACTIVE_BLOCKS, group)
    total = window.gauge(c.KV_TOTAL_BLOCKS, group)
    if active is not None and total is not None and total > 0 and active <= total:
        return active / total
    return None


def prefix_hit_ratio(window: WindowView, group: Group) -> tuple[float | None, HitSource | None, float | None]:
    """increase(hits) / increase(queries) over the window (queries = hits + misses where the engine
    counts misses, TensorRT-LLM); then Dynamo's cached over input tokens (frontend usage, then KV
    router); else increase(cached prompt tokens) / increase(prompt tokens) (SGLang); the V0 / Dynamo /
    SGLang hit-rate gauge as the last fallback.

    The counters count tokens on vLLM >= 0.9 and blocks before; the ratio is the same either way.
    Returns (ratio, source, lookups in the window).
    """
    queries = window.increase(c.PREFIX_CACHE_QUERIES, group)
    hits = window.increase(c.PREFIX_CACHE_HITS, group)
    if queries is None and hits is not None:
        # TensorRT-LLM counts reused and missed blocks: a lookup is one or the other.
        misses = window.increase(c.PREFIX_CACHE_MISSES, group)
        queries = hits + misses if misses is not None else None
    if queries is not None and hits is not None:
        if queries <= 0:
            return None, None, queries
        snap = window.latest
        unit: HitSource = "counters"
        if snap is not None and snap.prefix_cache_unit is not None:
            unit = snap.prefix_cache_unit
        # hits <= queries by construction; a reset inside the window can break that slightly.
        return clamp01(hits / queries), unit, queries
    for cached_name, input_name, source in _TOKEN_SOURCES:
        cached = window.histogram_delta(cached_name, group) if cached_name == c.REQUEST_CACHED_TOKENS else None
        cached_sum = cached.sum if cached is not None else window.increase(cached_name, group)
        prompt = window.histogram_delta(input_name, group)
        if cached_sum is not None and prompt is not None:
            if prompt.sum <= 0:
                return None, None, prompt.sum
            return clamp01(cached_sum / prompt.sum), source, prompt.sum
    if queries is None and hits is None:
        # SGLang (and engines without lookup counters): cached prompt tokens over prompt tokens.
        cached_tokens = window.increase(c.PROMPT_TOKENS_CACHED, group)
        prompt_tokens = window.increase(c.PROMPT_TOKENS, group)
        if cached_tokens is not None and prompt_tokens is not None:
            if prompt_tokens <= 0:
                return None, None, prompt_tokens
            return clamp01(cached_tokens / prompt_tokens), "tokens", prompt_tokens
    gauge = window.gauge(c.PREFIX_CACHE_HIT_RATE_GAUGE, group)
    if gauge is not None and gauge >= 0:  # within 0..1: validated by the adapter
        return gauge, "gauge", None
    return None, None, None


_TOKEN_SOURCES: tuple[tuple[str, str, HitSource], ...] = (
    # Dynamo frontend: the cached tokens each request's usage reports (the engine's own count)
    # over the request's input tokens; then the KV router's cached-prefix tokens on the worker it
    # chose over the tokens it routed (its estimate, prefill/aggregated routing only).
    (c.REQUEST_CACHED_TOKENS, c.REQUEST_PROMPT_TOKENS, "frontend"),
    (c.ROUTER_CACHED_PREFIX_TOKENS, c.ROUTER_INPUT_TOKENS, "router"),
)


def eviction_rate(window: WindowView, group: Group) -> tuple[float | None, bool]:
    """Evicted blocks per second from the sampled residency histograms (`--kv-cache-metrics`).

    One `idle_before_evict` (or `lifetime`) observation is recorded per *sampled* evicted block,
    so the count rate divided by the sample rate estimates all evictions. Without a known sample
    rate the sampled rate is returned unscaled: a lower bound (the sample rate is at most 1).
    """
    delta = window.histogram_delta(c.KV_BLOCK_IDLE_BEFORE_EVICT_SECONDS, group)
    if delta is None:
        delta = window.histogram_delta(c.KV_BLOCK_LIFETIME_SECONDS, group)
    if delta is None or delta.seconds <= 0:
        return None, False
    rate = delta.count / delta.seconds
    sample = info_number(window, group, c.INFO_KV_CACHE_METRICS_SAMPLE)
    if sample is not None and sample <= 1:
        return rate / sample, True
    return rate, False


def fragmentation_estimate(
    running: float | None, used_blocks: float | None, block_size: int | None
) -> float | None:
    """Expected share of allocated KV slots left empty in each sequence's last, partly filled block.

    PagedAttention wastes only the tail of each sequence's last block: per sequence the waste is
    in [0, B-1] slots and, with lengths uniform modulo B, (B-1)/2 on average. So
    waste ~= running * (B-1)/2 against used_blocks * B allocated slots. The true ratio cannot
    exceed (B-1)/B (each sequence holds at least one block), so the estimate is clamped there;
    prefix-shared blocks make it an overestimate.
    """
    if running is None or used_blocks is None or block_size is None or block_size < 1:
        return None
    if running <= 0 or used_blocks <= 0:
        return None
    allocated_slots = used_blocks * block_size
    expected_waste = running * (block_size - 1) / 2.0
    return min(expected_waste / allocated_slots, (block_size - 1) / block_size)


def kv_cache_health(window: WindowView, group: Group) -> KvCacheHealth:
    utilization = kv_utilization(window, group)
    hit_ratio, hit_source, queries = prefix_hit_ratio(window, group)
    preemptions = window.rate(c.PREEMPTIONS, group)
    evictions, scaled = eviction_rate(window, group)
    running = window.gauge(c.REQUESTS_RUNNING, group)

    block_size_raw = info_number(window, group, c.INFO_BLOCK_SIZE)
    block_size = int(block_size_raw) if block_size_raw is not None else None
    num_blocks = info_number(window, group, c.INFO_NUM_GPU_BLOCKS)
    if num_blocks is None:
        num_blocks = window.gauge(c.KV_TOTAL_BLOCKS, group)
    capacity = info_number(window, group, c.INFO_KV_CACHE_SIZE_TOKENS)
    if capacity is None and num_blocks is not None and block_size is not None:
        capacity = num_blocks * block_size

    used_blocks = window.gauge(c.KV_ACTIVE_BLOCKS, group)
    if used_blocks is None and utilization is not None and num_blocks is not None:
        # vLLM V1 reports usage against num_gpu_blocks - 1 (one block is the reserved null block).
        used_blocks = utilization * max(num_blocks - 1, 1)

    series = [v for _, v in window.gauge_series(c.KV_CACHE_USAGE, group)]
    peak = max(series) if series else utilization  # each value validated to 0..1: no clamp
    headroom = (1.0 - utilization) * capacity if utilization is not None and capacity is not None else None
    return KvCacheHealth(
        utilization=utilization,
        utilization_peak=peak,
        hit_ratio=hit_ratio,
        hit_source=hit_source,
        prefix_queries=queries,
        preemptions_per_second=preemptions,
        evictions_per_second=evictions,
        evictions_scaled=scaled,
        fragmentation_ratio=fragmentation_estimate(running, used_blocks, block_size),
        headroom_tokens=headroom,
        capacity_tokens=capacity,
        block_size=block_size,
        running=running,
        prefix_caching_enabled=info_flag(window, group, c.INFO_ENABLE_PREFIX_CACHING),
    )
