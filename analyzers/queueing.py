"""Queueing view of one engine: utilization and the predicted wait of a request arriving now.

Pure functions over a `TargetWindow` (no I/O, no clock). Formulas and their sources are in
docs/queueing.md; in short:

* The engine is a multi-server queue. Its *servers* are the batch slots of continuous batching and
  a request holds one slot for its whole inference time (prefill + decode), so the service time
  `S` is `request_inference_time_seconds` (or e2e minus queue time on engines without it).
* Effective concurrency `c` is the number of slots the engine really runs with when it is
  saturated: the mean of `requests_running` over scrapes where requests were waiting (a queue only
  forms when the batch is full, whether max_num_seqs or the KV pool is what limits it). When the
  window never saw a queue, `c` comes from the caller's memory of the last saturation
  (`QueueIntelligence` keeps it) or, failing that, from the KV bound `running / kv_usage` (how many
  requests of today's mean footprint the KV pool holds).
* Utilization `rho = lambda * E[S] / c` (offered load over capacity; above 1 means overload and the
  queue grows without bound).
* Predicted wait, three models, each a point and a 10-90 % prediction interval:
  - `little`: Little's law on the observed queue, `W = L_q / d`, `d` the rate requests leave the
    queue (equal to the arrival rate in steady state; the departure rate is the one that empties a
    FIFO queue when arrivals and service disagree). Interval: `L_q` departures of a Poisson stream
    take a Gamma(L_q, d) time.
  - `erlang_c`: M/M/c. Below saturation (rho < 1, no queue) the steady-state Erlang-C wait, whose
    distribution is `P(W > t) = C(c, a) * exp(-(c*mu - lambda) t)` (interval from that tail).
    With a queue present (or rho >= 1) the steady state is meaningless for a request arriving now:
    it waits for `L_q + 1` slot releases at rate `c * mu`, an Erlang(L_q + 1, c * mu) time.
  - `kingman`: the G/G/c correction of Kingman / Allen-Cunneen, `W = W_MMc * (Ca^2 + Cs^2) / 2`,
    with Cs^2 from the service-time histogram and Ca^2 from the dispersion of per-scrape arrival
    counts. Interval: a Gamma matched to that mean and to the coefficient of variation of the wait.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from statistics import NormalDist

from phaselens.analyzers.window import Group, HistogramDelta, TargetWindow, histogram_quantile
from phaselens.parsers.engines import canonical as cn

INTERVAL_LOWER_Q = 0.10
INTERVAL_UPPER_Q = 0.90
MAX_REPORTED_WAIT_SECONDS = 24 * 3600.0
"""Cap for reported waits: an infinite or absurd value helps nobody and breaks dashboards."""


@dataclass(frozen=True, slots=True)
class QueueObservation:
    """What the queue looked like over the window, for one (model_name, engine) group."""

    time: float
    seconds: float
    waiting: float
    running: float
    kv_usage: float | None
    arrival_rate: float | None
    admission_rate: float | None
    completion_rate: float | None
    mean_service_seconds: float | None
    service_scv: float | None
    arrival_scv: float | None
    saturated_concurrency: float | None
    kv_bound_concurrency: float | None
    first_tokens: float
    ttft_p50_seconds: float | None
    ttft_p90_seconds: float | None
    mean_queue_wait_seconds: float | None


@dataclass(frozen=True, slots=True)
class WaitPrediction:
    model: str
    point: float
    lower: float
    upper: float


# ----------------------------------------------------------------------------- observation


def _diffs(series: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(seconds, increase) per step of a cumulative series; a drop is a counter reset."""
    out: list[tuple[float, float]] = []
    for (t0, v0), (t1, v1) in itertools.pairwise(series):
        if t1 > t0:
            out.append((t1 - t0, v1 - v0 if v1 >= v0 else v1))
    return out


def finished_series(window: TargetWindow, group: Group, horizon: float | None = None) -> list[tuple[float, float]]:
    """Cumulative finished requests per scrape: `request_success` (every finished_reason), else the
    end-to-end latency histogram's count, which gets one observation per finished request (vLLM
    records it at finish; Dynamo's mocker exports it but no success counter)."""
    series = window.gauge_series(cn.REQUEST_SUCCESS, group, horizon)
    return series if series else window.histogram_count_series(cn.E2E_LATENCY_SECONDS, group, horizon)


def arrival_counts(window: TargetWindow, group: Group, horizon: float | None = None) -> list[tuple[float, float]]:
    """Arrivals per scrape step by conservation: finished + change in (waiting + running).

    vLLM has no arrival counter; every request that arrived is now waiting, running or finished
    (any finished_reason, aborts included), so arrivals = completions + growth of the population.
    A Dynamo frontend counts arrivals as they happen (`requests_started`): then its increases are
    the arrivals, per step.
    """
    started = window.gauge_series(cn.REQUESTS_STARTED, group, horizon)
    if len(started) >= 2:
        return [
            (t1 - t0, v1 - v0 if v1 >= v0 else v1)  # a counter reset restarts from 0
            for (t0, v0), (t1, v1) in itertools.pairwise(started)
        ]
    finished = dict(finished_series(window, group, horizon))
    waiting = dict(window.gauge_series(cn.REQUESTS_WAITING, group, horizon))
    running = dict(window.gauge_series(cn.REQUESTS_RUNNING, group, horizon))
    times = sorted(t for t in finished if t in waiting and t in running)
    out: list[tuple[float, float]] = []
    for t0, t1 in itertools.pairwise(times):
        done = finished[t1] - finished[t0] if finished[t1] >= finished[t0] else finished[t1]
        growth = (waiting[t1] + running[t1]) - (waiting[t0] + running[t0])
        out.append((t1 - t0, max(0.0, done + growth)))
    return out


def histogram_scv(delta: HistogramDelta) -> float | None:
    """Squared coefficient of variation from bucket mid-points (mean from the exact sum/count).

    The +Inf bucket is placed at 1.5x the last finite bound: a floor on its contribution.
    """
    if delta.count <= 1 or delta.mean is None or delta.mean <= 0:
        return None
    second_moment = 0.0
    lower, below = 0.0, 0.0
    for bound, cumulative in delta.buckets:
        n = cumulative - below
        if n > 0:
            mid = lower * 1.5 if math.isinf(bound) else (lower + bound) / 2
            second_moment += n * mid * mid
        if not math.isinf(bound):
            lower = bound
        below = cumulative
    variance = max(0.0, second_moment / delta.count - delta.mean**2)
    return variance / delta.mean**2


def observe(window: TargetWindow, group: Group, horizon: float | None = None) -> QueueObservation | None:
    """Collect the queue's observables; None when the engine reports no queue gauges."""
    latest = window.latest
    waiting = window.gauge(cn.REQUESTS_WAITING, group)
    running = window.gauge(cn.REQUESTS_RUNNING, group)
    if running is None and waiting is not None:
        # A Dynamo frontend has no running gauge: what is in flight and not queued is being served.
        inflight = window.gauge(cn.INFLIGHT_REQUESTS, group)
        running = max(0.0, inflight - waiting) if inflight is not None else None
    if latest is None or waiting is None or running is None:
        return None
    seconds = window.span(horizon)
    kv = window.gauge(cn.KV_CACHE_USAGE, group)

    steps = arrival_counts(window, group, horizon)
    span = sum(s for s, _ in steps)
    arrivals = sum(n for _, n in steps)
    arrival_rate = arrivals / span if span > 0 else None
    arrival_scv = _count_dispersion(steps)

    ttft = window.histogram_delta(cn.TTFT_SECONDS, group, horizon)
    admission_rate = ttft.count / ttft.seconds if ttft is not None and ttft.seconds > 0 else None
    first_tokens = ttft.count if ttft is not None else 0.0
    finished = window.rate(cn.REQUEST_SUCCESS, group, horizon=horizon)
    if finished is None:
        e2e_done = window.histogram_delta(cn.E2E_LATENCY_SECONDS, group, horizon)
        if e2e_done is not None and e2e_done.seconds > 0:
            finished = e2e_done.count / e2e_done.seconds

    service = window.histogram_delta(cn.INFERENCE_TIME_SECONDS, group, horizon)
    mean_service: float | None = None
    service_scv: float | None = None
    if service is not None and service.count > 0:
        mean_service, service_scv = service.mean, histogram_scv(service)
    else:
        e2e = window.histogram_delta(cn.E2E_LATENCY_SECONDS, group, horizon)
        queue = window.histogram_delta(cn.QUEUE_TIME_SECONDS, group, horizon)
        if e2e is not None and e2e.count > 0:
            if queue is not None and queue.count == e2e.count:
                mean_service = max(0.0, e2e.sum - queue.sum) / e2e.count
            elif ttft is not None and ttft.count > 0 and e2e.mean is not None and ttft.mean is not None:
                # no queue-time histogram (Dynamo's mocker): e2e minus TTFT, the time a request holds
                # its slot after its first token; e2e alone would count every queue wait as service
                mean_service = max(0.0, e2e.mean - ttft.mean)
            else:
                mean_service = e2e.sum / e2e.count
            service_scv = histogram_scv(e2e)
    queue_delta = window.histogram_delta(cn.QUEUE_TIME_SECONDS, group, horizon)

    busy = [
        r
        for (t, w), (_, r) in zip(
            window.gauge_series(cn.REQUESTS_WAITING, group, horizon),
            window.gauge_series(cn.REQUESTS_RUNNING, group, horizon),
            strict=False,
        )
        if w > 0 and r > 0 and t >= 0
    ]
    saturated = sum(busy) / len(busy) if busy else None
    kv_bound = running / kv if kv is not None and kv >= 0.05 and running > 0 else None

    return QueueObservation(
        time=latest.time,
        seconds=seconds,
        waiting=waiting,
        running=running,
        kv_usage=kv,
        arrival_rate=arrival_rate,
        admission_rate=admission_rate,
        completion_rate=finished,
        mean_service_seconds=mean_service if mean_service and mean_service > 0 else None,
        service_scv=service_scv,
        arrival_scv=arrival_scv,
        saturated_concurrency=saturated,
        kv_bound_concurrency=kv_bound,
        first_tokens=first_tokens,
        ttft_p50_seconds=histogram_quantile(0.5, ttft.buckets) if ttft is not None and ttft.count > 0 else None,
        ttft_p90_seconds=histogram_quantile(0.9, ttft.buckets) if ttft is not None and ttft.count > 0 else None,
        mean_queue_wait_seconds=queue_delta.mean if queue_delta is not None else None,
    )


def _count_dispersion(steps: list[tuple[float, float]]) -> float | None:
    """Index of dispersion Var(N)/E[N] of per-step arrival counts: Ca^2 for a renewal stream.

    Poisson arrivals give 1, a steady closed-loop client gives < 1, bursts give > 1.
    """
    if len(steps) < 4:
        return None
    rates = [n / s for s, n in steps]
    mean_step = sum(s for s, _ in steps) / len(steps)
    mean_rate = sum(rates) / len(rates)
    if mean_rate <= 0:
        return None
    counts = [r * mean_step for r in rates]
    mean_count = mean_rate * mean_step
    variance = sum((c - mean_count) ** 2 for c in counts) / (len(counts) - 1)
    return min(50.0, variance / mean_count)


# ----------------------------------------------------------------------------- utilization


def effective_concurrency(obs: QueueObservation, remembered: float | None = None) -> float | None:
    """Slots the engine runs with at saturation (see module doc for the order of sources)."""
    for candidate in (obs.saturated_concurrency, remembered, obs.kv_bound_concurrency):
        if candidate is not None and candidate >= 1.0:
            return candidate
    return None


def utilization(obs: QueueObservation, concurrency: float | None) -> float | None:
    """rho = lambda * E[S] / c; None without an arrival rate, a service time or a concurrency."""
    if obs.arrival_rate is None or obs.mean_service_seconds is None or not concurrency:
        return None
    return obs.arrival_rate * obs.mean_service_seconds / concurrency


# ----------------------------------------------------------------------------- distributions


def _lower_regularized_gamma(shape: float, x: float) -> float:
    """P(shape, x), the Gamma CDF with unit scale (series below shape+1, continued fraction above)."""
    if x <= 0:
        return 0.0
    log_prefix = shape * math.log(x) - x - math.lgamma(shape)
    if x < shape + 1:
        term = total = 1.0 / shape
        a = shape
        for _ in range(500):
            a += 1
            term *= x / a
            total += term
            if abs(term) < abs(total) * 1e-12:
                break
        return min(1.0, total * math.exp(log_prefix))
    # Lentz's continued fraction for Q(shape, x)
    tiny = 1e-300
    b = x + 1 - shape
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 500):
        an = -i * (i - shape)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-12:
            break
    return max(0.0, 1.0 - math.exp(log_prefix) * h)


def gamma_quantile(q: float, shape: float, scale: float) -> float:
    """Quantile of Gamma(shape, scale): safeguarded Newton on the CDF from a Wilson-Hilferty start."""
    if shape <= 0 or scale <= 0:
        raise ValueError("gamma shape and scale must be positive")
    if not 0.0 < q < 1.0:
        raise ValueError("quantile must be inside (0, 1)")
    return _unit_gamma_quantile(q, shape) * scale


@functools.lru_cache(maxsize=512)
def _unit_gamma_quantile(q: float, shape: float) -> float:
    """Gamma(shape, 1) quantile; memoized: the sidecar asks for the same two quantiles of the same
    shapes tick after tick (shape 1/SCV: 1/L_q for an integer queue, the service SCV while steady)."""
    z = NormalDist().inv_cdf(q)
    c = 1 / (9 * shape)
    x = max(1e-12, shape * (1 - c + z * math.sqrt(c)) ** 3)
    lo, hi = 0.0, math.inf
    log_norm = math.lgamma(shape)
    for _ in range(100):
        f = _lower_regularized_gamma(shape, x) - q
        if f < 0:
            lo = x
        else:
            hi = x
        density = math.exp((shape - 1) * math.log(x) - x - log_norm) if x > 0 else 0.0
        step = f / density if density > 0 else math.inf
        candidate = x - step
        if not lo < candidate < hi:  # Newton left the bracket: bisect (or expand when unbounded)
            candidate = (lo + hi) / 2 if math.isfinite(hi) else max(2 * x, 1.0)
        if abs(candidate - x) <= 1e-10 * max(1.0, x):
            x = candidate
            break
        x = candidate
    return x


def gamma_survival(t: float, mean: float, scv: float) -> float:
    """P(W > t) for W ~ Gamma with that mean and squared coefficient of variation (W = 0 if mean = 0)."""
    if t < 0:
        return 1.0
    if mean <= 0:
        return 0.0
    scv = max(scv, 1e-3)
    return 1.0 - _lower_regularized_gamma(1 / scv, t / (mean * scv))


def probability_total_exceeds(
    slo: float, service_buckets: tuple[tuple[float, float], ...], wait_mean: float, wait_scv: float
) -> float | None:
    """P(W + X > slo) with X from cumulative histogram buckets (uniform inside a bucket, the +Inf
    bucket always over) and W ~ Gamma(wait_mean, wait_scv) independent of X."""
    if not service_buckets or service_buckets[-1][1] <= 0:
        return None
    total = service_buckets[-1][1]
    prob = 0.0
    lower, below = 0.0, 0.0
    for bound, cumulative in service_buckets:
        n = cumulative - below
        if n > 0:
            if math.isinf(bound):
                prob += n
            else:
                points = [lower + (bound - lower) * (k + 0.5) / 4 for k in range(4)]
                prob += n * sum(gamma_survival(slo - x, wait_mean, wait_scv) for x in points) / 4
        if not math.isinf(bound):
            lower = bound
        below = cumulative
    return min(1.0, max(0.0, prob / total))


def erlang_c_probability(servers: float, offered_load: float) -> float:
    """Erlang C: probability an arrival waits in M/M/c (c may be fractional: rounded down, >= 1).

    Computed with the numerically stable Erlang-B recursion, C = B / (1 - rho (1 - B)).
    """
    c = max(1, int(servers))
    if offered_load <= 0:
        return 0.0
    rho = offered_load / c
    if rho >= 1:
        return 1.0
    b = 1.0
    for k in range(1, c + 1):
        b = offered_load * b / (k + offered_load * b)
    return b / (1 - rho * (1 - b))


# ----------------------------------------------------------------------------- predictions


def _clip(value: float) -> float:
    return min(MAX_REPORTED_WAIT_SECONDS, max(0.0, value))


def _gamma_interval(model: str, mean: float, scv: float) -> WaitPrediction:
    """Prediction with a Gamma(mean, scv) interval; zero mean gives the degenerate interval."""
    if mean <= 0:
        return WaitPrediction(model, 0.0, 0.0, 0.0)
    scv = max(scv, 1e-3)
    shape, scale = 1 / scv, mean * scv
    return WaitPrediction(
        model,
        _clip(mean),
        _clip(gamma_quantile(INTERVAL_LOWER_Q, shape, scale)),
        _clip(gamma_quantile(INTERVAL_UPPER_Q, shape, scale)),
    )


def little_wait(obs: QueueObservation) -> WaitPrediction | None:
    """W = L_q / d with d the queue departure rate (first tokens per second), else arrival rate."""
    if obs.waiting <= 0:
        return WaitPrediction("little", 0.0, 0.0, 0.0)
    rate = obs.admission_rate if obs.admission_rate else obs.arrival_rate
    if not rate or rate <= 0:
        return None
    # L_q departures of a Poisson stream: Gamma(shape=L_q, scale=1/d), SCV = 1/L_q.
    return _gamma_interval("little", obs.waiting / rate, 1 / obs.waiting)


def _saturated_now(obs: QueueObservation, concurrency: float) -> bool:
    return obs.waiting > 0 or obs.running >= concurrency


def erlang_c_wait(obs: QueueObservation, concurrency: float | None) -> WaitPrediction | None:
    if concurrency is None or obs.mean_service_seconds is None:
        return None
    mu = 1 / obs.mean_service_seconds
    rho = utilization(obs, concurrency)
    if _saturated_now(obs, concurrency) or rho is None or rho >= 1:
        # Transient form: wait for L_q + 1 slot releases at total rate c * mu (Erlang, SCV 1/(L_q+1)).
        releases = obs.waiting + 1
        return _gamma_interval("erlang_c", releases / (concurrency * mu), 1 / releases)
    lam = obs.arrival_rate or 0.0
    prob_wait = erlang_c_probability(concurrency, lam / mu)
    theta = concurrency * mu - lam
    if theta <= 0:
        return None
    mean = prob_wait / theta

    def tail_quantile(q: float) -> float:
        # P(W <= t) = 1 - C e^{-theta t}  =>  t_q = ln(C / (1 - q)) / theta, 0 when C <= 1 - q.
        return max(0.0, math.log(prob_wait / (1 - q)) / theta) if prob_wait > 0 else 0.0

    return WaitPrediction(
        "erlang_c",
        _clip(mean),
        _clip(tail_quantile(INTERVAL_LOWER_Q)),
        _clip(tail_quantile(INTERVAL_UPPER_Q)),
    )


def kingman_wait(obs: QueueObservation, concurrency: float | None) -> WaitPrediction | None:
    """Allen-Cunneen G/G/c: the M/M/c wait scaled by (Ca^2 + Cs^2) / 2."""
    base = erlang_c_wait(obs, concurrency)
    if base is None or obs.service_scv is None:
        return None
    ca2 = obs.arrival_scv if obs.arrival_scv is not None else 1.0
    cs2 = obs.service_scv
    factor = (ca2 + cs2) / 2
    if base.point <= 0:
        return WaitPrediction("kingman", 0.0, 0.0, 0.0)
    if _saturated_now(obs, concurrency or 1.0):
        # Transient: L_q + 1 releases of c slots, each release gap with SCV ~ Cs^2: the sum has
        # SCV Cs^2 / (L_q + 1); the mean does not change (Kingman's factor is a steady-state result).
        return _gamma_interval("kingman", base.point, max(cs2, 1e-3) / (obs.waiting + 1))
    # Steady state: same shape as M/M/c (mass at zero + exponential tail), scaled by the factor.
    return WaitPrediction("kingman", _clip(base.point * factor), _clip(base.lower * factor), _clip(base.upper * factor))


def predict_waits(obs: QueueObservation, concurrency: float | None) -> list[WaitPrediction]:
    found = [little_wait(obs), erlang_c_wait(obs, concurrency), kingman_wait(obs, concurrency)]
    return [p for p in found if p is not None and all(math.isfinite(v) for v in (p.point, p.lower, p.upper))]


def utilization_factor(rho: float) -> float:
    """rho / (1 - rho): how queueing delay scales with utilization (infinite at and past 1)."""
    return math.inf if rho >= 1 else rho / (1 - rho)
