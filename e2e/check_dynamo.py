"""Assertions and report for a recorded Dynamo run (e2e/out/dynamo-agg or dynamo-pd, from
scenario_dynamo.py): what each sidecar exported against the load client's per-request ground truth.

Per sidecar tick t (its /signals, stamped with its own tick time) whose whole 30 s window lies in
the load, with at least MIN_REQUESTS requests in it:
- TTFT attainment (frontend sidecar, the frontend target): the share of the clients' requests
  whose first token arrived in (t - W, t] with TTFT <= SLO must lie within TOL_ATTAINMENT of the
  sidecar's [lower, upper] bounds. The SLO sits on a frontend bucket edge, so lower == upper;
  the tolerance covers what the client sees later than the frontend (HTTP, its own event loop).
- request rate (frontend target; in P/D also the prefill worker, which counts each request once):
  the clients' finished requests in the window over W, within TOL_RATE (relative).
- prefix-cache hit ratio (frontend target): sum(usage cached_tokens) / sum(prompt_tokens) of the
  requests finished in the window, within TOL_HIT of the range it takes over the window's
  possible placements (its end up to two scrape intervals before the tick; each request stamped at
  its first token or at its end, since the frontend records it once in between); the shared-prefix
  phase must lift it to at least MIN_PREFIX_HIT somewhere.
- P/D: the pool signals (imbalance, bottleneck, prefill time share, disaggregation score and its
  components) on at least 90 % of loaded ticks, each in range; the prefill time share within
  TOL_SHARE of the same ratio from the workers' raw recorded counters; in the burst (more streams
  than decode seats) decode named the bottleneck, with the raw evidence beside it (decode queue,
  fast prefill, client TTFT past the SLO); no user TTFT attainment from the decode worker's
  sidecar; the frontend's decimal worker ids are the workers' hex ids, and the frontend
  sidecar logged no join problem.
Usage: python e2e/check_dynamo.py OUT_DIR [OUT_DIR ...]
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from check import Report, run_cli
from groundtruth import Scrape, load_jsonl, load_scrapes, signals_to_scrapes

TOL_ATTAINMENT = 0.1
TOL_RATE = 0.15
TOL_HIT = 0.05
TOL_SHARE = 0.1
MIN_REQUESTS = 10
MIN_PREFIX_HIT = 0.2
FRONTEND_TARGET = "aggregated"  # the frontend's target name in the frontend sidecar (its role)


@dataclass(frozen=True)
class Req:
    start: float
    end: float
    ttft: float | None
    prompt_tokens: int | None
    cached_tokens: int | None
    ok: bool

    @property
    def first_token(self) -> float | None:
        return None if self.ttft is None else self.start + self.ttft


def load_requests(path: Path) -> tuple[list[Req], dict[str, tuple[float, float]]]:
    reqs: list[Req] = []
    starts: dict[str, float] = {}
    phases: dict[str, tuple[float, float]] = {}
    for rec in load_jsonl(path):
        kind = rec.get("kind")
        if kind == "request":
            reqs.append(Req(float(rec["start"]), float(rec["end"]),  # type: ignore[arg-type]
                            rec.get("ttft"), rec.get("prompt_tokens"), rec.get("cached_tokens"),  # type: ignore[arg-type]
                            rec.get("outcome") == "ok"))
        elif kind == "phase_start":
            starts[str(rec["phase"])] = float(rec["t"])  # type: ignore[arg-type]
        elif kind == "phase_end":
            name = str(rec["phase"])
            phases[name] = (starts.get(name, float(rec["t"])), float(rec["t"]))  # type: ignore[arg-type]
    return reqs, phases


def value(tick: Scrape, name: str, **labels: str) -> float | None:
    found = tick.values(name, **labels)
    return found[0][1] if len(found) == 1 else None


def loaded(ticks: list[Scrape], phases: dict[str, tuple[float, float]], window: float) -> list[Scrape]:
    busy = [span for name, span in phases.items() if name not in ("idle", "drain")]
    if not busy:
        return []
    start, end = min(s for s, _ in busy), max(e for _, e in busy)
    return [t for t in ticks if t.t - window >= start and t.t <= end + 1.0]


@dataclass
class Row:
    check: str
    measured: str
    truth: str
    ok: bool


def _table(rows: list[Row]) -> str:
    lines = ["| check | phaselens (measured) | client ground truth | ok |", "|---|---|---|---|"]
    lines += [f"| {r.check} | {r.measured} | {r.truth} | {'yes' if r.ok else 'NO'} |" for r in rows]
    return "\n".join(lines) + "\n"


def check_attainment(rep: Report, rows: list[Row], ticks: list[Scrape], reqs: list[Req], meta: dict) -> None:
    slo, window = float(meta["slo_ttft_s"]), float(meta["window_s"])
    diffs: list[float] = []
    means: list[tuple[float, float]] = []
    worst: tuple[float, float, float] | None = None
    for tick in ticks:
        lo = value(tick, "phaselens_slo_attainment_ratio", target=FRONTEND_TARGET, slo="ttft", bound="lower")
        hi = value(tick, "phaselens_slo_attainment_ratio", target=FRONTEND_TARGET, slo="ttft", bound="upper")
        inside = [r for r in reqs if r.ok and r.first_token is not None and tick.t - window < r.first_token <= tick.t]
        if lo is None or hi is None or len(inside) < MIN_REQUESTS:
            continue
        client = sum(1 for r in inside if r.ttft is not None and r.ttft <= slo) / len(inside)
        diff = max(0.0, lo - client, client - hi)
        diffs.append(diff)
        means.append(((lo + hi) / 2, client))
        if worst is None or diff > worst[0]:
            worst = (diff, (lo + hi) / 2, client)
    ok = bool(diffs) and max(diffs) <= TOL_ATTAINMENT
    detail = (f"{len(diffs)} windows, max |sidecar - client| {max(diffs):.3f} (tolerance {TOL_ATTAINMENT})"
              if diffs else "no window with enough requests")
    rep.check("TTFT attainment per 30 s window (frontend)", ok, detail)
    rep.figures["ttft_attainment_max_diff"] = max(diffs) if diffs else None
    if diffs:
        mean_m = sum(m for m, _ in means) / len(means)
        mean_c = sum(cl for _, cl in means) / len(means)
        rows.append(Row("TTFT attainment per 30 s window, mean over windows", f"{mean_m:.3f}", f"{mean_c:.3f}", ok))
    if worst is not None:
        rows.append(Row("TTFT attainment per 30 s window, worst window", f"{worst[1]:.3f}", f"{worst[2]:.3f}", ok))
        rows.append(Row("TTFT attainment, max deviation over windows", f"{max(diffs):.3f}",
                        f"<= {TOL_ATTAINMENT}", ok))


def check_rate(
    rep: Report, rows: list[Row], ticks: list[Scrape], reqs: list[Req], meta: dict, target: str, label: str
) -> None:
    window = float(meta["window_s"])
    errors: list[tuple[float, float, float]] = []
    for tick in ticks:
        measured = value(tick, "phaselens_request_rate_per_second", target=target)
        ended = [r for r in reqs if r.ok and tick.t - window < r.end <= tick.t]
        if measured is None or len(ended) < MIN_REQUESTS:
            continue
        client = len(ended) / window
        errors.append((abs(measured - client) / client, measured, client))
    ok = bool(errors) and max(e for e, _, _ in errors) <= TOL_RATE
    worst = max(errors) if errors else None
    rep.check(f"request rate within {TOL_RATE:.0%} ({label})", ok,
              f"{len(errors)} windows, worst relative error {worst[0]:.3f}" if worst else "no window")
    if worst is not None:
        mean_m = sum(m for _, m, _ in errors) / len(errors)
        mean_c = sum(c for _, _, c in errors) / len(errors)
        rows.append(Row(f"request rate, req/s ({label}), mean over windows", f"{mean_m:.3f}", f"{mean_c:.3f}", ok))
        rows.append(Row(f"request rate ({label}), worst relative error", f"{worst[0]:.3f}", f"<= {TOL_RATE}", ok))


def check_hit(rep: Report, rows: list[Row], ticks: list[Scrape], reqs: list[Req], meta: dict) -> None:
    window = float(meta["window_s"])
    diffs: list[tuple[float, float, float]] = []
    interval = float(meta["interval_s"])
    for tick in ticks:
        measured = value(tick, "phaselens_kv_prefix_cache_hit_ratio", target=FRONTEND_TARGET)
        ended = [r for r in reqs if r.ok and tick.t - window < r.end <= tick.t and r.prompt_tokens]
        if measured is None or len(ended) < MIN_REQUESTS or any(r.cached_tokens is None for r in ended):
            continue
        # The sidecar's window ends at its last scrape, up to two intervals before its tick (the
        # scrape's own lag plus the tick's), and starts a window before that: the clients' ratio
        # over every such placement bounds what the sidecar can have seen. It moves fast when
        # the shared-prefix phase starts or ends.
        # The frontend records a request's cached tokens once, somewhere between its first token
        # and its end: both stampings are placements too.
        placements = []
        for shift in (0.0, interval, 2 * interval):
            for stamp in (lambda r: r.end, lambda r: r.first_token):
                span = [r for r in reqs if r.ok and r.prompt_tokens and r.first_token is not None
                        and tick.t - shift - window < stamp(r) <= tick.t - shift]
                if span and all(r.cached_tokens is not None for r in span):
                    placements.append(sum(r.cached_tokens or 0 for r in span) / sum(r.prompt_tokens or 0 for r in span))
        client = sum(r.cached_tokens or 0 for r in ended) / sum(r.prompt_tokens or 0 for r in ended)
        lo, hi = min(placements, default=client), max(placements, default=client)
        diffs.append((max(0.0, lo - measured, measured - hi), measured, client))
    ok = bool(diffs) and max(d for d, _, _ in diffs) <= TOL_HIT
    peak = max(diffs, key=lambda d: d[2]) if diffs else None
    lifted = peak is not None and peak[2] >= MIN_PREFIX_HIT
    rep.check("prefix-cache hit ratio vs the clients' usage cached_tokens", ok and lifted,
              f"{len(diffs)} windows, max diff {max(d for d, _, _ in diffs):.3f}, peak client ratio "
              f"{peak[2]:.3f}" if diffs and peak else "no window")
    if peak is not None:
        rows.append(Row("prefix-cache hit ratio at the clients' peak window", f"{peak[1]:.3f}", f"{peak[2]:.3f}",
                        ok and lifted))
        rows.append(Row("prefix-cache hit ratio, max deviation", f"{max(d for d, _, _ in diffs):.3f}",
                        f"<= {TOL_HIT}", ok))


def router_hit(frontend: list[Scrape], reqs: list[Req], span: tuple[float, float]) -> tuple[float, float] | None:
    """The KV router's own estimate over a phase (raw counters) beside the clients' usage figure."""
    inside = [s for s in frontend if span[0] <= s.t <= span[1]]
    if len(inside) < 2:
        return None
    a, b = inside[0], inside[-1]
    pick = {"phase": "aggregated"}, {"phase": "prefill"}

    def total(s: Scrape, name: str) -> float:
        return sum(s.value(name, **p) or 0.0 for p in pick)

    cached = total(b, "dynamo_component_router_kv_selected_cached_prefix_tokens_total") - total(
        a, "dynamo_component_router_kv_selected_cached_prefix_tokens_total")
    routed = total(b, "dynamo_component_router_input_sequence_tokens_sum") - total(
        a, "dynamo_component_router_input_sequence_tokens_sum")
    done = [r for r in reqs if r.ok and a.t < r.end <= b.t and r.prompt_tokens]
    if routed <= 0 or not done:
        return None
    return cached / routed, sum(r.cached_tokens or 0 for r in done) / sum(r.prompt_tokens or 0 for r in done)


def _at(scrapes: list[Scrape], t: float) -> Scrape | None:
    before = [s for s in scrapes if s.t <= t]
    return before[-1] if before else None


def _delta(scrapes: list[Scrape], name: str, t0: float, t1: float, **labels: str) -> float | None:
    a, b = _at(scrapes, t0), _at(scrapes, t1)
    if a is None or b is None or a is b:
        return None
    va, vb = a.value(name, **labels), b.value(name, **labels)
    return None if va is None or vb is None else vb - va


def raw_prefill_share(prefill: list[Scrape], decode: list[Scrape], t0: float, t1: float) -> float | None:
    """sum(prefill worker `generate` time) / (that + sum(decode worker request time)) from the
    recorded raw scrapes (e2e's own parser, not phaselens')."""
    p = _delta(prefill, "dynamo_component_request_duration_seconds_sum", t0, t1, dynamo_endpoint="generate")
    d = _delta(decode, "vllm:e2e_request_latency_seconds_sum", t0, t1)
    if p is None or d is None or p + d <= 0:
        return None
    return p / (p + d)


def check_pd_bottleneck(
    rep: Report, rows: list[Row], ticks: list[Scrape], reqs: list[Req], meta: dict,
    phases: dict[str, tuple[float, float]], prefill: list[Scrape], decode: list[Scrape],
) -> None:
    """The burst puts more streams on the decode worker than it has seats (max_num_seqs): requests
    wait for a decode seat and the users' TTFT passes the SLO while the prefill worker stays fast.
    The raw evidence (decode queue, prefill time, client TTFT) is read from the recording; the
    sidecar must name decode the bottleneck on the ticks whose window lies in the burst."""
    if "burst" not in phases:
        return
    b0, b1 = phases["burst"]
    window = float(meta["window_s"])
    in_burst = [t for t in ticks if t.t - window >= b0 - 5.0 and t.t <= b1 + 1.0]
    named = [value(t, "phaselens_phase_bottleneck", target="pool", phase="decode") for t in in_burst]
    decode_named = sum(1 for v in named if v == 1.0)
    waiting = max((s.value("vllm:num_requests_waiting") or 0.0 for s in decode if b0 <= s.t <= b1), default=0.0)
    pre_sum = _delta(prefill, "dynamo_component_request_duration_seconds_sum", b0, b1, dynamo_endpoint="generate")
    pre_n = _delta(prefill, "dynamo_component_request_duration_seconds_count", b0, b1, dynamo_endpoint="generate")
    pre_mean = pre_sum / pre_n if pre_sum is not None and pre_n else None
    slo = float(meta["slo_ttft_s"])
    burst_reqs = [r for r in reqs if r.ok and r.ttft is not None and b0 <= r.start <= b1]
    over = sum(1 for r in burst_reqs if (r.ttft or 0) > slo) / len(burst_reqs) if burst_reqs else 0.0
    evidence = waiting > 0 and pre_mean is not None and pre_mean < slo / 2 and over > 0.2
    ok = evidence and bool(in_burst) and decode_named >= 0.9 * len(in_burst)
    rep.check("P/D burst: decode named the bottleneck", ok,
              f"{decode_named}/{len(in_burst)} burst ticks name decode; raw: decode queue max {waiting:.0f}, "
              f"prefill worker mean {pre_mean if pre_mean is None else round(pre_mean, 4)} s, "
              f"client TTFT > SLO for {over:.0%} of burst requests")
    rows.append(Row("P/D burst ticks naming decode the bottleneck", f"{decode_named}/{len(in_burst)}",
                    f"decode queue max {waiting:.0f}, prefill {pre_mean or 0:.3f} s, TTFT > SLO {over:.0%}", ok))


def check_pd(rep: Report, rows: list[Row], out: Path, ticks: list[Scrape], reqs: list[Req], meta: dict,
             phases: dict[str, tuple[float, float]]) -> None:
    window = float(meta["window_s"])
    prefill = load_scrapes(out / "scrapes" / "prefill")
    decode = load_scrapes(out / "scrapes" / "decode")
    pool = {"target": "pool"}
    present = 0
    bad: list[str] = []
    share_diffs: list[tuple[float, float, float]] = []
    for tick in ticks:
        imb = value(tick, "phaselens_phase_imbalance_ratio", **pool)
        share = value(tick, "phaselens_phase_prefill_time_share_ratio", **pool)
        score = value(tick, "phaselens_disaggregation_score", **pool)
        flags = [v for _, v in tick.values("phaselens_phase_bottleneck", **pool)]
        comps = tick.values("phaselens_disaggregation_component_ratio", **pool)
        if None in (imb, share, score) or len(flags) != 2 or not comps:
            continue
        present += 1
        assert imb is not None and share is not None and score is not None
        if not (imb > 0 and 0 <= share <= 1 and 0 <= score <= 1 and sorted(flags) == [0.0, 1.0]
                and all(0 <= v <= 1 for _, v in comps)):
            bad.append(f"t={tick.t:.0f}")
        raw = raw_prefill_share(prefill, decode, tick.t - window, tick.t)
        if raw is not None:
            share_diffs.append((abs(share - raw), share, raw))
    need = 0.9 * len(ticks)
    ok = bool(ticks) and present >= need and not bad
    rep.check("P/D pool signals present and in range", ok,
              f"{present}/{len(ticks)} loaded ticks with all pool signals; out of range: {bad[:5] or 'none'}")
    rows.append(Row("P/D pool signals on loaded ticks", f"{present}/{len(ticks)}", ">= 90 %", ok))
    last = ticks[-1] if ticks else None
    if last is not None:
        for name in ("phaselens_phase_imbalance_ratio", "phaselens_disaggregation_score"):
            v = value(last, name, **pool)
            shown = f"{v:.3f}" if v is not None else "-"
            rows.append(Row(f"{name} (last loaded tick)", shown, "present", v is not None))
    share_ok = bool(share_diffs) and max(d for d, _, _ in share_diffs) <= TOL_SHARE
    worst = max(share_diffs) if share_diffs else None
    rep.check("P/D prefill time share vs the workers' own recorded request times", share_ok,
              f"{len(share_diffs)} windows, worst diff {worst[0]:.3f} (sidecar {worst[1]:.3f}, raw {worst[2]:.3f})"
              if worst else "no window")
    if worst is not None:
        rows.append(Row("prefill time share vs raw worker counters, worst window", f"{worst[1]:.3f}",
                        f"{worst[2]:.3f}", share_ok))
    check_pd_bottleneck(rep, rows, ticks, reqs, meta, phases, prefill, decode)

    decode_ticks = signals_to_scrapes(load_jsonl(out / "signals-decode.jsonl"))
    ttft_from_decode = sum(1 for t in decode_ticks if t.values("phaselens_slo_attainment_ratio", slo="ttft"))
    itl_from_decode = sum(1 for t in decode_ticks if t.values("phaselens_slo_attainment_ratio", slo="itl"))
    rep.check("no user TTFT attainment from the decode worker", ttft_from_decode == 0 and itl_from_decode > 0,
              f"decode sidecar ticks with TTFT attainment: {ttft_from_decode}, with ITL attainment: {itl_from_decode}")
    rows.append(Row("decode worker ticks exporting a TTFT attainment", str(ttft_from_decode), "0",
                    ttft_from_decode == 0))

    frontend = load_scrapes(out / "scrapes" / "frontend")
    listed = {labels["worker_id"]: labels.get("worker_type") for labels, _ in
              frontend[-1].values("dynamo_frontend_worker_active_decode_blocks")} if frontend else {}
    hex_ids = meta.get("worker_ids") or {}
    joined = {name: str(int(h, 16)) in listed for name, h in hex_ids.items()}
    log = (out / "sidecar-frontend.log").read_text(errors="replace") if (out / "sidecar-frontend.log").exists() else ""
    problems = [e for e in ("dynamo_worker_unjoined", "dynamo_worker_unknown_to_frontend", "dynamo_worker_id_missing",
                            "dynamo_frontend_no_workers") if f'"event":"{e}"' in log]
    ok = bool(joined) and all(joined.values()) and not problems
    rep.check("worker ids join (frontend decimal = worker hex)", ok,
              f"joined {joined}, frontend lists {listed}, join problems logged: {problems or 'none'}")
    rows.append(Row("workers joined frontend <-> worker ids", f"{sum(joined.values())}/{len(joined)}",
                    f"{len(joined)}/{len(joined)}", ok))


def check_run(out: Path) -> Report:
    meta = json.loads((out / "meta.json").read_text())
    pd = meta["scenario"] == "dynamo-pd"
    rep = Report(meta["scenario"])
    rep.figures["timings_s"] = meta.get("timings_s")
    reqs, phases = load_requests(out / "ground_truth.jsonl")
    errors = sum(1 for r in reqs if not r.ok)
    rep.check("run completed", bool(meta.get("ok")) and errors <= 0.02 * max(1, len(reqs)),
              f"{len(reqs)} requests, {errors} errors")
    rows: list[Row] = []
    window = float(meta["window_s"])
    all_ticks: dict[str, list[Scrape]] = {}
    for name in meta["sidecars"]:
        ticks = signals_to_scrapes(load_jsonl(out / f"signals-{name}.jsonl"))
        all_ticks[name] = ticks
        up = [v for t in ticks[-5:] for _, v in t.values("phaselens_target_up")]
        rep.check(f"sidecar {name} recorded, targets up", bool(ticks) and bool(up) and all(v == 1.0 for v in up),
                  f"{len(ticks)} ticks, target_up at the end: {up[-len(meta['sidecars'][name]):] if up else '-'}")
    fe = loaded(all_ticks.get("frontend", []), phases, window)
    rep.figures["loaded_ticks"] = len(fe)
    check_attainment(rep, rows, fe, reqs, meta)
    check_rate(rep, rows, fe, reqs, meta, FRONTEND_TARGET, "frontend")
    if pd:
        pre = loaded(all_ticks.get("prefill", []), phases, window)
        check_rate(rep, rows, pre, reqs, meta, "prefill", "prefill worker, counted once per request")
    check_hit(rep, rows, fe, reqs, meta)
    if "prefix" in phases:
        rh = router_hit(load_scrapes(out / "scrapes" / "frontend"), reqs, phases["prefix"])
        if rh is not None:
            rows.append(Row("KV router's own cached-prefix estimate, prefix phase (not asserted)",
                            f"{rh[0]:.3f}", f"{rh[1]:.3f}", True))
    if pd:
        check_pd(rep, rows, out, fe, reqs, meta, phases)
    else:
        worker = loaded(all_ticks.get("worker", []), phases, window)
        kv = [v for t in worker if (v := value(t, "phaselens_decode_kv_utilization_ratio")) is not None]
        rep.check("worker sidecar exports KV utilization", bool(kv) and all(0 <= v <= 1 for v in kv),
                  f"{len(kv)} ticks, max {max(kv):.3f}" if kv else "none")
        rows.append(Row("worker KV utilization (max over loaded ticks)", f"{max(kv):.3f}" if kv else "-", "in [0, 1]",
                        bool(kv)))
    rep.tables.append(f"### {meta['scenario']}: phaselens vs the load client ({len(reqs)} requests)\n\n" + _table(rows))
    rep.figures["rows"] = [r.__dict__ for r in rows]
    return rep


def main(argv: list[str] | None = None) -> int:
    return run_cli(__doc__, check_run, argv)


if __name__ == "__main__":
    sys.exit(main())
