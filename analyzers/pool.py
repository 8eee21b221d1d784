"""Cross-target entry point: a disaggregated deployment's prefill pool against its decode pool.

Pool signals carry target="pool", role="pool", engine="all" and the model's `model_name`; they
exist only for a model served by at least one prefill target and one decode target. Pure: no
I/O, no clock, no logging.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from phaselens.analyzers.backlog import uncached_tokens_per_request
from phaselens.analyzers.disaggregation import DisaggregationInputs, disaggregation_score
from phaselens.analyzers.goodput import request_rate
from phaselens.analyzers.kv_cache import kv_utilization, prefix_hit_ratio
from phaselens.analyzers.kv_pressure import PINNED_AT, KvPressure, kv_pressure
from phaselens.analyzers.phase import (
    Moments,
    PhaseTimes,
    merge_times,
    phase_times,
    pool_phase_load,
    prefill_time_share,
)
from phaselens.analyzers.recommend import (
    Scope,
    decode_bottleneck,
    disaggregation_not_paying,
    prefill_bottleneck,
)
from phaselens.analyzers.target import SignalSink
from phaselens.analyzers.view import WindowView
from phaselens.analyzers.window import Group, TargetWindow
from phaselens.model import Recommendation, Signal, Target
from phaselens.parsers.engines import canonical as c
from phaselens.settings import Settings

POOL_TARGET = "pool"
POOL_ROLE = "pool"
POOL_ENGINE = "all"


@dataclass(frozen=True, slots=True)
class Member:
    """One (model_name, engine) group of one target in a pool."""

    view: WindowView
    group: Group


def _moments(members: list[Member], histogram: str) -> Moments:
    total = Moments()
    for m in members:
        delta = m.view.histogram_delta(histogram, m.group)
        if delta is not None:
            total = total + Moments(delta.sum, delta.count)
    return total


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _members_by_model(
    windows: Mapping[str, tuple[Target, TargetWindow]], horizon: float
) -> dict[str, dict[str, list[Member]]]:
    """model_name -> role -> members, in target-name order (deterministic output)."""
    out: dict[str, dict[str, list[Member]]] = {}
    for name in sorted(windows):
        target, window = windows[name]
        if target.role not in ("prefill", "decode"):
            continue
        view = WindowView(window, horizon)
        for group in view.groups():
            out.setdefault(group[0], {}).setdefault(target.role, []).append(Member(view, group))
    return out


def _uncached_prompt_tokens(prefill: list[Member]) -> float | None:
    values = []
    for m in prefill:
        hit, _, _ = prefix_hit_ratio(m.view, m.group)
        tokens, _ = uncached_tokens_per_request(m.view, m.group, hit)
        if tokens is not None:
            values.append(tokens)
    return _mean(values)


def _kv_pressure(member: Member, settings: Settings) -> KvPressure | None:
    utilization = kv_utilization(member.view, member.group)
    return kv_pressure(member.view, member.group, utilization, PINNED_AT, settings.kv_offload_tier)


def _analyze_model(
    model: str, prefill: list[Member], decode: list[Member], settings: Settings, sink: SignalSink
) -> list[Recommendation]:
    base = {"target": POOL_TARGET, "role": POOL_ROLE, "model_name": model, "engine": POOL_ENGINE}
    prefill_times = merge_times(t for m in prefill if (t := phase_times(m.view, m.group)) is not None)
    decode_times = merge_times(t for m in decode if (t := phase_times(m.view, m.group)) is not None)
    # The KV signal that means pressure: the utilization unless a host tier pins it (kv_pressure.py).
    kv_values = [p.value for m in decode if (p := _kv_pressure(m, settings)) is not None]
    decode_kv = _mean(kv_values)
    preempt = [p for m in decode if (p := m.view.rate(c.PREEMPTIONS, m.group)) is not None]
    decode_preemptions = sum(preempt) if preempt else None

    load = None
    if prefill_times is not None and decode_times is not None:
        sink.add("phaselens_phase_prefill_time_share_ratio", base,
                 prefill_time_share(prefill_times.prefill, decode_times.decode))
        load = pool_phase_load(prefill_times, decode_times, decode_kv, decode_preemptions,
                               settings.slo_ttft_seconds, settings.slo_itl_seconds)
        sink.phase(base, load)

    transfer = _moments(decode, c.NIXL_XFER_SECONDS)
    if transfer.count <= 0:
        transfer = _moments(prefill, c.NIXL_XFER_SECONDS)
    inputs = DisaggregationInputs(
        prefill_concurrency_per_instance=_per_instance_concurrency(prefill_times, len(prefill)),
        uncached_prompt_tokens=_uncached_prompt_tokens(prefill),
        output_tokens=_moments(decode, c.REQUEST_GENERATION_TOKENS).mean,
        transfer_seconds_total=transfer.sum if transfer.count > 0 else None,
        decode_ttft_seconds_total=decode_times.ttft.sum if decode_times is not None else None,
        decode_kv_utilization=decode_kv,
        kv_knee=settings.thresholds.utilization_knee,
    )
    score = disaggregation_score(inputs)
    if score is not None:
        sink.add("phaselens_disaggregation_score", base, score.score)
        for component, value in score.components.items():
            sink.add("phaselens_disaggregation_component_ratio", base, value, component=component)

    finished = [r.finished_in_window for m in decode if (r := request_rate(m.view, m.group)) is not None]
    requests = sum(finished)
    scope = Scope(target=POOL_TARGET, role=POOL_ROLE, model_name=model, engine=POOL_ENGINE,
                  span_seconds=max(m.view.span() for m in (*prefill, *decode)),
                  horizon_seconds=settings.window_seconds)
    t = settings.thresholds
    found = [
        prefill_bottleneck(load, scope, requests, t, pool=True),
        decode_bottleneck(load, scope, requests, t, pool=True),
        disaggregation_not_paying(score, scope, requests, t),
    ]
    return [r for r in found if r is not None]


def _per_instance_concurrency(times: PhaseTimes | None, instances: int) -> float | None:
    if times is None or instances <= 0:
        return None
    concurrency = times.prefill_concurrency
    return concurrency / instances if concurrency is not None else None


def analyze_pool(
    windows: Mapping[str, tuple[Target, TargetWindow]], settings: Settings
) -> tuple[list[Signal], list[Recommendation]]:
    """Pool signals and recommendations for every model with both a prefill and a decode target."""
    sink = SignalSink()
    recommendations: list[Recommendation] = []
    for model, roles in _members_by_model(windows, settings.window_seconds).items():
        prefill, decode = roles.get("prefill", []), roles.get("decode", [])
        if prefill and decode:
            recommendations.extend(_analyze_model(model, prefill, decode, settings, sink))
    return sink.signals, recommendations
