"""Per-target entry point: one target's window -> signals and recommendations.

Pure: no I/O, no clock, no logging. Signals are computed per (model_name, engine) group; a value
that cannot be computed is not emitted, and NaN or infinite values never are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from phaselens.analyzers.backlog import PrefillBacklog, prefill_backlog
from phaselens.analyzers.goodput import Attainment, GoodputSummary, goodput_summary, request_rate
from phaselens.analyzers.kv_cache import KvCacheHealth, kv_cache_health
from phaselens.analyzers.kv_pressure import PINNED_AT, KvPressure, kv_pressure
from phaselens.analyzers.latency import LatencyQuantiles, latency_summary
from phaselens.analyzers.phase import (
    PhaseLoad,
    PhaseTimes,
    aggregated_phase_load,
    phase_times,
    prefill_path_load,
    prefill_time_share,
)
from phaselens.analyzers.prefill_saturation import PrefillSaturation, engine_prefill_saturation
from phaselens.analyzers.recommend import Scope, TargetFindings, recommend_for_target
from phaselens.analyzers.saturation import DecodeSaturation, decode_saturation
from phaselens.analyzers.view import WindowView
from phaselens.analyzers.window import Group, TargetWindow
from phaselens.exporters.specs import percentile_label
from phaselens.model import Recommendation, Signal, Target, make_labels
from phaselens.parsers.engines import canonical as c
from phaselens.settings import Settings


class SignalSink:
    """Collects signals, dropping missing and non-finite values (never a made-up number)."""

    def __init__(self) -> None:
        self.signals: list[Signal] = []

    def add(self, name: str, base: Mapping[str, str], value: float | None, **extra: str) -> None:
        if value is None or not math.isfinite(value):
            return
        self.signals.append(Signal(name, make_labels({**base, **extra}), float(value)))

    def attainment(self, slo: str, base: Mapping[str, str], value: Attainment | None) -> None:
        if value is None:
            return
        self.add("phaselens_slo_attainment_ratio", base, value.lower, slo=slo, bound="lower")
        self.add("phaselens_slo_attainment_ratio", base, value.upper, slo=slo, bound="upper")

    def phase(self, base: Mapping[str, str], load: PhaseLoad | None) -> None:
        if load is None:
            return
        self.add("phaselens_phase_imbalance_ratio", base, load.imbalance)
        for phase in ("prefill", "decode"):
            flag = 1.0 if load.bottleneck == phase else 0.0
            self.add("phaselens_phase_bottleneck", base, flag, phase=phase)


@dataclass(frozen=True, slots=True)
class GroupMeasurements:
    """Everything measured for one (model_name, engine) group of one target."""

    group: Group
    kv: KvCacheHealth
    pressure: KvPressure | None
    saturation: DecodeSaturation | None
    prefill_saturation: PrefillSaturation | None
    """only for a prefill target (role "prefill")."""
    latency: Mapping[str, LatencyQuantiles]
    goodput: GoodputSummary
    backlog: PrefillBacklog
    times: PhaseTimes | None
    phase: PhaseLoad | None
    request_rate: float | None
    requests_in_window: float
    prompt_tokens_per_second: float | None
    idle: bool


def measure_group(window: WindowView, group: Group, role: str, settings: Settings) -> GroupMeasurements:
    kv = kv_cache_health(window, group)
    pressure = kv_pressure(window, group, kv.utilization, PINNED_AT, settings.kv_offload_tier)
    times = phase_times(window, group)
    load = None
    if role == "aggregated" and times is not None:
        # Decode saturation from the KV signal that means pressure (utilization unless a host tier pins it).
        kv_load = pressure.value if pressure is not None else kv.utilization
        load = aggregated_phase_load(times, kv_load, kv.preemptions_per_second,
                                     settings.slo_ttft_seconds, settings.slo_itl_seconds)
    rate = request_rate(window, group)
    # A Dynamo decode worker's TTFT is its first token after the KV arrived, not the user's: no
    # TTFT attainment (nor a joint one, nor goodput) from it; the frontend target has the user's.
    slo_ttft = None if dynamo_decode(window, role) else settings.slo_ttft_seconds
    goodput = goodput_summary(window, group, slo_ttft, settings.slo_itl_seconds)
    if slo_ttft is None and settings.slo_ttft_seconds is not None:
        goodput = replace(goodput, joint=None, goodput_lower_per_second=None, goodput_upper_per_second=None)
    return GroupMeasurements(
        group=group,
        kv=kv,
        pressure=pressure,
        saturation=decode_saturation(window, group, kv.utilization, settings),
        prefill_saturation=engine_prefill_saturation(window, group) if role == "prefill" else None,
        latency=latency_summary(window, group),
        goodput=goodput,
        backlog=prefill_backlog(window, group, kv.hit_ratio),
        times=times,
        phase=load,
        request_rate=rate.finished_per_second if rate is not None else None,
        requests_in_window=max(goodput.requests_in_window, rate.finished_in_window if rate else 0.0),
        prompt_tokens_per_second=window.rate(c.PROMPT_TOKENS, group),
        idle=is_idle(window, group),
    )


def dynamo_decode(window: WindowView, role: str) -> bool:
    latest = window.latest
    return role == "decode" and latest is not None and latest.engine_kind == "dynamo"


def is_idle(window: WindowView, group: Group) -> bool:
    """Nothing running or waiting now and no token generated in the last scrape interval.

    Window rates still carry a burst for a whole horizon after it ends; recommendations are about
    what to change now, so they are withheld while the engine is idle.
    """
    for name in (c.REQUESTS_RUNNING, c.REQUESTS_WAITING):
        value = window.gauge(name, group)
        if value is not None and value > 0:
            return False
    tokens = window.gauge_series(c.GENERATION_TOKENS, group)
    generated_recently = len(tokens) >= 2 and tokens[-1][1] != tokens[-2][1]
    return not generated_recently


def base_labels(target: Target, group: Group) -> dict[str, str]:
    return {"target": target.name, "role": target.role, "model_name": group[0], "engine": group[1]}


def group_signals(m: GroupMeasurements, base: Mapping[str, str], sink: SignalSink) -> None:
    sink.add("phaselens_prefill_queue_depth", base, m.backlog.queue_depth)
    sink.add("phaselens_prefill_backlog_seconds", base, m.backlog.backlog_seconds)
    if m.prefill_saturation is not None:
        sink.add("phaselens_prefill_saturation_ratio", base, m.prefill_saturation.rho,
                 basis=m.prefill_saturation.basis)
    sink.add("phaselens_decode_kv_utilization_ratio", base, m.kv.utilization)
    if m.pressure is not None:
        sink.add("phaselens_decode_kv_pressure_ratio", base, m.pressure.value, basis=m.pressure.basis)
    if m.saturation is not None:
        sink.add("phaselens_decode_saturation_ratio", base, m.saturation.value, basis=m.saturation.basis)
    if m.times is not None:
        sink.add("phaselens_phase_prefill_time_share_ratio", base,
                 prefill_time_share(m.times.prefill, m.times.decode))
    sink.phase(base, m.phase)
    sink.add("phaselens_kv_prefix_cache_hit_ratio", base, m.kv.hit_ratio)
    sink.add("phaselens_kv_preemptions_per_second", base, m.kv.preemptions_per_second)
    sink.add("phaselens_kv_evictions_per_second", base, m.kv.evictions_per_second)
    sink.add("phaselens_kv_internal_fragmentation_ratio", base, m.kv.fragmentation_ratio)
    sink.add("phaselens_kv_headroom_tokens", base, m.kv.headroom_tokens)
    for name, quantiles in m.latency.items():
        for q, value in quantiles.values.items():
            sink.add(name, base, value, percentile=percentile_label(q))
    sink.attainment("ttft", base, m.goodput.ttft)
    sink.attainment("itl", base, m.goodput.itl)
    sink.attainment("joint", base, m.goodput.joint)
    sink.add("phaselens_goodput_requests_per_second", base, m.goodput.goodput_lower_per_second, bound="lower")
    sink.add("phaselens_goodput_requests_per_second", base, m.goodput.goodput_upper_per_second, bound="upper")
    sink.add("phaselens_request_rate_per_second", base, m.request_rate)


def findings(m: GroupMeasurements, target: Target, window: WindowView, settings: Settings) -> TargetFindings:
    scope = Scope(target=target.name, role=target.role, model_name=m.group[0], engine=m.group[1],
                  span_seconds=window.span(), horizon_seconds=settings.window_seconds)
    load = m.phase.prefill_load if m.phase is not None else \
        prefill_path_load(m.times, target.role, settings.slo_ttft_seconds)
    return TargetFindings(
        scope=scope, kv=m.kv, phase=m.phase, prefill_load=load, goodput=m.goodput, backlog=m.backlog,
        requests_in_window=m.requests_in_window, prompt_tokens_per_second=m.prompt_tokens_per_second,
        uncached_prompt_tokens=m.backlog.uncached_tokens_per_request,
    )


def analyze_target(
    window: TargetWindow, target: Target, settings: Settings
) -> tuple[list[Signal], list[Recommendation]]:
    """Signals and recommendations for one target over `settings.window_seconds`."""
    sink = SignalSink()
    recommendations: list[Recommendation] = []
    view = WindowView(window, settings.window_seconds)
    for group in view.groups():
        measured = measure_group(view, group, target.role, settings)
        group_signals(measured, base_labels(target, group), sink)
        recommendations.extend(recommend_for_target(findings(measured, target, view, settings), settings,
                                                    idle=measured.idle))
    return sink.signals, recommendations
