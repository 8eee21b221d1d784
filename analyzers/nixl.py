"""KV-transfer (NIXL) analytics over the window, from whichever source exists.

Sources, in order of preference (the first with data wins; its name goes in the `source` label):
1. `vllm_metrics`: the `vllm:nixl_*` histograms and failure counter on the decode target
   (canonical `nixl_xfer_seconds`, `nixl_post_seconds`, `nixl_bytes`, `nixl_failed_transfers`);
2. `sglang_metrics` / `trtllm_metrics` / `dynamo_metrics` (a Dynamo worker passing its engine's
   series through): the engine's own per-request KV-transfer series in P/D
   (canonical `kv_transfer_seconds`, `kv_transfer_bytes` histograms; SGLang's transfer-failure
   counter; Triton's running totals `kv_transfer_time_seconds` / `kv_transfers`, no quantiles).
   Recorded on the prefill side, so every engine target is read, each under its own `target`
   label; the P/D queues (SGLang) go into the recommendation's evidence. SGLang measures a
   request from entering the transfer queue to done, so queueing is inside its figure;
2b. `nixl_exporter`: NIXL's own Prometheus exporter (`nixl_agent_*` counters): no quantiles;
3. `telemetry_ring`: transfers decoded from the NIXL telemetry rings: exact quantiles;
4. `log`: vLLM's `KV Transfer metrics:` lines: the p90 is the largest per-interval p90, an upper
   bound of the pooled p90 (each interval has >= 90% of its transfers at or below it); no
   median or p99.

TTFT share (`phaselens_nixl_ttft_share_ratio`): the share of the decode side's time to first
token spent on KV transfers, over the same window:

    sum(transfer time) / sum(decode-side TTFT)  ==  (transfers per request x mean transfer time)
                                                    / mean decode-side TTFT

Transfer time is NIXL's `xferDuration`, measured from the post to completion, so it already
contains the post time (adding `post` would count it twice). The decode side's TTFT starts when
the request reaches the decode engine and includes the wait for the remote KV blocks. Several
transfers of one request that overlap (one per remote rank) make the ratio an overestimate;
the result is clamped to [0, 1]. It needs the decode TTFT histogram (`ttft_seconds`) in the
decode window; without it the share is not exported.

Pure: no I/O, no clock; `now` bounds the ring and log records to the window.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt
from phaselens.analyzers.window import Group, HistogramDelta, histogram_quantile
from phaselens.exporters.specs import SPECS_BY_NAME, percentile_label
from phaselens.model import (
    Labels,
    LogEvent,
    NixlRingError,
    NixlTransfer,
    Recommendation,
    Signal,
    make_labels,
)
from phaselens.parsers import logs as L
from phaselens.parsers.engines import canonical as c
from phaselens.parsers.nixl_ring import TimedTransfers
from phaselens.settings import Settings

TRANSFER_SECONDS = "phaselens_nixl_transfer_seconds"
BYTES_PER_SECOND = "phaselens_nixl_transfer_bytes_per_second"
FAILURE_RATIO = "phaselens_nixl_transfer_failure_ratio"
TTFT_SHARE = "phaselens_nixl_ttft_share_ratio"
QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99)
MIB = 1 << 20
_MIN_TRANSFERS_FOR_ADVICE = 5


class WindowLike(Protocol):
    """What the analyzer reads from a window (TargetWindow and WindowView both fit)."""

    def groups(self) -> list[Group]: ...

    def histogram_delta(self, name: str, group: Group) -> HistogramDelta | None: ...

    def increase(self, name: str, group: Group) -> float | None: ...

    def gauge(self, name: str, group: Group) -> float | None: ...

    def span(self) -> float: ...


@dataclass(frozen=True, slots=True)
class NixlFigures:
    """What one source says about KV transfers over the window."""

    source: str
    group: Group | None  # (model_name, engine) for metric sources; None for ring and logs
    transfers: float
    xfer_seconds_sum: float
    seconds: float  # the time the figures cover
    bytes_sum: float | None = None
    failures: float | None = None
    quantiles: Mapping[float, float] = field(default_factory=dict)
    ttft_seconds_sum: float | None = None  # decode-side TTFT over the same window
    ttft_count: float | None = None
    queued: Mapping[str, float] = field(default_factory=dict)
    """Requests in the engine's P/D transfer queues at the last scrape (SGLang), for the evidence."""

    @property
    def mean_seconds(self) -> float | None:
        return self.xfer_seconds_sum / self.transfers if self.transfers > 0 else None

    @property
    def bytes_per_second(self) -> float | None:
        if self.bytes_sum is None or self.seconds <= 0:
            return None
        return self.bytes_sum / self.seconds

    @property
    def failure_ratio(self) -> float | None:
        if self.failures is None:
            return None
        attempts = self.transfers + self.failures
        return self.failures / attempts if attempts > 0 else None

    @property
    def ttft_share(self) -> float | None:
        if not self.ttft_seconds_sum or self.ttft_seconds_sum <= 0 or not self.ttft_count:
            return None
        return min(1.0, max(0.0, self.xfer_seconds_sum / self.ttft_seconds_sum))


# --------------------------------------------------------------------------- per source


def _decode_ttft(window: WindowLike | None, group: Group | None) -> tuple[float, float] | None:
    """(sum, count) of decode-side TTFT in the window: one group, or all groups pooled."""
    if window is None:
        return None
    groups = [group] if group is not None else window.groups()
    total = count = 0.0
    found = False
    for g in groups:
        delta = window.histogram_delta(c.TTFT_SECONDS, g)
        if delta is not None and delta.count > 0:
            found = True
            total += delta.sum
            count += delta.count
    return (total, count) if found else None


def _histogram_quantiles(delta: HistogramDelta) -> dict[float, float]:
    """The finite window quantiles of a transfer-time histogram delta (none without observations)."""
    quantiles: dict[float, float] = {}
    if delta.count > 0:
        for q in QUANTILES:
            value = histogram_quantile(q, delta.buckets)
            if value is not None and math.isfinite(value):
                quantiles[q] = value
    return quantiles


def figures_from_vllm(window: WindowLike) -> list[NixlFigures]:
    out: list[NixlFigures] = []
    for group in window.groups():
        xfer = window.histogram_delta(c.NIXL_XFER_SECONDS, group)
        if xfer is None:
            continue
        quantiles = _histogram_quantiles(xfer)
        size = window.histogram_delta(c.NIXL_BYTES, group)
        failed = window.increase(c.NIXL_FAILED_TRANSFERS, group)
        ttft = _decode_ttft(window, group)
        out.append(
            NixlFigures(
                source="vllm_metrics",
                group=group,
                transfers=xfer.count,
                xfer_seconds_sum=xfer.sum,
                # vLLM creates the NIXL histograms at the first transfer: a series that appears
                # mid-window spans less than the window, yet the target was scraped (and had no
                # transfers) before it. Dividing by the series' own span overstated bytes/s by
                # up to W / span (seen 12x in the P/D e2e); the target's span is the time covered.
                seconds=max(xfer.seconds, window.span()),
                bytes_sum=size.sum if size is not None else None,
                failures=failed,
                quantiles=quantiles,
                ttft_seconds_sum=ttft[0] if ttft else None,
                ttft_count=ttft[1] if ttft else None,
            )
        )
    return out


_TRANSFER_QUEUES: tuple[tuple[str, str], ...] = (
    ("prefill_bootstrap", c.PD_PREFILL_BOOTSTRAP_QUEUE),
    ("prefill_inflight", c.PD_PREFILL_INFLIGHT_QUEUE),
    ("decode_prealloc", c.PD_DECODE_PREALLOC_QUEUE),
    ("decode_transfer", c.PD_DECODE_TRANSFER_QUEUE),
)


def _queued(window: WindowLike, group: Group) -> dict[str, float]:
    out = {}
    for label, name in _TRANSFER_QUEUES:
        value = window.gauge(name, group)
        if value is not None and math.isfinite(value):
            out[label] = value
    return out


def figures_from_engine(window: WindowLike, source: str) -> list[NixlFigures]:
    """SGLang / TensorRT-LLM per-request transfer histograms, or Triton's running totals; SGLang's
    P/D queue depths ride along as evidence."""
    out: list[NixlFigures] = []
    for group in window.groups():
        xfer = window.histogram_delta(c.KV_TRANSFER_SECONDS, group)
        failed = window.increase(c.KV_TRANSFER_FAILURES, group)
        queued = _queued(window, group)
        if xfer is not None:
            quantiles = _histogram_quantiles(xfer)
            size = window.histogram_delta(c.KV_TRANSFER_BYTES, group)
            out.append(
                NixlFigures(
                    source=source,
                    group=group,
                    transfers=xfer.count,
                    xfer_seconds_sum=xfer.sum,
                    seconds=max(xfer.seconds, window.span()),
                    bytes_sum=size.sum if size is not None else None,
                    failures=failed,
                    quantiles=quantiles,
                    queued=queued,
                )
            )
            continue
        total = window.increase(c.KV_TRANSFER_TIME_SECONDS, group)
        count = window.increase(c.KV_TRANSFERS, group)
        if total is not None and count is not None:
            out.append(
                NixlFigures(source=source, group=group, transfers=count, xfer_seconds_sum=total,
                            seconds=window.span(), failures=failed, queued=queued)
            )
    return out


def engine_source(kind: str) -> str:
    """The `source` label of an engine's own transfer series: `sglang_metrics`, `trtllm_metrics`
    (`dynamo_metrics` when a Dynamo worker passes its engine's series through)."""
    return f"{kind}_metrics"


def figures_from_exporter(window: WindowLike, decode_window: WindowLike | None) -> list[NixlFigures]:
    """NIXL's exporter counts per agent; pooled over all agents of the target."""
    requests = xfer = bytes_sum = 0.0
    errors: float | None = None
    found = False
    for group in window.groups():
        tx = window.increase(c.NIXL_AGENT_TX_REQUESTS, group)
        rx = window.increase(c.NIXL_AGENT_RX_REQUESTS, group)
        seconds = window.increase(c.NIXL_AGENT_XFER_TIME_SECONDS, group)
        if seconds is None or (tx is None and rx is None):
            continue
        found = True
        requests += (tx or 0.0) + (rx or 0.0)
        xfer += seconds
        bytes_sum += (window.increase(c.NIXL_AGENT_TX_BYTES, group) or 0.0) + (
            window.increase(c.NIXL_AGENT_RX_BYTES, group) or 0.0
        )
        err = window.increase(c.NIXL_AGENT_ERRORS, group)
        if err is not None:
            errors = (errors or 0.0) + err
    if not found:
        return []
    ttft = _decode_ttft(decode_window, None)
    return [
        NixlFigures(
            source="nixl_exporter",
            group=None,
            transfers=requests,
            xfer_seconds_sum=xfer,
            seconds=window.span(),
            bytes_sum=bytes_sum,
            failures=errors,
            ttft_seconds_sum=ttft[0] if ttft else None,
            ttft_count=ttft[1] if ttft else None,
        )
    ]


def figures_from_ring(
    transfers: Sequence[NixlTransfer] | TimedTransfers,
    ring_errors: Sequence[NixlRingError],
    now: float,
    window_seconds: float,
    decode_window: WindowLike | None,
) -> list[NixlFigures]:
    """Ring transfers in (now - window, now]: as arrays (the sidecar: no object per transfer) or as
    records (the same figures, computed one transfer at a time)."""
    start = now - window_seconds
    failures = float(sum(e.count for e in ring_errors if e.time is not None and start < e.time <= now))
    if not len(transfers) and not failures:
        return []  # no ring read (most targets, every tick): skip the array work
    if isinstance(transfers, TimedTransfers):
        recent = transfers.select((transfers.times > start) & (transfers.times <= now))
        # integer microseconds -> seconds exactly as `NixlTransfer.xfer_seconds` (x / 1e6)
        times = np.sort(recent.columns.xfer_us) / 1e6
        count = len(recent)
        bytes_sum = float(int(recent.columns.bytes.sum()))
        xfer_sum = math.fsum(times.tolist())
    else:
        in_window = [t for t in transfers if t.time is not None and start < t.time <= now]
        times_list = sorted(t.xfer_seconds for t in in_window)
        times = np.array(times_list, dtype=np.float64)
        count = len(in_window)
        bytes_sum = float(sum(t.bytes for t in in_window))
        xfer_sum = math.fsum(times_list)
    if not count and not failures:
        return []
    quantiles = {q: _array_quantile(times, q) for q in QUANTILES} if count else {}
    ttft = _decode_ttft(decode_window, None)
    return [
        NixlFigures(
            source="telemetry_ring",
            group=None,
            transfers=float(count),
            xfer_seconds_sum=xfer_sum,
            seconds=window_seconds,
            bytes_sum=bytes_sum,
            failures=failures,
            quantiles=quantiles,
            ttft_seconds_sum=ttft[0] if ttft else None,
            ttft_count=ttft[1] if ttft else None,
        )
    ]


def _array_quantile(sorted_values: npt.NDArray[np.float64], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method), in Python floats."""
    pos = q * (len(sorted_values) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    a, b = float(sorted_values[low]), float(sorted_values[high])
    return a + (b - a) * (pos - low)


def figures_from_logs(
    events: Sequence[LogEvent], now: float, window_seconds: float, decode_window: WindowLike | None
) -> list[NixlFigures]:
    start = now - window_seconds
    count = xfer_sum = bytes_sum = 0.0
    p90: float | None = None
    failed_field: float | None = None
    failure_lines = 0
    seen = False
    for event in events:
        if event.time is None or not start < event.time <= now:
            continue
        f = event.fields
        if event.kind == L.VLLM_KV_TRANSFER_METRICS:
            n = _as_float(f.get("successful_transfers"))
            avg_ms = _as_float(f.get("avg_xfer_time_ms"))
            if n is None or avg_ms is None:
                continue
            seen = True
            count += n
            xfer_sum += n * avg_ms / 1000.0
            mib = _as_float(f.get("avg_mib_per_transfer"))
            if mib is not None:
                bytes_sum += n * mib * MIB
            line_p90 = _as_float(f.get("p90_xfer_time_ms"))
            if line_p90 is not None and n > 0:
                p90 = max(p90 or 0.0, line_p90 / 1000.0)
            failed = _as_float(f.get("failed_transfers"))
            if failed is not None:
                failed_field = (failed_field or 0.0) + failed
        elif event.kind in (L.VLLM_NIXL_FAILURE, L.VLLM_NIXL_HANDSHAKE_FAILED):
            seen = True
            failure_lines += 1
    if not seen:
        return []
    # The metrics line's own counter when it has one (the failure lines log the same failures).
    failures = failed_field if failed_field is not None else float(failure_lines)
    line_times = sorted(e.time for e in events if e.kind == L.VLLM_KV_TRANSFER_METRICS and e.time is not None)
    ttft = _decode_ttft(decode_window, None)
    return [
        NixlFigures(
            source="log",
            group=None,
            transfers=count,
            xfer_seconds_sum=xfer_sum,
            seconds=_log_covered_seconds(line_times, now, window_seconds),
            bytes_sum=bytes_sum,
            failures=failures,
            quantiles={0.9: p90} if p90 is not None else {},
            ttft_seconds_sum=ttft[0] if ttft else None,
            ttft_count=ttft[1] if ttft else None,
        )
    ]


def _log_covered_seconds(line_times: Sequence[float], now: float, window_seconds: float) -> float:
    """The time the window's `KV Transfer metrics` lines account for, to divide their bytes by.

    vLLM logs one line per stats period P (10 s by default) summing the transfers of the P seconds
    before it, and skips periods without transfers. So the lines stamped in the window
    (now - W, now] count the transfers of (t_first - P, t_last]; a line before the window (t_prev)
    also tells that (t_prev, t_first - P] had none, and every whole period after t_last that
    passed without a line had none. The covered span runs from t_first - P (or back to the window
    start when t_prev vouches for the gap) to t_last plus those quiet periods. Dividing by W
    instead misstates the rate whenever that span is not W (a window that is not a multiple of P,
    or missing lines). P is the median gap between consecutive lines (lines are skipped only when
    empty, so the common gap is the period); with fewer than two lines the window stands in.
    """
    inside = [t for t in line_times if now - window_seconds < t <= now]
    gaps = sorted(b - a for a, b in itertools.pairwise(line_times) if b > a)
    if not inside or not gaps:
        return window_seconds
    period = gaps[(len(gaps) - 1) // 2]  # the lower median: gaps are whole multiples of P
    first, last = inside[0], inside[-1]
    start = first - period
    before = [t for t in line_times if t <= now - window_seconds]
    if before:
        start = min(start, max(before[-1], now - window_seconds))
    quiet_periods = math.floor(max(0.0, now - last) / period)
    return max(period, (last + quiet_periods * period) - start)


def _as_float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


# --------------------------------------------------------------------------- signals


def _labels(name: str, base: Mapping[str, str], group: Group | None, extra: Mapping[str, str]) -> Labels:
    values = dict(base)
    if group is not None:
        values["model_name"], values["engine"] = group
    values.update(extra)
    return make_labels({label: values.get(label, "") for label in SPECS_BY_NAME[name].labels})


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def figures_to_signals(figures: NixlFigures, base_labels: Mapping[str, str]) -> list[Signal]:
    out: list[Signal] = []
    src = {"source": figures.source}
    for q, value in sorted(figures.quantiles.items()):
        if _finite(value):
            labels = _labels(TRANSFER_SECONDS, base_labels, figures.group, {**src, "percentile": percentile_label(q)})
            out.append(Signal(TRANSFER_SECONDS, labels, value))
    optional: tuple[tuple[str, float | None], ...] = (
        (BYTES_PER_SECOND, figures.bytes_per_second),
        (FAILURE_RATIO, figures.failure_ratio),
        (TTFT_SHARE, figures.ttft_share),
    )
    for name, maybe in optional:
        if maybe is not None and math.isfinite(maybe):
            out.append(Signal(name, _labels(name, base_labels, figures.group, src), maybe))
    return out


# --------------------------------------------------------------------------- recommendations


def _confidence(transfers: float, source: str) -> float:
    base = 0.55 + 0.4 * min(1.0, transfers / 50.0)
    # Log p90s are upper bounds and the exporter has no quantiles: trust them a little less.
    return round(base * (0.85 if source in ("log", "nixl_exporter") else 1.0), 3)


def recommend(
    figures: NixlFigures,
    settings: Settings,
    base_labels: Mapping[str, str],
    backend: str | None,
    telemetry_disabled: bool,
) -> list[Recommendation]:
    t = settings.thresholds
    target = base_labels.get("target", "")
    role = base_labels.get("role", "")
    out: list[Recommendation] = []
    p90 = figures.quantiles.get(0.9)
    share = figures.ttft_share
    evidence: dict[str, float | str] = {"source": figures.source, "transfers": figures.transfers}
    if backend:
        evidence["backend"] = backend
    if figures.mean_seconds is not None:
        evidence["mean_transfer_seconds"] = round(figures.mean_seconds, 6)
    if p90 is not None:
        evidence["p90_transfer_seconds"] = round(p90, 6)
    if share is not None:
        evidence["ttft_share"] = round(share, 4)
    bps = figures.bytes_per_second
    if bps is not None:
        evidence["bytes_per_second"] = round(bps, 1)
    for queue, depth in figures.queued.items():
        evidence[f"{queue}_queue_requests"] = depth

    slow_p90 = p90 is not None and p90 >= t.nixl_slow_p90_seconds
    slow_share = share is not None and share >= t.nixl_slow_ttft_share
    if figures.transfers >= _MIN_TRANSFERS_FOR_ADVICE and (slow_p90 or slow_share):
        evidence["threshold_p90_seconds"] = t.nixl_slow_p90_seconds
        evidence["threshold_ttft_share"] = t.nixl_slow_ttft_share
        what = []
        if p90 is not None:
            what.append(f"p90 {p90 * 1000:.0f} ms")
        if share is not None:
            what.append(f"{share:.0%} of the decode side's time to first token")
        via = f" over {backend}" if backend else ""
        out.append(
            Recommendation(
                code="NIXL_TRANSFER_SLOW",
                severity="warning",
                message=(
                    f"KV-cache transfers{via} are slow ({', '.join(what)}): check the NIXL backend and the "
                    "network path between prefill and decode workers, or keep short prompts on the decode "
                    "worker (conditional disaggregation)."
                ),
                evidence=dict(evidence),
                confidence=_confidence(figures.transfers, figures.source),
                target=target,
                role=role,
            )
        )

    ratio = figures.failure_ratio
    if ratio is not None and figures.failures and ratio >= t.nixl_failure_ratio:
        evidence_f = dict(evidence)
        evidence_f["failures"] = figures.failures
        evidence_f["failure_ratio"] = round(ratio, 4)
        evidence_f["threshold_failure_ratio"] = t.nixl_failure_ratio
        if ratio >= 1.0 and telemetry_disabled:
            # vLLM PR #58038: a NIXL build without telemetry makes every transfer count as failed.
            message = (
                "Every KV transfer is counted as failed while NIXL reports its telemetry disabled: this is "
                "a telemetry-capability problem, not the network; use a NIXL build with telemetry or a vLLM "
                "that tolerates its absence."
            )
        else:
            message = (
                f"{ratio:.1%} of KV-cache transfers fail: check NIXL/UCX connectivity and the side-channel "
                "settings (VLLM_NIXL_SIDE_CHANNEL_HOST/PORT) between prefill and decode workers."
            )
        attempts = figures.transfers + figures.failures
        out.append(
            Recommendation(
                code="NIXL_TRANSFER_FAILURES",
                severity="critical" if ratio >= 0.5 else "warning",
                message=message,
                evidence=evidence_f,
                confidence=round(0.6 + 0.3 * min(1.0, attempts / 20.0), 3),
                target=target,
                role=role,
            )
        )
    return out


# --------------------------------------------------------------------------- entry point


def analyze_nixl(
    decode_window: WindowLike | None,
    transfers: Sequence[NixlTransfer] | TimedTransfers,
    log_events: Sequence[LogEvent],
    now: float,
    settings: Settings,
    base_labels: Mapping[str, str],
    *,
    exporter_window: WindowLike | None = None,
    ring_errors: Sequence[NixlRingError] = (),
    engine_windows: Sequence[tuple[Mapping[str, str], str, WindowLike]] = (),
) -> tuple[list[Signal], list[Recommendation]]:
    """Signals from every source that has data in the window, each named in the `source` label, so
    the sources can be checked against each other; recommendations from the most trusted source
    only (vLLM metrics, then the engines' own transfer series, then NIXL's exporter, then rings,
    then logs). Nothing without data. `engine_windows`: (base labels, engine kind, window) of the
    SGLang / TensorRT-LLM targets, read for their own transfer series."""
    engine_figures = [
        (labels, fig)
        for labels, kind, window in engine_windows
        for fig in figures_from_engine(window, engine_source(kind))
    ]
    by_source: list[list[NixlFigures]] = [
        figures_from_vllm(decode_window) if decode_window is not None else [],
        [fig for _, fig in engine_figures],
        figures_from_exporter(exporter_window, decode_window) if exporter_window is not None else [],
        figures_from_ring(transfers, ring_errors, now, settings.window_seconds, decode_window),
        figures_from_logs(log_events, now, settings.window_seconds, decode_window),
    ]
    preferred = next((figures for figures in by_source if figures), [])
    backend = L.nixl_backend(log_events)
    telemetry_disabled = any(e.kind == L.NIXL_TELEMETRY_DISABLED for e in log_events)
    labels_of = {id(fig): labels for labels, fig in engine_figures}
    signals: list[Signal] = []
    recommendations: list[Recommendation] = []
    for figures in by_source:
        for fig in figures:
            signals.extend(figures_to_signals(fig, labels_of.get(id(fig), base_labels)))
    for fig in preferred:
        labels = labels_of.get(id(fig), base_labels)
        recommendations.extend(recommend(fig, settings, labels, backend, telemetry_disabled))
    return signals, recommendations
