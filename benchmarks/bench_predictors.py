"""Evaluate the queue predictors against per-request client ground truth.

Usage: python benchmarks/bench_predictors.py [--detail] [--set=SET] [RUN_DIR ...]
       SET: development | validation | heldout (Dynamo, benchmarks/predictor_runs.json) or
       vllm | vllm-blind (real vLLM, benchmarks/predictor_runs_vllm.json / predictor_runs_vllm_b.json)
       python benchmarks/bench_predictors.py --legacy [RUN_DIR ...]   (per-phase, 0.25 s, wait coverage)
       python benchmarks/bench_predictors.py --ticks RUN_DIR   (one run, cold: one line per tick, then
       the clients' breach share per load stratum against the engine's own labels)
       (default runs: every finished recording of e2e/out/protocol/ (benchmarks/predictor_runs.json,
       recorded by `python e2e/record_protocol.py`), then every other e2e/out/*/ with ground truth)

The protocol (default): leave-one-run-out over the recordings. Each run is scored twice, `cold`
(no state) and `warm` (state learned online, from the engines' own labels only, on every OTHER run
of the list, restored through the state dict as after a restart), at SLO 0.5 s, next to (a) the queue
depth at arrival alone (AUROC only: it is no probability) and (b) the structural queueing probability
alone. One row per run; the rules, checked per held-out run and start: AUROC >= queue-depth AUROC -
0.01 and ECE <= 0.03. Multi-worker recordings are scored on the pool: the workers' scrapes of one
instant merged into one engine view (counts and histograms summed, KV usage the max), with the
frontend as a second target whose arrival counter the engine's prediction reads. `--detail` adds the
per-phase rows. `--set=` runs the protocol within one set of the manifest: `development` (seeds
101-116, looked at while the model was designed), `validation` (the same 16 shapes, seeds 201-216,
recorded after the first design was frozen and scored once; looked at while the second was made) or
`heldout` (seeds 301-316, recorded blind during the second design, scored once after it was frozen);
`vllm` (real vLLM v01-v06, seeds 401-406, e2e/out/protocol-vllm/; looked at while the third design
was made) or `vllm-blind` (the same six shapes, seeds 501-506, e2e/out/protocol-vllm-b/, recorded
before the third design and scored once after it was frozen).
A start that fails a rule is annotated with what noise alone gives: the 95 % quantile of the ECE a
perfectly calibrated forecaster shows on the same requests (`null_ece`), and a 95 % bootstrap
interval of AUROC minus the queue depth's, resampling whole ticks (`auroc_gap_interval`).

A run folder (from e2e/scenario.py) holds recorded scrapes (`scrapes/<role>/NNNN.prom`, `phaselens
record` format) and `ground_truth.jsonl` (one line per client request: start, ttft, outcome, phase).
The recording is replayed through parse -> to_snapshot -> TargetWindow -> QueueIntelligence at each
scrape time. For every ground-truth request the breach probability published by the last tick at or
before its start is scored against the request's own outcome, client TTFT > SLO (a failed request
counts as a breach). The client labels are used for scoring only, never for training.

Headline SLO 0.5 s (the issue's target); 0.25 s (the e2e runs' own setting) as an extra row. Printed:

* AUROC, ECE (10 equal-width bins), Brier of P(TTFT > SLO), overall and per load phase at arrival:
  idle (<= 1 request in the engine), light (running, no queue), ramp (queue growing > 0.5/s),
  overload (queue, not moving fast), recovery (queue shrinking > 0.5/s).
* Baselines on the same requests: `AUROC q` the queue depth at arrival alone (ranking only, it is no
  probability); `struct` the queueing model's own probability P(W + X > SLO) (the regression's first
  feature, before any learning): its AUROC and ECE.
* Two starts: `cold` (fresh model) and `cross` (model state learned online, from the engines' own
  histogram labels, on the OTHER recordings: the bundled capture and every other run given; then
  restored through the state dict as after a restart). Train on one run, test on another.
* Recording a real overload run for it (open-loop Poisson arrivals whose rate ramps past capacity,
  then recovery; `e2e/loadgen.py` phase syntax `NAME:SECONDS:@RATE0-RATE1:...`):
      python e2e/scenario.py aggregated --out e2e/out/openloop-2 --seed 2 --phases idle:10:0:0-0:0-0 \
        light:20:@0.5-0.5:100-250:60-150 ramp:50:@0.5-12:100-250:60-150 \
        overload:20:@10-10:100-250:60-150 recovery:40:@0.5-0.5:100-250:60-150 idle2:10:0:0-0:0-0
  The e2e scenario's closed-loop step (4 -> 32 clients in one instant) puts every new request into
  the engine before any scrape can see it; production traffic ramps, as these runs do.
* Coverage of the 10-90 % wait intervals against the client-measured queue wait, taken as TTFT minus
  the median TTFT of requests that arrived to an empty queue (a stated proxy: the client cannot see
  the queue wait itself).
"""

from __future__ import annotations

import bisect
import contextlib
import io
import json
import math
import multiprocessing
import random
import statistics
import sys
import tarfile
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from phaselens.analyzers.breach import auroc, brier_score, expected_calibration_error  # noqa: E402
from phaselens.analyzers.breach import load_stratum as breach_stratum  # noqa: E402
from phaselens.analyzers.queue_intelligence import QueueIntelligence  # noqa: E402
from phaselens.analyzers.window import TargetWindow  # noqa: E402
from phaselens.model import ROLES, EngineSnapshot, Exposition, Histogram, MetricFamily, Sample, Target, label_value  # noqa: E402
from phaselens.parsers.engines import to_snapshot  # noqa: E402
from phaselens.parsers.exposition import parse_exposition  # noqa: E402
from phaselens.settings import Settings  # noqa: E402

BUNDLED = ROOT / "sidecar" / "data" / "vllm-0.32.0-cpu-aggregated.tar.gz"
HEADLINE_SLO = 0.5
EXTRA_SLO = 0.25
Sources = dict[str, list[tuple[float, EngineSnapshot]]]
PROTOCOL = ROOT / "e2e" / "out" / "protocol"
MANIFEST = ROOT / "benchmarks" / "predictor_runs.json"


@dataclass
class Published:
    time: float
    probability: float | None
    structural: float | None
    waiting: float
    running: float
    waits: dict[tuple[str, str], float] = field(default_factory=dict)


@dataclass(frozen=True)
class Scored:
    request: dict[str, object]
    published: Published
    index: int
    outcome: float


def read_scrapes(folder: Path) -> list[tuple[float, bytes]]:
    out = []
    for f in sorted(folder.glob("*.prom")):
        data = f.read_bytes()
        first = data.split(b"\n", 1)[0].split()
        if len(first) >= 3 and first[1] == b"scrape_time":
            out.append((float(first[2]), data))
    return sorted(out)


def _relabel(expo: Exposition, worker: str) -> Exposition:
    """Every series of one worker gets `phaselens_pool_worker=<n>`: a label the adapter drops, so the
    workers' series are summed (counts, counters, histograms) or maxed (KV usage) into one pool."""
    extra = ("phaselens_pool_worker", worker)
    families = {
        name: MetricFamily(
            f.name,
            f.type,
            f.help,
            f.unit,
            tuple(Sample(x.name, (*x.labels, extra), x.value, x.timestamp) for x in f.samples),
            tuple(Histogram(h.name, (*h.labels, extra), h.buckets, h.sum, h.count) for h in f.histograms),
        )
        for name, f in expo.families.items()
    }
    return Exposition(families, expo.issues, expo.format, expo.issue_count)


def pooled(scrapes: list[list[tuple[float, bytes]]]) -> list[tuple[float, EngineSnapshot]]:
    """One engine view of several workers scraped at the same instants (the recorder scrapes every
    target of a tick at once): the pool a KV router balances over, as one target."""
    if len(scrapes) == 1:
        return [(t, to_snapshot(parse_exposition(d), t)) for t, d in scrapes[0]]
    out = []
    for ticks in zip(*scrapes, strict=False):
        times = [t for t, _ in ticks]
        if max(times) - min(times) > 0.5:
            continue  # a failed scrape shifted one worker's files: not one instant
        parts = [_relabel(parse_exposition(d), str(i)) for i, (_, d) in enumerate(ticks)]
        families: dict[str, MetricFamily] = {}
        for part in parts:
            for name, fam in part.families.items():
                have = families.get(name)
                families[name] = (
                    fam
                    if have is None
                    else MetricFamily(
                        have.name,
                        have.type,
                        have.help,
                        have.unit,
                        have.samples + fam.samples,
                        have.histograms + fam.histograms,
                    )
                )
        t = max(times)
        out.append((t, to_snapshot(Exposition(families), t)))
    return out


def scrape_sources(run: Path) -> Sources:
    base = run / "scrapes"
    if not base.is_dir():
        return {}
    if any(base.glob("*.prom")):
        return {"aggregated": pooled([read_scrapes(base)])}
    folders = {d.name: read_scrapes(d) for d in sorted(base.iterdir()) if d.is_dir() and any(d.glob("*.prom"))}
    out: Sources = {}
    workers = [v for k, v in sorted(folders.items()) if k == "aggregated" or k.startswith("aggregated-")]
    if workers:
        out["aggregated"] = pooled(workers)
    for k, v in folders.items():
        if k != "aggregated" and not k.startswith("aggregated-"):
            out[k] = pooled([v])
    return out


def bundled_sources() -> Sources:
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(BUNDLED) as tar:
        tar.extractall(tmp, filter="data")
        return {"aggregated": pooled([read_scrapes(Path(tmp) / "rec")])}


def entry_role(sources: Sources) -> str:
    """The target whose queue a new request joins first: aggregated, else prefill."""
    for role in ("aggregated", "prefill"):
        if role in sources:
            return role
    return next(iter(sources))


def replay(sources: Sources, settings: Settings, qi: QueueIntelligence) -> list[Published]:
    entry = entry_role(sources)
    windows = {name: TargetWindow(settings.window_seconds) for name in sources}
    targets = {name: Target(name, name if name in ROLES else "aggregated", "") for name in sources}
    events = sorted(((t, name, snap) for name, scrapes in sources.items() for t, snap in scrapes), key=lambda e: e[:2])
    out: list[Published] = []
    i = 0
    while i < len(events):
        t = events[i][0]
        batch = []
        while i < len(events) and events[i][0] - t <= 0.5:
            batch.append(events[i])
            i += 1
        for _, name, snap in batch:
            windows[name].add(snap)
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
        structural = [p for (target, _), p in qi.last_structural_probability.items() if target == entry]
        latest = windows[entry].latest
        waiting = running = 0.0
        if latest is not None:
            for (n, _), v in latest.scalars.items():
                if n == "requests_waiting":
                    waiting += v
                elif n == "requests_running":
                    running += v
        out.append(Published(now, prob, max(structural) if structural else None, waiting, running, waits))
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


def score(gt: list[dict[str, object]], pubs: list[Published], slo: float) -> list[Scored]:
    times = [p.time for p in pubs]
    rows = []
    for r in gt:
        k = bisect.bisect_right(times, float(r["start"])) - 1  # type: ignore[arg-type]
        if k < 0 or pubs[k].probability is None:
            continue
        ttft = r.get("ttft")
        ok = str(r.get("outcome", "ok")) == "ok" and ttft is not None
        rows.append(Scored(r, pubs[k], k, 0.0 if ok and float(ttft) <= slo else 1.0))  # type: ignore[arg-type]
    return rows


HEADER = (
    f"  {'slo':>5} {'start':<6}{'slice':<16}{'n':>5}{'breach':>7}{'mean p':>8}{'AUROC':>7}{'ECE':>7}{'Brier':>7}"
    f"{'AUROC q':>8}{'AUROC st':>9}{'ECE st':>8}"
)


def line(slo: float, start: str, name: str, sel: list[Scored]) -> None:
    ps = [s.published.probability or 0.0 for s in sel]
    ys = [s.outcome for s in sel]
    ws = [1.0] * len(sel)
    qs = [s.published.waiting for s in sel]
    sts = [s.published.structural if s.published.structural is not None else 0.0 for s in sel]
    print(
        f"  {slo:>5.2f} {start:<6}{name:<16}{len(sel):>5}{sum(ys) / len(ys):>7.3f}{sum(ps) / len(ps):>8.3f}"
        f"{fmt(auroc(ps, ys, ws)):>7}{fmt(expected_calibration_error(ps, ys, ws)):>7}"
        f"{fmt(brier_score(ps, ys, ws)):>7}{fmt(auroc(qs, ys, ws)):>8}{fmt(auroc(sts, ys, ws)):>9}"
        f"{fmt(expected_calibration_error(sts, ys, ws)):>8}"
    )


def table(slo: float, start: str, rows: list[Scored], pubs: list[Published]) -> None:
    line(slo, start, "all", rows)
    by_phase: dict[str, list[Scored]] = defaultdict(list)
    for row in rows:
        by_phase[derive_phase(pubs, row.index)].append(row)
    for name in ("idle", "light", "ramp", "overload", "recovery"):
        if by_phase.get(name):
            line(slo, start, f"load:{name}", by_phase[name])


def coverage(rows: list[Scored]) -> None:
    empty = [float(s.request["ttft"]) for s in rows if s.published.waiting == 0 and s.request.get("ttft") is not None]  # type: ignore[arg-type]
    if not empty:
        return
    base = statistics.median(empty)
    print(f"  wait interval coverage (client wait proxy = TTFT - {base:.3f} s, the median TTFT at an empty queue)")
    print(
        f"  {'model':<10}{'n':>6}{'coverage':>10}{'below':>8}{'above':>8}{'MAE s':>8}{'queued n':>10}{'queued cov':>12}"
    )
    for model in ("little", "erlang_c", "kingman"):
        n = inside = below = above = queued = queued_in = 0
        err = 0.0
        for s in rows:
            p = s.published
            if s.request.get("ttft") is None or (model, "point") not in p.waits:
                continue
            wait = max(0.0, float(s.request["ttft"]) - base)  # type: ignore[arg-type]
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


def trained_state(training: list[Sources], settings: Settings) -> dict[str, object]:
    """Model state after replaying the training recordings in turn (engine labels only)."""
    qi = QueueIntelligence()
    state: dict[str, object] = qi.to_state()
    for sources in training:
        qi = QueueIntelligence.from_state(_entry_as_every_role(state))
        replay(sources, settings, qi)
        state = qi.to_state()
    return _entry_as_every_role(state)


def _entry_as_every_role(state: dict[str, object]) -> dict[str, object]:
    """The entry target's learned state under both entry names, so aggregated and P/D runs share it."""
    targets = state.get("targets")
    if not isinstance(targets, dict) or not targets:
        return state
    learned = targets.get("aggregated") or targets.get("prefill")
    if learned is None:
        return state
    return {"version": state["version"], "targets": {**targets, "aggregated": learned, "prefill": learned}}


RULE_AUROC_MARGIN = 0.01
RULE_ECE = 0.03


# The real-vLLM sets: their manifest and the folder e2e/record_vllm_protocol.py records them into.
VLLM_SETS = {
    "vllm": (ROOT / "benchmarks" / "predictor_runs_vllm.json", ROOT / "e2e" / "out" / "protocol-vllm"),
    "vllm-blind": (ROOT / "benchmarks" / "predictor_runs_vllm_b.json", ROOT / "e2e" / "out" / "protocol-vllm-b"),
    "vllm-quarter": (ROOT / "benchmarks" / "predictor_runs_vllm_q.json", ROOT / "e2e" / "out" / "protocol-vllm-q"),
}
VLLM_SETS["vllm-heldout"] = VLLM_SETS["vllm"]  # its first name (seen since the light/busy diagnosis)


def vllm_runs(run_set: str) -> list[Path]:
    """The finished recordings of one real-vLLM manifest, in its order (a run whose engine exited
    with an error, `ok` false in its meta.json, is left out)."""
    manifest, folder = VLLM_SETS[run_set]
    found = []
    for run in json.loads(manifest.read_text())["runs"]:
        path = folder / run["name"]
        meta = path / "meta.json"
        if (path / "ground_truth.jsonl").exists() and meta.exists() and json.loads(meta.read_text()).get("ok"):
            found.append(path)
    return found


def discover_runs(run_set: str | None = None) -> list[Path]:
    """The protocol's finished recordings (e2e/out/protocol/*) of one set of the manifest
    (`development`, `validation` or `heldout`; `vllm` / `vllm-blind`: the real-vLLM manifests;
    None: every recording), then, with no set named, any other e2e/out/* run with ground truth."""
    if run_set in VLLM_SETS:
        return vllm_runs(run_set)
    sets = {r["name"]: r.get("set", "development") for r in json.loads(MANIFEST.read_text())["runs"]}
    found = sorted(
        p
        for p in PROTOCOL.glob("*")
        if (p / "meta.json").exists()
        and "finished" in json.loads((p / "meta.json").read_text())
        and (run_set is None or sets.get(p.name) == run_set)
    )
    if run_set is None:
        found += sorted(
            p
            for p in (ROOT / "e2e" / "out").glob("*")
            if (p / "ground_truth.jsonl").exists() and (p / "scrapes").is_dir()
        )
    return found


def run_kind(sources: Sources, run: Path) -> str:
    meta_path = run / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    workers = int(meta.get("workers", 1))
    if meta.get("kind") == "dynamo-mocker":
        base = "engine-only" if meta.get("engine_only") else "frontend+worker"
        return f"{base}" + (f" x{workers}" if workers > 1 else "")
    return "vllm" + ("+frontend" if "frontend" in sources else "")


@dataclass(frozen=True)
class Metrics:
    auroc: float | None
    ece: float | None
    brier: float | None


def metrics(ps: list[float], ys: list[float]) -> Metrics:
    ws = [1.0] * len(ps)
    return Metrics(auroc(ps, ys, ws), expected_calibration_error(ps, ys, ws), brier_score(ps, ys, ws))


NOISE_DRAWS = 300


def null_ece(ps: list[float], quantile: float = 0.95, draws: int = NOISE_DRAWS, seed: int = 0) -> float:
    """The ECE a perfectly calibrated forecaster would show on these requests: outcomes drawn as
    Bernoulli(p) for the published p, the `quantile` of the ECE over `draws` such runs. The rule's
    0.03 lies below it on runs with few requests spread over the middle bins (sampling noise alone)."""
    rng = random.Random(seed)
    ws = [1.0] * len(ps)
    values = sorted(
        expected_calibration_error(ps, [1.0 if rng.random() < p else 0.0 for p in ps], ws) or 0.0 for _ in range(draws)
    )
    return values[min(len(values) - 1, int(quantile * len(values)))]


def auroc_gap_interval(rows: list[Scored], draws: int = NOISE_DRAWS, seed: int = 0) -> tuple[float, float, int] | None:
    """95 % bootstrap interval of AUROC(published) - AUROC(queue depth), resampling whole ticks (the
    requests after one scrape share their prediction and mostly their outcome: they are one event,
    not independent draws), and the number of ticks that hold a breach."""
    by_tick: dict[int, list[Scored]] = defaultdict(list)
    for r in rows:
        by_tick[r.index].append(r)
    ticks = list(by_tick.values())
    events = sum(1 for t in ticks if any(r.outcome for r in t))
    rng = random.Random(seed)
    gaps = []
    for _ in range(draws):
        sample = [r for _ in ticks for r in rng.choice(ticks)]
        ys = [r.outcome for r in sample]
        ws = [1.0] * len(sample)
        a = auroc([r.published.probability or 0.0 for r in sample], ys, ws)
        b = auroc([r.published.waiting for r in sample], ys, ws)
        if a is not None and b is not None:
            gaps.append(a - b)
    if len(gaps) < draws // 2:
        return None
    gaps.sort()
    return gaps[int(0.025 * len(gaps))], gaps[min(len(gaps) - 1, int(0.975 * len(gaps)))], events


def noise_note(rows: list[Scored], m: Metrics, q_auroc: float | None) -> str:
    """For a start that fails a rule: whether the failure is within what noise alone gives."""
    notes = []
    if m.ece is not None and m.ece > RULE_ECE:
        ceiling = null_ece([r.published.probability or 0.0 for r in rows])
        notes.append(f"ECE null95 {ceiling:.3f}{' (within)' if m.ece <= ceiling else ''}")
    if m.auroc is not None and q_auroc is not None and m.auroc < q_auroc - RULE_AUROC_MARGIN:
        gap = auroc_gap_interval(rows)
        if gap is not None:
            lo, hi, events = gap
            inside = " (within)" if hi >= -RULE_AUROC_MARGIN else ""
            notes.append(f"AUROC-q CI [{lo:+.3f}, {hi:+.3f}] on {events} breach ticks{inside}")
    return "; ".join(notes)


def passes(m: Metrics, q_auroc: float | None) -> list[str]:
    """The rules' failures for one start (empty: it passes)."""
    out = []
    if m.auroc is not None and q_auroc is not None and m.auroc < q_auroc - RULE_AUROC_MARGIN:
        out.append("AUROC")
    if m.ece is None or m.ece > RULE_ECE:
        out.append("ECE")
    return out


PROTOCOL_HEADER = (
    f"{'run':<20}{'shape':<20}{'n':>5}{'breach':>7} | {'q AUROC':>7} | {'struct AUROC/ECE/Brier':>22} | "
    f"{'cold AUROC/ECE/Brier':>20} | {'warm AUROC/ECE/Brier':>20} | rules"
)


def triple(m: Metrics) -> str:
    return f"{fmt(m.auroc)}/{fmt(m.ece)}/{fmt(m.brier)}"


_RECORDED: dict[Path, Sources] = {}  # parsed once, shared with forked workers


def evaluate(run: Path, runs: list[Path], slo: float, detail: bool) -> tuple[str, bool]:
    """One held-out run's row (and per-phase rows with `detail`); whether it fails a rule."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        meta_path = run / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        settings = Settings(slo_ttft_seconds=slo, window_seconds=float(meta.get("window_s", 30.0)))
        sources = _RECORDED[run]
        gt = load_ground_truth(run)
        cold = replay(sources, settings, QueueIntelligence())
        rows = score(gt, cold, slo)
        if not rows:
            print(f"{run.name:<20} no ground-truth request after the first published prediction")
            return out.getvalue(), True
        ys = [r.outcome for r in rows]
        q = auroc([r.published.waiting for r in rows], ys, [1.0] * len(ys))
        st = metrics([r.published.structural or 0.0 for r in rows], ys)
        c = metrics([r.published.probability or 0.0 for r in rows], ys)
        training = [_RECORDED[r] for r in runs if r != run]
        warm_pubs = replay(sources, settings, QueueIntelligence.from_state(trained_state(training, settings)))
        warm_rows = score(gt, warm_pubs, slo)
        w = metrics([r.published.probability or 0.0 for r in warm_rows], [r.outcome for r in warm_rows])
        fails = [f"cold {x}" for x in passes(c, q)] + [f"warm {x}" for x in passes(w, q)]
        verdict = "ok" if not fails else "FAIL " + ", ".join(fails)
        notes = [f"{k}: {n}" for k, n in (("cold", noise_note(rows, c, q)), ("warm", noise_note(warm_rows, w, q))) if n]
        if notes:
            verdict += " [" + " | ".join(notes) + "]"
        print(
            f"{run.name:<20}{run_kind(sources, run):<20}{len(rows):>5}{sum(ys) / len(ys):>7.3f} | {fmt(q):>7} | "
            f"{triple(st):>22} | {triple(c):>20} | {triple(w):>20} | {verdict}"
        )
        if detail:
            print(HEADER)
            table(slo, "cold", rows, cold)
            table(slo, "warm", warm_rows, warm_pubs)
    return out.getvalue(), bool(fails)


def protocol(runs: list[Path], slo: float, detail: bool, jobs: int = 2) -> int:
    """Leave-one-run-out: each run scored cold (fresh state) and warm (state learned online, from the
    engines' own labels, on every OTHER run of the list, restored as after a restart)."""
    _RECORDED.update({run: scrape_sources(run) for run in runs})
    print(f"Leave-one-run-out over {len(runs)} recordings, SLO {slo:g} s, scored per request at arrival")
    print(
        f"rules per held-out run: AUROC >= queue-depth AUROC - {RULE_AUROC_MARGIN}, ECE <= {RULE_ECE} (cold and warm)"
    )
    print(PROTOCOL_HEADER, flush=True)
    failing = 0
    context = multiprocessing.get_context("fork")
    with context.Pool(max(1, jobs)) as pool:
        for text, failed in pool.starmap(evaluate, [(run, runs, slo, detail) for run in runs]):
            print(text, end="", flush=True)
            failing += failed
    print(f"{len(runs) - failing}/{len(runs)} runs meet every rule")
    return 0


def ticks(run: Path, slo: float = HEADLINE_SLO) -> int:
    """Per-tick dump of one run, cold: what the engine showed at each scrape, the structural and the
    published probability, and what happened to the requests that arrived before the next tick (the
    clients' breach share, the longest engine queue time they had); then, per load stratum, the
    clients' breach share against the engine's own labels and the mean published probability."""
    meta_path = run / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    settings = Settings(slo_ttft_seconds=slo, window_seconds=float(meta.get("window_s", 30.0)))
    sources = scrape_sources(run)
    qi = QueueIntelligence()
    qi.label_log = []
    pubs = replay(sources, settings, qi)
    rows = score(load_ground_truth(run), pubs, slo)
    by_tick: dict[int, list[Scored]] = defaultdict(list)
    for r in rows:
        by_tick[r.index].append(r)
    start = pubs[0].time if pubs else 0.0
    print(
        f"{'t':>7} {'phase':<9}{'stratum':<8}{'wait':>5}{'run':>5}{'struct':>8}{'publ':>7}"
        f"{'n':>4}{'breach':>7}{'max q':>7}"
    )
    clients: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for i, p in enumerate(pubs):
        sel = by_tick.get(i, [])
        stratum = breach_stratum(p.waiting, p.running)
        queue = [float(r.request.get("engine_queue_s") or 0.0) for r in sel]  # type: ignore[arg-type]
        for r in sel:
            acc = clients[stratum]
            acc[0] += 1
            acc[1] += r.outcome
            acc[2] += p.probability or 0.0
        print(
            f"{p.time - start:7.1f} {derive_phase(pubs, i):<9}{stratum:<8}{p.waiting:5.0f}{p.running:5.0f}"
            f"{fmt(p.structural):>8}{fmt(p.probability):>7}{len(sel):4d}"
            f"{fmt(sum(r.outcome for r in sel) / len(sel) if sel else None, 2):>7}"
            f"{fmt(max(queue) if queue else None, 2):>7}"
        )
    entry = entry_role(sources)
    labels: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for target, stratum, _, _, outcome, n in qi.label_log:
        if target == entry:
            labels[stratum][0] += n
            labels[stratum][1] += outcome * n
    print(f"\n{'stratum':<8}{'clients n':>10}{'breach':>8}{'mean p':>8}{'labelled n':>12}{'breach':>8}")
    for stratum in ("idle", "busy", "queued"):
        c, lab = clients[stratum], labels[stratum]
        print(
            f"{stratum:<8}{c[0]:10.0f}{fmt(c[1] / c[0] if c[0] else None):>8}{fmt(c[2] / c[0] if c[0] else None):>8}"
            f"{lab[0]:12.0f}{fmt(lab[1] / lab[0] if lab[0] else None):>8}"
        )
    return 0


def main(argv: list[str]) -> int:
    detail = "--detail" in argv
    legacy = "--legacy" in argv
    if "--ticks" in argv:
        named = [Path(a) for a in argv if not a.startswith("--")]
        if len(named) != 1 or not (named[0] / "scrapes").is_dir() or not (named[0] / "ground_truth.jsonl").exists():
            print("--ticks needs one run folder with scrapes/ and ground_truth.jsonl")
            return 2
        return ticks(named[0])
    run_set = next((a.split("=", 1)[1] for a in argv if a.startswith("--set=")), None)
    argv = [a for a in argv if a not in ("--detail", "--legacy") and not a.startswith("--set=")]
    known = {str(r.get("set", "development")) for r in json.loads(MANIFEST.read_text())["runs"]} | set(VLLM_SETS)
    if run_set is not None and run_set not in known:
        print(f"unknown set {run_set!r}: one of {', '.join(sorted(known))}")
        return 2
    runs = [Path(a) for a in argv] or discover_runs(run_set)
    runs = [r for r in runs if (r / "scrapes").is_dir() and (r / "ground_truth.jsonl").exists()]
    if not runs:
        print("no run with scrapes/ and ground_truth.jsonl found (record them: python e2e/record_protocol.py)")
        return 1
    if not legacy:
        return protocol(runs, HEADLINE_SLO, detail)
    return legacy_report(runs)


def legacy_report(runs: list[Path]) -> int:
    recorded = {run: scrape_sources(run) for run in runs}
    bundled = bundled_sources()
    print("Breach probability P(client TTFT > SLO), scored per request at arrival (client labels score only).")
    for run in runs:
        meta_path = run / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        window = float(meta.get("window_s", 30.0))
        sources = recorded[run]
        gt = load_ground_truth(run)
        others = [r.name for r in runs if r != run]
        print(
            f"\n=== {run.name}: {', '.join(f'{k} ({len(v)} scrapes)' for k, v in sources.items())}; "
            f"scored on target '{entry_role(sources)}'; "
            f"cross = trained on bundled + {', '.join(others) or 'nothing else'}"
        )
        print(HEADER)
        cold_pubs: list[Published] = []
        for slo in (HEADLINE_SLO, EXTRA_SLO):
            settings = Settings(slo_ttft_seconds=slo, window_seconds=window)
            cold = replay(sources, settings, QueueIntelligence())
            cold_pubs = cold_pubs or cold
            rows = score(gt, cold, slo)
            if not rows:
                print(f"  {slo}: no ground-truth request after the first published prediction")
                continue
            table(slo, "cold", rows, cold)
            training = [bundled, *(recorded[r] for r in runs if r != run)]
            cross = replay(sources, settings, QueueIntelligence.from_state(trained_state(training, settings)))
            table(slo, "cross", score(gt, cross, slo), cross)
        print("  (AUROC q: queue depth at arrival alone; st: the structural queueing probability alone)")
        coverage(score(gt, cold_pubs, HEADLINE_SLO))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
