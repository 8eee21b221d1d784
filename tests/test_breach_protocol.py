"""Breach probability parts added for runs the model has never seen (issue 15): the evidence-weighted
shrink toward the structural probability, the inputs that come before the queue, and a real Dynamo
1.6.1 recording (frontend + mocker worker) replayed through the queue intelligence."""

from __future__ import annotations

import math
import random
import tarfile
from pathlib import Path

import pytest
from phaselens.analyzers import breach as br
from phaselens.analyzers import queueing as qm
from phaselens.analyzers.queue_intelligence import QueueIntelligence
from phaselens.analyzers.window import TargetWindow
from phaselens.model import Target
from phaselens.parsers.engines import canonical as cn
from phaselens.parsers.engines import to_snapshot
from phaselens.parsers.exposition import parse_exposition
from phaselens.settings import Settings


def _loss(p: float, y: float) -> float:
    q = min(0.999, max(0.001, p))
    return -(y * math.log(q) + (1 - y) * math.log(1 - q))


def test_shrink_starts_at_the_prior_and_follows_the_evidence() -> None:
    shrink = br.EvidenceShrink()
    assert shrink.weight("busy", 0.0) == pytest.approx(shrink.prior)
    assert shrink.apply("busy", 0.2, 0.6, 0.0) == pytest.approx(0.2 + shrink.prior * 0.4)
    # the learned forecaster is right (0.6 where 60 % breach), the structural one is not (0.2)
    rng = random.Random(1)
    for t in range(200):
        shrink.update("busy", 0.2, 0.6, 1.0 if rng.random() < 0.6 else 0.0, 1.0, float(t))
    high = shrink.weight("busy", 200.0)
    cap = 1 / (1 + math.exp(-(math.log(shrink.prior / (1 - shrink.prior)) + shrink.max_evidence_nats)))
    assert high == pytest.approx(cap, rel=1e-2)  # at the cap, less one second of decay
    assert shrink.weight("idle", 200.0) == pytest.approx(shrink.prior)  # strata are separate
    # then it starts to hurt: the weight goes back down within a few nats of evidence
    for t in range(200, 260):
        shrink.update("busy", 0.2, 0.6, 0.0, 1.0, float(t))
    assert shrink.weight("busy", 260.0) < shrink.prior


def test_shrink_never_costs_more_than_a_bounded_loss_against_the_structural_probability() -> None:
    """Adversarial learned part (always the wrong extreme): the published log loss stays within
    ln(1/(1 - prior)) of the structural one at first, and within -ln(1 - w_min) per request once the
    evidence is in."""
    rng = random.Random(7)
    shrink = br.EvidenceShrink()
    excess = []
    for t in range(2000):
        s = rng.uniform(0.05, 0.95)
        y = 1.0 if rng.random() < s else 0.0
        learned = 0.001 if y == 1.0 else 0.999
        p = shrink.apply("queued", s, learned, float(t))
        excess.append(_loss(p, y) - _loss(s, y))
        shrink.update("queued", s, learned, y, 1.0, float(t))
    assert excess[0] <= math.log(1 / (1 - shrink.prior)) + 1e-9
    w_min = 1 / (1 + math.exp(-(math.log(shrink.prior / (1 - shrink.prior)) - shrink.max_evidence_nats)))
    assert max(excess[20:]) <= 1.01 * -math.log(1 - w_min)  # w_min less a second of decay
    assert sum(excess) / len(excess) <= 1.01 * -math.log(1 - w_min)


def test_precursors_are_neutral_when_unknown_and_grow_with_pressure() -> None:
    assert br.Precursors().values() == (0.0, 0.0, 0.0, 0.0)
    calm = br.Precursors(arrival_rate=1.0, slots=8, running=2, waiting=0)
    packed = br.Precursors(arrival_rate=6.0, slots=8, running=8, waiting=3)
    assert calm.values()[0] < 0 < packed.values()[0]
    rising = br.Precursors(trend_short=6.0, trend_long=1.0)
    assert rising.values()[1] == pytest.approx(math.log(6.1 / 1.1))
    ahead = br.Precursors(upstream_rate=9.0, engine_arrival_rate=3.0, slots=6)
    assert ahead.values()[2] == pytest.approx(1.0)
    tight = br.Precursors(waiting=4, arrival_rate=0.0, mean_prompt_tokens=400, kv_usage=0.9, kv_tokens=6144)
    roomy = br.Precursors(waiting=0, arrival_rate=0.0, mean_prompt_tokens=400, kv_usage=0.1, kv_tokens=6144)
    assert roomy.values()[3] < 0 < tight.values()[3]
    features = br.make_features(
        slo_seconds=0.5,
        structural_probability=0.3,
        predicted_wait_seconds=0.0,
        queue_depth=0,
        recent_p50_ttft_seconds=None,
        recent_p90_ttft_seconds=None,
        recent_breach_fraction=None,
        kv_usage=None,
        utilization=None,
        queue_growth_per_second=0.0,
        precursors=packed,
    )
    assert features.as_dict()["log_arrivals_over_free_slots"] == pytest.approx(packed.values()[0])


def _replay_dynamo(
    tmp_path: Path, fixtures_dir: Path, qi: QueueIntelligence | None = None
) -> tuple[QueueIntelligence, list[dict[str, float]], dict]:
    """The real Dynamo 1.6.1 recording (40 scrapes of d02-ramp, benchmarks/predictor_runs.json):
    the frontend and the mocker worker as two targets, as a sidecar scraping both sees them."""
    with tarfile.open(fixtures_dir / "dynamo-1.6.1-mocker-frontend" / "run.tar.gz") as archive:
        archive.extractall(tmp_path, filter="data")
    qi = qi or QueueIntelligence()
    windows = {role: TargetWindow(30.0) for role in ("frontend", "aggregated")}
    targets = {role: Target(role, "aggregated", "x") for role in windows}
    scrapes = {role: sorted((tmp_path / "scrapes" / role).glob("*.prom")) for role in windows}
    published: list[dict[str, float]] = []
    for fe, wk in zip(scrapes["frontend"], scrapes["aggregated"], strict=True):
        now = 0.0
        for role, f in (("frontend", fe), ("aggregated", wk)):
            data = f.read_bytes()
            now = max(now, float(data.split(b"\n", 1)[0].split()[2]))
            windows[role].add(to_snapshot(parse_exposition(data), now))
        signals, _ = qi.tick({r: (targets[r], windows[r]) for r in windows}, now, Settings(slo_ttft_seconds=0.5))
        published.append({s.name: s.value for s in signals if dict(s.labels).get("target") == "aggregated"})
    return qi, published, windows


def test_real_dynamo_worker_without_success_counter_still_labels_its_predictions(
    tmp_path: Path, fixtures_dir: Path
) -> None:
    qi, published, windows = _replay_dynamo(tmp_path, fixtures_dir)
    worker = windows["aggregated"]
    group = ("tiny", "0")
    # the mocker exports no request_success counter: finished requests come from the e2e histogram
    assert not worker.gauge_series(cn.REQUEST_SUCCESS, group)
    assert qm.finished_series(worker, group)[-1][1] > 0
    assert qm.arrival_counts(worker, group)
    report = qi.calibration("aggregated")
    assert report is not None and report.weight >= 50
    last = published[-1]
    # the Brier score is exported beside the ECE, both of the published probability
    assert last["phaselens_prediction_calibration_error"] == pytest.approx(report.ece)
    assert last["phaselens_prediction_brier_score"] == pytest.approx(report.brier)
    assert 0 <= report.brier <= 1
    # the service-to-first-token time of quiet steps was learned (no prefill histogram here)
    state = qi.to_state()["targets"]["aggregated"]["groups"]["tiny|0"]
    assert state["quiet_ttft"] and state["quiet_ttft"][-1][1] >= 5


def test_frontend_arrivals_reach_the_engine_prediction(tmp_path: Path, fixtures_dir: Path) -> None:
    qi, _, windows = _replay_dynamo(tmp_path, fixtures_dir)
    started = windows["frontend"].gauge_series(cn.REQUESTS_STARTED, ("tiny", "0"))
    assert len(started) >= 2
    (t0, v0), (t1, v1) = started[-2], started[-1]
    upstream = qi._upstream["tiny"]  # one engine target: it gets every arrival the frontend counted
    assert upstream.rate == pytest.approx((v1 - v0) / (t1 - t0))
    assert upstream.kv_tokens == 384 * 16  # the frontend's model card: blocks x block size
    assert upstream.mean_prompt_tokens is not None and upstream.mean_prompt_tokens > 100


def test_shrink_is_not_carried_across_a_restart(tmp_path: Path, fixtures_dir: Path) -> None:
    qi, _, _ = _replay_dynamo(tmp_path, fixtures_dir)
    restored = QueueIntelligence.from_state(qi.to_state())
    assert restored._targets["aggregated"].shrink.cells == {}
    assert restored._targets["aggregated"].predictor.weights == qi._targets["aggregated"].predictor.weights


def test_the_gate_reads_the_calibration_of_the_published_probability(tmp_path: Path, fixtures_dir: Path) -> None:
    from phaselens.model import Recommendation

    qi, published, _ = _replay_dynamo(tmp_path, fixtures_dir)
    shown = {round(p["phaselens_slo_breach_probability"], 12) for p in published if p}
    rows = list(qi._targets["aggregated"].calibration.rows)
    assert rows and all(round(p, 12) in shown for p, _, _ in rows)  # scored: what was published
    rec = Recommendation("SLO_BREACH_PREDICTED", "critical", "m", {"basis": "prediction"}, 0.95, target="aggregated")
    (gated,) = qi.gate([rec], Settings(calibration_error_limit=0.05))
    report = qi.calibration("aggregated")
    assert report is not None
    assert gated.evidence["calibration_error"] == round(report.ece, 4)
    assert gated.evidence["brier_score"] == round(report.brier, 4)
    assert gated.action == ("act" if report.ece <= 0.05 else "escalate")


def test_engine_only_recording_predicts_without_a_frontend(tmp_path: Path, fixtures_dir: Path) -> None:
    """The same worker scrapes alone (what a sidecar next to vLLM alone sees): no upstream arrivals,
    the precursor that needs them is neutral, and predictions are still labelled and scored."""
    with tarfile.open(fixtures_dir / "dynamo-1.6.1-mocker-frontend" / "run.tar.gz") as archive:
        archive.extractall(tmp_path, filter="data")
    qi = QueueIntelligence()
    window = TargetWindow(30.0)
    target = Target("aggregated", "aggregated", "x")
    features: list[dict[str, float]] = []
    for f in sorted((tmp_path / "scrapes" / "aggregated").glob("*.prom")):
        data = f.read_bytes()
        now = float(data.split(b"\n", 1)[0].split()[2])
        window.add(to_snapshot(parse_exposition(data), now))
        qi.tick({"aggregated": (target, window)}, now, Settings(slo_ttft_seconds=0.5))
        pending = qi._targets["aggregated"].groups["tiny|0"].pending
        if pending:
            features.append(pending[-1].features.as_dict())
    assert qi._upstream == {}
    assert features and all(f["upstream_arrivals_ahead_per_slot"] == 0.0 for f in features)
    assert any(f["log_arrivals_over_free_slots"] != 0.0 for f in features)  # engine-side arrivals
    report = qi.calibration("aggregated")
    assert report is not None and report.weight >= 50


def test_label_log_holds_the_labels_the_calibration_scored(tmp_path: Path, fixtures_dir: Path) -> None:
    """The diagnosis hook (benchmarks/bench_predictors.py --ticks): off by default; when on, one entry
    per label formed, the same (published p, breach share, arrivals) the rolling calibration scored."""
    assert QueueIntelligence().label_log is None
    qi = QueueIntelligence()
    qi.label_log = []
    qi, _, _ = _replay_dynamo(tmp_path, fixtures_dir, qi)
    mine = [(p, y, n) for target, _, _, p, y, n in qi.label_log if target == "aggregated"]
    rows = list(qi._targets["aggregated"].calibration.rows)
    assert mine and [tuple(r) for r in rows] == mine[-len(rows) :]
    assert {stratum for _, stratum, *_ in qi.label_log} <= {"idle", "busy", "queued"}
    times = [t for target, _, t, *_ in qi.label_log if target == "aggregated"]
    assert times == sorted(times)  # labelled in the order the predictions were made
