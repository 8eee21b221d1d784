"""SLO attainment and goodput over one window, from histogram marginals.

Engine metrics are histograms, so which request met both SLOs is unknown. Each SLO's attainment
is read from its histogram (exact when the SLO is a bucket bound, else bounded by the two
neighbouring bounds), and the joint attainment is bounded by the Fréchet inequalities
max(0, a + b - 1) <= P(A and B) <= min(a, b). Goodput = attainment x completed-request rate
(DistServe's goodput; vLLM `benchmark_serving --goodput` counts a request good when every SLO holds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from phaselens.analyzers.view import WindowView
from phaselens.analyzers.window import Group, HistogramDelta, fraction_at_most
from phaselens.parsers.engines import canonical as c

ItlSource = Literal["tpot_request", "itl_step"]

NOT_GOOD_REASONS: frozenset[str] = frozenset({"abort", "error"})
"""Finish reasons that never count as good output (aborted or failed requests)."""


@dataclass(frozen=True, slots=True)
class Attainment:
    lower: float
    upper: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.lower <= self.upper <= 1.0:
            raise ValueError(f"attainment bounds out of order: {self.lower} > {self.upper}")


@dataclass(frozen=True, slots=True)
class RequestRate:
    finished_per_second: float
    good_eligible_per_second: float
    """Finished requests that were not aborted or failed: the base goodput multiplies."""
    finished_in_window: float


@dataclass(frozen=True, slots=True)
class GoodputSummary:
    ttft: Attainment | None
    itl: Attainment | None
    itl_source: ItlSource | None
    joint: Attainment | None
    goodput_lower_per_second: float | None
    goodput_upper_per_second: float | None
    """Requests per second meeting every SLO (Fréchet lower and upper bound)."""
    requests_in_window: float


def attainment(delta: HistogramDelta | None, slo: float | None) -> Attainment | None:
    """Share of the window's observations <= slo; bounds from the neighbouring bucket bounds."""
    if delta is None or slo is None or delta.count <= 0:
        return None
    bounds = fraction_at_most(slo, delta.buckets)
    if bounds is None:
        return None
    lower, upper = (min(1.0, max(0.0, b)) for b in bounds)
    return Attainment(lower=min(lower, upper), upper=upper)


def frechet_joint(first: Attainment | None, second: Attainment | None) -> Attainment | None:
    """Bounds on P(A and B) from the marginals; with one SLO the joint is that SLO's attainment."""
    if first is None:
        return second
    if second is None:
        return first
    lower = max(0.0, first.lower + second.lower - 1.0)
    upper = min(first.upper, second.upper)
    return Attainment(lower=min(lower, upper), upper=upper)


def request_rate(window: WindowView, group: Group) -> RequestRate | None:
    """Finished requests per second: vLLM's request_success counter summed over finish reasons,
    else the e2e-latency histogram's count, else Dynamo's request counter."""
    seconds = window.span()
    if seconds <= 0:
        return None
    total = window.increase(c.REQUEST_SUCCESS, group)
    if total is not None:
        bad = sum(
            window.increase(c.REQUEST_SUCCESS, group, {"finished_reason": reason}) or 0.0
            for reason in NOT_GOOD_REASONS
        )
        good = max(0.0, total - bad)
        return RequestRate(total / seconds, good / seconds, total)
    delta = window.histogram_delta(c.E2E_LATENCY_SECONDS, group)
    if delta is not None and delta.seconds > 0:
        return RequestRate(delta.count / delta.seconds, delta.count / delta.seconds, delta.count)
    dynamo = window.increase(c.REQUESTS_TOTAL, group)
    if dynamo is not None:
        return RequestRate(dynamo / seconds, dynamo / seconds, dynamo)
    return None


def itl_delta(window: WindowView, group: Group) -> tuple[HistogramDelta | None, ItlSource | None]:
    """Per-request TPOT when the engine has it (the quantity DistServe's SLO is about), else the
    per-step inter-token latency (each output step is one observation, so long requests weigh more)."""
    tpot = window.histogram_delta(c.TPOT_REQUEST_SECONDS, group)
    if tpot is not None and tpot.count > 0:
        return tpot, "tpot_request"
    itl = window.histogram_delta(c.ITL_SECONDS, group)
    if itl is not None and itl.count > 0:
        return itl, "itl_step"
    return None, None


def goodput_summary(
    window: WindowView, group: Group, slo_ttft: float | None, slo_itl: float | None
) -> GoodputSummary:
    ttft_delta = window.histogram_delta(c.TTFT_SECONDS, group)
    ttft = attainment(ttft_delta, slo_ttft)
    itl_hist, itl_source = itl_delta(window, group) if slo_itl is not None else (None, None)
    itl = attainment(itl_hist, slo_itl)
    joint = frechet_joint(ttft, itl)
    rate = request_rate(window, group)
    lower_rps = upper_rps = None
    if joint is not None and rate is not None:
        lower_rps = joint.lower * rate.good_eligible_per_second
        upper_rps = joint.upper * rate.good_eligible_per_second
    requests = ttft_delta.count if ttft_delta is not None else (rate.finished_in_window if rate else 0.0)
    return GoodputSummary(
        ttft=ttft,
        itl=itl,
        itl_source=itl_source if itl is not None else None,
        joint=joint,
        goodput_lower_per_second=lower_rps,
        goodput_upper_per_second=upper_rps,
        requests_in_window=requests,
    )
