"""A disaggregated NVIDIA Dynamo deployment seen from its frontend, joined with its workers.

A Dynamo frontend knows what no single worker does: the user's TTFT, ITL and request duration
(tokenization, routing and queueing before the engine included), per-request input, output and
cached tokens, and the router's view of every worker (`dynamo_frontend_worker_*`, labelled with
the worker's id in decimal and its `worker_type`). The mocker's workers add what only they know:
the decode worker's KV-cache utilization and preemptions, the prefill worker's time per request
(its `generate` endpoint's duration). A P/D prefill worker has no `vllm:*` metrics at all, and a
decode worker's own TTFT is its first token after the KV arrived, not the user's.

Joining: each worker writes its own id in hex (`dynamo_component_*{worker_id}`; the adapter keeps
it in decimal in `info[...]["dynamo_worker_id"]`), the frontend writes the same number in
decimal. Only joined workers contribute worker-side values; the frontend's gauges fill the rest.

Pool signals (target="pool", role="pool", engine="all", the frontend's model_name), only when
the frontend routes to at least one prefill and one decode worker, and no joined worker exports
vLLM's own prefill/decode time histograms (then analyzers.pool has the better data):
  prefill time the joined prefill workers' `generate` time per request (its own queue included),
               else the router's last TTFT on each prefill worker (`worker_last_time_to_first_token`)
  decode time  the joined decode workers' request time (vllm e2e, else `generate` time); their own
               TTFT is the wait for a decode seat plus the first step: the decode pool's share of
               the user's TTFT
  time share   sum(prefill time) / (sum(prefill time) + sum(decode time))
                                                               phaselens_phase_prefill_time_share_ratio
  load         analyzers.phase.pool_phase_load_with_admission: L_P = mean prefill time / TTFT
               budget; L_D = max(mean ITL (frontend) / ITL budget, decode saturation, mean
               decode-side TTFT / TTFT budget); saturation from the joined decode workers' KV
               utilization (1 when they preempted), else the frontend's active decode blocks over
               the model card's total blocks. A burst that queues for decode seats thus counts
               against decode, not prefill, although the user sees it in TTFT.
  score        analyzers.disaggregation with: prefill concurrency per prefill worker by Little's
               law from the joined prefill workers' request time; uncached prompt tokens
               (input - cached) and output tokens per request from the frontend; decode KV
               utilization as above; no transfer time (Dynamo 1.6.1 exports no measured
               KV-transfer time: the router's `kv_transfer_estimated_latency_seconds` is its own
               estimate, so that cost component is left out).

The prefill pool's queue (P/D, whenever the frontend routes to a prefill worker): with the KV
router's queue on (`--router-queue-threshold`) Dynamo holds requests in the frontend until a
prefill worker has room, so the prefill pool's queue is there, not in any prefill worker (and the
mocker's prefill worker exports no queue at all). It is exported for the pool it waits for,
labelled target="pool", role="prefill", engine="all", so the recording rules' per-role sums add it
to the prefill pool:
  phaselens_prefill_queue_depth     the router's queued requests for prefill workers
  phaselens_prefill_backlog_seconds its drain time in one pod's seconds, queued x n / dispatched per
               second (n = the prefill workers the router had, averaged over the window's scrapes
               as the saturation counts them, the latest count without that series; dispatched =
               what the router sent to the prefill pool over the window, the frontend's arrivals
               minus the router queue's growth): the same unit as the per-pod drain-time backlog (analyzers.backlog),
               whose pool sum is queued / (rate per pod). Dispatched, not finished: a request
               finishes after its decode, so when outputs lengthen the finished rate falls while
               the prefill pool keeps its pace (the fleet lab's mix-shift read 5.6 s on a prefill
               pool that kept up). The finished rate only where the frontend exports no arrival
               counter. 0 when nothing is queued; absent while requests are queued and none was
               dispatched in the window.
The prefill pool's saturation (P/D, from the router's view; with or without its queue):
  phaselens_prefill_saturation_ratio  rho x n, the pool sum of per-pod saturations, so an HPA
               AverageValue target reads it per pod (0.8 = each pod 80 % busy). n is the prefill
               workers the router had at each scrape (`worker_active_prefill_tokens` series), not the
               latest count: a window that straddles a new worker's arrival is mostly the smaller pool.
               rho, the pool's prefill demand over its capacity:
               basis="tokens": the prompt tokens the router has in flight on the prefill workers
                 over n x max_num_batched_tokens (the model card), at most 1 at each scrape,
                 averaged over the window (weighted by each scrape's n): the share of one full
                 prefill batch per worker in use. The router's queue holds requests while every
                 worker is near a batch's worth in flight (threshold 1.0); it admits whole prompts,
                 so a saturated worker read 0.7-1.6 batches in the fleet lab: this term tracks
                 saturation loosely and cannot say by how much demand exceeds the pool.
               basis="arrivals", when the router's prefill queue held requests at every scrape of
                 the window's last stretch, and that stretch spans at least half the window
                 (SATURATED_SHARE): the pool ran at capacity through it, so what it dispatched there
                 is its capacity; rho = arrivals / dispatched over the stretch, dispatched =
                 arrivals - (queue at its end - queue at its start, at least 1 request) (arrivals: the
                 frontend's requests started), n the stretch's mean. It says by how much demand
                 exceeds the pool when the tokens term is pinned at 1, and falls below 1 while a
                 queue drains (the queue itself is the backlog's: a saturation held at 1 while a
                 built queue drains asked for 25 % more pods at every sync in the fleet lab, up to 7
                 where 3 were needed). A queue held for less than half the window is a burst, not a
                 measure of capacity: the tokens basis then. Measured over the stretch, a step up is
                 read half a window after the queue forms, not a whole window.
               A flow, not a stock: it reaches its level as soon as the load does, where the
               backlog (a stock) grows only as fast as the excess demand fills the queue.
Pure: findings carry `issues` (stable event names) for the caller to log; no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from phaselens.analyzers.backlog import finished_per_second
from phaselens.analyzers.disaggregation import DisaggregationInputs, disaggregation_score
from phaselens.analyzers.kv_cache import clamp01, info_number, kv_utilization
from phaselens.analyzers.phase import Moments, PhaseTimes, pool_phase_load_with_admission, prefill_time_share
from phaselens.analyzers.pool import POOL_ENGINE, POOL_ROLE, POOL_TARGET
from phaselens.analyzers.prefill_saturation import PrefillSaturation, demand_over_dispatched
from phaselens.analyzers.target import SignalSink
from phaselens.analyzers.view import WindowView
from phaselens.analyzers.window import Group, TargetWindow
from phaselens.model import EngineSnapshot, Signal, Target, label_value
from phaselens.parsers.engines import canonical as c
from phaselens.settings import Settings

WORKER_GAUGES = (
    c.DYNAMO_WORKER_ACTIVE_DECODE_BLOCKS,
    c.DYNAMO_WORKER_ACTIVE_PREFILL_TOKENS,
    c.DYNAMO_WORKER_LAST_TTFT_SECONDS,
    c.DYNAMO_WORKER_LAST_ITL_SECONDS,
)


@dataclass(frozen=True, slots=True)
class Issue:
    """Something about the deployment's output a person should know; `event` is a stable name."""

    event: str
    fields: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class FrontendWorkers:
    """The workers one frontend routes to: decimal id -> worker_type, per model."""

    target: str
    model: str
    workers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class DynamoFindings:
    signals: list[Signal] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    joined: Mapping[str, str] = field(default_factory=dict)
    """decimal worker id -> the name of the target scraping that worker."""
    frontends: tuple[str, ...] = ()
    """names of the fresh targets that are Dynamo frontends."""


def is_frontend(snapshot: EngineSnapshot | None) -> bool:
    """A frontend payload carries the router's per-worker gauges or Dynamo's arrival counter."""
    if snapshot is None or snapshot.engine_kind != "dynamo":
        return False
    return any(name in WORKER_GAUGES or name == c.REQUESTS_STARTED for name, _ in snapshot.scalars)


def frontend_workers(target: str, snapshot: EngineSnapshot) -> list[FrontendWorkers]:
    """Workers listed in the latest frontend scrape, per model (a gauge without a model is the
    payload's one model, as the adapter resolves it)."""
    by_model: dict[str, dict[str, str]] = {}
    for name, labels in snapshot.scalars:
        if name not in WORKER_GAUGES:
            continue
        worker_id = label_value(labels, "worker_id")
        if worker_id:
            by_model.setdefault(label_value(labels, "model_name"), {})[worker_id] = label_value(labels, "worker_type")
    models = {label_value(labels, "model_name") for name, labels in snapshot.scalars if name == c.REQUESTS_STARTED}
    for model in models:
        by_model.setdefault(model, {})
    return [FrontendWorkers(target, model, workers) for model, workers in sorted(by_model.items())]


def worker_id(window: TargetWindow) -> str | None:
    latest = window.latest
    if latest is None:
        return None
    for info in latest.info.values():
        found = info.get(c.INFO_DYNAMO_WORKER_ID)
        if found:
            return found
    return None


def _moments(view: WindowView, name: str, group: Group) -> Moments:
    delta = view.histogram_delta(name, group)
    return Moments(delta.sum, delta.count) if delta is not None else Moments()


def _frontend_group(view: WindowView, model: str) -> Group | None:
    for group in view.groups():
        if group[0] == model:
            return group
    return None


def _worker_groups(view: WindowView) -> list[Group]:
    return view.groups()


def analyze_dynamo(
    windows: Mapping[str, tuple[Target, TargetWindow]], settings: Settings
) -> DynamoFindings:
    """Pool signals for every frontend model served by prefill and decode workers, and the issues
    (ids that do not join, a frontend without workers) met on the way."""
    horizon = settings.window_seconds
    frontends: list[tuple[Target, TargetWindow, FrontendWorkers]] = []
    workers: dict[str, tuple[Target, TargetWindow]] = {}
    issues: list[Issue] = []
    for name in sorted(windows):
        target, window = windows[name]
        latest = window.latest
        if is_frontend(latest):
            assert latest is not None
            frontends.extend((target, window, fw) for fw in frontend_workers(target.name, latest))
            continue
        if latest is None or latest.engine_kind != "dynamo":
            continue
        wid = worker_id(window)
        if wid is None:
            issues.append(Issue("dynamo_worker_id_missing", {"target": target.name}))
            continue
        workers[wid] = (target, window)

    sink = SignalSink()
    joined: dict[str, str] = {}
    listed: set[str] = set()
    for target, window, fw in frontends:
        if not fw.workers:
            issues.append(Issue("dynamo_frontend_no_workers", {"target": target.name, "model_name": fw.model}))
            continue
        listed.update(fw.workers)
        for wid, wtype in sorted(fw.workers.items()):
            if wid in workers:
                joined[wid] = workers[wid][0].name
            elif workers:  # some workers are scraped, this one is not (or its id does not match)
                issues.append(Issue("dynamo_worker_unjoined",
                                    {"target": target.name, "worker_id": wid, "worker_type": wtype}))
        view = WindowView(window, horizon)
        _pool_signals(fw, view, workers, settings, sink)
        _prefill_pool(fw, view, sink)
    if frontends:
        for wid, (target, _) in sorted(workers.items()):
            if wid not in listed:
                issues.append(Issue("dynamo_worker_unknown_to_frontend", {"target": target.name, "worker_id": wid}))
    return DynamoFindings(sink.signals, issues, joined, tuple(sorted({t.name for t, _, _ in frontends})))


def _pool_signals(
    fw: FrontendWorkers,
    view: WindowView,
    workers: Mapping[str, tuple[Target, TargetWindow]],
    settings: Settings,
    sink: SignalSink,
) -> None:
    prefill_ids = sorted(w for w, t in fw.workers.items() if t == "prefill")
    decode_ids = sorted(w for w, t in fw.workers.items() if t == "decode")
    if not prefill_ids or not decode_ids:
        return  # aggregated: the frontend target's own signals say it all
    group = _frontend_group(view, fw.model)
    seconds = view.span()
    if group is None or seconds <= 0 or _vllm_phase_times(prefill_ids + decode_ids, workers):
        return
    base = {"target": POOL_TARGET, "role": POOL_ROLE, "model_name": fw.model, "engine": POOL_ENGINE}
    itl = _moments(view, c.ITL_SECONDS, group)

    prefill = _worker_moments(prefill_ids, workers, view.horizon, (c.WORKER_REQUEST_SECONDS,))
    if prefill.count <= 0:
        # no prefill worker joined: the router's last TTFT on each prefill worker is its prefill time
        last = [v for wid in prefill_ids
                if (v := view.gauge(c.DYNAMO_WORKER_LAST_TTFT_SECONDS, group, {"worker_id": wid})) is not None]
        prefill = Moments(sum(last), len(last))
    decode = _worker_moments(decode_ids, workers, view.horizon, (c.E2E_LATENCY_SECONDS, c.WORKER_REQUEST_SECONDS))
    decode_ttft = _worker_moments(decode_ids, workers, view.horizon, (c.TTFT_SECONDS,))
    decode_kv, preemptions = _decode_saturation(view, group, decode_ids, workers, horizon=view.horizon)
    prefill_pool = PhaseTimes(seconds, Moments(), prefill, Moments(), Moments(), Moments())
    decode_pool = PhaseTimes(seconds, Moments(), Moments(), decode, decode_ttft, itl)
    if prefill.count > 0:
        if decode.count > 0:
            sink.add("phaselens_phase_prefill_time_share_ratio", base, prefill_time_share(prefill, decode))
        sink.phase(base, pool_phase_load_with_admission(prefill_pool, decode_pool, decode_kv, preemptions,
                                                        settings.slo_ttft_seconds, settings.slo_itl_seconds))

    prompt = _moments(view, c.REQUEST_PROMPT_TOKENS, group)
    cached = _moments(view, c.REQUEST_CACHED_TOKENS, group)
    output = _moments(view, c.REQUEST_GENERATION_TOKENS, group)
    uncached = None
    if prompt.count > 0:
        uncached = max(0.0, prompt.sum - (cached.sum if cached.count > 0 else 0.0)) / prompt.count
    score = disaggregation_score(DisaggregationInputs(
        prefill_concurrency_per_instance=_prefill_concurrency(prefill_ids, workers, view.horizon),
        uncached_prompt_tokens=uncached,
        output_tokens=output.mean,
        transfer_seconds_total=None,
        decode_ttft_seconds_total=None,
        decode_kv_utilization=decode_kv,
        kv_knee=settings.thresholds.utilization_knee,
    ))
    if score is not None:
        sink.add("phaselens_disaggregation_score", base, score.score)
        for component, value in score.components.items():
            sink.add("phaselens_disaggregation_component_ratio", base, value, component=component)


PREFILL_ROLE = "prefill"
SATURATED_SHARE = 0.5
"""The share of the window the router's queue must have held requests at every scrape, ending at the
latest, before arrivals over dispatched measures the pool's capacity: a queue seen at a few scrapes is
a burst (a Poisson burst on a half-busy pool read as saturation asked for 30 % more pods in the fleet
lab), one held for half the window a pool at capacity. Half, not all: the fleet lab's prefill-heavy
step (1.4x the warm pool's capacity) is then read at the first HPA sync after it (4 pods at once,
where requiring the whole window went 3, then 5, then 6)."""


def router_prefill_backlog(queued: float, prefill_workers: float, served_per_s: float | None) -> float | None:
    """The router's prefill queue in one pod's seconds of work: queued / (requests the pool serves
    per second per prefill worker). 0 when nothing is queued; None when requests wait and the rate
    is unknown."""
    if queued <= 0:
        return 0.0
    if served_per_s is None or served_per_s <= 0 or prefill_workers <= 0:
        return None
    return queued * prefill_workers / served_per_s


def router_dispatched_per_second(
    queued: Sequence[tuple[float, float]], arrivals_since: Callable[[float], float | None]
) -> float | None:
    """Requests the router sent to the prefill pool per second over the window: the arrivals since
    the window's first scrape of the queue minus the queue's growth since then. None without two
    scrapes of the queue or without the arrival counter."""
    if len(queued) < 2 or queued[-1][0] <= queued[0][0]:
        return None
    arrivals = arrivals_since(queued[0][0])
    if arrivals is None:
        return None
    return max(0.0, arrivals - (queued[-1][1] - queued[0][1])) / (queued[-1][0] - queued[0][0])


def _prefill_pool(fw: FrontendWorkers, view: WindowView, sink: SignalSink) -> None:
    """The prefill pool's queue held in the frontend's KV router and the pool's saturation from the
    router's view (module docstring)."""
    prefill_workers = sum(1 for t in fw.workers.values() if t == PREFILL_ROLE)
    group = _frontend_group(view, fw.model)
    if prefill_workers == 0 or group is None:
        return
    base = {"target": POOL_TARGET, "role": PREFILL_ROLE, "model_name": fw.model, "engine": POOL_ENGINE}
    match = {"worker_type": PREFILL_ROLE}
    end = view.window.latest.time if view.window.latest is not None else 0.0

    def arrivals_since(start: float) -> float | None:
        # a hair past the stretch's first scrape, so float rounding cannot drop that scrape
        return view.window.increase(c.REQUESTS_STARTED, group, horizon=end - start + 1e-6)

    in_flight = view.gauge_series_values(c.DYNAMO_WORKER_ACTIVE_PREFILL_TOKENS, group, match)
    queue = view.gauge_series(c.DYNAMO_ROUTER_QUEUED_REQUESTS, group, match)
    queued = view.gauge(c.DYNAMO_ROUTER_QUEUED_REQUESTS, group, match)
    if queued is not None:  # None: a Dynamo without the router queue's metrics
        sink.add("phaselens_prefill_queue_depth", base, queued)
        served = None
        if queued > 0:
            served = router_dispatched_per_second(queue, arrivals_since)
            if served is None:  # a frontend without the arrival counter
                served = finished_per_second(view, group)
        # per worker: the rate over the workers that served it, the window's mean count (a window
        # that straddles new workers' arrival was served by the smaller pool: the latest count
        # doubled the backlog in the fleet lab's P/D prefill-heavy, 7.7 s, and asked for 6 pods)
        serving = _mean_workers(in_flight) or float(prefill_workers)
        sink.add("phaselens_prefill_backlog_seconds", base, router_prefill_backlog(queued, serving, served))
    saturation = router_prefill_saturation(
        in_flight,
        info_number(view, group, c.INFO_MAX_NUM_BATCHED_TOKENS),
        queue,
        arrivals_since,
        view.horizon,
    )
    if saturation is not None:
        sink.add("phaselens_prefill_saturation_ratio", base, saturation.pool_sum, basis=saturation.basis)


def router_prefill_saturation(
    in_flight_tokens: Sequence[tuple[float, Sequence[float]]],
    batch_tokens: float | None,
    queued: Sequence[tuple[float, float]],
    arrivals_since: Callable[[float], float | None],
    horizon: float,
) -> PrefillSaturation | None:
    """The prefill pool's demand over its capacity from the router's view (module docstring):
    `in_flight_tokens` (time, the prompt tokens the router has in flight on each prefill worker) at
    each scrape of the window, `queued` (time, the router's queue) at each scrape (empty without the
    router queue's metrics), `arrivals_since(t)` the requests that arrived from time t to the end."""
    if batch_tokens is None or batch_tokens <= 0:
        return None
    # Each scrape with the workers it had, not the latest count: a window that straddles a new
    # worker's arrival is mostly the smaller pool (with the latest count 5 workers read 4.5 and asked
    # for a 6th in the fleet lab's P/D prefill-heavy). Each scrape at most one full batch per worker:
    # the router admits a whole request while a worker is under the batch, so a saturated worker
    # reads 1.0-1.6 batches in flight, and averaging that overshoot would read a pool saturated half
    # the time as fully saturated.
    busy = [len(v) * min(1.0, max(0.0, sum(v) / (len(v) * batch_tokens))) for _, v in in_flight_tokens if v]
    if not busy:
        return None
    pods = _mean_workers(in_flight_tokens)
    tokens = PrefillSaturation(sum(busy) / len(busy) / pods, "tokens", pods)
    held = _held_queue(queued)
    if held is None or held[-1][0] - held[0][0] < horizon * SATURATED_SHARE:
        return tokens
    arrivals = arrivals_since(held[0][0])
    if arrivals is None:
        return tokens
    # The router held requests at every scrape since held[0]: the pool ran at its capacity, so what
    # arrived over what it dispatched since then is demand over capacity, with the workers it had
    # then (in_flight_tokens and queued are scraped together). At least one request dispatched, the
    # counters' resolution. Below 1 while a queue drains: the queue itself is the backlog's input
    # (the tokens term would read 1 until it is gone).
    capacity_pods = _mean_workers([x for x in in_flight_tokens if x[0] >= held[0][0]]) or pods
    return PrefillSaturation(demand_over_dispatched(arrivals, held[-1][1] - held[0][1]), "arrivals", capacity_pods)


def _mean_workers(in_flight_tokens: Sequence[tuple[float, Sequence[float]]]) -> float:
    """The router's mean prefill worker count over the scrapes that list any (0.0 without one)."""
    counts = [len(v) for _, v in in_flight_tokens if v]
    return sum(counts) / len(counts) if counts else 0.0


def _held_queue(queued: Sequence[tuple[float, float]]) -> list[tuple[float, float]] | None:
    """The window's last scrapes at which the router held requests, back to the latest empty one."""
    start = len(queued)
    while start > 0 and queued[start - 1][1] > 0:
        start -= 1
    held = list(queued[start:])
    return held if len(held) >= 2 else None


def _vllm_phase_times(ids: list[str], workers: Mapping[str, tuple[Target, TargetWindow]]) -> bool:
    """Workers that export vLLM's own prefill/decode time histograms (a real vLLM behind Dynamo) are
    analysed by the generic pool analyzer (analyzers.pool) from those: no second set of pool signals."""
    for wid in ids:
        if wid in workers:
            window = workers[wid][1]
            if any(window.has(c.PREFILL_TIME_SECONDS, g) or window.has(c.DECODE_TIME_SECONDS, g)
                   for g in window.groups()):
                return True
    return False


def _worker_moments(
    ids: list[str], workers: Mapping[str, tuple[Target, TargetWindow]], horizon: float, names: tuple[str, ...]
) -> Moments:
    """Window moments of the first of `names` each joined worker has, summed over the workers."""
    total = Moments()
    for wid in ids:
        if wid not in workers:
            continue
        wview = WindowView(workers[wid][1], horizon)
        for wgroup in _worker_groups(wview):
            for name in names:
                delta = wview.histogram_delta(name, wgroup)
                if delta is not None and delta.count > 0:
                    total = total + Moments(delta.sum, delta.count)
                    break
    return total


def _decode_saturation(
    view: WindowView, group: Group, decode_ids: list[str],
    workers: Mapping[str, tuple[Target, TargetWindow]], horizon: float,
) -> tuple[float | None, float | None]:
    """Mean KV utilization of the decode workers and their summed preemption rate: from the joined
    workers themselves, else from the frontend's active decode blocks over the model card's blocks."""
    utilizations: list[float] = []
    preemptions: list[float] = []
    for wid in decode_ids:
        if wid not in workers:
            continue
        wview = WindowView(workers[wid][1], horizon)
        for wgroup in _worker_groups(wview):
            u = kv_utilization(wview, wgroup)
            if u is not None:
                utilizations.append(u)
            p = wview.rate(c.PREEMPTIONS, wgroup)
            if p is not None:
                preemptions.append(p)
    if utilizations:
        return sum(utilizations) / len(utilizations), (sum(preemptions) if preemptions else None)
    total = view.gauge(c.KV_TOTAL_BLOCKS, group)
    if total is None or total <= 0:
        return None, None
    active = [
        v for wid in decode_ids
        if (v := view.gauge(c.DYNAMO_WORKER_ACTIVE_DECODE_BLOCKS, group, {"worker_id": wid})) is not None
    ]
    if not active:
        return None, None
    return clamp01(sum(active) / len(active) / total), None


def _prefill_concurrency(
    prefill_ids: list[str], workers: Mapping[str, tuple[Target, TargetWindow]], horizon: float
) -> float | None:
    """Mean requests in prefill per joined prefill worker (Little's law: request-seconds per
    second of the worker's `generate` time); None when no prefill worker is joined."""
    busy = 0.0
    seconds = 0.0
    measured = 0
    for wid in prefill_ids:
        if wid not in workers:
            continue
        measured += 1
        wview = WindowView(workers[wid][1], horizon)
        for wgroup in _worker_groups(wview):
            delta = wview.histogram_delta(c.WORKER_REQUEST_SECONDS, wgroup)
            if delta is not None and delta.seconds > 0:
                busy += delta.sum
                seconds = max(seconds, delta.seconds)
    if seconds > 0 and measured:
        return busy / seconds / measured
    return None
