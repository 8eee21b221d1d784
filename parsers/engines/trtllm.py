"""TensorRT-LLM raw metric names -> canonical series, from its three exposures.

1. `trtllm_*` from TensorRT-LLM's `MetricsCollector` (`tensorrt_llm/metrics/collector.py`), served by
   `trtllm-serve` at `/prometheus/metrics`, and passed through by Dynamo's TensorRT-LLM worker on
   its system port (Dynamo adds the `trtllm_` prefix; Dynamo <= 0.7 spelled it `trtllm:`, both
   are bound). Dynamo's own additions for P/D (`trtllm_kv_transfer_*`) are read too.
2. Triton's TensorRT-LLM backend (`nv_trt_llm_*`, Triton >= 23.11): one gauge family per topic,
   quantities told apart by a label (`request_type`, `kv_cache_block_type`), read with
   `Rule.by_label`. `request_type="waiting"` and `kv_cache_block_type="fraction"` came later than
   23.11; without the fraction, KV utilization is `used / max` blocks (analyzers/kv_cache.py).

Sources: names from the collector's docstring and Dynamo's `docs/backends/trtllm/prometheus.md`;
golden tests on published output (tests/fixtures/trtllm-*/ and triton-trtllm-*/SOURCE.md).

Semantics that differ from vLLM:
- `trtllm_time_per_output_token_seconds` is observed once per finished request (TPOT), so it maps
  to the per-request TPOT series, not to per-step ITL: TensorRT-LLM gives no per-step ITL.
- Prefix cache counts blocks: `kv_cache_reused_blocks` are hits, `kv_cache_missed_blocks` misses
  (queries = hits + misses).
- `kv_cache_utilization` / `kv_cache_host_utilization` are 0-1 (flagged by semantics.py if not).
- `num_paused_requests` are requests paused for lack of KV blocks: their count is not a rate, so
  it is not read as preemptions (TensorRT-LLM has no preemption counter).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final, Literal

from phaselens.parsers.engines import canonical as c
from phaselens.parsers.engines.mapping import Binding, Rule, RuleKind, build_table

NEW: Final = 21
OLD: Final = 20
TRITON: Final = 19
"""Triton's backend metrics rank below the engine's own (a payload never has both today)."""
MILLISECONDS: Final = 1e-3


def _rule(
    canonical: str,
    kind: RuleKind,
    rank: int = NEW,
    *,
    aggregate: Literal["sum", "max"] = "sum",
    keep: tuple[str, ...] = (),
    ratio: bool = False,
    prefix_unit: Literal["tokens", "blocks"] | None = None,
    info_key: str | None = None,
    by_label: tuple[str, tuple[tuple[str, str, float], ...]] | None = None,
) -> Rule:
    return Rule(
        canonical,
        kind,
        "trtllm",
        rank,
        keep=keep,
        aggregate="max" if ratio else aggregate,
        fraction_or_percent=ratio,
        prefix_unit=prefix_unit,
        info_key=info_key,
        by_label=by_label,
    )


_COLLECTOR: Final[tuple[tuple[str, Rule], ...]] = (
    # load
    ("num_requests_running", _rule(c.REQUESTS_RUNNING, "gauge")),
    ("num_requests_waiting", _rule(c.REQUESTS_WAITING, "gauge")),
    # KV cache
    ("kv_cache_utilization", _rule(c.KV_CACHE_USAGE, "gauge", ratio=True)),
    ("kv_cache_used_blocks", _rule(c.KV_ACTIVE_BLOCKS, "gauge")),
    ("kv_cache_max_blocks", _rule(c.KV_TOTAL_BLOCKS, "info_gauge", info_key=c.INFO_NUM_GPU_BLOCKS)),
    ("kv_cache_tokens_per_block", _rule("", "info_gauge", aggregate="max", info_key=c.INFO_BLOCK_SIZE)),
    ("kv_cache_hit_rate", _rule(c.PREFIX_CACHE_HIT_RATE_GAUGE, "gauge", ratio=True)),
    ("kv_cache_reused_blocks", _rule(c.PREFIX_CACHE_HITS, "counter", prefix_unit="blocks")),
    ("kv_cache_missed_blocks", _rule(c.PREFIX_CACHE_MISSES, "counter")),
    ("prompt_cached_tokens", _rule(c.PROMPT_TOKENS_CACHED, "counter")),
    # host (offload) tier
    ("kv_cache_host_utilization", _rule(c.HOST_KV_USAGE, "gauge", ratio=True)),
    ("kv_cache_offload_bytes", _rule(c.HOST_KV_OFFLOAD_BYTES, "counter")),
    ("kv_cache_onboard_bytes", _rule(c.HOST_KV_ONBOARD_BYTES, "counter")),
    # tokens and requests
    ("prompt_tokens", _rule(c.PROMPT_TOKENS, "counter")),
    ("generation_tokens", _rule(c.GENERATION_TOKENS, "counter")),
    ("request_success", _rule(c.REQUEST_SUCCESS, "counter", keep=("finished_reason",))),
    # request histograms
    ("time_to_first_token_seconds", _rule(c.TTFT_SECONDS, "histogram")),
    ("time_per_output_token_seconds", _rule(c.TPOT_REQUEST_SECONDS, "histogram")),
    ("e2e_request_latency_seconds", _rule(c.E2E_LATENCY_SECONDS, "histogram")),
    ("request_queue_time_seconds", _rule(c.QUEUE_TIME_SECONDS, "histogram")),
    ("request_prefill_time_seconds", _rule(c.PREFILL_TIME_SECONDS, "histogram")),
    ("request_decode_time_seconds", _rule(c.DECODE_TIME_SECONDS, "histogram")),
    ("request_inference_time_seconds", _rule(c.INFERENCE_TIME_SECONDS, "histogram")),
    # Dynamo's P/D additions (recorded on the prefill side when a transfer happened)
    ("kv_transfer_success", _rule(c.KV_TRANSFERS, "counter")),
    ("kv_transfer_latency_seconds", _rule(c.KV_TRANSFER_SECONDS, "histogram")),
    ("kv_transfer_bytes", _rule(c.KV_TRANSFER_BYTES, "histogram")),
)


def _spellings(rules: tuple[tuple[str, Rule], ...]) -> tuple[tuple[str, Rule], ...]:
    """`trtllm_x` (TensorRT-LLM, Dynamo >= 0.8) and `trtllm:x` (Dynamo <= 0.7), the older ranked lower."""
    out: list[tuple[str, Rule]] = []
    for stem, rule in rules:
        out.append(("trtllm_" + stem, rule))
        out.append(("trtllm:" + stem, replace(rule, rank=rule.rank - 2)))
    return tuple(out)


_REQUEST_TYPES: Final = (("waiting", c.REQUESTS_WAITING, 1.0), ("scheduled", c.REQUESTS_RUNNING, 1.0))
_KV_BLOCK_TYPES: Final = (
    ("fraction", c.KV_CACHE_USAGE, 1.0),
    ("used", c.KV_ACTIVE_BLOCKS, 1.0),
    ("max", c.KV_TOTAL_BLOCKS, 1.0),
    ("tokens_per", "info:" + c.INFO_BLOCK_SIZE, 1.0),
)
_DISAGG_TYPES: Final = (
    ("kv_cache_transfer_ms", c.KV_TRANSFER_TIME_SECONDS, MILLISECONDS),
    ("request_count", c.KV_TRANSFERS, 1.0),
)

TRITON_RULES: Final[tuple[tuple[str, Rule], ...]] = (
    ("nv_trt_llm_request_metrics", _rule("", "gauge", TRITON, by_label=("request_type", _REQUEST_TYPES))),
    (
        "nv_trt_llm_kv_cache_block_metrics",
        _rule("", "gauge", TRITON, aggregate="max", by_label=("kv_cache_block_type", _KV_BLOCK_TYPES)),
    ),
    # A counter family whose samples have no `_total` (Triton's C++ exporter): read by its bare name;
    # `kv_cache_transfer_ms` is a running total of milliseconds, made seconds.
    (
        "nv_trt_llm_disaggregated_serving_metrics",
        _rule("", "counter", TRITON, by_label=("disaggregated_serving_type", _DISAGG_TYPES)),
    ),
)

TRTLLM_RULES: Final[tuple[tuple[str, Rule], ...]] = _spellings(_COLLECTOR) + TRITON_RULES

TRTLLM_TABLE: Final[dict[str, Binding]] = build_table(TRTLLM_RULES)
TRTLLM_COLLECTOR_TABLE: Final[dict[str, Binding]] = build_table(_spellings(_COLLECTOR))
TRITON_TABLE: Final[dict[str, Binding]] = build_table(TRITON_RULES)
"""The two exposures apart, for the per-engine coverage in docs/signals.md."""
