"""Which engines can give each signal, derived from the adapters' name tables (docs/signals.md).

`SIGNAL_INPUTS` says, per signal, the canonical series it is computed from: alternatives, each a
set of names that must all be present (`info:<key>` for static configuration). An engine gives a
signal when its adapter table produces every name of one alternative. The tables are the
adapters' own (`parsers/engines/*.py`), so adding or removing an engine metric changes the
documentation with it; a test checks every spec has an entry here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from phaselens.parsers.engines import canonical as c
from phaselens.parsers.engines.dynamo import DYNAMO_TABLE
from phaselens.parsers.engines.mapping import Binding, merge_tables
from phaselens.parsers.engines.sglang import SGLANG_TABLE
from phaselens.parsers.engines.trtllm import TRITON_TABLE, TRTLLM_COLLECTOR_TABLE
from phaselens.parsers.engines.vllm import VLLM_TABLE

Needs = tuple[tuple[str, ...], ...]

ENGINES: Final[tuple[tuple[str, Mapping[str, Binding]], ...]] = (
    ("vLLM", VLLM_TABLE),
    # A Dynamo deployment: frontend plus workers that pass their engine's vllm:* through (mocker, vLLM).
    ("Dynamo", merge_tables(DYNAMO_TABLE, VLLM_TABLE)),
    ("SGLang", SGLANG_TABLE),
    ("TensorRT-LLM", TRTLLM_COLLECTOR_TABLE),
    ("Triton TensorRT-LLM", TRITON_TABLE),
)

_UTILIZATION: Final[Needs] = ((c.KV_CACHE_USAGE,), (c.KV_ACTIVE_BLOCKS, c.KV_TOTAL_BLOCKS))
_NIXL = "also from NIXL telemetry rings, NIXL's exporter or vLLM logs, whatever the engine"
_HOST = "host telemetry (NVML), any engine"
_SELF = "the sidecar itself, any engine"

SIGNAL_INPUTS: Final[dict[str, Needs | str]] = {
    "phaselens_prefill_queue_depth": ((c.REQUESTS_WAITING,), (c.REQUESTS_WAITING_BY_REASON,)),
    "phaselens_prefill_backlog_seconds": ((c.REQUESTS_WAITING, c.PROMPT_TOKENS),),
    "phaselens_prefill_saturation_ratio": ((c.REQUESTS_RUNNING,),),
    "phaselens_decode_kv_utilization_ratio": _UTILIZATION,
    "phaselens_decode_kv_pressure_ratio": _UTILIZATION,
    "phaselens_decode_saturation_ratio": (*_UTILIZATION, (c.REQUESTS_RUNNING, "info:" + c.INFO_MAX_NUM_SEQS)),
    "phaselens_phase_prefill_time_share_ratio": ((c.PREFILL_TIME_SECONDS, c.DECODE_TIME_SECONDS),),
    "phaselens_phase_imbalance_ratio": ((c.PREFILL_TIME_SECONDS, c.DECODE_TIME_SECONDS),),
    "phaselens_phase_bottleneck": ((c.PREFILL_TIME_SECONDS, c.DECODE_TIME_SECONDS),),
    "phaselens_kv_prefix_cache_hit_ratio": (
        (c.PREFIX_CACHE_QUERIES, c.PREFIX_CACHE_HITS),
        (c.PREFIX_CACHE_HITS, c.PREFIX_CACHE_MISSES),
        (c.PROMPT_TOKENS, c.PROMPT_TOKENS_CACHED),
        (c.PREFIX_CACHE_HIT_RATE_GAUGE,),
    ),
    "phaselens_kv_preemptions_per_second": ((c.PREEMPTIONS,),),
    "phaselens_kv_evictions_per_second": ((c.KV_BLOCK_IDLE_BEFORE_EVICT_SECONDS,), (c.KV_BLOCK_LIFETIME_SECONDS,)),
    "phaselens_kv_internal_fragmentation_ratio": (
        (c.REQUESTS_RUNNING, c.KV_ACTIVE_BLOCKS, "info:" + c.INFO_BLOCK_SIZE),
        (c.REQUESTS_RUNNING, c.KV_CACHE_USAGE, "info:" + c.INFO_NUM_GPU_BLOCKS, "info:" + c.INFO_BLOCK_SIZE),
    ),
    "phaselens_kv_headroom_tokens": (
        (c.KV_CACHE_USAGE, "info:" + c.INFO_KV_CACHE_SIZE_TOKENS),
        (c.KV_CACHE_USAGE, "info:" + c.INFO_NUM_GPU_BLOCKS, "info:" + c.INFO_BLOCK_SIZE),
        (c.KV_ACTIVE_BLOCKS, c.KV_TOTAL_BLOCKS, "info:" + c.INFO_BLOCK_SIZE),
    ),
    "phaselens_ttft_seconds": ((c.TTFT_SECONDS,),),
    "phaselens_itl_seconds": ((c.ITL_SECONDS,),),
    "phaselens_queue_wait_seconds": ((c.QUEUE_TIME_SECONDS,),),
    "phaselens_e2e_latency_seconds": ((c.E2E_LATENCY_SECONDS,),),
    "phaselens_slo_attainment_ratio": ((c.TTFT_SECONDS,), (c.TPOT_REQUEST_SECONDS,), (c.ITL_SECONDS,)),
    "phaselens_goodput_requests_per_second": (
        (c.TTFT_SECONDS, c.REQUEST_SUCCESS),
        (c.TTFT_SECONDS, c.E2E_LATENCY_SECONDS),
        (c.TTFT_SECONDS, c.REQUESTS_TOTAL),
    ),
    "phaselens_request_rate_per_second": ((c.REQUEST_SUCCESS,), (c.E2E_LATENCY_SECONDS,), (c.REQUESTS_TOTAL,)),
    "phaselens_nixl_transfer_seconds": _NIXL,
    "phaselens_nixl_transfer_bytes_per_second": _NIXL,
    "phaselens_nixl_transfer_failure_ratio": _NIXL,
    "phaselens_nixl_ttft_share_ratio": ((c.NIXL_XFER_SECONDS, c.TTFT_SECONDS),),
    "phaselens_disaggregation_score": ((c.PREFILL_TIME_SECONDS, c.DECODE_TIME_SECONDS),),
    "phaselens_disaggregation_component_ratio": ((c.PREFILL_TIME_SECONDS, c.DECODE_TIME_SECONDS),),
    "phaselens_utilization_ratio": ((c.REQUEST_SUCCESS, c.REQUESTS_RUNNING),),
    "phaselens_predicted_queue_wait_seconds": ((c.REQUEST_SUCCESS, c.REQUESTS_RUNNING, c.REQUESTS_WAITING),),
    "phaselens_slo_breach_probability": ((c.REQUEST_SUCCESS, c.REQUESTS_WAITING, c.TTFT_SECONDS),),
    "phaselens_prediction_calibration_error": ((c.REQUEST_SUCCESS, c.REQUESTS_WAITING, c.TTFT_SECONDS),),
    "phaselens_prediction_brier_score": ((c.REQUEST_SUCCESS, c.REQUESTS_WAITING, c.TTFT_SECONDS),),
    "phaselens_gpu_utilization_ratio": _HOST,
    "phaselens_gpu_memory_used_ratio": _HOST,
    "phaselens_gpu_power_watts": _HOST,
    "phaselens_gpu_temperature_celsius": _HOST,
    "phaselens_gpu_health_ratio": _HOST,
    "phaselens_diagnosis": "derived from the other signals (docs/diagnosis.md), any engine",
    "phaselens_target_up": _SELF,
    "phaselens_scrape_duration_seconds": _SELF,
    "phaselens_parse_errors_total": _SELF,
    "phaselens_tick_duration_seconds": _SELF,
    "phaselens_signal_age_seconds": _SELF,
}
"""The NIXL transfer signals' engine alternatives are in `_TRANSFER_INPUTS` (plus sources any engine has)."""

_TRANSFER_INPUTS: Final[dict[str, Needs]] = {
    "phaselens_nixl_transfer_seconds": ((c.NIXL_XFER_SECONDS,), (c.KV_TRANSFER_SECONDS,)),
    "phaselens_nixl_transfer_bytes_per_second": (
        (c.NIXL_XFER_SECONDS, c.NIXL_BYTES),
        (c.KV_TRANSFER_SECONDS, c.KV_TRANSFER_BYTES),
    ),
    "phaselens_nixl_transfer_failure_ratio": (
        (c.NIXL_XFER_SECONDS, c.NIXL_FAILED_TRANSFERS),
        (c.KV_TRANSFER_SECONDS, c.KV_TRANSFER_FAILURES),
        (c.KV_TRANSFER_TIME_SECONDS, c.KV_TRANSFERS, c.KV_TRANSFER_FAILURES),
    ),
}


def produced(table: Mapping[str, Binding]) -> frozenset[str]:
    """Canonical names (and `info:<key>`) an adapter table can fill."""
    out: set[str] = set()
    for binding in table.values():
        rule = binding.rule
        if rule.canonical:
            out.add(rule.canonical)
        if rule.info_key:
            out.add("info:" + rule.info_key)
        if rule.by_label is not None:
            out.update(canonical for _, canonical, _ in rule.by_label[1])
        if rule.kind == "cache_config_info":
            # vLLM's cache_config_info labels; kv_cache_size_tokens is completed from the two.
            out.update("info:" + key for key in (c.INFO_BLOCK_SIZE, c.INFO_NUM_GPU_BLOCKS, c.INFO_KV_CACHE_SIZE_TOKENS))
    if {"info:" + c.INFO_BLOCK_SIZE, "info:" + c.INFO_NUM_GPU_BLOCKS} <= out:
        out.add("info:" + c.INFO_KV_CACHE_SIZE_TOKENS)
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class Coverage:
    engine: str
    gives: bool
    missing: tuple[str, ...]
    """When it does not: the canonical series of the nearest alternative it lacks."""


def coverage(signal: str) -> tuple[Coverage, ...] | str:
    """Per engine, whether it gives the signal; a string when the signal does not depend on it."""
    needs = _TRANSFER_INPUTS.get(signal) or SIGNAL_INPUTS[signal]
    if isinstance(needs, str):
        return needs
    out = []
    for engine, table in ENGINES:
        have = produced(table)
        missing = min((tuple(sorted(set(alt) - have)) for alt in needs), key=len)
        out.append(Coverage(engine, not missing, missing))
    return tuple(out)


def describe(signal: str) -> str:
    """One line for docs/signals.md: who gives it, and what the others lack."""
    result = coverage(signal)
    if isinstance(result, str):
        return result
    gives = [cov.engine for cov in result if cov.gives]
    lacks = [f"{cov.engine} (no {', '.join(cov.missing)})" for cov in result if not cov.gives]
    text = ", ".join(gives) if gives else "none"
    if lacks:
        text += "; not from " + "; ".join(lacks)
    extra = SIGNAL_INPUTS.get(signal)
    if isinstance(extra, str):
        text += f"; {extra}"
    return text
