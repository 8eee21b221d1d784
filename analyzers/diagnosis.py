"""Diagnosis: one primary cause per target and per pool at each tick, the rule findings attached
to it, one remedy per cause and role, and the remedy's expected effect.

Taxonomy, rules, remedies and formulas are documented in docs/diagnosis.md. The stage runs after
the rules and the calibration gate:

1. `measure` reads one target's window (pure) into `Measured`;
2. `raw_cause` classifies it (pure): the first rule that holds, in the order of `CAUSES`;
3. `Hysteresis` turns raw causes into the current cause: a new cause must hold for
   `diagnosis_enter_ticks` ticks in a row to replace the current one, and the current one stays
   until another (or none) held for `diagnosis_exit_ticks` ticks, so the verdict does not flap;
4. `reconcile` gives every recommendation of the tick its target's `cause` and a `remedy`, drops a
   finding whose advice disagrees with the cause or the role (it stays listed in the diagnosis
   line's evidence), and drops a prediction whose event is already measured;
5. one `DIAGNOSIS` line per target with a cause: what binds, the remedy, its expected effect.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from phaselens.analyzers.kv_cache import clamp01, info_number, kv_cache_health, pressure_peak
from phaselens.analyzers.phase import DEFAULT_ITL_BUDGET_SECONDS, DEFAULT_TTFT_BUDGET_SECONDS, phase_times
from phaselens.analyzers.view import WindowView
from phaselens.analyzers.window import Group, TargetWindow
from phaselens.model import Recommendation, Signal, Target, make_labels
from phaselens.parsers.engines import canonical as c
from phaselens.settings import Settings, Thresholds

CAUSES: tuple[str, ...] = (
    "KV_TRANSFER",
    "KV_CAPACITY",
    "BATCH_SEAT_LIMIT",
    "PREFILL_COMPUTE",
    "DECODE_COMPUTE",
    "FRONTEND_OVERHEAD",
    "DEMAND_ABOVE_CAPACITY",
)
"""Every value `cause` and `phaselens_diagnosis{cause}` can take; also the classification order."""

REMEDIES: tuple[str, ...] = (
    "add_prefill_capacity",
    "add_decode_capacity",
    "add_replicas",
    "raise_kv_capacity",
    "raise_max_num_seqs",
    "lower_max_num_seqs",
    "raise_max_num_batched_tokens",
    "improve_prefix_reuse",
    "fix_kv_transfer",
    "serve_aggregated",
    "scale_frontend",
    "scale_on_queue_signals",
    "shed_load",
)
"""Every value `remedy` can take (docs/diagnosis.md says what each means)."""

POOL_SPECIFIC: frozenset[str] = frozenset({"add_prefill_capacity", "add_decode_capacity", "serve_aggregated"})

# First remedy per cause and role ("pool" is a P/D deployment's prefill pool against its decode pool).
REMEDY_BY_ROLE: Mapping[str, Mapping[str, str]] = {
    "KV_TRANSFER": {"aggregated": "fix_kv_transfer", "prefill": "fix_kv_transfer", "decode": "fix_kv_transfer",
                    "pool": "fix_kv_transfer"},
    "KV_CAPACITY": {"aggregated": "add_replicas", "prefill": "raise_kv_capacity", "decode": "add_decode_capacity",
                    "pool": "add_decode_capacity"},
    "BATCH_SEAT_LIMIT": {"aggregated": "raise_max_num_seqs", "prefill": "raise_max_num_seqs",
                         "decode": "raise_max_num_seqs", "pool": "raise_max_num_seqs"},
    "PREFILL_COMPUTE": {"aggregated": "add_replicas", "prefill": "add_prefill_capacity",
                        "decode": "add_decode_capacity", "pool": "add_prefill_capacity"},
    "DECODE_COMPUTE": {"aggregated": "add_replicas", "prefill": "add_prefill_capacity",
                       "decode": "add_decode_capacity", "pool": "add_decode_capacity"},
    "FRONTEND_OVERHEAD": {"aggregated": "scale_frontend", "prefill": "scale_frontend", "decode": "scale_frontend",
                          "pool": "scale_frontend"},
    "DEMAND_ABOVE_CAPACITY": {"aggregated": "add_replicas", "prefill": "add_prefill_capacity",
                              "decode": "add_decode_capacity", "pool": "add_replicas"},
}

OPPORTUNITIES: Mapping[str, str] = {
    "LOW_PREFIX_REUSE": "improve_prefix_reuse",
    "ENABLE_PREFIX_CACHING": "improve_prefix_reuse",
    "DISAGGREGATION_NOT_PAYING": "serve_aggregated",
    "GPU_UTIL_IS_NOT_A_SCALING_SIGNAL": "scale_on_queue_signals",
}
"""Findings that are chances to improve, never causes: printed under whatever cause holds."""

ANY = frozenset(CAUSES)
COMPATIBLE: Mapping[str, frozenset[str]] = {
    # finding code -> causes whose advice it agrees with (its own message's advice)
    "KV_CACHE_PRESSURE": frozenset({"KV_CAPACITY"}),
    "KV_PRESSURE_IMMINENT": frozenset({"KV_CAPACITY"}),
    "DECODE_BOTTLENECK": frozenset({"KV_CAPACITY", "DECODE_COMPUTE"}),
    "PREFILL_BOTTLENECK": frozenset({"PREFILL_COMPUTE"}),
    "NIXL_TRANSFER_SLOW": frozenset({"KV_TRANSFER"}),
    "NIXL_TRANSFER_FAILURES": frozenset({"KV_TRANSFER"}),
    "CASCADING_QUEUE_DELAY": frozenset({"KV_CAPACITY", "PREFILL_COMPUTE", "DECODE_COMPUTE", "DEMAND_ABOVE_CAPACITY"}),
    "SLO_AT_RISK": ANY,
    "SLO_BREACH_PREDICTED": ANY,
    "UTILIZATION_PAST_KNEE": ANY,
    "ARRIVAL_BURST": ANY,
    "PEAK_HOUR_CONTENTION": ANY,
}
PREDICTIONS: frozenset[str] = frozenset({"KV_PRESSURE_IMMINENT", "SLO_BREACH_PREDICTED", "PEAK_HOUR_CONTENTION"})
"""Findings about what will happen: kept before the cause settles, dropped once measured."""
DIAGNOSIS_CODE = "DIAGNOSIS"
POOL = "pool"
SIGNAL = "phaselens_diagnosis"

_HUMAN_CAUSE = {
    "KV_TRANSFER": "KV transfer between prefill and decode",
    "KV_CAPACITY": "KV-cache capacity",
    "BATCH_SEAT_LIMIT": "the batch-seat limit (max_num_seqs)",
    "PREFILL_COMPUTE": "prefill compute",
    "DECODE_COMPUTE": "decode compute",
    "FRONTEND_OVERHEAD": "the frontend",
    "DEMAND_ABOVE_CAPACITY": "demand above capacity (no single resource binds)",
}
_HUMAN_REMEDY = {
    "add_prefill_capacity": "add a prefill worker",
    "add_decode_capacity": "add a decode worker",
    "add_replicas": "add a replica",
    "raise_kv_capacity": "give the KV cache more memory (gpu_memory_utilization, fp8 kv_cache_dtype)",
    "raise_max_num_seqs": "raise max_num_seqs",
    "lower_max_num_seqs": "lower max_num_seqs",
    "raise_max_num_batched_tokens": "raise max_num_batched_tokens",
    "improve_prefix_reuse": "improve prefix reuse",
    "fix_kv_transfer": "fix the KV transfer path (faster fabric, NIXL backend, fewer failures)",
    "serve_aggregated": "serve aggregated",
    "scale_frontend": "add frontend replicas",
    "scale_on_queue_signals": "scale on queue signals",
    "shed_load": "shed load",
}


def human_cause(cause: str) -> str:
    return _HUMAN_CAUSE.get(cause, cause)


def human_remedy(remedy: str) -> str:
    return _HUMAN_REMEDY.get(remedy, remedy)


# ------------------------------------------------------------------------------------------ measuring


@dataclass(frozen=True, slots=True)
class Measured:
    """What one target's window says, for classification (None: not exported / not computable)."""

    target: str
    role: str
    model_name: str
    engine: str
    busy: bool
    span_seconds: float
    kv_utilization: float | None = None
    kv_utilization_recent_max: float | None = None
    kv_exhausted_recently: bool = False
    """The engine preempted in the recent span: it ran out of blocks (see KvCacheHealth.exhausted)."""
    preemptions_per_second: float | None = None
    waiting_mean: float | None = None
    waiting_share: float | None = None
    """Share of recent samples with at least one request waiting."""
    running_mean: float | None = None
    cap: float | None = None
    cap_source: str = ""
    """"config" (max_num_seqs exported by the engine or its frontend) or "plateau" (inferred)."""
    pinned_share: float | None = None
    """Of the recent scrapes with a request waiting, the share with running at the cap."""
    queue_mean: float | None = None
    prefill_mean: float | None = None
    ttft_mean: float | None = None
    itl_mean: float | None = None
    requests_finished: float = 0.0
    """Requests that got their first token in the window (TTFT histogram count)."""
    transfer_ttft_share: float | None = None
    transfer_failure_ratio: float | None = None
    ttft_budget: float = DEFAULT_TTFT_BUDGET_SECONDS
    itl_budget: float = DEFAULT_ITL_BUDGET_SECONDS
    replicas: int = 1
    """Targets of the same role serving the same model (the n in the n -> n+1 formulas)."""
    frontend: bool = False
    """A Dynamo frontend: request histograms and in-flight count, no engine running count."""
    first_response_mean: float | None = None
    """Dynamo work handler's mean time to first response (a P/D prefill worker's prefill)."""

    @property
    def kv_pressure_peak(self) -> float | None:
        """Recent KV utilization as the pressure rules judge it: 1 when the engine preempted."""
        return pressure_peak(self.kv_utilization_recent_max, self.kv_exhausted_recently)


def _recent(series: Sequence[tuple[float, float]], now: float, seconds: float) -> list[float]:
    return [v for t, v in series if t >= now - seconds]


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _aligned(a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Pairs of values of two gauge series at the same scrape times."""
    other = dict(b)
    return [(v, other[t]) for t, v in a if t in other]


def batch_cap(view: WindowView, group: Group, running: Sequence[tuple[float, float]],
              waiting: Sequence[tuple[float, float]], t: Thresholds,
              shared: float | None = None) -> tuple[float | None, str]:
    """The engine's batch cap: exported config first, else a plateau of the running count.

    `shared`: the one max_num_seqs another target of the deployment exports (a Dynamo frontend's
    model card). Plateau: the running count's window maximum (at least 2), when it held at that maximum in at
    least `diagnosis_plateau_share` of the samples where requests waited (a cap binds only then),
    over at least `diagnosis_plateau_min_samples` such samples.
    """
    configured = info_number(view, group, c.INFO_MAX_NUM_SEQS)
    if configured is not None:
        return configured, "config"
    if shared is not None:
        return shared, "config_frontend"
    pairs = _aligned(running, waiting)
    queued = [r for r, w in pairs if w >= 1]
    if len(queued) < t.diagnosis_plateau_min_samples:
        return None, ""
    top = max(r for r, _ in pairs)
    if top < 2:
        return None, ""  # one running request with a queue is a long prefill far more often than a cap of 1
    at_top = sum(1 for r in queued if r >= top)
    return (top, "plateau") if at_top / len(queued) >= t.diagnosis_plateau_share else (None, "")


def measure(
    window: TargetWindow, target: Target, settings: Settings, signals: Sequence[Signal] = (),
    shared_cap: float | None = None,
) -> Measured | None:
    """The busiest (model_name, engine) group of one target; None when it has no engine series."""
    t = settings.thresholds
    view = WindowView(window, settings.window_seconds)
    latest = view.latest
    if latest is None:
        return None
    now = latest.time
    best: Measured | None = None
    for group in view.groups():
        running = view.gauge_series(c.REQUESTS_RUNNING, group)
        waiting = view.gauge_series(c.REQUESTS_WAITING, group)
        recent_r = _recent(running, now, t.diagnosis_recent_seconds)
        recent_w = _recent(waiting, now, t.diagnosis_recent_seconds)
        kv = kv_cache_health(view, group)
        usage = _recent(view.gauge_series(c.KV_CACHE_USAGE, group), now, t.diagnosis_recent_seconds)
        times = phase_times(view, group)
        ttft_budget = settings.slo_ttft_seconds or DEFAULT_TTFT_BUDGET_SECONDS
        itl_budget = settings.slo_itl_seconds or DEFAULT_ITL_BUDGET_SECONDS
        cap, source = batch_cap(view, group, running, waiting, t, shared_cap)
        recent_pairs = _aligned(_recent_series(running, now, t), _recent_series(waiting, now, t))
        pinned = None
        queued_running = [r for r, w in recent_pairs if w >= 1]
        if cap is not None and queued_running:
            pinned = sum(1 for r in queued_running if r >= cap) / len(queued_running)
        ttft = view.histogram_delta(c.TTFT_SECONDS, group)
        itl = view.histogram_delta(c.ITL_SECONDS, group)
        first = view.histogram_delta(c.WORKER_FIRST_RESPONSE_SECONDS, group)
        busy = any(v > 0 for v in recent_r) or any(v > 0 for v in recent_w)
        share, failures = _transfer(signals, target.name, group)
        m = Measured(
            target=target.name, role=target.role, model_name=group[0], engine=group[1], busy=busy,
            span_seconds=view.span(),
            kv_utilization=kv.utilization,
            kv_utilization_recent_max=max(usage) if usage else kv.utilization,
            kv_exhausted_recently=(view.window.increase(c.PREEMPTIONS, group, None, t.diagnosis_recent_seconds)
                                   or 0.0) > 0,
            preemptions_per_second=kv.preemptions_per_second,
            waiting_mean=_mean(recent_w),
            waiting_share=(sum(1 for w in recent_w if w >= 1) / len(recent_w)) if recent_w else None,
            running_mean=_mean(recent_r),
            cap=cap, cap_source=source, pinned_share=pinned,
            queue_mean=times.queue.mean if times is not None else None,
            prefill_mean=times.prefill.mean if times is not None else None,
            ttft_mean=(ttft.sum / ttft.count) if ttft is not None and ttft.count > 0 else None,
            itl_mean=(itl.sum / itl.count) if itl is not None and itl.count > 0 else None,
            requests_finished=ttft.count if ttft is not None else 0.0,
            transfer_ttft_share=share, transfer_failure_ratio=failures,
            ttft_budget=ttft_budget, itl_budget=itl_budget,
            frontend=not view.has(c.REQUESTS_RUNNING, group) and view.has(c.INFLIGHT_REQUESTS, group)
            and view.has(c.TTFT_SECONDS, group) and not view.has(c.WORKER_FIRST_RESPONSE_SECONDS, group),
            first_response_mean=(first.sum / first.count) if first is not None and first.count > 0 else None,
        )
        if best is None or (m.running_mean or 0.0) > (best.running_mean or 0.0):
            best = m
    return best


def _number(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def _recent_series(series: Sequence[tuple[float, float]], now: float, t: Thresholds) -> list[tuple[float, float]]:
    return [(ts, v) for ts, v in series if ts >= now - t.diagnosis_recent_seconds]


def _transfer(signals: Sequence[Signal], target: str, group: Group) -> tuple[float | None, float | None]:
    share = failures = None
    for s in signals:
        labels = dict(s.labels)
        if labels.get("target") != target or labels.get("model_name", group[0]) != group[0]:
            continue
        if s.name == "phaselens_nixl_ttft_share_ratio":
            share = s.value if share is None else max(share, s.value)
        elif s.name == "phaselens_nixl_transfer_failure_ratio":
            failures = s.value if failures is None else max(failures, s.value)
    return share, failures


# -------------------------------------------------------------------------------------- classifying


@dataclass(frozen=True, slots=True)
class Verdict:
    """A cause with the strength (0-1) of its evidence and the numbers it rests on."""

    cause: str
    strength: float
    evidence: Mapping[str, float | str] = field(default_factory=dict)


def _r(value: float) -> float:
    return round(value, 4)


def raw_cause(m: Measured, t: Thresholds) -> Verdict | None:
    """The first cause whose rule holds (order of CAUSES); None when nothing binds."""
    if not m.busy:
        return None
    u = m.kv_pressure_peak
    preempting = m.preemptions_per_second is not None and m.preemptions_per_second > 0
    queued = m.waiting_share is not None and m.waiting_share >= t.diagnosis_waiting_share
    kv_full = u is not None and u >= t.kv_pressure_utilization
    if m.role in ("decode", "aggregated"):
        if m.transfer_failure_ratio is not None and m.transfer_failure_ratio >= t.nixl_failure_ratio:
            return Verdict("KV_TRANSFER", 1.0, {"transfer_failure_ratio": _r(m.transfer_failure_ratio)})
        if m.transfer_ttft_share is not None and m.transfer_ttft_share >= t.diagnosis_transfer_share:
            return Verdict("KV_TRANSFER", clamp01(m.transfer_ttft_share),
                           {"transfer_ttft_share": _r(m.transfer_ttft_share)})
    if m.role == "decode" and m.transfer_ttft_share is None and m.ttft_mean is not None \
            and not queued and not kv_full and m.ttft_mean >= m.ttft_budget:
        # A P/D decode worker prefills nothing itself: its own time to first token with an empty
        # queue and room in the KV cache is the wait for the prompt's KV (no NIXL figures needed).
        excess = clamp01(m.ttft_mean / m.ttft_budget - 1.0)
        return Verdict("KV_TRANSFER", excess, {"decode_ttft_seconds": _r(m.ttft_mean),
                                               "transfer_source": "decode_ttft"})
    if kv_full and (preempting or queued):
        assert u is not None
        p_excess = clamp01((m.preemptions_per_second or 0.0) / max(t.kv_pressure_clear_preemptions_per_second, 1e-9))
        excess = 0.5 * clamp01((u - t.kv_pressure_utilization) / max(1e-9, 1 - t.kv_pressure_utilization)) \
            + 0.5 * max(p_excess, m.waiting_share or 0.0)
        evidence: dict[str, float | str] = {"kv_utilization_peak": _r(u)}
        sampled = m.kv_utilization_recent_max
        if sampled is not None and sampled < u:
            evidence["kv_utilization_sampled_peak"] = _r(sampled)
        if m.preemptions_per_second is not None:
            evidence["preemptions_per_second"] = _r(m.preemptions_per_second)
        if m.waiting_mean is not None:
            evidence["waiting_mean"] = _r(m.waiting_mean)
        return Verdict("KV_CAPACITY", excess, evidence)
    if queued and m.cap is not None and m.pinned_share is not None \
            and m.pinned_share >= t.diagnosis_pinned_share and not kv_full:
        evidence = {"max_num_seqs": m.cap, "cap_source": m.cap_source, "pinned_share": _r(m.pinned_share)}
        if u is not None:
            evidence["kv_utilization_peak"] = _r(u)
        if m.waiting_mean is not None:
            evidence["waiting_mean"] = _r(m.waiting_mean)
        return Verdict("BATCH_SEAT_LIMIT", clamp01(m.pinned_share), evidence)
    if m.role in ("aggregated", "prefill") and m.prefill_mean is not None:
        load = (m.prefill_mean + (m.queue_mean or 0.0)) / m.ttft_budget
        if m.prefill_mean / m.ttft_budget >= t.diagnosis_prefill_share and load >= 1.0:
            return Verdict("PREFILL_COMPUTE", clamp01(load - 1.0 + m.prefill_mean / m.ttft_budget),
                           {"prefill_mean_seconds": _r(m.prefill_mean), "prefill_load": _r(load),
                            "prefill_source": "prefill_histogram"})
    seats_free = m.pinned_share is None or m.pinned_share <= 1.0 - t.diagnosis_pinned_share
    if m.role in ("aggregated", "prefill") and m.prefill_mean is None and queued and seats_free \
            and (m.itl_mean is None or m.itl_mean < m.itl_budget):
        # No prefill-time histogram (Dynamo's mocker, some engines): requests keep waiting although
        # seats and KV have room and decode keeps its budget, so the per-step token budget goes to
        # prefill (a scheduler admits a waiting request whenever a seat, KV and tokens are free).
        evidence = {"waiting_mean": _r(m.waiting_mean or 0.0), "prefill_source": "queue_with_free_seats_and_kv"}
        if m.ttft_mean is not None:
            evidence["ttft_mean_seconds"] = _r(m.ttft_mean)
        return Verdict("PREFILL_COMPUTE", clamp01(m.waiting_share or 0.0), evidence)
    if m.role in ("aggregated", "decode") and m.itl_mean is not None and m.itl_mean >= m.itl_budget:
        return Verdict("DECODE_COMPUTE", clamp01(m.itl_mean / m.itl_budget - 1.0),
                       {"itl_mean_seconds": _r(m.itl_mean), "itl_budget_seconds": m.itl_budget})
    if queued:  # a queue that no single resource explains (window latency alone lags: not enough)
        evidence = {}
        if m.waiting_mean is not None:
            evidence["waiting_mean"] = _r(m.waiting_mean)
        if m.ttft_mean is not None:
            evidence["ttft_mean_seconds"] = _r(m.ttft_mean)
        return Verdict("DEMAND_ABOVE_CAPACITY", clamp01(m.waiting_share or 0.5), evidence)
    return None


def frontend_verdict(frontend: Measured, engines: Sequence[Measured], t: Thresholds) -> Verdict | None:
    """A scraped frontend whose TTFT is far above the engines' behind it."""
    inner = [m.ttft_mean for m in engines if m.ttft_mean is not None and m.role != "prefill"]
    if frontend.ttft_mean is None or not inner:
        return None
    engine_ttft = max(inner)
    gap = frontend.ttft_mean - engine_ttft
    if gap < t.diagnosis_frontend_gap_share * frontend.ttft_budget or frontend.ttft_mean < 2.0 * engine_ttft:
        return None
    return Verdict("FRONTEND_OVERHEAD", clamp01(gap / frontend.ttft_budget),
                   {"frontend_ttft_seconds": _r(frontend.ttft_mean), "engine_ttft_seconds": _r(engine_ttft)})


def frontend_transfer(frontend: Measured, members: Sequence[Measured], t: Thresholds) -> Verdict | None:
    """P/D behind a scraped frontend: the part of the user's TTFT that neither engine spends.

    transfer estimate = frontend TTFT - prefill side (its TTFT or work-handler first response)
    - decode side's own TTFT; KV_TRANSFER when it is at least `diagnosis_transfer_share` of the
    frontend TTFT. Needs the prefill side's time: without it the remainder could be prefill.
    """
    if frontend.ttft_mean is None or frontend.ttft_mean <= 0 or frontend.requests_finished < 1:
        return None
    prefill = [m.prefill_mean if m.prefill_mean is not None else
               m.ttft_mean if m.ttft_mean is not None else m.first_response_mean
               for m in members if m.role == "prefill"]
    decode = [m.ttft_mean for m in members if m.role == "decode" and m.ttft_mean is not None]
    known = [p for p in prefill if p is not None]
    if not known or not decode:
        return None
    remainder = frontend.ttft_mean - max(known) - max(decode)
    share = remainder / frontend.ttft_mean
    if share < t.diagnosis_transfer_share or frontend.ttft_mean < frontend.ttft_budget:
        return None
    return Verdict("KV_TRANSFER", clamp01(share), {
        "transfer_ttft_share": _r(share), "transfer_source": "frontend_minus_engines",
        "frontend_ttft_seconds": _r(frontend.ttft_mean), "prefill_seconds": _r(max(known)),
        "decode_ttft_seconds": _r(max(decode)),
    })


def pool_verdict(members: Sequence[tuple[Measured, Verdict | None]]) -> Verdict | None:
    """A P/D deployment's cause from its members': transfer first, then the decode side, then prefill."""
    by_role: dict[str, list[Verdict]] = {}
    for m, v in members:
        if v is not None:
            by_role.setdefault(m.role, []).append(v)
    for v in by_role.get("decode", []) + by_role.get("prefill", []):
        if v.cause == "KV_TRANSFER":
            return v
    for role in ("decode", "prefill"):
        found = by_role.get(role)
        if found:
            return max(found, key=lambda v: v.strength)
    return None


# --------------------------------------------------------------------------------- expected effects


def queue_wait(m: Measured) -> float | None:
    """Mean queue wait: the engine's queue-time histogram, else Little's law (waiting / admissions per s)."""
    if m.queue_mean is not None:
        return m.queue_mean
    if m.waiting_mean is None or m.requests_finished <= 0 or m.span_seconds <= 0:
        return None
    return m.waiting_mean / (m.requests_finished / m.span_seconds)


def expected_effect(cause: str, remedy: str, m: Measured | None, t: Thresholds) -> tuple[dict[str, float | str], str]:
    """Evidence fields and a sentence for the first remedy's effect (formulas in docs/diagnosis.md)."""
    if m is None:
        return {}, ""
    n = m.replicas
    scale = n / (n + 1)
    out: dict[str, float | str] = {}
    if cause == "KV_CAPACITY" and m.kv_pressure_peak is not None:
        u = m.kv_pressure_peak
        if remedy == "raise_kv_capacity":
            u2 = u / 1.5  # the formula's assumption: 50 % more KV blocks
            out["expected_effect_assumes"] = "kv_blocks_x1.5"
        else:
            u2 = u * scale
            out["expected_effect_assumes"] = f"replicas_{n}_to_{n + 1}"
        out["expected_kv_utilization"] = _r(u2)
        text = f"KV utilization {u:.2f} -> about {u2:.2f} at today's load"
        if u2 < t.kv_pressure_utilization:
            out["expected_preemptions_per_second"] = 0.0
            text += ", preemptions to 0"
        return out, text
    if cause == "BATCH_SEAT_LIMIT" and m.cap is not None:
        cap = m.cap
        usage = m.kv_utilization_recent_max
        running = m.running_mean or cap
        if usage is not None and usage > 0 and running > 0:
            kv_seats = math.floor(t.kv_pressure_utilization * running / usage)  # seats the KV holds below the threshold
            new_cap = float(max(cap + 1, min(2 * cap, kv_seats)))
            room = max(0, kv_seats - int(cap))
        else:
            new_cap, room = 2 * cap, -1
        out["expected_max_num_seqs"] = new_cap
        text = f"max_num_seqs {cap:.0f} -> {new_cap:.0f}"
        if room >= 0 and usage is not None:
            out["kv_room_sequences"] = float(room)
            text += f": the KV cache at {usage:.0%} has room for about {room} more sequences"
        wait = queue_wait(m)
        if wait is not None and m.waiting_mean is not None and m.waiting_mean > 0:
            added = new_cap - cap
            wait2 = wait * max(0.0, m.waiting_mean - added) / m.waiting_mean
            out["queue_wait_seconds"] = _r(wait)
            out["expected_queue_wait_seconds"] = _r(wait2)
            text += f"; queue wait from {wait:.1f} s to about {wait2:.1f} s"
        return out, text
    if cause == "PREFILL_COMPUTE" and m.prefill_mean is None and m.ttft_mean is not None:
        ttft2 = m.ttft_mean * scale * scale
        out["expected_ttft_seconds"] = _r(ttft2)
        out["expected_effect_assumes"] = f"replicas_{n}_to_{n + 1}"
        return out, (f"mean TTFT {m.ttft_mean:.2f} s -> about {ttft2:.2f} s (queueing share; the prefill of one "
                     "prompt does not get faster)")
    if cause == "PREFILL_COMPUTE" and m.prefill_mean is not None:
        load = (m.prefill_mean + (m.queue_mean or 0.0)) / m.ttft_budget
        queue2 = (m.queue_mean or 0.0) * scale * scale
        out["expected_prefill_load"] = _r(load * scale)
        out["expected_ttft_seconds"] = _r(m.prefill_mean + queue2)
        out["expected_effect_assumes"] = f"replicas_{n}_to_{n + 1}"
        return out, (f"prefill load {load:.2f} -> about {load * scale:.2f}; mean TTFT about "
                     f"{m.prefill_mean + queue2:.2f} s (the queue wait shrinks, the prefill itself does not)")
    if cause == "DECODE_COMPUTE" and m.itl_mean is not None:
        itl2 = m.itl_mean * scale
        out["expected_itl_seconds"] = _r(itl2)
        out["expected_effect_assumes"] = f"replicas_{n}_to_{n + 1}"
        return out, f"mean ITL {m.itl_mean * 1000:.0f} ms -> about {itl2 * 1000:.0f} ms (half the batch per replica)"
    if cause == "KV_TRANSFER" and m.ttft_mean is not None:
        share = m.transfer_ttft_share if m.transfer_ttft_share is not None else \
            clamp01(1.0 - m.ttft_budget / m.ttft_mean if m.ttft_mean > 0 else 0.0)
        ttft2 = m.ttft_mean * (1.0 - share)
        out["expected_ttft_seconds"] = _r(ttft2)
        return out, (f"TTFT {m.ttft_mean:.2f} s -> about {ttft2:.2f} s at best (the transfer's share removed)")
    if cause == "DEMAND_ABOVE_CAPACITY":
        out["expected_effect_assumes"] = f"replicas_{n}_to_{n + 1}"
        if m.waiting_mean is not None:
            out["expected_waiting"] = _r(m.waiting_mean * scale * scale)
            return out, f"waiting requests {m.waiting_mean:.1f} -> about {m.waiting_mean * scale * scale:.1f}"
        return out, f"load per replica x{scale:.2f}"
    return out, ""


# --------------------------------------------------------------------------------------- hysteresis


@dataclass(slots=True)
class _Track:
    current: Verdict | None = None
    since: float | None = None
    candidate: str | None = None
    streak: int = 0
    last_raw: Verdict | None = None


class Hysteresis:
    """Current cause per key (target or pool): entered after `enter` ticks, left after `exit` ticks."""

    def __init__(self, enter: int, exit_: int) -> None:
        self.enter = max(1, enter)
        self.exit = max(1, exit_)
        self._tracks: dict[str, _Track] = {}

    def update(self, key: str, raw: Verdict | None, now: float) -> tuple[Verdict | None, float | None]:
        track = self._tracks.setdefault(key, _Track())
        name = raw.cause if raw is not None else None
        current = track.current.cause if track.current is not None else None
        if name == current:
            track.candidate, track.streak = None, 0
            if raw is not None:
                track.current = raw  # fresh numbers, same cause
            return track.current, track.since
        if name == track.candidate:
            track.streak += 1
        else:
            track.candidate, track.streak = name, 1
        needed = self.enter if name is not None else self.exit
        if current is not None and name is not None:
            needed = max(self.enter, self.exit)  # switching causes needs the longer evidence
        if track.streak >= needed:
            track.current, track.since = raw, (now if raw is not None else None)
            track.candidate, track.streak = None, 0
        return track.current, track.since

    def forget(self, keep: Iterable[str]) -> None:
        wanted = set(keep)
        for key in [k for k in self._tracks if k not in wanted]:
            del self._tracks[key]


# ---------------------------------------------------------------------------------------- reconcile


def _measured_event(rec: Recommendation, codes: set[str], m: Measured | None) -> bool:
    """True when a prediction's event is already measured for its target."""
    if rec.code == "KV_PRESSURE_IMMINENT":
        return "KV_CACHE_PRESSURE" in codes or (
            m is not None and m.preemptions_per_second is not None and m.preemptions_per_second > 0)
    if rec.code == "SLO_BREACH_PREDICTED":
        return "SLO_AT_RISK" in codes
    return False


def remedy_for(cause: str, role: str) -> str:
    return REMEDY_BY_ROLE[cause].get(role, REMEDY_BY_ROLE[cause]["aggregated"])


def reconcile(
    recs: Sequence[Recommendation],
    causes: Mapping[str, Verdict | None],
    measured: Mapping[str, Measured],
    attach_to: Mapping[str, str] | None = None,
) -> tuple[list[Recommendation], dict[str, list[str]]]:
    """Recommendations with `cause` and `remedy`; returns them and, per target, the codes attached
    to its cause as evidence (kept or dropped). `attach_to` maps a target without a cause of its
    own (a frontend) to the one whose cause explains it: its findings become evidence there."""
    by_target: dict[str, set[str]] = {}
    for rec in recs:
        by_target.setdefault(rec.target, set()).add(rec.code)
    out: list[Recommendation] = []
    attached: dict[str, list[str]] = {}
    for rec in recs:
        verdict = causes.get(rec.target)
        cause = verdict.cause if verdict is not None else ""
        role = rec.role or "aggregated"
        if rec.code in OPPORTUNITIES:
            out.append(replace(rec, cause=cause, remedy=OPPORTUNITIES[rec.code]))
            continue
        if rec.code in PREDICTIONS and _measured_event(rec, by_target.get(rec.target, set()), measured.get(rec.target)):
            continue
        if not cause:
            owner = (attach_to or {}).get(rec.target)
            if owner is not None and causes.get(owner) is not None:
                attached.setdefault(owner, []).append(f"{rec.code}@{rec.target}")
                continue
            if rec.code in PREDICTIONS and rec.action != "act":
                # what will happen, before anything binds: kept, without a remedy of its own yet
                out.append(replace(rec, cause="", remedy=""))
            continue
        attached.setdefault(rec.target, []).append(rec.code)
        if cause not in COMPATIBLE.get(rec.code, ANY):
            continue  # its own advice points elsewhere: evidence in the DIAGNOSIS line only
        out.append(replace(rec, cause=cause, remedy=remedy_for(cause, role)))
    return out, attached


# ------------------------------------------------------------------------------------------- stage


@dataclass(frozen=True, slots=True)
class DiagnosisResult:
    signals: tuple[Signal, ...]
    recommendations: tuple[Recommendation, ...]


class Diagnosis:
    """The diagnosis stage: keeps the hysteresis state between ticks; everything else is pure."""

    def __init__(self, settings: Settings) -> None:
        t = settings.thresholds
        self.settings = settings
        self.hysteresis = Hysteresis(int(t.diagnosis_enter_ticks), int(t.diagnosis_exit_ticks))

    def tick(
        self,
        now: float,
        fresh: Mapping[str, tuple[Target, TargetWindow]],
        signals: Sequence[Signal],
        recommendations: Sequence[Recommendation],
    ) -> DiagnosisResult:
        t = self.settings.thresholds
        measured: dict[str, Measured] = {}
        caps = {value for _, window in fresh.values() if window.latest is not None
                for info in window.latest.info.values() if (value := info.get(c.INFO_MAX_NUM_SEQS))}
        shared_cap = _number(next(iter(caps))) if len(caps) == 1 else None
        for name, (target, window) in fresh.items():
            m = measure(window, target, self.settings, signals, shared_cap)
            if m is not None:
                measured[name] = m
        replicas: dict[tuple[str, str], int] = {}
        for m in measured.values():
            if not m.frontend:
                replicas[(m.role, m.model_name)] = replicas.get((m.role, m.model_name), 0) + 1
        measured = {n: replace(m, replicas=replicas.get((m.role, m.model_name), 1)) for n, m in measured.items()}
        raw: dict[str, Verdict | None] = {}
        engines = [m for m in measured.values() if not m.frontend]
        frontends = [m for m in measured.values() if m.frontend]
        pd = [m for m in engines if m.role in ("prefill", "decode")]
        disaggregated = {m.role for m in pd} == {"prefill", "decode"}
        for name, m in measured.items():
            if m.frontend:
                # In P/D the frontend's extra TTFT is the remote prefill and the transfer: judged by the pool.
                raw[name] = None if disaggregated else frontend_verdict(m, engines, t)
            else:
                raw[name] = raw_cause(m, t)
        if disaggregated:
            transfer = next((v for f in frontends if (v := frontend_transfer(f, pd, t)) is not None), None)
            raw[POOL] = transfer or pool_verdict([(m, raw[m.target]) for m in pd])
            decode = [m for m in pd if m.role == "decode"]
            if decode:
                pool = replace(max(decode, key=lambda m: m.running_mean or 0.0), target=POOL, role=POOL)
                if transfer is not None:
                    front = next(f for f in frontends if f.ttft_mean is not None)
                    pool = replace(pool, ttft_mean=front.ttft_mean,
                                   transfer_ttft_share=float(transfer.evidence["transfer_ttft_share"]))
                measured[POOL] = pool
        current: dict[str, Verdict | None] = {}
        since: dict[str, float | None] = {}
        for key, verdict in raw.items():
            current[key], since[key] = self.hysteresis.update(key, verdict, now)
        self.hysteresis.forget(raw)

        # A frontend without a cause of its own is explained by what is behind it: the pool in P/D,
        # else the busiest engine with a cause.
        behind = [m for m in engines if current.get(m.target) is not None]
        owner = POOL if disaggregated else (
            max(behind, key=lambda m: m.running_mean or 0.0).target if behind else None)
        attach_to = {f.target: owner for f in frontends if owner is not None}
        recs, attached = reconcile(recommendations, current, measured, attach_to)
        out_signals: list[Signal] = []
        for key, verdict in current.items():
            m = measured[key]
            labels = {"target": m.target, "role": m.role, "model_name": m.model_name,
                      "engine": "all" if key == POOL else m.engine}
            for cause in CAUSES:
                value = 1.0 if verdict is not None and verdict.cause == cause else 0.0
                out_signals.append(Signal(SIGNAL, make_labels({**labels, "cause": cause}), value))
            if verdict is not None:
                recs.insert(0, self._line(verdict, m, since.get(key), attached.get(key, []), recs, now))
        return DiagnosisResult(tuple(out_signals), tuple(recs))

    def _line(self, verdict: Verdict, m: Measured, since: float | None, findings: Sequence[str],
              recs: Sequence[Recommendation], now: float) -> Recommendation:
        t = self.settings.thresholds
        remedy = remedy_for(verdict.cause, m.role)
        effect, effect_text = expected_effect(verdict.cause, remedy, m, t)
        opportunities = sorted({r.code for r in recs if r.target == m.target and r.code in OPPORTUNITIES})
        evidence: dict[str, float | str] = {"model_name": m.model_name, "engine": m.engine, **verdict.evidence,
                                            **effect}
        evidence["since"] = round(since if since is not None else now, 3)
        if findings:
            evidence["findings"] = ",".join(sorted(set(findings)))
        if opportunities:
            evidence["opportunities"] = ",".join(opportunities)
        if effect_text:
            evidence["expected_effect"] = effect_text
        coverage = clamp01(m.span_seconds / self.settings.window_seconds) if self.settings.window_seconds > 0 else 0.0
        confidence = round(0.5 + 0.49 * clamp01(verdict.strength) * coverage, 3)
        message = f"Primary cause: {human_cause(verdict.cause)}{_why(verdict)}. Do: {human_remedy(remedy)}"
        message += f"; expected: {effect_text}." if effect_text else "."
        severity = "critical" if verdict.strength >= 0.8 else "warning"
        return Recommendation(code=DIAGNOSIS_CODE, severity=severity, message=message, evidence=evidence,
                              confidence=confidence, target=m.target, role=m.role,
                              cause=verdict.cause, remedy=remedy)


def _why(verdict: Verdict) -> str:
    e = verdict.evidence
    if verdict.cause == "KV_CAPACITY":
        parts = [f"KV cache at {float(e['kv_utilization_peak']):.0%}"]
        if "kv_utilization_sampled_peak" in e:
            parts = [f"KV cache ran out of blocks (the scrapes saw at most "
                     f"{float(e['kv_utilization_sampled_peak']):.0%})"]
        if float(e.get("preemptions_per_second", 0.0)) > 0:
            parts.append(f"{float(e['preemptions_per_second']):.2f} preemptions/s")
        if float(e.get("waiting_mean", 0.0)) >= 1:
            parts.append(f"{float(e['waiting_mean']):.1f} requests waiting")
        return " (" + ", ".join(parts) + ")"
    if verdict.cause == "BATCH_SEAT_LIMIT":
        source = {"config": "configured", "config_frontend": "configured, from the frontend's model card"}.get(
            str(e.get("cap_source")), "inferred from the running count's plateau")
        kv = f", KV cache at {float(e['kv_utilization_peak']):.0%}" if "kv_utilization_peak" in e else ""
        return (f" (running pinned at max_num_seqs {float(e['max_num_seqs']):.0f}, {source}, "
                f"{float(e.get('waiting_mean', 0.0)):.1f} waiting{kv})")
    if verdict.cause == "PREFILL_COMPUTE" and "prefill_mean_seconds" not in e:
        ttft = f", mean TTFT {float(e['ttft_mean_seconds']):.2f} s" if "ttft_mean_seconds" in e else ""
        return (f" ({float(e['waiting_mean']):.1f} requests waiting with free seats and KV room{ttft}: "
                "the per-step token budget goes to prefill)")
    if verdict.cause == "PREFILL_COMPUTE":
        return (f" (prefill takes {float(e['prefill_mean_seconds']):.2f} s, "
                f"load {float(e['prefill_load']):.2f} of the TTFT budget)")
    if verdict.cause == "DECODE_COMPUTE":
        return (f" (mean ITL {float(e['itl_mean_seconds']) * 1000:.0f} ms over the "
                f"{float(e['itl_budget_seconds']) * 1000:.0f} ms budget)")
    if verdict.cause == "KV_TRANSFER":
        if "transfer_failure_ratio" in e:
            return f" ({float(e['transfer_failure_ratio']):.1%} of transfers fail)"
        if e.get("transfer_source") == "frontend_minus_engines":
            return (f" (about {float(e['transfer_ttft_share']):.0%} of the user's "
                    f"{float(e['frontend_ttft_seconds']):.2f} s TTFT is spent in neither engine: "
                    f"prefill {float(e['prefill_seconds']):.3f} s, decode {float(e['decode_ttft_seconds']):.3f} s)")
        if "transfer_ttft_share" in e:
            return f" (transfers take {float(e['transfer_ttft_share']):.0%} of the decode side's TTFT)"
        return (f" (the decode side waits {float(e['decode_ttft_seconds']):.2f} s for its first token "
                "with room and no queue)")
    if verdict.cause == "FRONTEND_OVERHEAD":
        return (f" (frontend TTFT {float(e['frontend_ttft_seconds']):.2f} s against "
                f"{float(e['engine_ttft_seconds']):.2f} s in the engine)")
    if verdict.cause == "DEMAND_ABOVE_CAPACITY":
        parts = []
        if "waiting_mean" in e:
            parts.append(f"{float(e['waiting_mean']):.1f} requests waiting")
        if "ttft_mean_seconds" in e:
            parts.append(f"mean TTFT {float(e['ttft_mean_seconds']):.2f} s")
        return " (" + ", ".join(parts) + ")" if parts else ""
    return ""
