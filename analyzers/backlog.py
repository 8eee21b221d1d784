"""Prefill queue depth and the token-aware prefill backlog in seconds.

backlog_seconds = queue depth x mean uncached prompt tokens per request / peak prefill tokens per
second. It is the signal llm-d's token-aware KEDA guide scales prefill on (queued uncached tokens
divided by a calibrated prefill speed V_P), measured here instead of calibrated: V_P is the highest
per-scrape rate of locally computed prompt tokens seen in the window.

When the engine exports no prompt-token counts (Dynamo's mocker workers export queue depth and
request histograms but no token counters), the backlog is the queue's drain time instead:
queue depth / requests finished per second over the window. A queue only forms while every seat
is taken, so the finish rate is then the engine's service rate, and depth / rate is how long the
last queued request waits before it starts: seconds of queued work, like the token version, but
counting all of a request's work (in a KV-bound engine queued requests wait for decode seats).
Without it the pool's only signal on such engines is KV utilization, which stops near 1 per pod
while the queue grows without bound (benchmarks/fleet, docs/fleet.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

from phaselens.analyzers.view import WindowView
from phaselens.analyzers.window import Group
from phaselens.parsers.engines import canonical as c

QueueSource = Literal["capacity", "total"]
TokensSource = Literal["kv_computed", "prompt_minus_hits", "prompt_rate", "drain"]


@dataclass(frozen=True, slots=True)
class PrefillBacklog:
    queue_depth: float | None
    queue_source: QueueSource | None
    uncached_tokens_per_request: float | None
    tokens_source: TokensSource | None
    peak_prefill_tokens_per_second: float | None
    backlog_seconds: float | None
    finished_per_second: float | None = None  # set when the backlog is the queue's drain time


def queue_depth(window: WindowView, group: Group) -> tuple[float | None, QueueSource | None]:
    """Requests waiting for scheduling capacity.

    vLLM >= 2026-04 splits the waiting count by reason; requests `deferred` by a remote KV
    transfer or a LoRA budget are not waiting for prefill capacity, so only `capacity` counts
    when the split exists. Older engines give the total.
    """
    capacity = window.gauge(c.REQUESTS_WAITING_BY_REASON, group, {"reason": "capacity"})
    if capacity is not None:
        return max(0.0, capacity), "capacity"
    total = window.gauge(c.REQUESTS_WAITING, group)
    if total is not None:
        return max(0.0, total), "total"
    return None, None


def uncached_tokens_per_request(
    window: WindowView, group: Group, hit_ratio: float | None
) -> tuple[float | None, TokensSource | None]:
    """Mean prompt tokens a request needs computed (not found in the prefix cache), over the window."""
    computed = window.histogram_delta(c.REQUEST_PREFILL_KV_COMPUTED_TOKENS, group)
    if computed is not None and computed.mean is not None:
        return computed.mean, "kv_computed"
    miss = 1.0 - hit_ratio if hit_ratio is not None else 1.0
    prompt = window.histogram_delta(c.REQUEST_PROMPT_TOKENS, group)
    if prompt is not None and prompt.mean is not None:
        return prompt.mean * miss, "prompt_minus_hits"
    tokens = window.increase(c.PROMPT_TOKENS, group)
    finished = window.increase(c.REQUEST_SUCCESS, group)
    if tokens is not None and finished is not None and finished > 0:
        return tokens / finished * miss, "prompt_rate"
    return None, None


def _step_rates(series: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(end time, per-second increase) between consecutive points; a counter reset is skipped."""
    out: list[tuple[float, float]] = []
    for (t0, v0), (t1, v1) in pairwise(series):
        if t1 > t0 and v1 >= v0:
            out.append((t1, (v1 - v0) / (t1 - t0)))
    return out


def peak_prefill_tokens_per_second(window: WindowView, group: Group, hit_ratio: float | None) -> float | None:
    """Highest per-scrape rate of prompt tokens computed locally (prompt minus cached) in the window.

    Pure functions cannot remember a peak across windows, so the window's own maximum stands in
    for the engine's prefill speed. Each per-scrape rate averages over one scrape interval, so it
    underestimates the true peak when the engine was not prefilling the whole interval: the
    backlog is then overstated, the safe side for a scale-up signal.
    """
    prompt = window.gauge_series(c.PROMPT_TOKENS, group)
    cached = dict(window.gauge_series(c.PROMPT_TOKENS_CACHED, group))
    if cached:
        computed = [(t, v - cached[t]) for t, v in prompt if t in cached]
        rates = [r for _, r in _step_rates(computed)]
    else:
        miss = 1.0 - hit_ratio if hit_ratio is not None else 1.0
        rates = [r * miss for _, r in _step_rates(prompt)]
    peak = max(rates, default=0.0)
    return peak if peak > 0 else None


def finished_per_second(window: WindowView, group: Group) -> float | None:
    """Requests the engine finished per second over the window (its end-to-end latency histogram)."""
    delta = window.histogram_delta(c.E2E_LATENCY_SECONDS, group)
    if delta is None or delta.seconds <= 0 or delta.count <= 0:
        return None
    return delta.count / delta.seconds


def prefill_backlog(window: WindowView, group: Group, hit_ratio: float | None) -> PrefillBacklog:
    depth, source = queue_depth(window, group)
    tokens, tokens_source = uncached_tokens_per_request(window, group, hit_ratio)
    speed = peak_prefill_tokens_per_second(window, group, hit_ratio)
    backlog: float | None = None
    finished: float | None = None
    if depth is not None and depth == 0:
        backlog = 0.0  # nothing waiting: a measured zero, not a missing value
    elif depth is not None and tokens is not None and speed is not None:
        backlog = depth * tokens / speed
    elif depth is not None and tokens is None and speed is None:
        # No token counts at all: the queue's drain time (module docstring).
        finished = finished_per_second(window, group)
        if finished is not None:
            backlog = depth / finished
            tokens_source = "drain"
    return PrefillBacklog(
        queue_depth=depth,
        queue_source=source,
        uncached_tokens_per_request=tokens,
        tokens_source=tokens_source,
        peak_prefill_tokens_per_second=speed,
        backlog_seconds=backlog,
        finished_per_second=finished,
    )
