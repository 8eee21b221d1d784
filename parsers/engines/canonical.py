"""Canonical series names: the contract between engine adapters and analyzers.

Adapters map every engine's raw names (vLLM V0/V1 across renames, Dynamo old/new, SGLang,
TensorRT-LLM and Triton's TensorRT-LLM backend) onto these.
Canonical labels on every series: `model_name` and `engine` (DP index; "0" when the engine has
no such label). Extra labels kept where noted. Units are normalised: ratios 0-1, seconds, tokens.
"""

from __future__ import annotations

from typing import Final

# --- gauges
REQUESTS_RUNNING: Final = "requests_running"
REQUESTS_WAITING: Final = "requests_waiting"  # total queue depth
REQUESTS_WAITING_BY_REASON: Final = "requests_waiting_by_reason"  # extra label `reason` (capacity|deferred)
KV_CACHE_USAGE: Final = "kv_cache_usage_ratio"  # 0-1, vllm kv_cache_usage_perc / gpu_cache_usage_perc
KV_ACTIVE_BLOCKS: Final = "kv_active_blocks"  # Dynamo kvstats
KV_TOTAL_BLOCKS: Final = "kv_total_blocks"  # Dynamo kvstats / frontend model_total_kv_blocks
PREFIX_CACHE_HIT_RATE_GAUGE: Final = "prefix_cache_hit_rate_gauge"  # V0 / Dynamo gauge (0-1); absent when -1
INFLIGHT_REQUESTS: Final = "inflight_requests"  # Dynamo frontend
# KV pools by kind (SGLang: token_usage is the max of these; see semantics.py)
KV_FULL_POOL_USAGE: Final = "kv_full_pool_usage_ratio"  # full-attention pool, 0-1
KV_SWA_POOL_USAGE: Final = "kv_swa_pool_usage_ratio"  # sliding-window pool, 0-1
KV_MAMBA_POOL_USAGE: Final = "kv_mamba_pool_usage_ratio"  # Mamba state pool, 0-1
KV_USED_TOKENS: Final = "kv_used_tokens"  # slots held by running requests (SGLang)
KV_AVAILABLE_TOKENS: Final = "kv_available_tokens"  # free slots (SGLang)
KV_EVICTABLE_TOKENS: Final = "kv_evictable_tokens"  # slots holding reusable cached prefix KV (SGLang)
HOST_KV_USAGE: Final = "host_kv_usage_ratio"  # host (offload) tier, 0-1 (TensorRT-LLM)
HOST_KV_USED_TOKENS: Final = "host_kv_used_tokens"  # SGLang HiCache host tier
HOST_KV_TOTAL_TOKENS: Final = "host_kv_total_tokens"
GENERATION_THROUGHPUT_GAUGE: Final = "generation_tokens_per_second_gauge"  # engine's own recent rate
# P/D disaggregation queues (SGLang), requests
PD_PREFILL_BOOTSTRAP_QUEUE: Final = "pd_prefill_bootstrap_queue_requests"  # waiting for the decode handshake
PD_PREFILL_INFLIGHT_QUEUE: Final = "pd_prefill_inflight_queue_requests"  # prefilled, KV being sent
PD_DECODE_PREALLOC_QUEUE: Final = "pd_decode_prealloc_queue_requests"  # waiting for decode KV blocks
PD_DECODE_TRANSFER_QUEUE: Final = "pd_decode_transfer_queue_requests"  # KV being received
# Dynamo frontend, one series per worker the router knows: extra labels `worker_id` (decimal) and
# `worker_type` (prefill|decode; an aggregated worker is "decode"). The router's view of each worker.
DYNAMO_WORKER_ACTIVE_PREFILL_TOKENS: Final = "dynamo_worker_active_prefill_tokens"
DYNAMO_WORKER_ACTIVE_DECODE_BLOCKS: Final = "dynamo_worker_active_decode_blocks"
DYNAMO_WORKER_LAST_TTFT_SECONDS: Final = "dynamo_worker_last_ttft_seconds"
DYNAMO_WORKER_LAST_ITL_SECONDS: Final = "dynamo_worker_last_itl_seconds"
# Dynamo frontend: requests held in the KV router's own queue (`--router-queue-threshold`), extra
# label `worker_type` (the pool they wait for). In P/D the prefill queue lives here, not in a worker.
DYNAMO_ROUTER_QUEUED_REQUESTS: Final = "dynamo_router_queued_requests"

# --- counters (cumulative values)
PROMPT_TOKENS: Final = "prompt_tokens"
GENERATION_TOKENS: Final = "generation_tokens"
PROMPT_TOKENS_BY_SOURCE: Final = "prompt_tokens_by_source"  # extra label `source`
PROMPT_TOKENS_CACHED: Final = "prompt_tokens_cached"
PREFIX_CACHE_QUERIES: Final = "prefix_cache_queries"  # tokens (or blocks: snapshot.prefix_cache_unit)
PREFIX_CACHE_HITS: Final = "prefix_cache_hits"
EXTERNAL_PREFIX_CACHE_QUERIES: Final = "external_prefix_cache_queries"
EXTERNAL_PREFIX_CACHE_HITS: Final = "external_prefix_cache_hits"
PREEMPTIONS: Final = "preemptions"
REQUEST_SUCCESS: Final = "request_success"  # extra label `finished_reason`
REQUESTS_TOTAL: Final = "requests_total"  # Dynamo frontend requests (extra label `status` when present)
REQUESTS_STARTED: Final = "requests_started"  # Dynamo frontend arrivals, counted as they arrive
# Dynamo KV router: prefix tokens the router found cached on the worker it chose, prefill or
# aggregated routing only (in P/D every request is also routed to decode: that count would double).
ROUTER_CACHED_PREFIX_TOKENS: Final = "router_cached_prefix_tokens"
NIXL_FAILED_TRANSFERS: Final = "nixl_failed_transfers"
NIXL_FAILED_NOTIFICATIONS: Final = "nixl_failed_notifications"
NIXL_KV_EXPIRED_REQUESTS: Final = "nixl_kv_expired_requests"
# NIXL's own Prometheus exporter (agent_* metrics; extra label `agent_name`)
NIXL_AGENT_TX_BYTES: Final = "nixl_agent_tx_bytes"
NIXL_AGENT_RX_BYTES: Final = "nixl_agent_rx_bytes"
NIXL_AGENT_TX_REQUESTS: Final = "nixl_agent_tx_requests"
NIXL_AGENT_XFER_TIME_SECONDS: Final = "nixl_agent_xfer_time_seconds"  # converted from microseconds
NIXL_AGENT_XFER_POST_TIME_SECONDS: Final = "nixl_agent_xfer_post_time_seconds"
NIXL_AGENT_EVENTS_DROPPED: Final = "nixl_agent_events_dropped"
NIXL_AGENT_RX_REQUESTS: Final = "nixl_agent_rx_requests"
NIXL_AGENT_MEMORY_REGISTERED_BYTES: Final = "nixl_agent_memory_registered_bytes"
NIXL_AGENT_MEMORY_DEREGISTERED_BYTES: Final = "nixl_agent_memory_deregistered_bytes"
NIXL_AGENT_ERRORS: Final = "nixl_agent_errors"  # extra labels `agent_name`, `status`
PREFIX_CACHE_MISSES: Final = "prefix_cache_misses"  # TensorRT-LLM missed blocks (queries = hits + misses)
HOST_KV_OFFLOAD_BYTES: Final = "host_kv_offload_bytes"  # GPU -> host tier (TensorRT-LLM)
HOST_KV_ONBOARD_BYTES: Final = "host_kv_onboard_bytes"  # host tier -> GPU (TensorRT-LLM)
HOST_KV_EVICTED_TOKENS: Final = "host_kv_evicted_tokens"  # GPU -> host (SGLang HiCache)
HOST_KV_LOADED_TOKENS: Final = "host_kv_loaded_tokens"  # host -> GPU (SGLang HiCache load-back)
# engine-reported KV transfers in P/D (SGLang, TensorRT-LLM under Dynamo, Triton)
KV_TRANSFERS: Final = "kv_transfers"  # completed transfers (counter)
KV_TRANSFER_TIME_SECONDS: Final = "kv_transfer_time_seconds"  # summed transfer time (counter, Triton)
KV_TRANSFER_FAILURES: Final = "kv_transfer_failures"  # failed transfers (SGLang)
KV_BOOTSTRAP_FAILURES: Final = "kv_bootstrap_failures"  # failed P/D handshakes (SGLang)

# --- histograms
TTFT_SECONDS: Final = "ttft_seconds"
ITL_SECONDS: Final = "itl_seconds"  # per output step (inter_token_latency / old time_per_output_token)
TPOT_REQUEST_SECONDS: Final = "tpot_request_seconds"  # per finished request (request_time_per_output_token)
E2E_LATENCY_SECONDS: Final = "e2e_latency_seconds"
QUEUE_TIME_SECONDS: Final = "queue_time_seconds"
PREFILL_TIME_SECONDS: Final = "prefill_time_seconds"
DECODE_TIME_SECONDS: Final = "decode_time_seconds"
INFERENCE_TIME_SECONDS: Final = "inference_time_seconds"
REQUEST_PROMPT_TOKENS: Final = "request_prompt_tokens"
REQUEST_GENERATION_TOKENS: Final = "request_generation_tokens"
REQUEST_CACHED_TOKENS: Final = "request_cached_tokens"  # Dynamo frontend: the usage's cached_tokens
ROUTER_INPUT_TOKENS: Final = "router_input_tokens"  # Dynamo router, prefill/aggregated routing only
# Dynamo worker: time its `generate` endpoint spent on a request (a P/D prefill worker: the prefill)
WORKER_REQUEST_SECONDS: Final = "worker_request_seconds"
REQUEST_PREFILL_KV_COMPUTED_TOKENS: Final = "request_prefill_kv_computed_tokens"
ITERATION_TOKENS: Final = "iteration_tokens"
KV_BLOCK_LIFETIME_SECONDS: Final = "kv_block_lifetime_seconds"
KV_BLOCK_IDLE_BEFORE_EVICT_SECONDS: Final = "kv_block_idle_before_evict_seconds"
KV_BLOCK_REUSE_GAP_SECONDS: Final = "kv_block_reuse_gap_seconds"
NIXL_XFER_SECONDS: Final = "nixl_xfer_seconds"
NIXL_POST_SECONDS: Final = "nixl_post_seconds"
NIXL_BYTES: Final = "nixl_bytes"
NIXL_DESCRIPTORS: Final = "nixl_descriptors"
KV_TRANSFER_SECONDS: Final = "kv_transfer_seconds"  # per request (SGLang ms and TensorRT-LLM s)
KV_TRANSFER_BYTES: Final = "kv_transfer_bytes"  # per request (SGLang MiB, TensorRT-LLM bytes)
WORKER_FIRST_RESPONSE_SECONDS: Final = "worker_first_response_seconds"  # Dynamo work handler: in -> first response

# --- info keys (EngineSnapshot.info[engine]): from vllm:cache_config_info / Dynamo frontend gauges
INFO_BLOCK_SIZE: Final = "block_size"
INFO_NUM_GPU_BLOCKS: Final = "num_gpu_blocks"
INFO_KV_CACHE_SIZE_TOKENS: Final = "kv_cache_size_tokens"
INFO_ENABLE_PREFIX_CACHING: Final = "enable_prefix_caching"  # "True"/"False"
INFO_KV_CACHE_METRICS_SAMPLE: Final = "kv_cache_metrics_sample"  # when known
INFO_MAX_NUM_SEQS: Final = "max_num_seqs"  # Dynamo frontend model card / a cache_config_info label
INFO_MAX_NUM_BATCHED_TOKENS: Final = "max_num_batched_tokens"  # Dynamo frontend model card
INFO_DYNAMO_WORKER_ID: Final = "dynamo_worker_id"  # a Dynamo process's own id, in decimal


# --- kinds, for validation (validate.py) and for folding groups into `__other__` (window.py);
# tests/test_hostile_values.py checks that every adapter rule's canonical name has its kind here.
RATIOS: Final = frozenset(
    {KV_CACHE_USAGE, PREFIX_CACHE_HIT_RATE_GAUGE, KV_FULL_POOL_USAGE, KV_SWA_POOL_USAGE, KV_MAMBA_POOL_USAGE,
     HOST_KV_USAGE}
)
"""Fractions of a whole: 0-1 after the adapter's unit conversion; combined by max, never summed."""
COUNT_GAUGES: Final = frozenset(
    {REQUESTS_RUNNING, REQUESTS_WAITING, REQUESTS_WAITING_BY_REASON, KV_ACTIVE_BLOCKS, KV_TOTAL_BLOCKS,
     INFLIGHT_REQUESTS, KV_USED_TOKENS, KV_AVAILABLE_TOKENS, KV_EVICTABLE_TOKENS, HOST_KV_USED_TOKENS,
     HOST_KV_TOTAL_TOKENS, GENERATION_THROUGHPUT_GAUGE, PD_PREFILL_BOOTSTRAP_QUEUE, PD_PREFILL_INFLIGHT_QUEUE,
     PD_DECODE_PREALLOC_QUEUE, PD_DECODE_TRANSFER_QUEUE, DYNAMO_WORKER_ACTIVE_PREFILL_TOKENS,
     DYNAMO_WORKER_ACTIVE_DECODE_BLOCKS, DYNAMO_ROUTER_QUEUED_REQUESTS}
)
"""Gauges that count things (or a rate of them): finite and >= 0; summed across models."""
LATEST_GAUGES: Final = frozenset({DYNAMO_WORKER_LAST_TTFT_SECONDS, DYNAMO_WORKER_LAST_ITL_SECONDS})
"""A last observed duration: finite and >= 0; combined by max (a sum of latencies means nothing)."""
COUNTERS: Final = frozenset(
    {PROMPT_TOKENS, GENERATION_TOKENS, PROMPT_TOKENS_BY_SOURCE, PROMPT_TOKENS_CACHED, PREFIX_CACHE_QUERIES,
     PREFIX_CACHE_HITS, EXTERNAL_PREFIX_CACHE_QUERIES, EXTERNAL_PREFIX_CACHE_HITS, PREEMPTIONS, REQUEST_SUCCESS,
     REQUESTS_TOTAL, NIXL_FAILED_TRANSFERS, NIXL_FAILED_NOTIFICATIONS, NIXL_KV_EXPIRED_REQUESTS,
     NIXL_AGENT_TX_BYTES, NIXL_AGENT_RX_BYTES, NIXL_AGENT_TX_REQUESTS, NIXL_AGENT_XFER_TIME_SECONDS,
     NIXL_AGENT_XFER_POST_TIME_SECONDS, NIXL_AGENT_EVENTS_DROPPED, NIXL_AGENT_RX_REQUESTS,
     NIXL_AGENT_MEMORY_REGISTERED_BYTES, NIXL_AGENT_MEMORY_DEREGISTERED_BYTES, NIXL_AGENT_ERRORS,
     REQUESTS_STARTED, ROUTER_CACHED_PREFIX_TOKENS, PREFIX_CACHE_MISSES, HOST_KV_OFFLOAD_BYTES,
     HOST_KV_ONBOARD_BYTES, HOST_KV_EVICTED_TOKENS, HOST_KV_LOADED_TOKENS, KV_TRANSFERS, KV_TRANSFER_TIME_SECONDS,
     KV_TRANSFER_FAILURES, KV_BOOTSTRAP_FAILURES}
)
"""Cumulative counts: finite and >= 0 (a decrease between scrapes is a reset, not an error)."""
MAX_COMBINED: Final = RATIOS | LATEST_GAUGES
"""Gauges combined across models by max (window.py `__other__`)."""
FINISHED_REQUESTS: Final = (REQUEST_SUCCESS, REQUESTS_TOTAL)
"""The counters of finished requests (vLLM, Dynamo frontend): a model group's traffic."""
