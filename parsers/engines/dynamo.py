"""NVIDIA Dynamo raw metric names -> canonical series.

Sources: /work/shared/research/dynamo-nixl.md §2.1-2.2 and the public samples in
tests/fixtures/public-samples/dynamo/.

Two scrape targets carry `dynamo_*` families:
- the frontend (`dynamo_frontend_*`): request histograms (TTFT, ITL, duration, ISL, OSL), request
  and output-token counters, queue/inflight gauges, and capacity constants of the first worker
  (`model_total_kv_blocks`, `model_kv_cache_block_size`, which also fill `EngineSnapshot.info`);
- the worker system port (`dynamo_component_*`): work-handler gauges and KV stats, next to the
  engine's own `vllm:*` series.

Precedence (see mapping.py): `vllm:*` (rank 20+) > `dynamo_component_*` (10/11) >
`dynamo_frontend_*` (0/1). vLLM's series are authoritative for the engine; Dynamo's only fill
canonical names vLLM did not provide for that model.

Old and new names (Dynamo 1.3 renamed several; the newer spelling has the higher rank):
- `dynamo_frontend_inflight_requests` -> `dynamo_frontend_active_requests` (INFLIGHT_REQUESTS).
- `dynamo_frontend_queued_requests` ->
  `sum(dynamo_frontend_stage_requests{stage=~"preprocess|route|dispatch"})` (REQUESTS_WAITING).
  Note: Dynamo counts a request as queued from HTTP arrival to first token,
  so this includes prefill in progress; it is the nearest queue signal a frontend exposes.
- `dynamo_component_kvstats_{active_blocks,total_blocks,gpu_cache_usage_percent,
  gpu_prefix_cache_hit_rate}` -> `dynamo_component_{total_blocks,gpu_cache_usage_percent,
  kv_cache_hit_rate}` (no active-blocks gauge any more).

Labels: `model` becomes `model_name` (see mapping.py for Dynamo's lowercasing), `dp_rank` the
engine index. `gpu_cache_usage_percent` is documented and observed as 0.0-1.0 despite its name;
mapping.py's `_percent_scale` still converts a family that carries values above 1.
"""

from __future__ import annotations

from typing import Final, Literal

from phaselens.parsers.engines import canonical as c
from phaselens.parsers.engines.mapping import Binding, Rule, build_table

FRONTEND_OLD: Final = 0
FRONTEND_NEW: Final = 1
COMPONENT_OLD: Final = 10
COMPONENT_NEW: Final = 11

_QUEUE_STAGES: Final = frozenset({"preprocess", "route", "dispatch"})


def _gauge(
    canonical: str,
    rank: int,
    aggregate: Literal["sum", "max"] = "sum",
    only: tuple[str, frozenset[str]] | None = None,
    fraction_or_percent: bool = False,
) -> Rule:
    return Rule(
        canonical,
        "gauge",
        "dynamo",
        rank,
        aggregate=aggregate,
        only=only,
        fraction_or_percent=fraction_or_percent,
    )


def _histogram(canonical: str, only: tuple[str, frozenset[str]] | None = None) -> Rule:
    return Rule(canonical, "histogram", "dynamo", FRONTEND_OLD, only=only)


def _worker_gauge(canonical: str) -> Rule:
    return Rule(canonical, "gauge", "dynamo", FRONTEND_OLD, keep=("worker_id", "worker_type"))


# The router routes each P/D request twice (to a prefill and to a decode worker) and counts both;
# its prefix and input-token counts are taken from the routing that prefills only.
_PREFILL_ROUTING: Final = ("phase", frozenset({"aggregated", "prefill"}))


DYNAMO_RULES: Final[tuple[tuple[str, Rule], ...]] = (
    # frontend: load
    ("dynamo_frontend_inflight_requests", _gauge(c.INFLIGHT_REQUESTS, FRONTEND_OLD)),
    ("dynamo_frontend_active_requests", _gauge(c.INFLIGHT_REQUESTS, FRONTEND_NEW)),
    ("dynamo_frontend_queued_requests", _gauge(c.REQUESTS_WAITING, FRONTEND_OLD)),
    (
        "dynamo_frontend_stage_requests",
        _gauge(c.REQUESTS_WAITING, FRONTEND_NEW, only=("stage", _QUEUE_STAGES)),
    ),
    # frontend: per-request histograms and counters
    ("dynamo_frontend_time_to_first_token_seconds", _histogram(c.TTFT_SECONDS)),
    ("dynamo_frontend_inter_token_latency_seconds", _histogram(c.ITL_SECONDS)),
    ("dynamo_frontend_request_duration_seconds", _histogram(c.E2E_LATENCY_SECONDS)),
    ("dynamo_frontend_input_sequence_tokens", _histogram(c.REQUEST_PROMPT_TOKENS)),
    ("dynamo_frontend_output_sequence_tokens", _histogram(c.REQUEST_GENERATION_TOKENS)),
    ("dynamo_frontend_output_tokens", Rule(c.GENERATION_TOKENS, "counter", "dynamo", FRONTEND_OLD)),
    ("dynamo_frontend_requests", Rule(c.REQUESTS_TOTAL, "counter", "dynamo", FRONTEND_OLD, keep=("status",))),
    ("dynamo_frontend_requests_started", Rule(c.REQUESTS_STARTED, "counter", "dynamo", FRONTEND_OLD)),
    ("dynamo_frontend_cached_tokens", _histogram(c.REQUEST_CACHED_TOKENS)),
    # frontend: the router's view of each worker (decimal worker_id, worker_type)
    ("dynamo_frontend_worker_active_prefill_tokens", _worker_gauge(c.DYNAMO_WORKER_ACTIVE_PREFILL_TOKENS)),
    ("dynamo_frontend_worker_active_decode_blocks", _worker_gauge(c.DYNAMO_WORKER_ACTIVE_DECODE_BLOCKS)),
    ("dynamo_frontend_worker_last_time_to_first_token_seconds", _worker_gauge(c.DYNAMO_WORKER_LAST_TTFT_SECONDS)),
    ("dynamo_frontend_worker_last_inter_token_latency_seconds", _worker_gauge(c.DYNAMO_WORKER_LAST_ITL_SECONDS)),
    # KV router's queue (in the frontend process; only with --router-queue-threshold), per pool
    (
        "dynamo_frontend_router_queue_pending_requests",
        Rule(c.DYNAMO_ROUTER_QUEUED_REQUESTS, "gauge", "dynamo", FRONTEND_OLD, keep=("worker_type",)),
    ),
    # KV router (in the frontend process)
    (
        "dynamo_component_router_kv_selected_cached_prefix_tokens",
        Rule(c.ROUTER_CACHED_PREFIX_TOKENS, "counter", "dynamo", FRONTEND_OLD, only=_PREFILL_ROUTING),
    ),
    ("dynamo_component_router_input_sequence_tokens", _histogram(c.ROUTER_INPUT_TOKENS, _PREFILL_ROUTING)),
    # frontend: capacity constants of the first registered worker
    (
        "dynamo_frontend_model_total_kv_blocks",
        Rule(c.KV_TOTAL_BLOCKS, "info_gauge", "dynamo", FRONTEND_OLD, info_key=c.INFO_NUM_GPU_BLOCKS),
    ),
    (
        "dynamo_frontend_model_kv_cache_block_size",
        Rule("", "info_gauge", "dynamo", FRONTEND_OLD, info_key=c.INFO_BLOCK_SIZE),
    ),
    (
        "dynamo_frontend_model_max_num_seqs",
        Rule("", "info_gauge", "dynamo", FRONTEND_OLD, info_key=c.INFO_MAX_NUM_SEQS),
    ),
    (
        "dynamo_frontend_model_max_num_batched_tokens",
        Rule("", "info_gauge", "dynamo", FRONTEND_OLD, info_key=c.INFO_MAX_NUM_BATCHED_TOKENS),
    ),
    # every Dynamo process: its own id (hex), kept in decimal to join with the frontend's worker_id
    (
        "dynamo_component_uptime_seconds",
        Rule("", "hex_id_info", "dynamo", COMPONENT_OLD, info_key=c.INFO_DYNAMO_WORKER_ID, id_label="worker_id"),
    ),
    # worker: work handler (only the `generate` endpoint is the model's traffic)
    (
        "dynamo_component_inflight_requests",
        _gauge(c.INFLIGHT_REQUESTS, COMPONENT_OLD, only=("dynamo_endpoint", frozenset({"generate"}))),
    ),
    # worker: the work handler's time to its first response (on a P/D prefill worker: the prefill)
    (
        "dynamo_work_handler_time_to_first_response_seconds",
        Rule(c.WORKER_FIRST_RESPONSE_SECONDS, "histogram", "dynamo", COMPONENT_OLD),
    ),
    (
        "dynamo_component_requests",
        Rule(c.REQUESTS_TOTAL, "counter", "dynamo", COMPONENT_OLD, only=("dynamo_endpoint", frozenset({"generate"}))),
    ),
    (
        "dynamo_component_request_duration_seconds",
        Rule(c.WORKER_REQUEST_SECONDS, "histogram", "dynamo", COMPONENT_OLD,
             only=("dynamo_endpoint", frozenset({"generate"}))),
    ),
    # worker: KV stats, old names
    ("dynamo_component_kvstats_active_blocks", _gauge(c.KV_ACTIVE_BLOCKS, COMPONENT_OLD)),
    ("dynamo_component_kvstats_total_blocks", _gauge(c.KV_TOTAL_BLOCKS, COMPONENT_OLD)),
    (
        "dynamo_component_kvstats_gpu_cache_usage_percent",
        _gauge(c.KV_CACHE_USAGE, COMPONENT_OLD, "max", fraction_or_percent=True),
    ),
    (
        "dynamo_component_kvstats_gpu_prefix_cache_hit_rate",
        _gauge(c.PREFIX_CACHE_HIT_RATE_GAUGE, COMPONENT_OLD, "max"),
    ),
    # worker: KV stats, new names
    ("dynamo_component_total_blocks", _gauge(c.KV_TOTAL_BLOCKS, COMPONENT_NEW)),
    (
        "dynamo_component_gpu_cache_usage_percent",
        _gauge(c.KV_CACHE_USAGE, COMPONENT_NEW, "max", fraction_or_percent=True),
    ),
    ("dynamo_component_kv_cache_hit_rate", _gauge(c.PREFIX_CACHE_HIT_RATE_GAUGE, COMPONENT_NEW, "max")),
)

DYNAMO_TABLE: Final[dict[str, Binding]] = build_table(DYNAMO_RULES)
