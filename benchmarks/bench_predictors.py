"""Evaluate the queue predictors against per-request client ground truth.

Usage: python benchmarks/bench_predictors.py [RUN_DIR ...]   (default: every e2e/out/*/ with ground truth)

A run folder (from e2e/scenario.py) holds recorded scrapes (`scrapes/<role>/NNNN.prom`, `phaselens
record` format) and `ground_truth.jsonl` (one line per client request: start, ttft, outcome, phase).
The recording is replayed through parse -> to_snapshot -> TargetWindow -> QueueIntelligence at each
scrape time. For every ground-truth request the breach probability published by the last tick at or
before its start is scored against the request's own outcome, TTFT > SLO (a failed request counts as
a breach). Printed:

* AUROC, ECE (10 bins), Brier of P(TTFT > SLO), overall and per phase. Phases are derived from load
  at the request's arrival (queue depth and its 5 s slope): idle (<= 1 request in the engine), light
  (running, no queue), ramp (queue growing > 0.5/s), overload (queue, not moving fast), recovery
  (queue shrinking > 0.5/s); the scenario's own phase names are printed too.
* The baseline: AUROC of the queue depth at arrival alone.
* Coverage of the 10-90 % wait prediction intervals against the client-measured queue wait, taken as
  TTFT minus the median TTFT of requests that arrived to an empty queue (the client cannot see the
  queue wait itself: this proxy is stated, not hidden).
* Cold start (fresh model) and warm start (model state learned on the bundled, independent capture
  `sidecar/data/vllm-0.32.0-cpu-aggregated.tar.gz` and restored through the state dict, as after a
  restart with a state file).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import tarfile
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from phaselens.analyzers.breach import auroc, brier_score, expected_calibration_error  # noqa: E402
from phaselens.analyzers.queue_intelligence import QueueIntelligence  # noqa: E402
from phaselens.analyzers.window import TargetWindow  # noqa: E402
from phaselens.model import ROLES, Target, label_value  # noqa: E402
from phaselens.parsers.engines import to_snapshot  # noqa: E402
from phaselens.parsers.exposition import parse_exposition  # noqa: E402
from phaselens.settings import Settings  # noqa: E402

BUNDLED = ROOT / "sidecar" / "data" / "vllm-0.32.0-cpu-aggregated.tar.gz"


@dataclass
class Published:
    time: float
    probability: float | None
    waiting: float
    running: float
    waits: dict[tuple[str, str], float]


def read_scrapes(folder: Path) -> list[tuple[float, bytes]]:
    out = []
    for f in sorted(folder.glob("*.prom")):
        data = f.read_bytes()
        first = data.split(b"\n", 1)[0].split()
        if len(first) >= 3 and first[1] == b"scrape_time":
            out.append((float(first[2]), data))
    return sorted(out)


def scrape_sources(run: Path) -> dict[str, list[tuple[float, bytes]]]:
    base = run / "scrapes"
    if any(base.glob("*.prom")):
        return {"aggregated": read_scrapes(base)}
    return {d.name: read_scrapes(d) for d in sorted(base.iterdir()) if d.is_dir() and any(d.glob("*.prom"))}


def entry_role(sources: dict[str, list[tuple[float, bytes]]]) -> str:
    """The target whose queue a new request joins first: aggregated, else prefill."""
    for role in ("aggregated", "prefill"):
        if role in sources:
            return role
    return next(iter(sources))


def replay(
    sources: dict[str, list[tuple[float, bytes]]], settings: Settings, qi: QueueIntelligence, entry: str
) -> list[Published]:
    windows = {name: TargetWindow(settings.window_seconds) for name in sources}
    targets = {name: Target(name, name if name in ROLES else "aggregated", "") for name in sources}  # type: ignore[arg-type]
    events = sorted((t, name, data) for name, scrapes in sources.items() for t, data in scrapes)
    out: list[Published] = []
    i = 0
    while i < len(events):
        t = events[i][0]
        batch = []
        while i < len(events) and events[i][0] - t <= 0.5:
            batch.append(events[i])
            i += 1
        for ts, name, data in batch:
            windows[name].add(to_snapshot(parse_exposition(data), ts))
        now = max(ts for ts, _, _ in batch)
        signals, _ = qi.tick({n: (targets[n], windows[n]) for n in sources}, now, settings)
        prob = None
        waits: dict[tuple[str, str], float] = {}
        for s in signals:
            if label_value(s.labels, "target") != entry:
                continue
            if s.name == "phaselens_slo_breach_probability":
                prob = s.value if prob is None else max(prob, s.value)
            elif s.name == "phaselens_predicted_queue_wait_seconds":
                waits[(label_value(s.labels, "model"), label_value(s.labels, "bound"))] = s.value
        latest = windows[entry].latest
        waiting = running = 0.0
        if latest is not None:
            for (n, _), v in latest.scalars.items():
                if n == "requests_waiting":
                    waiting += v
                elif n == "requests_running":
                    running += v
        out.append(Published(now, prob, waiting, running, waits))
    return out


def load_ground_truth(run: Path) -> list[dict[str, object]]:
    rows = []
    for line in (run / "ground_truth.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("kind", "request") == "request" and row.get("phase") != "warm":
            rows.append(row)
    return rows


def derive_phase(pubs: list[Published], index: int) -> str:
    p = pubs[index]
    past = [q for q in pubs[: index + 1] if q.time >= p.time - 5.0]
    slope = (
        (past[-1].waiting - past[0].waiting) / (past[-1].time - past[0].time)
        if len(past) >= 2 and past[-1].time > past[0].time
        else 0.0
    )
    if p.waiting + p.running <= 1:
        return "idle"
    if slope > 0.5:
        return "ramp"
    if slope < -0.5:
        return "recovery"
    return "overload" if p.waiting > 0 else "light"


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def evaluate(run: Path, pubs: list[Published], slo: float, label: str) -> None:
    gt = load_ground_truth(run)
    times = [p.time for p in pubs]
    rows = []
    import bisect

    for r in gt:
        start = float(r["start"])  # type: ignore[arg-type]
        k = bisect.bisect_right(times, start) - 1
        if k < 0 or pubs[k].probability is None:
            continue
        ttft = r.get("ttft")
        ok = str(r.get("outcome", "ok")) == "ok" and ttft is not None
        y = 0.0 if ok and float(ttft) <= slo else 1.0  # type: ignore[arg-type]
        rows.append((r, pubs[k], k, y))
    if not rows:
        print(f"  {label}: no ground-truth request falls after the first published prediction")
        return
    print(
        f"\n  {label}: {len(rows)} requests scored, {sum(y for *_, y in rows):.0f} breaches (TTFT > {slo} s or failed)"
    )
    print(f"  {'slice':<22}{'n':>6}{'breach':>8}{'mean p':>8}{'AUROC':>8}{'ECE':>8}{'Brier':>8}{'AUROC q':>9}")

    def line(name: str, sel: list[tuple[dict[str, object], Published, int, float]]) -> None:
        ps = [p.probability or 0.0 for _, p, _, _ in sel]
        ys = [y for *_, y in sel]
        ws = [1.0] * len(sel)
        qs = [p.waiting for _, p, _, _ in sel]
        print(
            f"  {name:<22}{len(sel):>6}{sum(ys) / len(ys):>8.3f}{sum(ps) / len(ps):>8.3f}"
            f"{fmt(auroc(ps, ys, ws)):>8}{fmt(expected_calibration_error(ps, ys, ws)):>8}"
            f"{fmt(brier_score(ps, ys, ws)):>8}{fmt(auroc(qs, ys, ws)):>9}"
        )

    line("all", rows)
    by_phase: dict[str, list[tuple[dict[str, object], Published, int, float]]] = defaultdict(list)
    by_scenario: dict[str, list[tuple[dict[str, object], Published, int, float]]] = defaultdict(list)
    for row in rows:
        by_phase[derive_phase(pubs, row[2])].append(row)
        by_scenario[str(row[0].get("phase", "?"))].append(row)
    for name in ("idle", "light", "ramp", "overload", "recovery"):
        if by_phase.get(name):
            line(f"load:{name}", by_phase[name])
    for name, sel in by_scenario.items():
        line(f"scenario:{name}", sel)
    print("  (AUROC q = baseline: queue depth at arrival alone)")

    empty = [float(r["ttft"]) for r, p, _, y in rows if p.waiting == 0 and r.get("ttft") is not None]  # type: ignore[arg-type]
    if not empty:
        return
    base = statistics.median(empty)
    print(f"\n  wait interval coverage (client wait proxy = TTFT - {base:.3f} s, the median TTFT at an empty queue)")
    print(
        f"  {'model':<10}{'n':>6}{'coverage':>10}{'below':>8}{'above':>8}{'MAE s':>8}{'queued n':>10}{'queued cov':>12}"
    )
    for model in ("little", "erlang_c", "kingman"):
        n = inside = below = above = queued = queued_in = 0
        err = 0.0
        for r, p, _, _ in rows:
            if r.get("ttft") is None or (model, "point") not in p.waits:
                continue
            wait = max(0.0, float(r["ttft"]) - base)  # type: ignore[arg-type]
            lo, hi, pt = p.waits[(model, "lower")], p.waits[(model, "upper")], p.waits[(model, "point")]
            n += 1
            hit = lo - 0.05 <= wait <= hi + 0.05  # 50 ms tolerance: the proxy's own noise
            inside += hit
            below += wait < lo - 0.05
            above += wait > hi + 0.05
            err += abs(wait - pt)
            if p.waiting > 0:
                queued += 1
                queued_in += hit
        if n:
            print(
                f"  {model:<10}{n:>6}{inside / n:>10.3f}{below / n:>8.3f}{above / n:>8.3f}{err / n:>8.3f}"
                f"{queued:>10}{(queued_in / queued if queued else math.nan):>12.3f}"
            )


def warm_state(settings: Settings) -> dict[str, object]:
    qi = QueueIntelligence()
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(BUNDLED) as tar:
        tar.extractall(tmp, filter="data")
        sources = {"aggregated": read_scrapes(Path(tmp) / "rec")}
        replay(sources, settings, qi, "aggregated")
    state = qi.to_state()
    targets = state["targets"]
    assert isinstance(targets, dict)
    return {"version": state["version"], "targets": {"prefill": targets["aggregated"], **targets}}


def main(argv: list[str]) -> int:
    runs = [Path(a) for a in argv] or sorted(
        p for p in (ROOT / "e2e" / "out").glob("*") if (p / "ground_truth.jsonl").exists()
    )
    if not runs:
        print(
            "no e2e run with ground_truth.jsonl found under e2e/out/: the bundled capture has no "
            "per-request ground truth, so only the aggregate checks in tests/ apply."
        )
        return 1
    for run in runs:
        meta_path = run / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        slo = float(meta.get("slo_ttft_s", 0.5))
        settings = Settings(slo_ttft_seconds=slo, window_seconds=float(meta.get("window_s", 30.0)))
        sources = scrape_sources(run)
        entry = entry_role(sources)
        print(
            f"\n=== {run.name}: {', '.join(f'{k} ({len(v)} scrapes)' for k, v in sources.items())}; "
            f"scored on target '{entry}', SLO {slo} s"
        )
        cold = replay(sources, settings, QueueIntelligence(), entry)
        evaluate(run, cold, slo, "cold start")
        warm_qi = QueueIntelligence.from_state(warm_state(settings))
        warm = replay(sources, settings, warm_qi, entry)
        evaluate(run, warm, slo, "warm start (state learned on the bundled capture)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
