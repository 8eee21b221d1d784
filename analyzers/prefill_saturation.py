"""Prefill saturation: a prefill pod's (or pool's) demand over its capacity, `phaselens_prefill_saturation_ratio`.

The prefill HPA's flow input beside the backlog (a stock: under a load just above capacity it fills
only as fast as the excess arrives, and once built it asks for the pods that would drain it; the
fleet lab's P/D mix-shift, docs/fleet.md). rho = 1 is a saturated pod; the HPA reads the pool's sum
against 0.8 per pod.

A prefill engine target (role "prefill"; its own sidecar), per (model_name, engine) group:
  basis="arrivals", when requests waited at every scrape of the window: the engine ran at its
    capacity throughout, so arrivals over what it admitted measures demand over capacity (a queue
    at some scrapes only is a burst on a pod that was idle in between: it measures nothing about
    capacity, so the busy basis then). arrivals = finished (the end-to-end latency histogram's
    count) + the growth of running + waiting; admitted = arrivals - the growth of waiting, at
    least 1 request (the counters' resolution). Below 1 while a queue drains: the queue itself is
    the backlog's input.
  basis="busy", otherwise: the share of the window's scrapes at which the engine had a request
    running, the sampled fraction of time it was prefilling (a prefill worker holds a request only
    while it prefills it). At most 1; it errs high under batching (two short prefills in one step
    count as one busy sample, as they should; a long one spanning scrapes counts each).
A Dynamo frontend exports the pool's value from the router's view instead (analyzers.dynamo_pool);
the recording rules prefer the pods' own series when both exist. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from phaselens.analyzers.view import WindowView
from phaselens.analyzers.window import Group
from phaselens.parsers.engines import canonical as c

Basis = Literal["busy", "tokens", "arrivals"]


@dataclass(frozen=True, slots=True)
class PrefillSaturation:
    rho: float
    """prefill demand over capacity (1 = saturated)."""
    basis: Basis
    pods: float = 1.0
    """the pods that capacity is, averaged over the window (a pool's workers come and go)."""

    @property
    def pool_sum(self) -> float:
        """rho x pods: the demand in pods' worth of saturated pods, what an AverageValue HPA reads."""
        return self.rho * self.pods


def demand_over_dispatched(arrivals: float, queue_growth: float) -> float:
    """Arrivals over what was dispatched from a queue that held requests (at least one request)."""
    return max(0.0, arrivals) / max(1.0, arrivals - queue_growth)


def engine_prefill_saturation(window: WindowView, group: Group) -> PrefillSaturation | None:
    """One prefill engine's saturation over the window (module docstring); None without a running count."""
    running = [v for _, v in window.gauge_series(c.REQUESTS_RUNNING, group)]
    if not running:
        return None
    waiting = [v for _, v in window.gauge_series(c.REQUESTS_WAITING, group)]
    finished = window.histogram_delta(c.E2E_LATENCY_SECONDS, group)
    if len(waiting) >= 2 and min(waiting) > 0 and finished is not None and len(running) >= 2:
        growth = (running[-1] + waiting[-1]) - (running[0] + waiting[0])
        arrivals = finished.count + growth
        return PrefillSaturation(demand_over_dispatched(arrivals, waiting[-1] - waiting[0]), "arrivals")
    return PrefillSaturation(sum(1 for v in running if v > 0) / len(running), "busy")
