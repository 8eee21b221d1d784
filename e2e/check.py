"""Assertions and report for a recorded end-to-end run (e2e/out/<scenario>/ from scenario.py).

Compares what the sidecar exported (its /metrics, recorded at known instants) with the client's
ground truth and with the engine's own counters, prints a comparison table, writes report.md and
report.json next to the run, and exits non-zero if an assertion fails.
Usage: python e2e/check.py OUT_DIR [OUT_DIR ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
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
from phaselens.exporters.specs import SPECS

# Client-side stamps trail the engine's by HTTP, detokenization and event-loop delays; on two
# shared cores under overload these reach tens of ms. Requests this close to an SLO may be
# classified differently by engine and client (see groundtruth.client_goodput).
CLASSIFY_SLACK_S = 0.03
# A request's own front-end overhead varies around the per-phase mean that frontend_overheads
# measures; allow up to this many times the mean before calling a disagreement.
OVERHEAD_FACTOR = float(os.environ.get("E2E_OVERHEAD_FACTOR", "2"))
# Signals that need history or outcomes a short run may not produce: reported, not asserted.
SOFT_SIGNALS = {"phaselens_prediction_calibration_error"}
PD_ONLY_GROUPS = {"nixl", "disaggregation"}
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
    def phase_at(t: float) -> Overhead | None:
        for p in phases:
            if p.start <= t <= p.end and p.name in over:
                return over[p.name]
        return None

    out = []
    for r in requests:
        o_first = phase_at(r.first_token_at) if r.first_token_at is not None else None
        o_end = phase_at(r.end)
        ttft_low = None if r.ttft is None else max(0.0, r.ttft - OVERHEAD_FACTOR * (o_first.ttft_s if o_first else 0))
        end_early = r.end - OVERHEAD_FACTOR * (o_end.e2e_s if o_end else 0.0)
        out.append(replace(r, ttft_low=ttft_low, end_early=end_early))
    return out


def check_exported(rep: Report, sidecar: list[Scrape], pd: bool) -> None:
    seen: set[str] = set()
    for s in sidecar:
        seen |= s.names()
    missing: list[str] = []
    soft_missing: list[str] = []
    for spec in SPECS:
        if (spec.group in PD_ONLY_GROUPS and not pd) or spec.group in NO_INPUT_GROUPS:
            continue
        if spec.name in seen:
            continue
        (soft_missing if spec.name in SOFT_SIGNALS else missing).append(spec.name)
    rep.check(
        "signals exported",
        not missing,
        f"missing: {missing or 'none'}; soft missing: {soft_missing or 'none'}",
    )


def check_goodput(
    rep: Report, sidecar: list[Scrape], requests: list[Request], phases: list[PhaseSpan], meta: dict
) -> None:
    window, interval = float(meta["window_s"]), float(meta["interval_s"])
    t_first = min(p.start for p in phases) + window + interval
    t_last = max(p.end for p in phases)
    evaluated = inside = point_inside = missing = 0
    worst = ""
    for s in sidecar:
        if not t_first <= s.t <= t_last:
            continue
        g = client_goodput(requests, s.t, window, interval, meta["slo_ttft_s"], meta["slo_itl_s"], CLASSIFY_SLACK_S)
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


def check_ttft_quantiles(
    rep: Report, sidecar: list[Scrape], engine: list[Scrape], requests: list[Request], meta: dict
) -> None:
    window, interval = float(meta["window_s"]), float(meta["interval_s"])
    bounds = bucket_bounds(engine, "vllm:time_to_first_token_seconds")
    total = passed = 0
    fails: list[str] = []
    for s in sidecar:
        for labels, value in s.values("phaselens_ttft_seconds"):
            q = float(labels["quantile"])
            agree = False
            n = 0
            # the sidecar's window ends up to one interval before its tick; the engine's TTFT of a
            # request lies between the client's and ttft_low (see frontend_overheads)
            for end in (s.t, s.t - interval / 2, s.t - interval):
                xs = client_ttft_window(requests, end, window)
                n = max(n, len(xs))
                if len(xs) < 20:
                    continue
                lows = client_ttft_window(requests, end, window, low=True)
                lo_edge = bucket_of(empirical_quantile(lows, q), bounds)[0]
                hi_edge = bucket_of(empirical_quantile(xs, q), bounds)[1]
                if lo_edge - CLASSIFY_SLACK_S / 3 <= value <= hi_edge + CLASSIFY_SLACK_S / 3:
                    agree = True
            if n < 20:
                continue
            total += 1
            passed += agree
            if not agree and len(fails) < 3:
                cq = empirical_quantile(client_ttft_window(requests, s.t, window), q)
                fails.append(f"t={s.t:.1f} q={q}: sidecar {value:.3f} client {cq:.3f}")
    rep.figures["ttft_quantile_checks"] = total
    rep.figures["ttft_quantile_agree"] = passed
    share = passed / total if total else 0.0
    # A distribution shift inside one scrape interval (phase changes) can move a quantile across a
    # bucket edge between the two windows; allow 5 % of the samples for that.
    rep.check(
        "TTFT quantiles within the client's bucket",
        total >= 10 and share >= 0.95,
        f"{passed}/{total} (quantile, sample) pairs agree ({share:.0%}); {'; '.join(fails) or 'no disagreement'}",
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


def check_recommendations(rep: Report, recs: list[dict], phases: list[PhaseSpan], window: float) -> None:
    idle = phase(phases, "idle")
    over = phase(phases, "overload")
    if idle is not None:
        during = [r["code"] for r in recs if idle.start <= rec_ts(r) <= idle.end]
        rep.check("idle triggers no recommendation", not during, f"during idle: {during or 'none'}")
    if over is not None:
        codes = {r["code"] for r in recs if over.start <= rec_ts(r) <= over.end + window}
        ok = "KV_CACHE_PRESSURE" in codes and bool(codes & {"PREFILL_BOTTLENECK", "DECODE_BOTTLENECK"})
        rep.check(
            "overload triggers KV_CACHE_PRESSURE and a bottleneck",
            ok,
            f"codes during overload: {sorted(codes)}",
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

        def sq(q: str, s: Scrape | None = s) -> float | None:
            return None if s is None else s.value("phaselens_ttft_seconds", quantile=q)

        def cq(q: float, ttfts: list[float] = ttfts) -> float | None:
            return empirical_quantile(ttfts, q) if ttfts else None

        kv_max = max(
            (
                v
                for x in sidecar
                if p.start <= x.t <= p.end
                for v in [x.value("phaselens_decode_kv_utilization_ratio")]
                if v is not None
            ),
            default=None,
        )
        q_side = max(
            (
                v
                for x in sidecar
                if p.start <= x.t <= p.end
                for v in [x.value("phaselens_prefill_queue_depth")]
                if v is not None
            ),
            default=None,
        )
        q_eng = max(
            (
                v
                for x in engine
                if p.start <= x.t <= p.end
                for v in [x.value("vllm:num_requests_waiting")]
                if v is not None
            ),
            default=None,
        )
        lo = s.value("phaselens_goodput_requests_per_second", bound="lower") if s else None
        up = s.value("phaselens_goodput_requests_per_second", bound="upper") if s else None
        itl50 = s.value("phaselens_itl_seconds", quantile="0.5") if s else None
        hit = s.value("phaselens_kv_prefix_cache_hit_ratio") if s else None
        rows.append(
            f"| {p.name} | {n_phase} | {_fmt(g.point)} ({_fmt(g.low)}-{_fmt(g.high)}) "
            f"| [{_fmt(lo)}, {_fmt(up)}] "
            f"| {_fmt(cq(0.5))} / {_fmt(sq('0.5'))} | {_fmt(cq(0.9))} / {_fmt(sq('0.9'))} "
            f"| {_fmt(cq(0.99))} / {_fmt(sq('0.99'))} "
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
                "ttft_sidecar": {q: sq(q) for q in ("0.5", "0.9", "0.99")},
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


def check_pd(rep: Report, out: Path, sidecar: list[Scrape], decode: list[Scrape]) -> None:
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
    # sidecar-side consistency: the same NIXL signal from different sources
    by_source: dict[str, list[float]] = {}
    for s in sidecar[-15:]:
        for labels, v in s.values("phaselens_nixl_transfer_seconds", quantile="0.5"):
            by_source.setdefault(labels.get("source", "?"), []).append(v)
    med = {k: sorted(v)[len(v) // 2] for k, v in by_source.items() if v}
    rep.figures["nixl_p50_by_source"] = med
    if len(med) >= 2:
        vals = list(med.values())
        ratio = max(vals) / min(vals) if min(vals) > 0 else math.inf
        rep.check(
            "NIXL p50 transfer time consistent across sources",
            ratio <= 3.0,
            f"p50 by source {med}; max/min {ratio:.2f} (limit 3: histogram buckets vs exact ring times)",
        )
    else:
        rep.check("NIXL p50 transfer time consistent across sources", False, f"fewer than 2 sources: {med}")
    # bytes per second over the same window from metrics and from the rings: the same transfers
    bps: dict[str, list[float]] = {}
    for s in sidecar[-15:]:
        for labels, v in s.values("phaselens_nixl_transfer_bytes_per_second"):
            bps.setdefault(labels.get("source", "?"), []).append(v)
    bps_med = {k: sorted(v)[len(v) // 2] for k, v in bps.items() if v}
    rep.figures["nixl_bytes_per_second_by_source"] = bps_med
    if len(bps_med) >= 2 and min(bps_med.values()) > 0:
        spread = max(bps_med.values()) / min(bps_med.values())
        rep.check(
            "NIXL bytes/s consistent across sources",
            spread <= 1.2,
            f"by source {bps_med}; max/min {spread:.2f} (limit 1.2: window edges)",
        )
    else:
        rep.check("NIXL bytes/s consistent across sources", False, f"fewer than 2 sources with data: {bps_med}")
    share = [v for s in sidecar for v in [s.value("phaselens_nixl_ttft_share_ratio")] if v is not None]
    rep.check(
        "NIXL TTFT share exported and within 0..1",
        bool(share) and all(0 <= v <= 1 for v in share),
        f"{len(share)} samples, last {_fmt(share[-1] if share else None)}",
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
    if pd:
        check_pd(rep, out, ticks, engine["decode"])
    else:
        eng = engine["aggregated"]
        over = frontend_overheads(eng, requests, phases)
        rep.figures["frontend_overhead_s"] = {k: [round(v.ttft_s, 4), round(v.e2e_s, 4)] for k, v in over.items()}
        rep.tables.append(
            "front-end overhead the engine cannot see (client mean minus engine mean, s): "
            + ", ".join(f"{k}: TTFT +{v.ttft_s:.3f}, e2e +{v.e2e_s:.3f}" for k, v in over.items())
            + f"; each request is widened by up to {OVERHEAD_FACTOR:g}x its phase's mean\n"
        )
        requests = widen_by_overhead(requests, phases, over)
        check_goodput(rep, ticks, requests, phases, meta)
        check_ttft_quantiles(rep, ticks, eng, requests, meta)
        check_recommendations(rep, recommendations(out), phases, float(meta["window_s"]))
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args(argv)
    all_ok = True
    for out in args.runs:
        rep = check_run(out)
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
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
