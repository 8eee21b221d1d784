"""vLLM (V0 and V1, every rename up to 0.3x) raw metric names -> canonical series.

Names are the family names prometheus_client's parser gives (counters without `_total`); the
table binds each under its `_total` spelling and the Ray-sanitised spellings too (Ray's stat
logger replaces every character outside [a-zA-Z0-9_] with `_`: `vllm_num_requests_running`; Ray's
metrics agent may also prefix `ray_`). Sources: /work/shared/research/vllm-metrics.md §2-4.

Renames (the newer name has the higher rank and wins when a payload carries both):
- `kv_cache_usage_perc` (2025-06) over `gpu_cache_usage_perc` (V0 and V1 < 0.12): both fractions.
- `prefix_cache_{queries,hits}` (tokens) over `gpu_prefix_cache_*`, whose unit is read from HELP:
  "queried blocks" before 2025-05-12, tokens after (`EngineSnapshot.prefix_cache_unit`).
- `inter_token_latency_seconds` (2025-09) over `time_per_output_token_seconds`: the same per-step
  histogram. Per-request TPOT is `request_time_per_output_token_seconds`, a different series.
- V0's `gpu_prefix_cache_hit_rate` gauge (blocks, -1 when caching is off: dropped).

Ignored on purpose: `vllm:lora_requests_info` (its value is a timestamp and its labels are adapter
lists, not a per-engine quantity; `model_name` never names an adapter, see research §1.7),
`cpu_*` V0 gauges, spec-decode, MFU and sleep-state series (no canonical consumer yet).
"""

from __future__ import annotations

from typing import Final, Literal

from phaselens.parsers.engines import canonical as c
from phaselens.parsers.engines.mapping import Binding, Rule, build_table

NEW: Final = 21
"""Rank of current vLLM names; deprecated spellings get OLD so the current one wins."""
OLD: Final = 20


def _counter(
    canonical: str,
    rank: int = NEW,
    keep: tuple[str, ...] = (),
    prefix_unit: Literal["tokens", "help"] | None = None,
) -> Rule:
    return Rule(canonical, "counter", "vllm", rank, keep=keep, prefix_unit=prefix_unit)


def _count_gauge(canonical: str, keep: tuple[str, ...] = ()) -> Rule:
    return Rule(canonical, "gauge", "vllm", NEW, keep=keep, aggregate="sum")


def _ratio_gauge(canonical: str, rank: int = NEW, drop_negative: bool = False) -> Rule:
    return Rule(canonical, "gauge", "vllm", rank, aggregate="max", drop_negative=drop_negative)


def _histogram(canonical: str, rank: int = NEW) -> Rule:
    return Rule(canonical=canonical, kind="histogram", source="vllm", rank=rank)


_OFFLOAD_DIRECTIONS: Final = (
    ("GPU_to_CPU", c.HOST_KV_OFFLOAD_BYTES, 1.0),
    ("CPU_to_GPU", c.HOST_KV_ONBOARD_BYTES, 1.0),
)

VLLM_RULES: Final[tuple[tuple[str, Rule], ...]] = (
    # scheduler state
    ("vllm:num_requests_running", _count_gauge(c.REQUESTS_RUNNING)),
    ("vllm:num_requests_waiting", _count_gauge(c.REQUESTS_WAITING)),
    ("vllm:num_requests_waiting_by_reason", _count_gauge(c.REQUESTS_WAITING_BY_REASON, keep=("reason",))),
    ("vllm:kv_cache_usage_perc", _ratio_gauge(c.KV_CACHE_USAGE)),
    ("vllm:gpu_cache_usage_perc", _ratio_gauge(c.KV_CACHE_USAGE, rank=OLD)),
    ("vllm:gpu_prefix_cache_hit_rate", _ratio_gauge(c.PREFIX_CACHE_HIT_RATE_GAUGE, drop_negative=True)),
    ("vllm:cache_config_info", Rule(canonical="", kind="cache_config_info", source="vllm", rank=NEW)),
    # throughput and prefix cache
    ("vllm:prompt_tokens", _counter(c.PROMPT_TOKENS)),
    ("vllm:generation_tokens", _counter(c.GENERATION_TOKENS)),
    ("vllm:prompt_tokens_by_source", _counter(c.PROMPT_TOKENS_BY_SOURCE, keep=("source",))),
    ("vllm:prompt_tokens_cached", _counter(c.PROMPT_TOKENS_CACHED)),
    ("vllm:prefix_cache_queries", _counter(c.PREFIX_CACHE_QUERIES, prefix_unit="tokens")),
    ("vllm:prefix_cache_hits", _counter(c.PREFIX_CACHE_HITS, prefix_unit="tokens")),
    ("vllm:gpu_prefix_cache_queries", _counter(c.PREFIX_CACHE_QUERIES, rank=OLD, prefix_unit="help")),
    ("vllm:gpu_prefix_cache_hits", _counter(c.PREFIX_CACHE_HITS, rank=OLD, prefix_unit="help")),
    ("vllm:external_prefix_cache_queries", _counter(c.EXTERNAL_PREFIX_CACHE_QUERIES)),
    ("vllm:external_prefix_cache_hits", _counter(c.EXTERNAL_PREFIX_CACHE_HITS)),
    ("vllm:num_preemptions", _counter(c.PREEMPTIONS)),
    ("vllm:request_success", _counter(c.REQUEST_SUCCESS, keep=("finished_reason",))),
    # OffloadingConnector (CPU tier): bytes per direction; a host tier for analyzers/kv_pressure.py
    (
        "vllm:kv_offload_total_bytes",
        Rule("", "counter", "vllm", NEW, by_label=("transfer_type", _OFFLOAD_DIRECTIONS)),
    ),
    # NixlConnector counters
    ("vllm:nixl_num_failed_transfers", _counter(c.NIXL_FAILED_TRANSFERS)),
    ("vllm:nixl_num_failed_notifications", _counter(c.NIXL_FAILED_NOTIFICATIONS)),
    ("vllm:nixl_num_kv_expired_reqs", _counter(c.NIXL_KV_EXPIRED_REQUESTS)),
    # latency and shape histograms
    ("vllm:time_to_first_token_seconds", _histogram(c.TTFT_SECONDS)),
    ("vllm:inter_token_latency_seconds", _histogram(c.ITL_SECONDS)),
    ("vllm:time_per_output_token_seconds", _histogram(c.ITL_SECONDS, rank=OLD)),
    ("vllm:request_time_per_output_token_seconds", _histogram(c.TPOT_REQUEST_SECONDS)),
    ("vllm:e2e_request_latency_seconds", _histogram(c.E2E_LATENCY_SECONDS)),
    ("vllm:request_queue_time_seconds", _histogram(c.QUEUE_TIME_SECONDS)),
    ("vllm:request_prefill_time_seconds", _histogram(c.PREFILL_TIME_SECONDS)),
    ("vllm:request_decode_time_seconds", _histogram(c.DECODE_TIME_SECONDS)),
    ("vllm:request_inference_time_seconds", _histogram(c.INFERENCE_TIME_SECONDS)),
    ("vllm:request_prompt_tokens", _histogram(c.REQUEST_PROMPT_TOKENS)),
    ("vllm:request_generation_tokens", _histogram(c.REQUEST_GENERATION_TOKENS)),
    ("vllm:request_prefill_kv_computed_tokens", _histogram(c.REQUEST_PREFILL_KV_COMPUTED_TOKENS)),
    ("vllm:iteration_tokens_total", _histogram(c.ITERATION_TOKENS)),
    ("vllm:kv_block_lifetime_seconds", _histogram(c.KV_BLOCK_LIFETIME_SECONDS)),
    ("vllm:kv_block_idle_before_evict_seconds", _histogram(c.KV_BLOCK_IDLE_BEFORE_EVICT_SECONDS)),
    ("vllm:kv_block_reuse_gap_seconds", _histogram(c.KV_BLOCK_REUSE_GAP_SECONDS)),
    ("vllm:nixl_xfer_time_seconds", _histogram(c.NIXL_XFER_SECONDS)),
    ("vllm:nixl_post_time_seconds", _histogram(c.NIXL_POST_SECONDS)),
    ("vllm:nixl_bytes_transferred", _histogram(c.NIXL_BYTES)),
    ("vllm:nixl_num_descriptors", _histogram(c.NIXL_DESCRIPTORS)),
)

VLLM_TABLE: Final[dict[str, Binding]] = build_table(VLLM_RULES, ray_aliases=True)
