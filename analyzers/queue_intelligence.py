"""Queue intelligence: the one object the pipeline owns for waits, breach risk and patterns.

State lives here and only here (the analyzer modules it calls are pure). `tick()` mutates this
object in place: it resolves the labels of earlier breach predictions against what the TTFT
histogram shows now, trains the model on them, scores calibration, then predicts for the current
window. `to_state()` / `from_state()` give the JSON-safe dict that `phaselens.state.StateFile`
persists (daily profile, model weights, calibration rows, remembered concurrency), so a restart
keeps what was learned.

Wiring (pipeline): `qi = QueueIntelligence.from_state(state_file.load())`, then each tick
`signals, recs = qi.tick(windows, now, settings, gpus=readings)`, and before publishing
`recs = qi.gate(all_recs)`; every few minutes `state_file.save(qi.to_state())`.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from phaselens.analyzers import breach as br
from phaselens.analyzers import gating, gpu, patterns
from phaselens.analyzers import kv_cache as kvc
from phaselens.analyzers import queueing as qm
from phaselens.analyzers.window import Group, TargetWindow
from phaselens.model import GpuReading, Recommendation, Signal, Target, make_labels
from phaselens.parsers.engines import canonical as cn
from phaselens.settings import Settings

STATE_VERSION = 1


@dataclass
class _GroupState:
    """Per (target, model_name, engine)."""

    concurrency: float | None = None
    trend: patterns.ArrivalTrend = field(default_factory=patterns.ArrivalTrend)
    pending: deque[br.PendingPrediction] = field(default_factory=deque)
    history: deque[tuple[float, float, float]] = field(default_factory=deque)  # (t, wait, completions/s)
    marks: deque[br.ArrivalMark] = field(default_factory=deque)  # per-tick arrivals + TTFT tally
    arrivals: float = 0.0  # cumulative arrivals by conservation since this object started
    population: tuple[float, float] | None = None  # (finished counter, waiting + running) at the last tick
    # TTFT of requests served with nothing queued (steps whose both ends showed an empty queue):
    # the engine's own service-to-first-token time X when it exports no prefill-time histogram
    # (Dynamo's mocker, older engines). The window's whole TTFT would count queue waits twice.
    quiet_ttft: list[list[float]] | None = None  # [[bound, cumulative count], ...], decayed
    quiet_time: float | None = None
    last_ttft: tuple[tuple[float, float], ...] | None = None
    last_waiting: float | None = None
    # (end of the last labelled interval, within-SLO first tokens counted past its arrivals): the
    # excess goes to the next interval, so per-interval clamping cannot bias the labels (below)
    carry: tuple[float, float] = (0.0, 0.0)


@dataclass
class _TargetState:
    predictor: br.BreachPredictor = field(default_factory=br.BreachPredictor)
    recalibration: br.BinnedRecalibration = field(default_factory=br.BinnedRecalibration)
    # not persisted: after a restart the learned part earns its weight again on the workload in
    # front of it (measured: evidence carried from other runs let transferred corrections hurt)
    shrink: br.EvidenceShrink = field(default_factory=br.EvidenceShrink)
    # the last stage: what is published is recalibrated on this engine's own labels. Not persisted
    # either (measured on the development runs, warm: ECE 0.036 carried over against 0.029 not)
    final: br.IsotonicRecalibration = field(default_factory=br.IsotonicRecalibration)
    calibration: br.RollingCalibration = field(default_factory=br.RollingCalibration)
    profile: patterns.DailyProfile = field(default_factory=patterns.DailyProfile)
    groups: dict[str, _GroupState] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QueueTuning:
    """Knobs of the predictors (defaults chosen on real vLLM runs, see benchmarks/bench_predictors.py)."""

    label_horizon_seconds: float = 2.0  # how far ahead the recent-breach-fraction feature looks back
    mark_memory_seconds: float = 120.0  # ticks kept to label predictions (covers SLO + scrape gaps)
    feature_horizon_seconds: float = 5.0
    cascade_span_seconds: float = 60.0
    max_pending: int = 600
    concurrency_memory: float = 0.2  # EWMA weight of a new saturated-concurrency observation
    kv_precursor_horizon_seconds: float = 120.0
    breach_recommendation_probability: float = 0.5
    gpu_history_points: int = 5
    quiet_ttft_half_life_seconds: float = 600.0
    quiet_ttft_min_requests: float = 5.0


def _group_key(group: Group) -> str:
    return f"{group[0]}|{group[1]}"


class QueueIntelligence:
    def __init__(self, tuning: QueueTuning | None = None) -> None:
        self.tuning = tuning or QueueTuning()
        self._targets: dict[str, _TargetState] = {}
        self._gpu_util: deque[float] = deque(maxlen=self.tuning.gpu_history_points)
        # (target, group key) -> the queueing model's own P(W + X > SLO) at the last tick: the
        # regression's first feature before learning, kept so evaluations can score it as a baseline
        self.last_structural_probability: dict[tuple[str, str], float] = {}
        # Set to a list to collect every label as it is formed (evaluations and diagnosis only; None
        # in the sidecar): (target, load stratum, prediction time, published p, breach share, arrivals)
        self.label_log: list[tuple[str, str, float, float, float, float]] | None = None
        # model_name -> what a frontend (Dynamo's) knows before any engine queue shows it: arrivals/s
        # per engine target over the last scrape step (requests_started), mean prompt tokens, KV pool
        self._upstream: dict[str, _Upstream] = {}

    # ------------------------------------------------------------------ public API

    def calibration(self, target: str) -> br.CalibrationReport | None:
        state = self._targets.get(target)
        return state.calibration.report() if state is not None else None

    def gate(self, recs: list[Recommendation], settings: Settings | None = None) -> list[Recommendation]:
        """Calibration-gate recommendations that rest on predictions (analyzers/gating.py)."""
        limit = settings.calibration_error_limit if settings is not None else Settings().calibration_error_limit
        reports = {name: state.calibration.report() for name, state in self._targets.items()}
        return gating.gate_recommendations(recs, reports, limit)

    def tick(
        self,
        windows: Mapping[str, tuple[Target, TargetWindow]],
        now: float,
        settings: Settings,
        gpus: Sequence[GpuReading] = (),
    ) -> tuple[list[Signal], list[Recommendation]]:
        signals: list[Signal] = []
        recs: list[Recommendation] = []
        pool: dict[tuple[str, str], list[float]] = {}
        self._upstream = _upstream_arrival_rates(windows)
        total_waiting = 0.0
        total_running = 0.0
        for name, (target, window) in windows.items():
            tstate = self._targets.setdefault(name, _TargetState())
            target_arrivals = 0.0
            target_load = 0.0
            target_capacity = 0.0
            for group in window.groups():
                obs = qm.observe(window, group)
                if obs is None:
                    continue
                total_waiting += obs.waiting
                total_running += obs.running
                labels = {"target": name, "role": target.role, "model_name": group[0], "engine": group[1]}
                gstate = tstate.groups.setdefault(_group_key(group), _GroupState())
                concurrency = self._concurrency(gstate, obs)
                rho = qm.utilization(obs, concurrency)
                waits = qm.predict_waits(obs, concurrency)
                signals.extend(self._queue_signals(labels, rho, waits))
                if obs.arrival_rate is not None:
                    target_arrivals += obs.arrival_rate
                    gstate.trend.update(obs.arrival_rate, now)
                    if obs.mean_service_seconds is not None and concurrency:
                        target_load += obs.arrival_rate * obs.mean_service_seconds
                        target_capacity += concurrency
                        key = (target.role, group[0])
                        acc = pool.setdefault(key, [0.0, 0.0])
                        acc[0] += obs.arrival_rate * obs.mean_service_seconds
                        acc[1] += concurrency
                if settings.slo_ttft_seconds:
                    signals.extend(
                        self._breach(
                            tstate,
                            gstate,
                            window,
                            group,
                            obs,
                            waits,
                            rho,
                            labels,
                            now,
                            settings.slo_ttft_seconds,
                            recs,
                        )
                    )
                recs.extend(self._patterns(gstate, window, group, obs, waits, rho, name, target, now, settings))
            if target_capacity > 0:
                tstate.profile.update(now, target_arrivals, target_load / target_capacity)
                peak = patterns.detect_peak_hour(
                    tstate.profile,
                    now,
                    knee=settings.thresholds.utilization_knee,
                    target=name,
                    role=target.role,
                )
                if peak is not None:
                    recs.append(peak)
            report = tstate.calibration.report()
            if report is not None:
                # Both scored on the probability actually published (after recalibration and the
                # shrink toward the structural one): the gate reads the same report.
                target_labels = make_labels({"target": name, "role": target.role, "model_name": "", "engine": ""})
                signals.append(Signal("phaselens_prediction_calibration_error", target_labels, report.ece))
                signals.append(Signal("phaselens_prediction_brier_score", target_labels, report.brier))
        for (role, model_name), (load, capacity) in sorted(pool.items()):
            signals.append(
                Signal(
                    "phaselens_utilization_ratio",
                    make_labels({"target": "", "role": role, "model_name": model_name, "engine": ""}),
                    load / capacity,
                )
            )
        signals.extend(gpu.gpu_signals(gpus))
        utils = [g.utilization_ratio for g in gpus if g.utilization_ratio is not None]
        if utils:
            self._gpu_util.append(max(utils))
            if windows:
                first_name, (first_target, _) = next(iter(windows.items()))
                rec = gpu.detect_util_not_scaling_signal(
                    list(self._gpu_util),
                    waiting=total_waiting,
                    running=total_running,
                    target=first_name if len(windows) == 1 else "",
                    role=first_target.role if len(windows) == 1 else "",
                )
                if rec is not None:
                    recs.append(rec)
        return [s for s in signals if math.isfinite(s.value)], recs

    # ------------------------------------------------------------------ parts

    def _concurrency(self, gstate: _GroupState, obs: qm.QueueObservation) -> float | None:
        if obs.saturated_concurrency is not None and obs.saturated_concurrency >= 1:
            if gstate.concurrency is None:
                gstate.concurrency = obs.saturated_concurrency
            else:
                a = self.tuning.concurrency_memory
                gstate.concurrency += a * (obs.saturated_concurrency - gstate.concurrency)
        return qm.effective_concurrency(obs, gstate.concurrency)

    @staticmethod
    def _queue_signals(labels: dict[str, str], rho: float | None, waits: list[qm.WaitPrediction]) -> list[Signal]:
        out: list[Signal] = []
        if rho is not None:
            out.append(Signal("phaselens_utilization_ratio", make_labels(labels), rho))
        for w in waits:
            for bound, value in (("point", w.point), ("lower", w.lower), ("upper", w.upper)):
                out.append(
                    Signal(
                        "phaselens_predicted_queue_wait_seconds",
                        make_labels({**labels, "model": w.model, "bound": bound}),
                        value,
                    )
                )
        return out

    def _breach(
        self,
        tstate: _TargetState,
        gstate: _GroupState,
        window: TargetWindow,
        group: Group,
        obs: qm.QueueObservation,
        waits: list[qm.WaitPrediction],
        rho: float | None,
        labels: dict[str, str],
        now: float,
        slo: float,
        recs: list[Recommendation],
    ) -> list[Signal]:
        hist = window.latest_histograms(cn.TTFT_SECONDS, group)
        tally = _merged_tally(now, hist, slo)
        if tally is None:
            gstate.pending.clear()
            return []
        self._mark(gstate, window, group, obs, tally, now)
        self._quiet_ttft(gstate, _merged_buckets(hist), obs.waiting, now)
        # 1. label earlier predictions with what happened to the requests that arrived after them
        marks = gstate.marks
        while gstate.pending:
            pending = gstate.pending[0]
            if not marks or marks[0].time > pending.time:
                gstate.pending.popleft()  # its marks are gone (memory, reset, no counter): no label
                continue
            after = br.first_mark_after(marks, pending.time)
            end = after.time if after is not None else None
            if end is None or marks[-1].time < end + max(pending.shift, slo):
                break  # the arrivals after it are not all known to have had their chance yet
            gstate.pending.popleft()
            counted = br.arrival_within_count(list(gstate.marks), pending.time, end, pending.shift, slo)
            if counted is None:
                continue
            within, n = counted
            # First tokens counted past this interval's arrivals (a shifted window's edge noise)
            # belong to the next interval: clamping each label at 0 breaches alone would keep only
            # the noise's upward half (d11-prefill-heavy-s2, its two targets together: 101 breaches
            # labelled where the clients saw 26; 39 with the carry).
            outcome, excess = br.carried_outcome(within, n, gstate.carry[1] if gstate.carry[0] == pending.time else 0.0)
            gstate.carry = (end, excess)
            tstate.calibration.add(pending.probability, outcome, n)
            if self.label_log is not None:
                self.label_log.append(
                    (labels["target"], pending.stratum, pending.time, pending.probability, outcome, n)
                )
            if pending.stratum != "idle":
                tstate.predictor.update(pending.features, outcome, n)
            if pending.raw is not None:
                tstate.recalibration.update(pending.stratum, pending.raw, outcome, n, now)
            if pending.structural is not None and pending.learned is not None:
                tstate.shrink.update(pending.stratum, pending.structural, pending.learned, outcome, n, now)
            if pending.blended is not None:
                tstate.final.update(pending.stratum, pending.blended, outcome, n, now)
        # 2. predict now: the regression, then its recalibration for the engine's load stratum
        features = self.features(window, group, obs, waits, rho, slo, labels["target"])
        stratum = br.load_stratum(obs.waiting, obs.running)
        # An idle engine has no queueing dynamics for the regression's corrections to describe
        # (they are learned under load, from hundreds of arrivals): there the raw score is the
        # queueing model's own probability, and only the idle bins recalibrate it.
        structural = _sigmoid(features.values[0])
        raw = structural if stratum == "idle" else tstate.predictor.predict(features)
        learned = tstate.recalibration.apply(stratum, raw, now)
        # published: the structural probability, moved toward the learned one only as far as the
        # labelled evidence says the learned one predicts better (EvidenceShrink)
        blended = tstate.shrink.apply(stratum, structural, learned, now)
        # then recalibrated on the labels of this stratum that are already known: each label used
        # here is of a prediction whose arrivals all had their SLO's time before now (step 1)
        probability = tstate.final.apply(stratum, blended, now)
        self.last_structural_probability[(labels["target"], _group_key(group))] = structural
        shift = min(slo, obs.ttft_p50_seconds) if obs.ttft_p50_seconds is not None else slo / 2
        gstate.pending.append(
            br.PendingPrediction(now, features, probability, tally, shift, raw, stratum, structural, learned, blended)
        )
        while len(gstate.pending) > self.tuning.max_pending:
            gstate.pending.popleft()
        if probability >= self.tuning.breach_recommendation_probability and obs.arrival_rate:
            recs.append(
                Recommendation(
                    code="SLO_BREACH_PREDICTED",
                    severity="critical" if probability >= 0.85 else "warning",
                    message=(
                        f"{probability:.0%} of requests arriving now are predicted to miss the "
                        f"{slo:g} s TTFT SLO "
                        f"({obs.waiting:.0f} queued): add capacity or shed load."
                    ),
                    evidence={
                        "breach_probability": round(probability, 4),
                        "queue_depth": obs.waiting,
                        "slo_ttft_seconds": slo,
                        "basis": "prediction",
                        **{k: round(v, 4) for k, v in features.as_dict().items()},
                    },
                    confidence=probability,
                    target=labels["target"],
                    role=labels["role"],
                )
            )
        return [Signal("phaselens_slo_breach_probability", make_labels(labels), probability)]

    def _recent_arrival_rate(self, gstate: _GroupState | None, group: Group, obs: qm.QueueObservation) -> float | None:
        """Arrivals/s now: the frontend's count where one is scraped (before any queue), else the
        engine's last step by conservation, else the window's mean."""
        upstream = self._upstream.get(group[0])
        if upstream is not None and upstream.rate is not None:
            return upstream.rate
        return self._engine_arrival_rate(gstate, obs)

    @staticmethod
    def _engine_arrival_rate(gstate: _GroupState | None, obs: qm.QueueObservation) -> float | None:
        if gstate is not None and len(gstate.marks) >= 2:
            a, b = gstate.marks[-2], gstate.marks[-1]
            if b.time > a.time:
                return max(0.0, b.arrivals - a.arrivals) / (b.time - a.time)
        return obs.arrival_rate

    def _quiet_ttft(
        self, gstate: _GroupState, buckets: tuple[tuple[float, float], ...] | None, waiting: float, now: float
    ) -> None:
        """Add this step's TTFT observations to the quiet histogram when the queue was empty at both ends."""
        last, last_waiting = gstate.last_ttft, gstate.last_waiting
        gstate.last_ttft, gstate.last_waiting = buckets, waiting
        if buckets is None or last is None or last_waiting is None or last_waiting > 0 or waiting > 0:
            return
        if [b for b, _ in last] != [b for b, _ in buckets]:
            return
        delta = [c1 - c0 for (_, c0), (_, c1) in zip(last, buckets, strict=True)]
        if delta[-1] <= 0 or min(delta) < 0:
            return  # nothing new, or a reset
        keep = 1.0
        if gstate.quiet_ttft is not None and gstate.quiet_time is not None:
            keep = 0.5 ** (max(0.0, now - gstate.quiet_time) / self.tuning.quiet_ttft_half_life_seconds)
        old = gstate.quiet_ttft
        if old is None or [b for b, _ in old] != [b for b, _ in buckets]:
            old = [[b, 0.0] for b, _ in buckets]
        gstate.quiet_ttft = [[b, c * keep + d] for (b, c), d in zip(old, delta, strict=True)]
        gstate.quiet_time = now

    def _mark(
        self,
        gstate: _GroupState,
        window: TargetWindow,
        group: Group,
        obs: qm.QueueObservation,
        tally: br.TtftTally,
        now: float,
    ) -> None:
        """Record this tick's cumulative arrivals (finished + change in waiting + running) and tally."""
        series = qm.finished_series(window, group, horizon=0.0)
        if not series:
            return
        finished = series[-1][1]
        population = obs.waiting + obs.running
        if gstate.population is not None:
            done = finished - gstate.population[0] if finished >= gstate.population[0] else finished
            gstate.arrivals += max(0.0, done + population - gstate.population[1])
        gstate.population = (finished, population)
        if gstate.marks and (now <= gstate.marks[-1].time or tally.count < gstate.marks[-1].tally.count):
            gstate.marks.clear()  # time went backwards or the engine restarted: old marks mean nothing
        gstate.marks.append(br.ArrivalMark(now, gstate.arrivals, tally))
        while gstate.marks and now - gstate.marks[0].time > self.tuning.mark_memory_seconds:
            gstate.marks.popleft()

    def features(
        self,
        window: TargetWindow,
        group: Group,
        obs: qm.QueueObservation,
        waits: list[qm.WaitPrediction],
        rho: float | None,
        slo: float,
        target_name: str | None = None,
    ) -> br.BreachFeatures:
        from phaselens.analyzers.window import histogram_quantile

        short = self.tuning.feature_horizon_seconds
        recent = window.histogram_delta(cn.TTFT_SECONDS, group, horizon=short)
        p50 = p90 = breach_fraction = None
        if recent is not None and recent.count > 0:
            p50 = histogram_quantile(0.5, recent.buckets)
            p90 = histogram_quantile(0.9, recent.buckets)
            start = br.TtftTally(0.0, 0.0, 0.0)
            end = br.tally_from_buckets(0.0, recent.buckets, slo)
            outcome = br.breach_outcome(start, end) if end is not None else None
            breach_fraction = outcome[0] if outcome is not None else None
        by_model = {w.model: w.point for w in waits}
        predicted_wait = by_model.get("little", by_model.get("erlang_c", 0.0))
        gstate = self._targets[target_name].groups.get(_group_key(group)) if target_name else None
        quiet = gstate.quiet_ttft if gstate is not None else None
        if quiet is not None and quiet[-1][1] < self.tuning.quiet_ttft_min_requests:
            quiet = None
        slots = qm.effective_concurrency(obs, gstate.concurrency if gstate is not None else None)
        arrival_rate = self._recent_arrival_rate(gstate, group, obs)
        structural_wait = predicted_wait
        if obs.waiting > 0 and slots is not None and obs.mean_service_seconds:
            # a queue drains at the slot release rate c / E[S] once every slot is busy; the window's
            # mean first-token rate is lower whenever the window also holds quiet stretches (bursts)
            drain = max(slots / obs.mean_service_seconds, obs.admission_rate or 0.0)
            structural_wait = obs.waiting / drain
        structural = self._structural_probability(window, group, obs, structural_wait, slo, breach_fraction, quiet)
        waiting_series = window.gauge_series(cn.REQUESTS_WAITING, group, horizon=short)
        growth = patterns.linear_slope(waiting_series) or 0.0
        upstream = self._upstream.get(group[0])
        prompt = window.histogram_delta(cn.REQUEST_PROMPT_TOKENS, group)
        mean_prompt = prompt.mean if prompt is not None else None
        if mean_prompt is None and upstream is not None:
            mean_prompt = upstream.mean_prompt_tokens
        kv_tokens = kvc.info_number(window, group, cn.INFO_KV_CACHE_SIZE_TOKENS)
        if kv_tokens is None and upstream is not None:
            kv_tokens = upstream.kv_tokens
        precursors = br.Precursors(
            arrival_rate=arrival_rate,
            engine_arrival_rate=self._engine_arrival_rate(gstate, obs),
            upstream_rate=upstream.rate if upstream is not None else None,
            slots=slots,
            running=obs.running,
            waiting=obs.waiting,
            trend_short=gstate.trend.short if gstate is not None else None,
            trend_long=gstate.trend.long if gstate is not None else None,
            mean_prompt_tokens=mean_prompt,
            kv_usage=obs.kv_usage,
            kv_tokens=kv_tokens,
        )
        return br.make_features(
            slo_seconds=slo,
            structural_probability=structural,
            predicted_wait_seconds=predicted_wait,
            queue_depth=obs.waiting,
            recent_p50_ttft_seconds=p50,
            recent_p90_ttft_seconds=p90,
            recent_breach_fraction=breach_fraction,
            kv_usage=obs.kv_usage,
            utilization=rho,
            queue_growth_per_second=growth,
            precursors=precursors,
        )

    @staticmethod
    def _structural_probability(
        window: TargetWindow,
        group: Group,
        obs: qm.QueueObservation,
        predicted_wait: float,
        slo: float,
        recent_breach_fraction: float | None,
        quiet_ttft: list[list[float]] | None = None,
    ) -> float:
        """P(W + X > SLO): X from the window's prefill-time histogram; an engine without one: the TTFT
        of requests served while nothing was queued (`_quiet_ttft`), else the window's TTFT.
        W ~ Gamma(mean = predicted wait, SCV = 1 / L_q). Without any latency data: the recent breach
        fraction, else a small floor."""
        buckets: tuple[tuple[float, float], ...] | None = None
        count = 0.0
        service = window.histogram_delta(cn.PREFILL_TIME_SECONDS, group)
        if service is not None and service.count > 0:
            buckets, count = service.buckets, service.count
        elif quiet_ttft is not None:
            buckets, count = tuple((b, c) for b, c in quiet_ttft), quiet_ttft[-1][1]
        else:
            service = window.histogram_delta(cn.TTFT_SECONDS, group)
            if service is not None and service.count > 0:
                buckets, count = service.buckets, service.count
        scv = 1 / obs.waiting if obs.waiting > 0 else 1.0
        found = None
        if buckets is not None:
            found = qm.probability_total_exceeds(slo, buckets, predicted_wait, scv)
            if found is not None:
                # shrink toward the middle by the sample size: 0 breaches in 5 requests is not p = 0
                found = (found * count + 0.05) / (count + 0.1)
        if found is None:
            found = recent_breach_fraction if recent_breach_fraction is not None else 0.01
        return found

    def _patterns(
        self,
        gstate: _GroupState,
        window: TargetWindow,
        group: Group,
        obs: qm.QueueObservation,
        waits: list[qm.WaitPrediction],
        rho: float | None,
        name: str,
        target: Target,
        now: float,
        settings: Settings,
    ) -> list[Recommendation]:
        out: list[Recommendation] = []
        knee = settings.thresholds.utilization_knee
        if rho is not None and rho >= knee and obs.arrival_rate:
            arrivals = obs.arrival_rate * obs.seconds
            factor = qm.utilization_factor(rho)
            out.append(
                Recommendation(
                    code="UTILIZATION_PAST_KNEE",
                    severity="critical" if rho >= 1 else "warning",
                    message=(
                        f"Utilization is {rho:.0%}, past the {knee:.0%} knee: "
                        "queue wait grows as rho/(1-rho) "
                        + (
                            f"(x{factor:.1f} the service time scale now)"
                            if math.isfinite(factor)
                            else "(unbounded: arrivals exceed capacity)"
                        )
                        + "; add replicas or cap admission before waits explode."
                    ),
                    evidence={
                        "utilization_ratio": round(rho, 4),
                        "knee": knee,
                        "arrival_rate_per_second": round(obs.arrival_rate, 4),
                        "mean_service_seconds": round(obs.mean_service_seconds or 0.0, 4),
                        "arrivals_in_window": round(arrivals, 1),
                        "basis": "prediction",
                    },
                    confidence=0.9 if arrivals >= 20 else 0.65,
                    target=name,
                    role=target.role,
                )
            )
        burst = patterns.detect_burst(gstate.trend, target=name, role=target.role)
        if burst is not None:
            out.append(burst)
        kv = patterns.detect_kv_pressure_precursor(
            window.gauge_series(cn.KV_CACHE_USAGE, group),
            target=name,
            role=target.role,
            horizon_seconds=self.tuning.kv_precursor_horizon_seconds,
        )
        if kv is not None:
            out.append(kv)
        little = next((w.point for w in waits if w.model == "little"), None)
        if little is not None and obs.completion_rate is not None:
            gstate.history.append((now, little, obs.completion_rate))
        while gstate.history and now - gstate.history[0][0] > self.tuning.cascade_span_seconds:
            gstate.history.popleft()
        hist = list(gstate.history)
        cascade = patterns.detect_cascading_delay(
            [(t, w) for t, w, _ in hist], [(t, c) for t, _, c in hist], target=name, role=target.role
        )
        if cascade is not None:
            out.append(cascade)
        return out

    # ------------------------------------------------------------------ persistence

    def to_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "targets": {
                name: {
                    "predictor": t.predictor.to_state(),
                    "recalibration": t.recalibration.to_state(),
                    "calibration": t.calibration.to_state(),
                    "profile": t.profile.to_state(),
                    "groups": {
                        key: {"concurrency": g.concurrency, "trend": g.trend.to_state(), "quiet_ttft": g.quiet_ttft}
                        for key, g in t.groups.items()
                    },
                }
                for name, t in self._targets.items()
            },
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | None, tuning: QueueTuning | None = None) -> QueueIntelligence:
        """Restore what `to_state` wrote; anything unreadable starts fresh (never raises)."""
        out = cls(tuning)
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            return out
        targets = state.get("targets")
        if not isinstance(targets, Mapping):
            return out
        for name, raw in targets.items():
            if not isinstance(raw, Mapping):
                continue
            t = _TargetState(
                predictor=br.BreachPredictor.from_state(raw.get("predictor") or {}),
                recalibration=br.BinnedRecalibration.from_state(raw.get("recalibration")),
                calibration=br.RollingCalibration.from_state(raw.get("calibration")),
                profile=patterns.DailyProfile.from_state(raw.get("profile") or {}),
            )
            groups = raw.get("groups")
            if isinstance(groups, Mapping):
                for key, g in groups.items():
                    if not isinstance(g, Mapping):
                        continue
                    conc = g.get("concurrency")
                    gs = _GroupState(trend=patterns.ArrivalTrend.from_state(g.get("trend") or {}))
                    if isinstance(conc, int | float) and math.isfinite(conc) and conc >= 1:
                        gs.concurrency = float(conc)
                    gs.quiet_ttft = _valid_buckets(g.get("quiet_ttft"))
                    t.groups[str(key)] = gs
            out._targets[str(name)] = t
        return out


@dataclass(frozen=True, slots=True)
class _Upstream:
    rate: float | None
    mean_prompt_tokens: float | None
    kv_tokens: float | None


def _upstream_arrival_rates(windows: Mapping[str, tuple[Target, TargetWindow]]) -> dict[str, _Upstream]:
    """Per model: from targets that count requests as they come in (`requests_started`, a Dynamo
    frontend), arrivals/s over the last scrape step shared evenly by the model's engine targets (those
    with a running gauge: the router spreads arrivals over them), the mean prompt length over the
    window, and one worker's KV pool in tokens (the frontend's model card)."""
    found: dict[str, list[float | None]] = {}
    engines: dict[str, int] = {}
    for _, window in windows.values():
        for group in window.groups():
            series = window.gauge_series(cn.REQUESTS_STARTED, group)
            if len(series) >= 2 and series[-1][0] > series[-2][0]:
                (t0, v0), (t1, v1) = series[-2], series[-1]
                prompt = window.histogram_delta(cn.REQUEST_PROMPT_TOKENS, group)
                entry = found.setdefault(group[0], [0.0, None, None])
                entry[0] = (entry[0] or 0.0) + (v1 - v0 if v1 >= v0 else v1) / (t1 - t0)
                entry[1] = prompt.mean if prompt is not None else entry[1]
                entry[2] = kvc.info_number(window, group, cn.INFO_KV_CACHE_SIZE_TOKENS) or entry[2]
            elif window.gauge(cn.REQUESTS_RUNNING, group) is not None:
                engines[group[0]] = engines.get(group[0], 0) + 1
    return {
        model: _Upstream((rate or 0.0) / engines[model] if engines.get(model) else None, prompt, kv)
        for model, (rate, prompt, kv) in found.items()
    }


def _valid_buckets(raw: Any) -> list[list[float]] | None:
    """A persisted quiet-TTFT histogram, or None when it is damaged (then it is learned afresh)."""
    try:
        rows = [[float(b), float(c)] for b, c in raw]
    except (TypeError, ValueError):
        return None
    if not rows or any(math.isnan(b) or not math.isfinite(c) or c < 0 for b, c in rows):
        return None
    if any(r1[0] <= r0[0] or r1[1] < r0[1] - 1e-9 for r0, r1 in itertools.pairwise(rows)):
        return None
    return rows


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


def _merged_buckets(hists: Sequence[Any]) -> tuple[tuple[float, float], ...] | None:
    """The group's TTFT series summed bucket by bucket; None when their bucket bounds differ."""
    if not hists:
        return None
    bounds = [b for b, _ in hists[0].buckets]
    if any([b for b, _ in h.buckets] != bounds for h in hists[1:]):
        return None
    return tuple((b, sum(h.buckets[i][1] for h in hists)) for i, b in enumerate(bounds))


def _merged_tally(now: float, hists: Sequence[Any], slo: float) -> br.TtftTally | None:
    """Sum the tallies of the group's TTFT series (several `pid`/extra-label series may exist)."""
    tallies = [br.tally_from_buckets(now, h.buckets, slo) for h in hists]
    found = [t for t in tallies if t is not None]
    if not found:
        return None
    return br.TtftTally(now, sum(t.count for t in found), sum(t.within_slo for t in found))
