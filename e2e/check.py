"""Assertions and report for a recorded end-to-end run (e2e/out/<scenario>/ from scenario.py).

Compares what the sidecar exported (its /metrics, recorded at known instants) with the client's
ground truth and with the engine's own counters, prints a comparison table, writes report.md and
report.json next to the run, and exits non-zero if an assertion fails.
Usage: python e2e/check.py OUT_DIR [OUT_DIR ...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from groundtruth import (
    PhaseSpan,
    Request,
    Scrape,
    bucket_of,
    client_goodput,
    empirical_quantile,
    load_ground_truth,
    load_jsonl,
    load_scrapes,
    signals_to_scrapes,
)
from phaselens.exporters.specs import SPECS, percentile_label
from phaselens.settings import Thresholds

# Client-side stamps trail the engine's by HTTP, detokenization and event-loop delays; on two
# shared cores under overload these reach tens of ms. Requests this close to an SLO may be
# classified differently by engine and client (see groundtruth.client_goodput).
CLASSIFY_SLACK_S = 0.03
# A request's own front-end overhead varies around the per-phase mean that frontend_overheads
# measures; allow up to this many times the mean before calling a disagreement.
OVERHEAD_FACTOR = float(os.environ.get("E2E_OVERHEAD_FACTOR", "2"))
# Share of (quantile, tick) pairs that must agree. The bounds are exact when the engine's own
# per-request timings are recorded; what is left is a scrape landing on the other side of a
# request's stamp within the same millisecond.
TTFT_AGREE_SHARE = float(os.environ.get("E2E_TTFT_AGREE_SHARE", "0.98"))
# Signals that need history or outcomes a short run may not produce: reported, not asserted.
SOFT_SIGNALS = {"phaselens_prediction_calibration_error"}
PD_ONLY_GROUPS = {"nixl", "disaggregation"}
# exported only by a prefill pod's sidecar or for a P/D frontend's prefill pool
PD_ONLY_SIGNALS = {"phaselens_prefill_saturation_ratio"}
LOG_PERIOD_S = 10.0  # vLLM's stats logging period (VLLM_LOG_STATS_INTERVAL)
NO_INPUT_GROUPS = {"gpu"}  # no NVML on the CPU machines these runs use


@dataclass
class Result:
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    scenario: str
    results: list[Result] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    figures: dict[str, object] = field(default_factory=dict)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.results.append(Result(name, ok, detail))

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)


def _fmt(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}"


def sample_at(samples: list[Scrape], t: float) -> Scrape | None:
    """The newest sidecar sample taken at or before t."""
    best = None
    for s in samples:
        if s.t <= t:
            best = s
    return best


def phase(phases: list[PhaseSpan], name: str) -> PhaseSpan | None:
    return next((p for p in phases if p.name == name), None)


def bucket_bounds(engine: list[Scrape], name: str) -> list[float]:
    bounds = set()
    for labels, _ in engine[-1].values(name + "_bucket"):
        if labels.get("le") not in (None, "+Inf"):
            bounds.add(float(labels["le"]))
    return sorted(bounds)


@dataclass(frozen=True)
class Overhead:
    """Mean front-end overhead of a phase: client-seen minus engine-stamped, from exact means."""

    ttft_s: float
    e2e_s: float
    engine_requests: int
    client_requests: int


def frontend_overheads(engine: list[Scrape], requests: list[Request], phases: list[PhaseSpan]) -> dict[str, Overhead]:
    """Per phase, how much later the client sees first tokens and finishes than the engine stamps.

    The engine's histogram `_sum`/`_count` give the exact mean TTFT and end-to-end latency of the
    requests it finished between two scrapes; the client's records give the same means from its
    side. The difference is time the engine cannot see (HTTP, the API server's loop, streaming,
    the client's loop) and that no engine metric, so no sidecar, can report.
    """
    out: dict[str, Overhead] = {}
    for p in phases:
        a, b = sample_at(engine, p.start), sample_at(engine, p.end + 1.0)
        if a is None or b is None:
            continue

        def mean_delta(name: str, a: Scrape = a, b: Scrape = b) -> tuple[float, int]:
            n = (b.value(name + "_count") or 0.0) - (a.value(name + "_count") or 0.0)
            s = (b.value(name + "_sum") or 0.0) - (a.value(name + "_sum") or 0.0)
            return (s / n if n > 0 else math.nan), int(n)

        eng_ttft, _ = mean_delta("vllm:time_to_first_token_seconds")
        eng_e2e, n_e2e = mean_delta("vllm:e2e_request_latency_seconds")
        cl_ttft = [r.ttft for r in requests if r.ttft is not None and r.first_token_at is not None
                   and a.t < r.first_token_at <= b.t]  # fmt: skip
        cl_e2e = [r.end - r.start for r in requests if r.ok and a.t < r.end <= b.t]
        if not cl_ttft or not cl_e2e or math.isnan(eng_ttft) or math.isnan(eng_e2e):
            continue
        out[p.name] = Overhead(
            max(0.0, sum(cl_ttft) / len(cl_ttft) - eng_ttft),
            max(0.0, sum(cl_e2e) / len(cl_e2e) - eng_e2e),
            n_e2e,
            len(cl_e2e),
        )
    return out


def widen_by_overhead(requests: list[Request], phases: list[PhaseSpan], over: dict[str, Overhead]) -> list[Request]:
    """Bound each request's engine-side TTFT (ttft_low) and finish (end_early) from below.

    With vLLM's per-request timings (`--enable-per-request-metrics`) the bounds are the request's
    own: queue + prefill as the engine core timed them (the histogram's interval contains that
    one) and start + queue + prefill + decode. Without them (older recordings) the phase's mean
    front-end overhead, times OVERHEAD_FACTOR, stands in for the request's.
    """

    def phase_at(t: float) -> Overhead | None:
        for p in phases:
            if p.start <= t <= p.end and p.name in over:
                return over[p.name]
        return None

    out = []
    for r in requests:
        floor, end_floor = r.engine_ttft_floor, r.engine_end_floor
        if r.ttft is not None and floor is not None and end_floor is not None:
            out.append(replace(r, ttft_low=min(r.ttft, floor), end_early=min(r.end, end_floor)))
            continue
        o_first = phase_at(r.first_token_at) if r.first_token_at is not None else None
        o_end = phase_at(r.end)
        ttft_low = None if r.ttft is None else max(0.0, r.ttft - OVERHEAD_FACTOR * (o_first.ttft_s if o_first else 0))
        end_early = r.end - OVERHEAD_FACTOR * (o_end.e2e_s if o_end else 0.0)
        out.append(replace(r, ttft_low=ttft_low, end_early=end_early))
    return out


def overhead_table(requests: list[Request], phases: list[PhaseSpan], over: dict[str, Overhead]) -> tuple[str, dict]:
    """Per phase: how much of the client's TTFT the engine cannot see, request by request
    (client TTFT minus the engine core's queue + prefill), the mean from the engine's histogram
    sums, and the load client's own event-loop lag (its share of that overhead)."""
    rows = [
        "| phase | reqs with engine timings | client - engine-core TTFT p50 / p90 / max (s) "
        "| client - engine histogram mean (s) | load client loop lag p99 / max (s) |",
        "|---|---|---|---|---|",
    ]
    figures: dict[str, dict[str, float | None]] = {}
    for p in phases:
        gaps = sorted(
            r.ttft - f for r in requests
            if r.phase == p.name and r.ttft is not None for f in [r.engine_ttft_floor] if f is not None
        )  # fmt: skip
        q = {k: (empirical_quantile(gaps, k) if gaps else None) for k in (0.5, 0.9, 1.0)}
        o = over.get(p.name)
        figures[p.name] = {
            "gap_p50": q[0.5],
            "gap_p90": q[0.9],
            "gap_max": q[1.0],
            "mean_ttft_overhead": o.ttft_s if o else None,
            "loop_lag_p99": p.loop_lag_p99_s,
            "loop_lag_max": p.loop_lag_max_s,
        }
        rows.append(
            f"| {p.name} | {len(gaps)} | {_fmt(q[0.5])} / {_fmt(q[0.9])} / {_fmt(q[1.0])} "
            f"| {_fmt(o.ttft_s if o else None)} | {_fmt(p.loop_lag_p99_s)} / {_fmt(p.loop_lag_max_s)} |"
        )
    return "\n".join(rows) + "\n", figures


def check_exported(rep: Report, sidecar: list[Scrape], pd: bool) -> None:
    seen: set[str] = set()
    for s in sidecar:
        seen |= s.names()
    missing: list[str] = []
    soft_missing: list[str] = []
    for spec in SPECS:
        if ((spec.group in PD_ONLY_GROUPS or spec.name in PD_ONLY_SIGNALS) and not pd) or spec.group in NO_INPUT_GROUPS:
            continue
        if spec.name in seen:
            continue
        (soft_missing if spec.name in SOFT_SIGNALS else missing).append(spec.name)
    rep.check(
        "signals exported",
        not missing,
        f"missing: {missing or 'none'}; soft missing: {soft_missing or 'none'}",
    )


_LABEL_NAME = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="')


def lint_shape(body: str) -> frozenset[str]:
    """What `promtool check metrics` judges in a text exposition: metadata lines and, per sample,
    its name with its label names. Values and label values do not change its verdict."""
    keys = set()
    for line in body.splitlines():
        if not line or line.startswith("#"):
            keys.add(line)
            continue
        name, brace, rest = line.partition("{")
        if brace:
            labels = rest.rsplit("}", 1)[0]
            keys.add(name + "{" + ",".join(sorted(set(_LABEL_NAME.findall(labels)))) + "}")
        else:
            keys.add(line.split()[0])
    return frozenset(keys)


def promtool_findings(promtool: str, body: bytes) -> str:
    """Everything `promtool check metrics` says about a text exposition; empty when it passes."""
    proc = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60)
    said = (proc.stdout + proc.stderr).decode(errors="replace").strip()
    return said or (f"promtool exited with {proc.returncode}" if proc.returncode else "")


def check_promtool(rep: Report, folder: Path, promtool: str | None = None) -> None:
    """The sidecar's /metrics as the recorder fetched it from the live sidecar (text format) must
    pass `promtool check metrics` with no finding, as an operator's CI would lint it. One body per
    distinct lint_shape is linted. Without promtool this fails: the check is part of the run."""
    name = "sidecar /metrics passes promtool check metrics"
    promtool = promtool or shutil.which("promtool")
    if promtool is None:
        rep.check(name, False, "promtool not found: install Debian's prometheus package (make system-deps)")
        return
    files = sorted(folder.glob("*.prom"))
    seen: set[frozenset[str]] = set()
    findings: list[str] = []
    for path in files:
        text = path.read_text()
        body = "".join(x for x in text.splitlines(keepends=True) if not x.startswith("# scrape_time "))
        shape = lint_shape(body)
        if shape in seen:
            continue
        seen.add(shape)
        said = promtool_findings(promtool, body.encode())
        if said:
            lines = said.splitlines()
            findings.append(f"{path.name}: {lines[0]}" + (f" (+{len(lines) - 1} more)" if len(lines) > 1 else ""))
    rep.figures["promtool_bodies_linted"] = len(seen)
    rep.check(
        name,
        bool(files) and not findings,
        f"{len(seen)} distinct bodies of {len(files)} recorded linted; "
        + (f"{len(findings)} with findings, first: {findings[0]}" if findings else "no finding"),
    )


def longest_scrape(
    exposed: list[Scrape], role: str, default: float, t0: float = -math.inf, t1: float = math.inf
) -> float:
    """The longest scrape of a role the sidecar reported (phaselens_scrape_duration_seconds),
    over its /metrics recorded in [t0, t1]."""
    found = [
        v
        for x in exposed
        if t0 <= x.t <= t1
        for v in [x.value("phaselens_scrape_duration_seconds", role=role)]
        if v is not None
    ]
    return max(found, default=default)


def check_goodput(
    rep: Report,
    sidecar: list[Scrape],
    requests: list[Request],
    phases: list[PhaseSpan],
    meta: dict,
    max_scrape_s: float = 0.0,
    role: str = "aggregated",
) -> None:
    """The sidecar's window spans from its first scrape after t - W (up to one interval plus the
    longest scrape later) to its newest: the client's range covers every such span. The window ends
    at the newest scrape, which is `phaselens_signal_age_seconds` before the tick: on a loaded
    machine a tick can run a scrape or two late, and its goodput is then that of the older window."""
    window, interval = float(meta["window_s"]), float(meta["interval_s"])
    min_span = window - interval - max_scrape_s
    t_first = min(p.start for p in phases) + window + interval
    t_last = max(p.end for p in phases)
    evaluated = inside = point_inside = missing = 0
    worst = ""
    for s in sidecar:
        if not t_first <= s.t <= t_last:
            continue
        age = s.value("phaselens_signal_age_seconds", role=role) or 0.0
        g = client_goodput(
            requests, s.t - age, window, interval, meta["slo_ttft_s"], meta["slo_itl_s"], CLASSIFY_SLACK_S, min_span
        )
        lower = s.value("phaselens_goodput_requests_per_second", bound="lower")
        upper = s.value("phaselens_goodput_requests_per_second", bound="upper")
        if lower is None or upper is None:
            if g.requests > 0:
                missing += 1
            continue
        evaluated += 1
        if lower - 1e-9 <= g.point <= upper + 1e-9:
            point_inside += 1
        if g.low <= upper + 1e-9 and g.high >= lower - 1e-9:
            inside += 1
        elif not worst:
            worst = (
                f"t={s.t:.1f}: sidecar [{lower:.3f}, {upper:.3f}] vs client {g.point:.3f} [{g.low:.3f}, {g.high:.3f}]"
            )
    rep.figures["goodput_samples"] = evaluated
    rep.figures["goodput_samples_overlapping"] = inside
    rep.figures["goodput_samples_point_inside"] = point_inside
    # Histogram goodput pairs TTFT observations (stamped at first token) with completions (stamped
    # at finish); when requests outlive the window (overload) those are different requests, so a
    # tick may miss by a request or two. Allow 5 % of the ticks for that.
    ok = evaluated >= 10 and inside >= 0.95 * evaluated and missing <= 2
    rep.check(
        "goodput bounds contain client goodput",
        ok,
        f"{inside}/{evaluated} samples overlap the client's range, "
        f"{point_inside}/{evaluated} contain the exact "
        f"client value, {missing} samples with requests but no bounds. {worst}",
    )


def client_ttft_window(requests: list[Request], end: float, window: float, low: bool = False) -> list[float]:
    """TTFTs of the requests whose first token came in (end - window, end]; low: their ttft_low."""
    out = []
    for r in requests:
        if r.ttft is None or r.first_token_at is None or not end - window < r.first_token_at <= end:
            continue
        out.append(r.ttft_low if low and r.ttft_low is not None else r.ttft)
    return out


@dataclass(frozen=True)
class QuantileBounds:
    low: float
    high: float
    sure: int  # requests surely in the sidecar's window
    possible: int  # requests possibly in it


def ttft_quantile_bounds(
    requests: list[Request], t: float, window: float, interval: float, q: float
) -> QuantileBounds | None:
    """Bounds on the q-quantile of the engine-side TTFTs the sidecar's window at tick t holds.

    Which requests: the engine records a TTFT when its front end handles the first token, between
    the request's start + ttft_low and the client's first token. The sidecar's window ends at its
    newest scrape, in [t - interval, t], and spans W - interval to W, so it starts in
    [t - W - interval, t - W + interval]. A request is surely in it if its whole stamping interval
    lies in (t - W + interval, t - interval], possibly if that interval meets (t - W - interval, t].
    What values: each request's engine TTFT lies in [ttft_low, ttft] (per-request floors from
    vLLM's own timings, see widen_by_overhead). The highest quantile any admissible set can have
    takes every sure request at its client value plus the possible ones above that quantile; the
    lowest, the floors plus the possible floors below. Ranks: Prometheus' histogram_quantile
    reads rank q*n; the bounds take the order statistics just below and above it.
    """
    sure_hi: list[float] = []
    sure_lo: list[float] = []
    maybe_hi: list[float] = []
    maybe_lo: list[float] = []
    for r in requests:
        if r.ttft is None or r.first_token_at is None:
            continue
        floor = r.ttft_low if r.ttft_low is not None else r.ttft
        earliest, latest = r.start + floor, r.first_token_at
        if t - window + interval < earliest and latest <= t - interval:
            sure_hi.append(r.ttft)
            sure_lo.append(floor)
        elif earliest <= t and latest > t - window - interval:
            maybe_hi.append(r.ttft)
            maybe_lo.append(floor)
    if not sure_hi:
        return None

    def rank_value(xs: list[float], upper: bool) -> float:
        xs = sorted(xs)
        k = q * len(xs)
        i = min(len(xs) - 1, math.ceil(k)) if upper else max(0, math.floor(k) - 1)
        return xs[i]

    high0 = rank_value(sure_hi, upper=True)
    high = rank_value(sure_hi + [x for x in maybe_hi if x > high0], upper=True)
    low0 = rank_value(sure_lo, upper=False)
    low = rank_value(sure_lo + [x for x in maybe_lo if x < low0], upper=False)
    return QuantileBounds(low, high, len(sure_hi), len(sure_hi) + len(maybe_hi))


def check_ttft_quantiles(
    rep: Report, sidecar: list[Scrape], engine: list[Scrape], requests: list[Request], meta: dict
) -> None:
    """The sidecar's TTFT quantile must lie in the histogram buckets that can hold the engine's
    quantile over its window: from the bucket of the lowest admissible value to the bucket of the
    highest (ttft_quantile_bounds). Ticks with fewer than 20 requests surely in the window are
    skipped (a p99 of fewer is the maximum)."""
    window, interval = float(meta["window_s"]), float(meta["interval_s"])
    bounds = bucket_bounds(engine, "vllm:time_to_first_token_seconds")
    total = passed = 0
    fails: list[str] = []
    for s in sidecar:
        for labels, value in s.values("phaselens_ttft_seconds"):
            q = float(labels["percentile"]) / 100
            b = ttft_quantile_bounds(requests, s.t, window, interval, q)
            if b is None or b.sure < 20:
                continue
            lo_edge = bucket_of(b.low, bounds)[0]
            hi_edge = bucket_of(b.high, bounds)[1]
            total += 1
            if lo_edge - 1e-9 <= value <= hi_edge + 1e-9:
                passed += 1
            elif len(fails) < 3:
                fails.append(
                    f"t={s.t:.1f} q={q}: sidecar {value:.3f} outside ({lo_edge}, {hi_edge}] "
                    f"(engine quantile in [{b.low:.3f}, {b.high:.3f}], {b.sure}-{b.possible} requests)"
                )
    rep.figures["ttft_quantile_checks"] = total
    rep.figures["ttft_quantile_agree"] = passed
    share = passed / total if total else 0.0
    rep.check(
        "TTFT quantiles within the buckets that can hold the engine's",
        total >= 10 and share >= TTFT_AGREE_SHARE,
        f"{passed}/{total} (quantile, tick) pairs agree ({share:.0%}, need {TTFT_AGREE_SHARE:.0%}); "
        f"{'; '.join(fails) or 'no disagreement'}",
    )


def recommendations(out: Path) -> list[dict]:
    return [r for r in load_jsonl(out / "sidecar.stdout.jsonl") if r.get("event") == "recommendation"]


def rec_ts(r: dict) -> float:
    ts = r.get("ts")
    if isinstance(ts, (int, float)):
        return float(ts)
    if isinstance(ts, str):
        from datetime import datetime

        try:
            return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return math.nan
    return math.nan


def check_recommendations(
    rep: Report, recs: list[dict], phases: list[PhaseSpan], window: float, sidecar: list[Scrape]
) -> None:
    idle = phase(phases, "idle")
    over = phase(phases, "overload")
    if idle is not None:
        during = [r["code"] for r in recs if idle.start <= rec_ts(r) <= idle.end]
        rep.check("idle triggers no recommendation", not during, f"during idle: {during or 'none'}")
    if over is not None:
        codes = {r["code"] for r in recs if over.start <= rec_ts(r) <= over.end + window}
        # The phase signals are reported beside it: imbalance at or under the DECODE_BOTTLENECK
        # threshold and phase_bottleneck{phase="decode"} = 1 over the overload's ticks.
        low = Thresholds().bottleneck_imbalance_low
        ticks = [x for x in sidecar if over.start + window / 2 <= x.t <= over.end]
        decode_named = [
            x for x in ticks
            if (x.value("phaselens_phase_imbalance_ratio") or math.inf) <= low
            and x.value("phaselens_phase_bottleneck", phase="decode") == 1.0
        ]  # fmt: skip
        rep.check(
            "overload triggers KV_CACHE_PRESSURE and a prefill or decode bottleneck recommendation",
            "KV_CACHE_PRESSURE" in codes and bool(codes & {"PREFILL_BOTTLENECK", "DECODE_BOTTLENECK"}),
            f"codes during overload: {sorted(codes)}; decode named by the phase signals (imbalance <= "
            f"{low:.3f}) in {len(decode_named)}/{len(ticks)} overload ticks",
        )
    rep.figures["recommendation_codes"] = sorted({r.get("code", "?") for r in recs})


def counter_delta(engine: list[Scrape], name: str, t0: float, t1: float) -> float | None:
    a = sample_at(engine, t0)
    b = sample_at(engine, t1)
    if a is None or b is None:
        return None
    va, vb = a.value(name), b.value(name)
    if va is None or vb is None:
        return None
    return vb - va


def mean_signal(sidecar: list[Scrape], name: str, t0: float, t1: float, **labels: str) -> float | None:
    vals = [v for s in sidecar if t0 <= s.t <= t1 for v in [s.value(name, **labels)] if v is not None]
    return sum(vals) / len(vals) if vals else None


def check_kv(rep: Report, sidecar: list[Scrape], engine: list[Scrape], phases: list[PhaseSpan], window: float) -> None:
    steady, prefix, over = phase(phases, "steady"), phase(phases, "prefix"), phase(phases, "overload")
    if steady and prefix:
        hs = mean_signal(sidecar, "phaselens_kv_prefix_cache_hit_ratio", steady.end - window / 2, steady.end)
        hp = mean_signal(sidecar, "phaselens_kv_prefix_cache_hit_ratio", prefix.end - window / 2, prefix.end)
        hits = counter_delta(engine, "vllm:prefix_cache_hits_total", prefix.end - window, prefix.end)
        queries = counter_delta(engine, "vllm:prefix_cache_queries_total", prefix.end - window, prefix.end)
        truth = hits / queries if hits is not None and queries else None
        at_end = mean_signal(sidecar, "phaselens_kv_prefix_cache_hit_ratio", prefix.end - 1.5, prefix.end + 0.5)
        ok = hs is not None and hp is not None and hp >= hs + 0.2
        if truth is not None and at_end is not None:
            ok = ok and abs(at_end - truth) <= 0.1
        rep.check(
            "prefix phase raises the hit ratio",
            ok,
            f"steady {_fmt(hs)} -> prefix {_fmt(hp)}; "
            f"at prefix end sidecar {_fmt(at_end)} vs engine counters "
            f"{_fmt(truth)} (tolerance 0.1 for the window edge)",
        )
        rep.figures["hit_ratio_steady"], rep.figures["hit_ratio_prefix"] = hs, hp
    if over:
        pre = counter_delta(engine, "vllm:num_preemptions_total", over.start, over.end)
        peak = max(
            (
                v
                for s in sidecar
                if over.start <= s.t <= over.end + window
                for v in [s.value("phaselens_kv_preemptions_per_second")]
                if v is not None
            ),
            default=None,
        )
        rep.check(
            "overload preempts and the sidecar sees it",
            bool(pre) and peak is not None and peak > 0,
            f"engine preemptions during overload {pre}, sidecar peak {_fmt(peak)}/s",
        )
        rep.figures["preemptions_overload"] = pre


def _phase_max(scrapes: list[Scrape], span: PhaseSpan, name: str) -> float | None:
    """Largest value of an unlabelled series over the scrapes taken during a phase."""
    values = (x.value(name) for x in scrapes if span.start <= x.t <= span.end)
    return max((v for v in values if v is not None), default=None)


def phase_table(
    rep: Report,
    sidecar: list[Scrape],
    engine: list[Scrape],
    requests: list[Request],
    phases: list[PhaseSpan],
    meta: dict,
) -> None:
    window, interval = float(meta["window_s"]), float(meta["interval_s"])
    rows = [
        "| phase | reqs | client goodput/s (range) | sidecar goodput/s [lower, upper] "
        "| TTFT p50 client / sidecar "
        "| TTFT p90 client / sidecar | TTFT p99 client / sidecar | TPOT p50 client / ITL p50 sidecar "
        "| hit ratio | KV util max | queue max engine / sidecar |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows_json = []
    for p in phases:
        t = p.end
        s = sample_at(sidecar, t + interval)
        g = client_goodput(requests, t, window, interval, meta["slo_ttft_s"], meta["slo_itl_s"], CLASSIFY_SLACK_S)
        ttfts = client_ttft_window(requests, t, window)
        tpots = [r.tpot for r in requests if r.tpot is not None and t - window < r.end <= t]
        n_phase = sum(1 for r in requests if r.phase == p.name)

        def sq(q: float, s: Scrape | None = s) -> float | None:
            return None if s is None else s.value("phaselens_ttft_seconds", percentile=percentile_label(q))

        def cq(q: float, ttfts: list[float] = ttfts) -> float | None:
            return empirical_quantile(ttfts, q) if ttfts else None

        kv_max = _phase_max(sidecar, p, "phaselens_decode_kv_utilization_ratio")
        q_side = _phase_max(sidecar, p, "phaselens_prefill_queue_depth")
        q_eng = _phase_max(engine, p, "vllm:num_requests_waiting")
        lo = s.value("phaselens_goodput_requests_per_second", bound="lower") if s else None
        up = s.value("phaselens_goodput_requests_per_second", bound="upper") if s else None
        itl50 = s.value("phaselens_itl_seconds", percentile="50") if s else None
        hit = s.value("phaselens_kv_prefix_cache_hit_ratio") if s else None
        rows.append(
            f"| {p.name} | {n_phase} | {_fmt(g.point)} ({_fmt(g.low)}-{_fmt(g.high)}) "
            f"| [{_fmt(lo)}, {_fmt(up)}] "
            f"| {_fmt(cq(0.5))} / {_fmt(sq(0.5))} | {_fmt(cq(0.9))} / {_fmt(sq(0.9))} "
            f"| {_fmt(cq(0.99))} / {_fmt(sq(0.99))} "
            f"| {_fmt(empirical_quantile(tpots, 0.5) if tpots else None, 4)} / {_fmt(itl50, 4)} "
            f"| {_fmt(hit, 2)} | {_fmt(kv_max, 2)} | {_fmt(q_eng, 0)} / {_fmt(q_side, 0)} |"
        )
        rows_json.append(
            {
                "phase": p.name,
                "requests": n_phase,
                "client_goodput": g.point,
                "client_goodput_range": [g.low, g.high],
                "sidecar_goodput": [lo, up],
                "ttft_client": {q: cq(q) for q in (0.5, 0.9, 0.99)},
                "ttft_sidecar": {q: sq(q) for q in (0.5, 0.9, 0.99)},
            }
        )
    rep.tables.append("\n".join(rows))
    rep.figures["phases"] = rows_json


# --- P/D -------------------------------------------------------------------------------------


def ring_transfer_count(folder: Path) -> tuple[int, int]:
    """Transfers recorded in the NIXL rings (initiator 4-event groups), summed over agents.

    Counted from the whole buffer, not the unread part: the sidecar consumes the ring (advances
    read_pos) but the events stay in their slots while the ring has not wrapped.
    Returns (transfers, files).
    """
    from phaselens.parsers import nixl_ring

    total = files = 0
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        buf = path.read_bytes()
        try:
            header = nixl_ring.parse_header(buf, str(path))
        except nixl_ring.RingFormatError:
            continue
        files += 1
        write_pos = struct.unpack_from("<Q", buf, 0)[0]
        if header.version < 2:
            continue  # v1 rings carry names, not ids; vLLM 0.32 + NIXL 1.5.1 write v4
        events = nixl_ring.read_events(buf, header, 0, min(int(write_pos), header.capacity))
        xfer_id = nixl_ring.EVENT_NAMES[header.version].index("agent_xfer_time")
        total += int((events.types == xfer_id).sum())
    return total, files


def log_transfer_count(log: Path) -> int:
    import re

    pat = re.compile(r"KV Transfer metrics: Num successful transfers=(\d+)")
    return sum(int(m.group(1)) for m in pat.finditer(log.read_text(errors="replace"))) if log.exists() else 0


# The exact sources (vLLM's histograms and the NIXL rings) see the same transfers; over one window
# they may differ only by the transfers near its two edges: each source places a transfer at the
# scrape or poll that first sees it, up to one interval after it happened.
EDGE_INTERVALS = 2
SCRAPE_TIMEOUT_S = 2.0  # the sidecar's scrape timeout (its "timed out after 2 s")


def loaded_ticks(
    sidecar: list[Scrape],
    phases: list[PhaseSpan],
    window: float,
    engine: list[Scrape] | None = None,
    max_gap: float = math.inf,
) -> list[Scrape]:
    """Ticks whose whole window lies inside continuous load (every phase with clients) and, given
    the engine's recorded scrapes, in which the engine answered its /metrics throughout (no gap
    over max_gap): when it stalls (seen on 2 saturated cores: 30 s), the sidecar's window holds
    only the samples after the stall and its rates cover those seconds, not W."""
    busy = [p for p in phases if p.name not in ("idle", "drain", "warm")]
    if not busy:
        return []
    start, end = min(p.start for p in busy), max(p.end for p in busy)
    out = []
    for s in sidecar:
        if not start + window <= s.t <= end:
            continue
        if engine is not None:
            times = [s.t - window] + [x.t for x in engine if s.t - window < x.t <= s.t] + [s.t]
            if max(b - a for a, b in itertools.pairwise(times)) > max_gap:
                continue
        out.append(s)
    return out


def edge_blur(sidecar: list[Scrape], exposed: list[Scrape], interval: float, at: float) -> tuple[float, float]:
    """How far a window edge at `at` is blurred between the NIXL sources, and the first sample's lag.

    vLLM's histogram places a transfer at the sidecar's first decode scrape after it, the ring at
    the sidecar's first poll (tick) after it. So each edge is blurred by EDGE_INTERVALS intervals
    plus the longest decode scrape and the longest gap between the sidecar's ticks around it
    (recorded ticks; a missed one only widens the gap).
    """
    near = [x.t for x in sidecar if at - 3 * interval <= x.t <= at + 3 * interval]
    gap = max((b - a for a, b in itertools.pairwise(near)), default=interval)
    late = longest_scrape(exposed, "decode", interval, at - 2 * interval, at + 2 * interval)
    return EDGE_INTERVALS * interval + late + max(0.0, gap - interval), max(gap, interval + late)


def p50_bucket_span(
    decode: list[Scrape],
    sidecar: list[Scrape],
    exposed: list[Scrape],
    interval: float,
    window: float,
    t: float,
    bounds: list[float],
) -> tuple[float, float]:
    """The buckets the window's p50 can fall in when the edges move the transfers they blur.

    The ring's window and the histogram's differ by the transfers within either blurred edge
    (k of them, counted from vLLM's own counter). With n transfers in the window, its median
    can then be any order statistic from rank n/2 - k to n/2 + k: read from vLLM's histogram
    delta over the window, their buckets bound where either source's p50 may lie.
    """
    name = "vllm:nixl_xfer_time_seconds"
    start_edge, _ = edge_blur(sidecar, exposed, interval, t - window)
    end_edge, _ = edge_blur(sidecar, exposed, interval, t)
    k = (counter_delta(decode, name + "_count", t - window - start_edge, t - window + start_edge) or 0.0) + (
        counter_delta(decode, name + "_count", t - end_edge, t + interval) or 0.0
    )
    a, b = sample_at(decode, t - window), sample_at(decode, t)
    if a is None or b is None:
        return (math.inf, -math.inf)
    def buckets(scrape: Scrape) -> dict[float, float]:
        out: dict[float, float] = {}
        for labels, v in scrape.values(name + "_bucket"):
            le = float(labels.get("le", "nan"))
            out[le] = out.get(le, 0.0) + v
        return out

    at_a, at_b = buckets(a), buckets(b)
    cumulative = [(le, at_b.get(le, 0.0) - at_a.get(le, 0.0)) for le in bounds]
    n = (b.value(name + "_count") or 0.0) - (a.value(name + "_count") or 0.0)
    if n <= 0:
        return (math.inf, -math.inf)

    def bucket_at(rank: float) -> tuple[float, float]:
        lower = 0.0
        for le, c in cumulative:
            if c >= rank:
                return lower, le
            lower = le
        return lower, math.inf

    low_rank, high_rank = max(1e-9, n / 2 - k), min(n, n / 2 + k)
    return bucket_at(low_rank)[0], bucket_at(high_rank)[1]


def check_nixl_sources(
    rep: Report,
    sidecar: list[Scrape],
    exposed: list[Scrape],
    decode: list[Scrape],
    phases: list[PhaseSpan],
    meta: dict,
) -> None:
    """The same NIXL signal from each source, over ticks whose window lies inside the load.

    p50: vLLM's figure is interpolated inside a histogram bucket, the ring's is exact, so the
    histogram's p50 must lie in the bucket that holds the ring's (the same rule as for TTFT).
    bytes/s: the rings and vLLM's byte histogram count the same transfers; per tick they may differ
    by the transfers of EDGE_INTERVALS intervals (window edges). The log source sums vLLM's 10 s
    `KV Transfer metrics` lines, so its window is quantized to that period: reported, compared
    only loosely (within the share of the window one log period is).
    """
    window, interval = float(meta["window_s"]), float(meta["interval_s"])
    # the engine must have answered within two intervals plus the sidecar's scrape timeout
    ticks = loaded_ticks(sidecar, phases, window, decode, max_gap=2 * interval + SCRAPE_TIMEOUT_S)
    rep.figures["nixl_ticks_compared"] = len(ticks)
    bounds = bucket_bounds(decode, "vllm:nixl_xfer_time_seconds")
    p50_pairs = p50_ok = 0
    p50_fail = ""
    p50_by_source: dict[str, list[float]] = {}
    for s in ticks:
        by = {lab.get("source", "?"): v for lab, v in s.values("phaselens_nixl_transfer_seconds", percentile="50")}
        for k, v in by.items():
            p50_by_source.setdefault(k, []).append(v)
        if "vllm_metrics" in by and "telemetry_ring" in by:
            p50_pairs += 1
            lo, hi = p50_bucket_span(decode, sidecar, exposed, interval, window, s.t, bounds)
            ring_lo, ring_hi = bucket_of(by["telemetry_ring"], bounds)
            lo, hi = min(lo, ring_lo), max(hi, ring_hi)
            if lo - 1e-9 <= by["vllm_metrics"] <= hi + 1e-9:
                p50_ok += 1
            elif not p50_fail:
                p50_fail = (
                    f"; t={s.t:.1f}: metrics {by['vllm_metrics']:.5f} outside ({lo}, {hi}], the buckets of the"
                    f" ring's exact p50 {by['telemetry_ring']:.5f} and of the ranks the window edges can shift"
                )
    med = {k: sorted(v)[len(v) // 2] for k, v in p50_by_source.items()}
    rep.figures["nixl_p50_by_source"] = med
    rep.check(
        "NIXL p50 transfer time: vLLM's histogram p50 in the bucket of the ring's exact p50"
        " (widened by the ranks the window edges can move)",
        p50_pairs >= 5 and p50_ok == p50_pairs,
        f"{p50_ok}/{p50_pairs} loaded ticks agree; medians {med}{p50_fail}",
    )
    bps_pairs = bps_ok = 0
    bps_fail = ""
    ratios: dict[str, list[float]] = {}
    for s in ticks:
        by = {lab.get("source", "?"): v for lab, v in s.values("phaselens_nixl_transfer_bytes_per_second")}
        ref = by.get("vllm_metrics")
        if ref is None or ref <= 0:
            continue
        for k, v in by.items():
            if k != "vllm_metrics":
                ratios.setdefault(k, []).append(v / ref)
        ring = by.get("telemetry_ring")
        if ring is None:
            continue
        bps_pairs += 1

        # the bytes vLLM recorded within either blurred window edge (which either source may
        # count or not); plus the divisors' difference: the ring divides by W, the histogram by
        # the span of the sidecar's samples in the window, which starts at its first scrape after
        # t - W: up to one interval plus the longest scrape later
        start_edge, first_sample_after = edge_blur(sidecar, exposed, interval, s.t - window)
        end_edge, _ = edge_blur(sidecar, exposed, interval, s.t)
        bytes_name = "vllm:nixl_bytes_transferred_sum"
        edge_bytes = (
            counter_delta(decode, bytes_name, s.t - window - start_edge, s.t - window + start_edge) or 0.0
        ) + (counter_delta(decode, bytes_name, s.t - end_edge, s.t + interval) or 0.0)
        # the ring divides by W, the histogram by its samples' span, shorter by first_sample_after
        span = window - first_sample_after
        allowed = edge_bytes / span + max(ref, ring) * (window - span) / span
        if abs(ring - ref) <= allowed:
            bps_ok += 1
        elif not bps_fail:
            bps_fail = f"; t={s.t:.1f}: ring {ring:.0f} vs metrics {ref:.0f} B/s (allowed +-{allowed:.0f})"
    med_ratio = {k: round(sorted(v)[len(v) // 2], 3) for k, v in ratios.items()}
    rep.figures["nixl_bytes_per_second_ratio_to_metrics"] = med_ratio
    rep.check(
        "NIXL bytes/s: rings and vLLM's histogram agree per tick",
        bps_pairs >= 5 and bps_ok == bps_pairs,
        f"{bps_ok}/{bps_pairs} loaded ticks within the window-edge allowance; "
        f"median ratio to vllm_metrics by source {med_ratio}{bps_fail}",
    )
    log_ratio = med_ratio.get("log")
    log_allowed = 1.0 + LOG_PERIOD_S / window
    rep.check(
        "NIXL bytes/s from the log within its 10 s quantization",
        log_ratio is not None and 1.0 / log_allowed <= log_ratio <= log_allowed,
        f"median log/metrics ratio {log_ratio} (allowed 1/{log_allowed:.2f}..{log_allowed:.2f})",
    )


def check_pd(
    rep: Report,
    out: Path,
    sidecar: list[Scrape],
    exposed: list[Scrape],
    decode: list[Scrape],
    phases: list[PhaseSpan],
    meta: dict,
) -> None:
    first, last = decode[0], decode[-1]
    name = "vllm:nixl_xfer_time_seconds_count"
    metrics_n = (last.value(name) or 0.0) - (first.value(name) or 0.0)
    metrics_total = last.value(name) or 0.0
    ring_n, ring_files = ring_transfer_count(out / "nixl-telemetry")
    log_n = log_transfer_count(out / "decode.log")
    rep.figures.update(
        nixl_transfers_metrics=metrics_total,
        nixl_transfers_ring=ring_n,
        nixl_transfers_log=log_n,
        nixl_ring_files=ring_files,
    )
    # The log line comes every ~10 s, so the last interval's transfers may not be logged yet.
    tol = max(2.0, 0.05 * metrics_total)
    rep.check(
        "NIXL transfer counts agree across metrics, ring and log",
        metrics_total > 0 and abs(ring_n - metrics_total) <= tol and metrics_total - log_n <= tol + 20 and log_n > 0,
        f"metrics {metrics_total:.0f} (during recording {metrics_n:.0f}), "
        f"ring {ring_n} in {ring_files} files, "
        f"log {log_n} (tolerance {tol:.0f}; the log may trail by its last ~10 s)",
    )
    check_nixl_sources(rep, sidecar, exposed, decode, phases, meta)
    # one share per source (label `source`): each must be a fraction
    share = [(lab.get("source", "?"), v) for s in sidecar for lab, v in s.values("phaselens_nixl_ttft_share_ratio")]
    last = {src: round(v, 3) for src, v in share}
    rep.check(
        "NIXL TTFT share exported and within 0..1 for every source",
        bool(share) and all(0 <= v <= 1 for _, v in share),
        f"{len(share)} samples, last by source {last}",
    )
    comps = {lab.get("component") for s in sidecar for lab, _ in s.values("phaselens_disaggregation_component_ratio")}
    score = [v for s in sidecar for v in [s.value("phaselens_disaggregation_score")] if v is not None]
    rep.check(
        "disaggregation score and components exported",
        bool(score) and len(comps) >= 2,
        f"components {sorted(c for c in comps if c)}, score last {_fmt(score[-1] if score else None)}",
    )
    imb = [v for s in sidecar for v in [s.value("phaselens_phase_imbalance_ratio")] if v is not None]
    rep.check("pool imbalance exported", bool(imb), f"{len(imb)} samples, last {_fmt(imb[-1] if imb else None)}")


def pd_phase_table(
    rep: Report, sidecar: list[Scrape], requests: list[Request], phases: list[PhaseSpan], meta: dict
) -> None:
    """Per phase, at its end: the client's view of the W-second window beside the sidecar's, per
    role. The client's TTFT spans both steps; the prefill server's TTFT is the prefill step
    (max_tokens 1), the decode server's starts when the decode request arrives (decode_ttft)."""
    window, interval = float(meta["window_s"]), float(meta["interval_s"])
    rows = [
        "| phase | reqs | client goodput/s | sidecar goodput/s (decode) [lower, upper] "
        "| client TTFT p50 / p90 | prefill step p50 / p90 client, sidecar prefill TTFT p50 / p90 "
        "| decode-side TTFT p50 / p90 client, sidecar decode TTFT p50 / p90 |",
        "|---|---|---|---|---|---|---|",
    ]
    figures = []
    for p in phases:
        t = p.end
        s = sample_at(sidecar, t + interval)
        g = client_goodput(requests, t, window, interval, meta["slo_ttft_s"], meta["slo_itl_s"], CLASSIFY_SLACK_S)
        inwin = [r for r in requests if r.first_token_at is not None and t - window < r.first_token_at <= t]

        def cq(xs: list[float], q: float) -> float | None:
            return empirical_quantile(xs, q) if xs else None

        ttft = [r.ttft for r in inwin if r.ttft is not None]
        pre = [r.prefill_seconds for r in inwin if r.prefill_seconds is not None]
        dec = [r.decode_ttft for r in inwin if r.decode_ttft is not None]

        def sv(name: str, role: str, s: Scrape | None = s, **labels: str) -> float | None:
            return None if s is None else s.value(name, role=role, **labels)

        lo = sv("phaselens_goodput_requests_per_second", "decode", bound="lower")
        up = sv("phaselens_goodput_requests_per_second", "decode", bound="upper")
        side = {
            (role, q): sv("phaselens_ttft_seconds", role, percentile=percentile_label(float(q)))
            for role in ("prefill", "decode")
            for q in ("0.5", "0.9")
        }
        rows.append(
            f"| {p.name} | {sum(1 for r in requests if r.phase == p.name)} | {_fmt(g.point)} "
            f"| [{_fmt(lo)}, {_fmt(up)}] | {_fmt(cq(ttft, 0.5))} / {_fmt(cq(ttft, 0.9))} "
            f"| {_fmt(cq(pre, 0.5))} / {_fmt(cq(pre, 0.9))}, {_fmt(side['prefill', '0.5'])} / "
            f"{_fmt(side['prefill', '0.9'])} "
            f"| {_fmt(cq(dec, 0.5))} / {_fmt(cq(dec, 0.9))}, {_fmt(side['decode', '0.5'])} / "
            f"{_fmt(side['decode', '0.9'])} |"
        )
        figures.append(
            {
                "phase": p.name,
                "client_goodput": g.point,
                "sidecar_goodput_decode": [lo, up],
                "client_ttft": [cq(ttft, 0.5), cq(ttft, 0.9)],
                "client_prefill_step": [cq(pre, 0.5), cq(pre, 0.9)],
                "client_decode_ttft": [cq(dec, 0.5), cq(dec, 0.9)],
                "sidecar_ttft": {f"{k[0]}_{k[1]}": v for k, v in side.items()},
            }
        )
    rep.tables.append("\n".join(rows))
    rep.figures["phases"] = figures


def check_run(out: Path) -> Report:
    meta = json.loads((out / "meta.json").read_text())
    pd = meta["scenario"] == "pd"
    rep = Report(meta["scenario"])
    rep.figures["timings_s"] = meta.get("timings_s")
    requests, phases = load_ground_truth(out / "ground_truth.jsonl")
    errors = sum(1 for r in requests if not r.ok)
    rep.check(
        "run completed",
        bool(meta.get("ok")) and errors <= 0.02 * max(1, len(requests)),
        f"{len(requests)} requests, {errors} errors",
    )
    roles = meta["roles"]
    engine = {role: load_scrapes(out / "scrapes" / role) for role in roles}
    exposed = load_scrapes(out / "sidecar") if (out / "sidecar").exists() else []
    ticks = signals_to_scrapes(load_jsonl(out / "signals.jsonl"))
    if not exposed or not ticks:
        rep.check("sidecar recorded", False, "no sidecar /metrics or /signals samples (sidecar missing?)")
        return rep
    check_exported(rep, exposed, pd)
    check_promtool(rep, out / "sidecar")
    if pd:
        check_pd(rep, out, ticks, exposed, engine["decode"], phases, meta)
        pd_phase_table(rep, ticks, requests, phases, meta)
    else:
        eng = engine["aggregated"]
        over = frontend_overheads(eng, requests, phases)
        rep.figures["frontend_overhead_s"] = {k: [round(v.ttft_s, 4), round(v.e2e_s, 4)] for k, v in over.items()}
        rep.tables.append(
            "front-end overhead the engine cannot see (client mean minus engine mean, s): "
            + ", ".join(f"{k}: TTFT +{v.ttft_s:.3f}, e2e +{v.e2e_s:.3f}" for k, v in over.items())
            + f"; requests without engine timings are widened by up to {OVERHEAD_FACTOR:g}x it\n"
        )
        table, figures = overhead_table(requests, phases, over)
        rep.tables.append(table)
        rep.figures["frontend_overhead_by_phase"] = figures
        requests = widen_by_overhead(requests, phases, over)
        check_goodput(rep, ticks, requests, phases, meta, longest_scrape(exposed, "aggregated", 0.0))
        check_ttft_quantiles(rep, ticks, eng, requests, meta)
        check_recommendations(rep, recommendations(out), phases, float(meta["window_s"]), ticks)
        check_kv(rep, ticks, eng, phases, float(meta["window_s"]))
        phase_table(rep, ticks, eng, requests, phases, meta)
    return rep


def render(rep: Report) -> str:
    lines = [f"## e2e {rep.scenario}: {'PASS' if rep.ok else 'FAIL'}", ""]
    lines += [f"- [{'x' if r.ok else ' '}] {r.name}: {r.detail}" for r in rep.results]
    lines.append("")
    lines += rep.tables
    if rep.figures.get("timings_s"):
        lines += ["", f"step timings (s): {rep.figures['timings_s']}"]
    return "\n".join(lines) + "\n"


def report_runs(runs: list[Path], check: Callable[[Path], Report]) -> bool:
    """Checks each run folder, prints its report and writes report.md / report.json beside it."""
    all_ok = True
    for out in runs:
        rep = check(out)
        text = render(rep)
        print(text)
        (out / "report.md").write_text(text)
        (out / "report.json").write_text(
            json.dumps(
                {
                    "scenario": rep.scenario,
                    "ok": rep.ok,
                    "results": [r.__dict__ for r in rep.results],
                    "figures": rep.figures,
                },
                indent=2,
                default=str,
            )
            + "\n"
        )
        all_ok &= rep.ok
    return all_ok


def run_cli(description: str | None, check: Callable[[Path], Report], argv: list[str] | None = None) -> int:
    """`check.py RUN [RUN ...]` and its Dynamo twin: judge each run folder, exit 1 if any failed."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args(argv)
    return 0 if report_runs(args.runs, check) else 1


def main(argv: list[str] | None = None) -> int:
    return run_cli(__doc__, check_run, argv)


if __name__ == "__main__":
    sys.exit(main())
