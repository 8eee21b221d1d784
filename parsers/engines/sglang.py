"""SGLang (`sglang:*`, needs `--enable-metrics`) raw metric names -> canonical series.

Sources: SGLang's collector (`python/sglang/srt/metrics/collector.py`, later
`srt/observability/metrics_collector.py`) for names and types; golden tests run on published
`/metrics` output (tests/fixtures/sglang-*/SOURCE.md).

Renames across versions (the newer name has the higher rank and wins when both are present):
- `time_per_output_token_seconds` -> `inter_token_latency_seconds` (per output step, ITL);
- `num_prefill_prealloc_queue_reqs` -> `num_prefill_bootstrap_queue_reqs`;
  `num_prefill_infight_queue_reqs` (typo) -> `num_prefill_inflight_queue_reqs`;
- `total_retracted_reqs` (a gauge holding a running total) -> `num_retracted_requests_total`;
- 0.3.x (Sept-Nov 2024): `num_requests_running` / `num_requests_waiting`, later `num_running_reqs` /
  `num_queue_reqs`; the model then sat in a `name` label (mapping.py reads it as the model);
- `kv_transfer_{latency_ms,speed_gb_s,total_mb,...}` were last-value gauges until SGLang PR #19009
  (2026-02) made them histograms. A last value says nothing about a window, so only the
  histograms are read (the gauge era gives no transfer signal).

Aggregation. Scheduler series carry `tp_rank`/`pp_rank`/`moe_ep_rank`; with
`--enable-metrics-for-all-schedulers` every TP rank reports a copy of the same scheduler view, so
scheduler gauges, counters and histograms take the max over copies (never the sum). `dp_rank`
(attention data parallelism) is the engine index, as for Dynamo. Tokenizer-side series (request
latency histograms and token counters) have no rank labels and are summed.

`token_usage` is max(full, SWA, Mamba pool usage) on hybrid models (the collector says so);
semantics.py warns when a non-full pool is in use, and the pools are kept as their own series.
Ratios (`token_usage`, `cache_hit_rate`, pool usages) are 0-1; a family carrying values above 1
is read as percent (`fraction_or_percent`) and flagged by semantics.py.

Not read: speculative-decoding, grammar, LoRA, routing-key, CUDA-graph and function-latency
series, `per_stage_req_latency_seconds` (stage names changed too often to map onto phases),
`utilization` (inactive upstream), `cache_config_info` (page_size/num_pages: `max_total_num_tokens`
gives the capacity directly).
"""

from __future__ import annotations

from typing import Final, Literal

from phaselens.parsers.engines import canonical as c
from phaselens.parsers.engines.mapping import Binding, Rule, build_table

NEW: Final = 21
OLD: Final = 20
MILLISECONDS: Final = 1e-3
MIB: Final = float(1 << 20)
"""SGLang's `total_mb` is bytes / (1024 * 1024) (disaggregation transfer stats)."""


def _counter(canonical: str, rank: int = NEW, keep: tuple[str, ...] = (), scheduler: bool = False) -> Rule:
    return Rule(canonical, "counter", "sglang", rank, keep=keep, aggregate="max" if scheduler else "sum")


def _gauge(canonical: str, rank: int = NEW) -> Rule:
    """A scheduler gauge: one value per scheduler, copied on every TP rank (max, not sum)."""
    return Rule(canonical, "gauge", "sglang", rank, aggregate="max")


def _ratio(canonical: str, rank: int = NEW) -> Rule:
    return Rule(canonical, "gauge", "sglang", rank, aggregate="max", fraction_or_percent=True)


def _histogram(canonical: str, rank: int = NEW, scale: float = 1.0, scheduler: bool = False) -> Rule:
    aggregate: Literal["sum", "max"] = "max" if scheduler else "sum"
    return Rule(canonical, "histogram", "sglang", rank, scale=scale, aggregate=aggregate)


SGLANG_RULES: Final[tuple[tuple[str, Rule], ...]] = (
    # scheduler load
    ("sglang:num_running_reqs", _gauge(c.REQUESTS_RUNNING)),
    ("sglang:num_requests_running", _gauge(c.REQUESTS_RUNNING, OLD)),
    ("sglang:num_queue_reqs", _gauge(c.REQUESTS_WAITING)),
    ("sglang:num_requests_waiting", _gauge(c.REQUESTS_WAITING, OLD)),
    ("sglang:gen_throughput", _gauge(c.GENERATION_THROUGHPUT_GAUGE)),
    # KV pools
    ("sglang:token_usage", _ratio(c.KV_CACHE_USAGE)),
    ("sglang:full_token_usage", _ratio(c.KV_FULL_POOL_USAGE)),
    ("sglang:swa_token_usage", _ratio(c.KV_SWA_POOL_USAGE)),
    ("sglang:mamba_usage", _ratio(c.KV_MAMBA_POOL_USAGE)),
    ("sglang:kv_used_tokens", _gauge(c.KV_USED_TOKENS)),
    ("sglang:num_used_tokens", _gauge(c.KV_USED_TOKENS, OLD)),
    ("sglang:kv_available_tokens", _gauge(c.KV_AVAILABLE_TOKENS)),
    ("sglang:kv_evictable_tokens", _gauge(c.KV_EVICTABLE_TOKENS)),
    (
        "sglang:max_total_num_tokens",
        Rule("", "info_gauge", "sglang", NEW, aggregate="max", info_key=c.INFO_KV_CACHE_SIZE_TOKENS),
    ),
    ("sglang:cache_hit_rate", _ratio(c.PREFIX_CACHE_HIT_RATE_GAUGE)),
    # hierarchical cache (host tier)
    ("sglang:hicache_host_used_tokens", _gauge(c.HOST_KV_USED_TOKENS)),
    ("sglang:hicache_host_total_tokens", _gauge(c.HOST_KV_TOTAL_TOKENS)),
    ("sglang:evicted_tokens", _counter(c.HOST_KV_EVICTED_TOKENS, scheduler=True)),
    ("sglang:load_back_tokens", _counter(c.HOST_KV_LOADED_TOKENS, scheduler=True)),
    # retractions (SGLang's preemptions)
    ("sglang:num_retracted_requests", _counter(c.PREEMPTIONS, scheduler=True)),
    ("sglang:total_retracted_reqs", _gauge(c.PREEMPTIONS, OLD)),
    # tokenizer-side counters
    ("sglang:prompt_tokens", _counter(c.PROMPT_TOKENS)),
    ("sglang:generation_tokens", _counter(c.GENERATION_TOKENS)),
    ("sglang:cached_tokens", _counter(c.PROMPT_TOKENS_CACHED)),
    ("sglang:num_requests", _counter(c.REQUEST_SUCCESS)),
    # P/D disaggregation queues
    ("sglang:num_prefill_bootstrap_queue_reqs", _gauge(c.PD_PREFILL_BOOTSTRAP_QUEUE)),
    ("sglang:num_prefill_prealloc_queue_reqs", _gauge(c.PD_PREFILL_BOOTSTRAP_QUEUE, OLD)),
    ("sglang:num_prefill_inflight_queue_reqs", _gauge(c.PD_PREFILL_INFLIGHT_QUEUE)),
    ("sglang:num_prefill_infight_queue_reqs", _gauge(c.PD_PREFILL_INFLIGHT_QUEUE, OLD)),
    ("sglang:num_decode_prealloc_queue_reqs", _gauge(c.PD_DECODE_PREALLOC_QUEUE)),
    ("sglang:num_decode_transfer_queue_reqs", _gauge(c.PD_DECODE_TRANSFER_QUEUE)),
    # P/D KV transfers (histograms since PR #19009; counters of failures)
    ("sglang:kv_transfer_latency_ms", _histogram(c.KV_TRANSFER_SECONDS, scale=MILLISECONDS, scheduler=True)),
    ("sglang:kv_transfer_total_mb", _histogram(c.KV_TRANSFER_BYTES, scale=MIB, scheduler=True)),
    ("sglang:num_transfer_failed_reqs", _counter(c.KV_TRANSFER_FAILURES, scheduler=True)),
    ("sglang:num_bootstrap_failed_reqs", _counter(c.KV_BOOTSTRAP_FAILURES, scheduler=True)),
    # request histograms
    ("sglang:time_to_first_token_seconds", _histogram(c.TTFT_SECONDS)),
    ("sglang:inter_token_latency_seconds", _histogram(c.ITL_SECONDS)),
    ("sglang:time_per_output_token_seconds", _histogram(c.ITL_SECONDS, OLD)),
    ("sglang:e2e_request_latency_seconds", _histogram(c.E2E_LATENCY_SECONDS)),
    ("sglang:queue_time_seconds", _histogram(c.QUEUE_TIME_SECONDS, scheduler=True)),
    ("sglang:prompt_tokens_histogram", _histogram(c.REQUEST_PROMPT_TOKENS)),
    ("sglang:generation_tokens_histogram", _histogram(c.REQUEST_GENERATION_TOKENS)),
)

SGLANG_TABLE: Final[dict[str, Binding]] = build_table(SGLANG_RULES)
