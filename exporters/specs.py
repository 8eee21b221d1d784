"""The one table of exported signals.

Both exporters (Prometheus and OpenTelemetry) and `docs/signals.md` are generated from it, so the
names, units and labels can never drift apart. Names are the contract in DESIGN.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from phaselens.exporters.spec_docs import SIGNAL_DOCS

BASE_LABELS: tuple[str, ...] = ("target", "role", "model_name", "engine")
POOL_LABELS: tuple[str, ...] = ("role",)
# Window quantiles are gauges over a sliding window, not summaries (whose `_sum` and `_count` are
# cumulative), so they must not use the summary-reserved `quantile` label: `promtool check metrics`
# rejects it. They carry `percentile` instead, in percent: "50", "90", "95", "99".
PERCENTILE_LABEL = "percentile"


def percentile_label(q: float) -> str:
    """The `percentile` label value of quantile q: 0.5 -> "50", 0.99 -> "99", 0.999 -> "99.9"."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile {q!r} is outside (0, 1)")
    # Rounding removes binary noise (0.57 * 100 = 56.99999999999999); :g drops a trailing ".0".
    return f"{round(q * 100, 6):g}"


@dataclass(frozen=True, slots=True)
class SignalSpec:
    name: str
    kind: Literal["gauge", "counter"]
    unit: str  # UCUM for OTel: "1", "s", "By", "By/s", "{request}", "{token}", "/s", "{event}"
    help: str
    labels: tuple[str, ...]
    otel_name: str
    group: str
    # documentation (docs/signals.md), merged from exporters/spec_docs.py
    formula: str = ""
    source: str = ""
    limits: str = ""

    @property
    def extra_labels(self) -> tuple[str, ...]:
        return tuple(label for label in self.labels if label not in BASE_LABELS)


def _spec(
    name: str,
    unit: str,
    help_text: str,
    group: str,
    extra: tuple[str, ...] = (),
    kind: Literal["gauge", "counter"] = "gauge",
    base: tuple[str, ...] = BASE_LABELS,
) -> SignalSpec:
    stem = name.removeprefix("phaselens_")
    for suffix in ("_ratio", "_seconds", "_tokens", "_total", "_per_second", "_bytes"):
        if stem.endswith(suffix) and stem != suffix.lstrip("_"):
            stem = stem[: -len(suffix)]
            break
    otel = "phaselens." + stem.replace("_", ".", 1)
    return SignalSpec(name, kind, unit, help_text, base + extra, otel, group)


SPECS: tuple[SignalSpec, ...] = (
    # autoscaling
    _spec(
        "phaselens_prefill_queue_depth",
        "{request}",
        "Requests waiting for prefill (engine queue depth, capacity-blocked where the engine says so).",
        "autoscaling",
    ),
    _spec(
        "phaselens_prefill_backlog_seconds",
        "s",
        "Estimated seconds of prefill work waiting: "
        "queue depth x mean uncached prompt tokens / prefill tokens per second; "
        "without token counts, queue depth / requests finished per second.",
        "autoscaling",
    ),
    _spec(
        "phaselens_prefill_saturation_ratio",
        "1",
        "Prefill demand over prefill capacity of a prefill pod (1 = saturated, above 1: demand beyond "
        "capacity); a Dynamo P/D frontend exports its prefill pool's sum (target=pool); basis says how.",
        "autoscaling",
        ("basis",),
    ),
    _spec(
        "phaselens_decode_kv_utilization_ratio",
        "1",
        "Fraction of the KV-cache block pool held by running requests (0-1).",
        "autoscaling",
    ),
    _spec(
        "phaselens_decode_kv_pressure_ratio",
        "1",
        "Decode KV pressure (0-1): the KV utilization, unless a host/offload tier keeps it pinned "
        "without preemptions; then the KV held by running requests or the preemption/KV-wait evidence.",
        "autoscaling",
        ("basis",),
    ),
    _spec(
        "phaselens_decode_saturation_ratio",
        "1",
        "Decode saturation (0-1): the larger of KV utilization and running requests / batch cap "
        "(max_num_seqs); basis says which.",
        "autoscaling",
        ("basis",),
    ),
    # phases
    _spec(
        "phaselens_phase_prefill_time_share_ratio",
        "1",
        "Share of engine request time spent in prefill over the window: prefill / (prefill + decode).",
        "phase",
    ),
    _spec(
        "phaselens_phase_imbalance_ratio",
        "1",
        "Prefill load over decode load, each against its saturation point; above 1 prefill is the bottleneck.",
        "phase",
    ),
    _spec(
        "phaselens_phase_bottleneck",
        "1",
        "1 for the phase that is the bottleneck now, 0 for the other.",
        "phase",
        ("phase",),
    ),
    # kv cache
    _spec(
        "phaselens_kv_prefix_cache_hit_ratio",
        "1",
        "Prefix-cache hits over queries in the window (tokens, or blocks on old vLLM).",
        "kv",
    ),
    _spec("phaselens_kv_preemptions_per_second", "/s", "Request preemptions per second over the window.", "kv"),
    _spec(
        "phaselens_kv_evictions_per_second",
        "/s",
        "KV block evictions per second over the window "
        "(vLLM --kv-cache-metrics residency histograms, scaled by the sample rate).",
        "kv",
    ),
    _spec(
        "phaselens_kv_internal_fragmentation_ratio",
        "1",
        "Estimated share of allocated KV slots left empty in each sequence's last, partly filled block.",
        "kv",
    ),
    _spec(
        "phaselens_kv_headroom_tokens", "{token}", "KV-cache capacity not held by running requests, in tokens.", "kv"
    ),
    # latency and goodput
    _spec(
        "phaselens_ttft_seconds",
        "s",
        "Time to first token percentile over the window (label percentile, in percent).",
        "latency",
        (PERCENTILE_LABEL,),
    ),
    _spec(
        "phaselens_itl_seconds",
        "s",
        "Inter-token latency percentile over the window (label percentile, in percent).",
        "latency",
        (PERCENTILE_LABEL,),
    ),
    _spec(
        "phaselens_queue_wait_seconds",
        "s",
        "Engine queue wait percentile over the window (label percentile, in percent).",
        "latency",
        (PERCENTILE_LABEL,),
    ),
    _spec(
        "phaselens_e2e_latency_seconds",
        "s",
        "End-to-end request latency percentile over the window (label percentile, in percent).",
        "latency",
        (PERCENTILE_LABEL,),
    ),
    _spec(
        "phaselens_slo_attainment_ratio",
        "1",
        "Share of requests in the window meeting the SLO; joint has Frechet lower and upper bounds.",
        "goodput",
        ("slo", "bound"),
    ),
    _spec(
        "phaselens_goodput_requests_per_second",
        "{request}/s",
        "Completed requests per second meeting every SLO (Frechet bounds from histogram marginals).",
        "goodput",
        ("bound",),
    ),
    _spec(
        "phaselens_request_rate_per_second", "{request}/s", "Completed requests per second over the window.", "goodput"
    ),
    # nixl
    _spec(
        "phaselens_nixl_transfer_seconds",
        "s",
        "NIXL KV-transfer time percentile over the window (label percentile, in percent).",
        "nixl",
        (PERCENTILE_LABEL, "source"),
    ),
    _spec(
        "phaselens_nixl_transfer_bytes_per_second",
        "By/s",
        "NIXL KV bytes moved per second over the window.",
        "nixl",
        ("source",),
    ),
    _spec(
        "phaselens_nixl_transfer_failure_ratio",
        "1",
        "Failed NIXL transfers over all transfers in the window.",
        "nixl",
        ("source",),
    ),
    _spec(
        "phaselens_nixl_ttft_share_ratio",
        "1",
        "Share of the decode side's TTFT spent waiting for the KV transfer.",
        "nixl",
        ("source",),
    ),
    # disaggregation
    _spec(
        "phaselens_disaggregation_score",
        "1",
        "0-1: how well prefill/decode disaggregation is paying off (1 = clearly worth it).",
        "disaggregation",
    ),
    _spec(
        "phaselens_disaggregation_component_ratio",
        "1",
        "The components of the disaggregation score, each 0-1.",
        "disaggregation",
        ("component",),
    ),
    # queue intelligence
    _spec("phaselens_utilization_ratio", "1", "Estimated server utilization (rho) from arrivals and service.", "queue"),
    _spec(
        "phaselens_predicted_queue_wait_seconds",
        "s",
        "Predicted queue wait for a request arriving now, with its prediction interval.",
        "queue",
        ("model", "bound"),
    ),
    _spec(
        "phaselens_slo_breach_probability", "1", "Probability that a request arriving now misses the TTFT SLO.", "queue"
    ),
    _spec(
        "phaselens_prediction_calibration_error",
        "1",
        "Rolling expected calibration error of the SLO-breach probability.",
        "queue",
    ),
    _spec(
        "phaselens_prediction_brier_score",
        "1",
        "Rolling Brier score of the published SLO-breach probability (mean squared error per request).",
        "queue",
    ),
    # diagnosis
    _spec(
        "phaselens_diagnosis",
        "1",
        "1 for the current primary cause of the target or pool, 0 for every other cause (docs/diagnosis.md).",
        "diagnosis",
        ("cause",),
    ),
    # gpu (NVML; absent when no driver)
    _spec(
        "phaselens_gpu_utilization_ratio",
        "1",
        "NVML utilization.gpu: share of time any kernel ran (0-1); not SM occupancy, not a scaling signal.",
        "gpu",
        base=("gpu",),
    ),
    _spec(
        "phaselens_gpu_memory_used_ratio",
        "1",
        "GPU framebuffer memory used over total (engines pre-allocate).",
        "gpu",
        base=("gpu",),
    ),
    _spec("phaselens_gpu_power_watts", "W", "GPU power draw.", "gpu", base=("gpu",)),
    _spec("phaselens_gpu_temperature_celsius", "Cel", "GPU core temperature.", "gpu", base=("gpu",)),
    _spec(
        "phaselens_gpu_health_ratio",
        "1",
        "GPU health score 0-1 from thermal margin, clock throttling and uncorrected ECC errors.",
        "gpu",
        base=("gpu",),
    ),
    # self
    _spec(
        "phaselens_target_up",
        "1",
        "1 if the last scrape of the target succeeded and parsed, else 0.",
        "self",
        base=("target", "role"),
    ),
    _spec(
        "phaselens_scrape_duration_seconds",
        "s",
        "Duration of the last scrape of the target.",
        "self",
        base=("target", "role"),
    ),
    _spec(
        "phaselens_parse_errors_total",
        "{line}",
        "Malformed exposition lines skipped, since start.",
        "self",
        kind="counter",
        base=("target", "role"),
    ),
    _spec(
        "phaselens_tick_duration_seconds",
        "s",
        "CPU time of the last pipeline tick (parse, window, analyzers).",
        "self",
        base=(),
    ),
    _spec(
        "phaselens_signal_age_seconds",
        "s",
        "Seconds since the target's data behind the signals was last fresh.",
        "self",
        base=("target", "role"),
    ),
)

SPECS = tuple(replace(spec, **SIGNAL_DOCS.get(spec.name, {})) for spec in SPECS)

SPECS_BY_NAME: dict[str, SignalSpec] = {spec.name: spec for spec in SPECS}
