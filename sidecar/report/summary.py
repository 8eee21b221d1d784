"""Plain-sentence summary, episodes and headline figures of a replayed run."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import pandas as pd
from phaselens.analyzers.diagnosis import DIAGNOSIS_CODE, human_remedy
from phaselens.analyzers.episodes import Episode, integrate, stretches
from phaselens.model import Recommendation
from phaselens.report.counters import increase_between
from phaselens.report.frame import RunData
from phaselens.verdict import VerdictLog

KV_PRESSURE_UTILIZATION = 0.90
OVERLOAD_QUEUE = 5.0
PREFIX_REUSE_HIT_RATIO = 0.50
MERGE_GAP_SECONDS = 8.0
MIN_EPISODE_SECONDS = 3.0


@dataclass(frozen=True)
class TargetSummary:
    target: str
    role: str
    sentences: tuple[str, ...]
    episodes: tuple[Episode, ...]
    headline: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSummary:
    run: RunData
    targets: tuple[TargetSummary, ...]
    pool_sentences: tuple[str, ...]
    nixl_sentences: tuple[str, ...]
    recommendation_rows: tuple[dict[str, str], ...]
    verdict: tuple[str, ...] = ()
    """The diagnosis per episode (phaselens.verdict): shown before everything else."""

    @property
    def episodes(self) -> list[Episode]:
        return [e for t in self.targets for e in t.episodes]


def clock(run: RunData, seconds: float) -> str:
    """`t+28s (18:06:33 UTC)`: relative to the run start and wall time."""
    wall = pd.Timestamp(run.start + seconds, unit="s", tz="UTC").strftime("%H:%M:%S")
    return f"t+{seconds:.0f}s ({wall} UTC)"


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def _pct_range(low: float, high: float) -> str:
    """`between 88% and 95%`, or `100%` when both bounds read the same."""
    a, b = _pct(low), _pct(high)
    return a if a == b else f"between {a} and {b}"


def _rate_range(low: float, high: float) -> str:
    a, b = f"{low:.2f}", f"{high:.2f}"
    return f"{a} req/s (median)" if a == b else f"{a}-{b} req/s (median bounds)"


def _episodes(run: RunData, target: str) -> list[Episode]:
    found: list[Episode] = []
    kv = run.series("phaselens_decode_kv_utilization_ratio", target)
    preempt = run.series("phaselens_kv_preemptions_per_second", target)
    queue = run.series("phaselens_prefill_queue_depth", target)
    hit = run.series("phaselens_kv_prefix_cache_hit_ratio", target)

    if not kv.empty:
        joined = pd.concat([kv.rename("kv"), preempt.rename("preempt")], axis=1).fillna(0.0)
        times = list(joined.index)
        flags = [bool(k >= KV_PRESSURE_UTILIZATION) for k in joined["kv"]]
        for a, b in stretches(times, flags, merge_gap=MERGE_GAP_SECONDS, min_seconds=MIN_EPISODE_SECONDS):
            preemptions = _episode_preemptions(run, target, times, list(joined["preempt"]), a, b)
            found.append(
                Episode(
                    "kv_pressure",
                    target,
                    times[a],
                    times[b],
                    {
                        "peak_kv_utilization": float(joined["kv"].iloc[a : b + 1].max()),
                        "preemptions_approx": round(preemptions, 1),
                        "peak_preemptions_per_second": float(joined["preempt"].iloc[a : b + 1].max()),
                    },
                )
            )
    if not queue.empty:
        times = list(queue.index)
        for a, b in stretches(
            times, [q >= OVERLOAD_QUEUE for q in queue], merge_gap=MERGE_GAP_SECONDS, min_seconds=MIN_EPISODE_SECONDS
        ):
            found.append(
                Episode("overload", target, times[a], times[b], {"peak_queue": float(queue.iloc[a : b + 1].max())})
            )
        idle_flags = [q == 0 and (kv.get(t, 0.0) == 0.0) for t, q in zip(queue.index, queue, strict=True)]
        for a, b in stretches(times, idle_flags, merge_gap=1.5, min_seconds=MIN_EPISODE_SECONDS):
            found.append(Episode("idle", target, times[a], times[b], {}))
    if not hit.empty:
        times = list(hit.index)
        for a, b in stretches(
            times,
            [h >= PREFIX_REUSE_HIT_RATIO for h in hit],
            merge_gap=MERGE_GAP_SECONDS,
            min_seconds=MIN_EPISODE_SECONDS,
        ):
            found.append(
                Episode(
                    "prefix_reuse",
                    target,
                    times[a],
                    times[b],
                    {
                        "peak_hit_ratio": float(hit.iloc[a : b + 1].max()),
                        "mean_hit_ratio": float(hit.iloc[a : b + 1].mean()),
                    },
                )
            )
    return sorted(found, key=lambda e: (e.start, e.kind))


def _episode_preemptions(
    run: RunData, target: str, times: list[float], rates: list[float], first: int, last: int
) -> float:
    """Exact from the engine's counter when the recording has it; else the integral of the
    windowed rate (which undercounts a burst shorter than the window)."""
    counter = run.preemptions.get(target)
    if counter is not None:
        # From the scrape before the episode: preemptions in its first interval count.
        found = increase_between(counter, run.start + times[first] - 1.0, run.start + times[last])
        if found is not None:
            return found
    return integrate(times, rates, first, last)


def _bottleneck_sentence(run: RunData, target: str) -> str | None:
    prefill = run.series("phaselens_phase_bottleneck", target, phase="prefill")
    if prefill.empty:
        return None
    changes: list[str] = []
    previous: str | None = None
    for t, value in prefill.items():
        phase = "prefill" if value >= 0.5 else "decode"
        if phase != previous:
            changes.append(f"{phase} from {clock(run, float(t))}")
            previous = phase
    share = run.series("phaselens_phase_prefill_time_share_ratio", target)
    share_text = f"; prefill took {_pct(float(share.median()))} of request time (median)" if not share.empty else ""
    if len(changes) == 1:
        return f"The bottleneck phase was {changes[0].split(' from ')[0]} throughout{share_text}."
    return "The bottleneck phase changed: " + ", ".join(changes) + share_text + "."


def _slo_sentence(run: RunData, target: str) -> str | None:
    lower = run.series("phaselens_slo_attainment_ratio", target, slo="joint", bound="lower")
    upper = run.series("phaselens_slo_attainment_ratio", target, slo="joint", bound="upper")
    if lower.empty or upper.empty:
        return None
    good_lo = run.series("phaselens_goodput_requests_per_second", target, bound="lower")
    good_hi = run.series("phaselens_goodput_requests_per_second", target, bound="upper")
    worst = float(lower.min())
    worst_at = float(lower.idxmin())
    text = (
        f"SLO attainment (both SLOs) was {_pct_range(float(lower.median()), float(upper.median()))} "
        f"at the median window, worst {_pct(worst)} at {clock(run, worst_at)}"
    )
    if not good_lo.empty and not good_hi.empty:
        text += f"; goodput {_rate_range(float(good_lo.median()), float(good_hi.median()))}"
    return text + "."


# Headline figures that are ratios: shown as percentages, like the sentences.
# Episode evidence too (the recommendation evidence stays as in the pod log).
PERCENT_FIGURES = frozenset(
    {
        "peak KV utilization",
        "median joint SLO attainment (lower)",
        "peak prefix-cache hit ratio",
        "peak_kv_utilization",
        "peak_hit_ratio",
        "mean_hit_ratio",
    }
)


def _headline(run: RunData, target: str, episodes: list[Episode]) -> dict[str, float]:
    def stat(name: str, how: str, **extra: str) -> float:
        series = run.series(name, target, **extra)
        if series.empty:
            return math.nan
        return float(getattr(series, how)())

    return {
        "peak queue depth": stat("phaselens_prefill_queue_depth", "max"),
        "peak KV utilization": stat("phaselens_decode_kv_utilization_ratio", "max"),
        "worst TTFT p99 (s)": stat("phaselens_ttft_seconds", "max", percentile="99"),
        "median TTFT p50 (s)": stat("phaselens_ttft_seconds", "median", percentile="50"),
        "median ITL p50 (s)": stat("phaselens_itl_seconds", "median", percentile="50"),
        "median joint SLO attainment (lower)": stat(
            "phaselens_slo_attainment_ratio", "median", slo="joint", bound="lower"
        ),
        "peak prefix-cache hit ratio": stat("phaselens_kv_prefix_cache_hit_ratio", "max"),
        "KV-pressure seconds": sum(e.seconds for e in episodes if e.kind == "kv_pressure"),
        "preemptions (approx.)": sum(
            float(e.evidence.get("preemptions_approx", 0.0)) for e in episodes if e.kind == "kv_pressure"
        ),
        "median NIXL transfer p90 (s)": stat("phaselens_nixl_transfer_seconds", "median", percentile="90"),
    }


def _target_summary(run: RunData, target: str, role: str) -> TargetSummary:
    episodes = _episodes(run, target)
    sentences: list[str] = []
    bottleneck = _bottleneck_sentence(run, target)
    if bottleneck:
        sentences.append(bottleneck)
    slo = _slo_sentence(run, target)
    if slo:
        sentences.append(slo)
    for episode in episodes:
        span = f"from {clock(run, episode.start)} to {clock(run, episode.end)} ({episode.seconds:.0f} s)"
        if episode.kind == "kv_pressure":
            peak = _pct(float(episode.evidence["peak_kv_utilization"]))
            sentences.append(
                f"KV-cache pressure {span}: utilization peaked at {peak} "
                f"with about {episode.evidence['preemptions_approx']:.0f} preemptions."
            )
        elif episode.kind == "overload":
            sentences.append(f"Overload {span}: the queue peaked at {episode.evidence['peak_queue']:.0f} requests.")
        elif episode.kind == "prefix_reuse":
            sentences.append(
                f"Prefix-cache reuse {span}: hit ratio {_pct(float(episode.evidence['mean_hit_ratio']))} on average, "
                f"peak {_pct(float(episode.evidence['peak_hit_ratio']))}."
            )
    hit = run.series("phaselens_kv_prefix_cache_hit_ratio", target)
    if not hit.empty and not any(e.kind == "prefix_reuse" for e in episodes):
        sentences.append(f"Prefix-cache reuse stayed low: hit ratio peaked at {_pct(float(hit.max()))}.")
    up = run.series("phaselens_target_up", target)
    if not up.empty:
        times = list(up.index)
        for a, b in stretches(times, [v < 0.5 for v in up], merge_gap=1.5, min_seconds=0.0):
            sentences.append(
                f"The engine did not answer (or answered garbage) from {clock(run, times[a])} to "
                f"{clock(run, times[b])}: no signals are shown for that time."
            )
    idle = sum(e.seconds for e in episodes if e.kind == "idle")
    if idle:
        sentences.append(f"Idle for {idle:.0f} s in all.")
    return TargetSummary(target, role, tuple(sentences), tuple(episodes), _headline(run, target, episodes))


def _nixl_sentences(run: RunData) -> list[str]:
    frame = run.signals
    nixl = frame[frame["name"].str.startswith("phaselens_nixl_")]
    if nixl.empty:
        return []
    out: list[str] = []
    for target in sorted(set(nixl["target"])):
        p50 = run.series("phaselens_nixl_transfer_seconds", target, percentile="50")
        p90 = run.series("phaselens_nixl_transfer_seconds", target, percentile="90")
        bps = run.series("phaselens_nixl_transfer_bytes_per_second", target)
        share = run.series("phaselens_nixl_ttft_share_ratio", target)
        fail = run.series("phaselens_nixl_transfer_failure_ratio", target)
        parts = []
        if not p50.empty and not p90.empty:
            parts.append(
                f"transfer time p50 {1000 * float(p50.median()):.1f} ms, p90 {1000 * float(p90.median()):.1f} ms"
            )
        if not bps.empty:
            parts.append(f"peak {float(bps.max()) / 1e6:.1f} MB/s")
        if not share.empty:
            parts.append(f"KV transfer took {_pct(float(share.median()))} of decode-side TTFT (median)")
        if not fail.empty:
            parts.append(f"failure ratio up to {_pct(float(fail.max()))}")
        sources = sorted({str(x.get("source", "")) for x in nixl[nixl["target"] == target]["extra"]} - {""})
        if parts:
            out.append(f"NIXL on {target} ({', '.join(sources) or 'unknown source'}): " + "; ".join(parts) + ".")
    return out


def _pool_sentences(run: RunData) -> list[str]:
    imbalance = run.series("phaselens_phase_imbalance_ratio", "pool")
    score = run.series("phaselens_disaggregation_score", "pool")
    out: list[str] = []
    if not imbalance.empty:
        side = "prefill" if float(imbalance.median()) > 1 else "decode"
        out.append(
            f"Pool imbalance (prefill load / decode load) median {float(imbalance.median()):.2f}, "
            f"range {float(imbalance.min()):.2f}-{float(imbalance.max()):.2f}: the {side} pool is the tighter one."
        )
    if not score.empty:
        out.append(f"Disaggregation score median {float(score.median()):.2f} (1 = clearly paying off).")
    return out


def _recommendation_rows(run: RunData) -> list[dict[str, str]]:
    grouped: dict[tuple[str, str], list[tuple[float, Recommendation]]] = {}
    for ts, rec in run.recommendations:
        grouped.setdefault((rec.code, rec.target), []).append((ts, rec))
    rows: list[dict[str, str]] = []
    for (code, target), items in sorted(grouped.items(), key=lambda kv: kv[1][0][0]):
        first_ts, rec = items[0]
        last_ts = items[-1][0]
        evidence = ", ".join(f"{k}={_fmt(v)}" for k, v in rec.evidence.items())
        rows.append(
            {
                "code": code,
                "target": target,
                "when": f"{clock(run, first_ts - run.start)} to {clock(run, last_ts - run.start)}",
                "times": str(len(items)),
                "message": rec.message,
                "evidence": evidence,
                "confidence": f"{rec.confidence:.2f}",
                "action": rec.action,
            }
        )
    return rows


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def gap_sentences(run: RunData) -> list[str]:
    """Holes in the recording itself (no scrapes at all), so nobody reads a flat line as data."""
    times = list(run.tick_times)
    if len(times) < 3:
        return []
    steps = sorted(b - a for a, b in itertools.pairwise(times))
    usual = steps[len(steps) // 2]
    out = []
    for a, b in itertools.pairwise(times):
        if usual > 0 and b - a > max(3 * usual, usual + 2.0):
            out.append(
                f"The recording has a gap of {b - a:.0f} s with no scrapes, from {clock(run, a)} to "
                f"{clock(run, b)}: windows after it mix data from both sides."
            )
    return out


def summarize(run: RunData) -> RunSummary:
    targets = tuple(_target_summary(run, target, role) for target, role in run.targets)
    return RunSummary(
        run=run,
        targets=targets,
        pool_sentences=tuple(gap_sentences(run) + _pool_sentences(run)),
        nixl_sentences=tuple(_nixl_sentences(run)),
        recommendation_rows=tuple(_recommendation_rows(run)),
        verdict=tuple(verdict_lines(run)),
    )


def verdict_lines(run: RunData) -> list[str]:
    """One line per episode: cause, time range, remedy, expected effect (docs/diagnosis.md)."""
    log = VerdictLog()
    log.start = run.start
    for ts, rec in run.recommendations:
        if rec.code == DIAGNOSIS_CODE:
            log.add(rec, ts)
    if not log.episodes:
        return ["No primary cause in this run: nothing binds (no queue, KV room, latency in budget)."]
    out = []
    for e in sorted(log.episodes, key=lambda e: (e.start, e.target)):
        line = (f"{e.target} ({e.role}): {e.cause} from {clock(run, e.start - run.start)} to "
                f"{clock(run, e.end - run.start)}; remedy {e.remedy} ({human_remedy(e.remedy)})")
        out.append(line + (f"; expected: {e.effect}." if e.effect else "."))
    return out
