"""Breach model: calibration metrics, online learning on fractional labels, TTFT tallies, state."""

from __future__ import annotations

import json
import math
import random
import tarfile
from pathlib import Path

import pytest
from phaselens.analyzers import breach as br
from phaselens.analyzers.queue_intelligence import QueueIntelligence
from phaselens.analyzers.window import TargetWindow
from phaselens.model import Target
from phaselens.parsers.engines import to_snapshot
from phaselens.parsers.exposition import parse_exposition
from phaselens.settings import Settings


def test_ece_small_for_calibrated_and_large_for_overconfident() -> None:
    rng = random.Random(3)
    ps = [rng.random() for _ in range(20000)]
    ys = [1.0 if rng.random() < p else 0.0 for p in ps]
    ws = [1.0] * len(ps)
    ece = br.expected_calibration_error(ps, ys, ws)
    assert ece is not None and ece < 0.02
    over = br.expected_calibration_error([0.9] * 1000, [1.0, 0.0] * 500, [1.0] * 1000)
    assert over == pytest.approx(0.4)


def test_auroc_extremes_ties_and_fractional_labels() -> None:
    assert br.auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], [1, 1, 1, 1]) == 1.0
    assert br.auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1], [1, 1, 1, 1]) == 0.0
    assert br.auroc([0.5, 0.5], [0, 1], [1, 1]) == 0.5
    assert br.auroc([0.3, 0.4], [0, 0], [1, 1]) is None
    # a window with 3 requests, 1 over the SLO, equals three binary examples at the same score
    frac = br.auroc([0.2, 0.7], [1 / 3, 1.0], [3.0, 2.0])
    expanded = br.auroc([0.2, 0.2, 0.2, 0.7, 0.7], [1, 0, 0, 1, 1], [1] * 5)
    assert frac == pytest.approx(expanded)


def test_brier_with_fractional_labels_equals_expanded() -> None:
    frac = br.brier_score([0.25], [0.5], [4.0])
    expanded = br.brier_score([0.25] * 4, [1, 1, 0, 0], [1] * 4)
    assert frac == pytest.approx(expanded)
    assert br.brier_score([], [], []) is None


def _feat(x: float) -> br.BreachFeatures:
    return br.BreachFeatures((x,) + (0.0,) * (len(br.FEATURE_NAMES) - 1))


def test_predictor_learns_a_shifted_truth_from_fractional_labels() -> None:
    rng = random.Random(11)
    model = br.BreachPredictor()
    cal = br.RollingCalibration(capacity=2000, min_weight=10)

    def truth(x: float) -> float:
        return 1 / (1 + math.exp(-(2.0 * x - 1.5)))  # prior says 4x: too steep and not shifted

    for _ in range(6000):
        x = rng.uniform(-3, 3)
        n = rng.randint(1, 20)
        y = sum(rng.random() < truth(x) for _ in range(n)) / n
        p = model.predict(_feat(x))
        cal.add(p, y, n)
        model.update(_feat(x), y, n)
    for x in (-2.0, 0.0, 0.75, 2.0):
        assert model.predict(_feat(x)) == pytest.approx(truth(x), abs=0.06)
    report = cal.report()
    assert report is not None and report.auroc is not None and report.auroc > 0.8


def test_predictor_rejects_bad_outcomes_and_features() -> None:
    model = br.BreachPredictor()
    with pytest.raises(ValueError):
        model.update(_feat(0.0), 1.5, 1.0)
    with pytest.raises(ValueError):
        br.BreachFeatures((math.nan,) + (0.0,) * (len(br.FEATURE_NAMES) - 1))
    with pytest.raises(ValueError):
        br.BreachFeatures((0.0,))


def test_prior_is_the_structural_probability() -> None:
    model = br.BreachPredictor()
    at_slo = br.make_features(
        slo_seconds=0.5,
        structural_probability=0.5,
        predicted_wait_seconds=0.4,
        queue_depth=3,
        recent_p50_ttft_seconds=0.1,
        recent_p90_ttft_seconds=0.2,
        recent_breach_fraction=0,
        kv_usage=0.5,
        utilization=0.5,
        queue_growth_per_second=0,
    )
    assert model.predict(at_slo) == pytest.approx(0.5)
    idle = br.make_features(
        slo_seconds=0.5,
        structural_probability=0.003,
        predicted_wait_seconds=0.0,
        queue_depth=0,
        recent_p50_ttft_seconds=None,
        recent_p90_ttft_seconds=None,
        recent_breach_fraction=None,
        kv_usage=None,
        utilization=None,
        queue_growth_per_second=0,
    )
    assert model.predict(idle) == pytest.approx(0.003)


def test_predictor_state_round_trip_and_damage() -> None:
    model = br.BreachPredictor()
    model.update(_feat(1.0), 0.0, 10)
    restored = br.BreachPredictor.from_state(json.loads(json.dumps(model.to_state())))
    assert restored.predict(_feat(1.0)) == model.predict(_feat(1.0))
    fresh = br.BreachPredictor()
    assert br.BreachPredictor.from_state({"weights": "x"}).weights == fresh.weights
    assert br.BreachPredictor.from_state({**model.to_state(), "features": ["other"]}).weights == fresh.weights


def test_structural_probability_adds_queue_wait_to_service_time() -> None:
    from phaselens.analyzers import queueing as qm

    buckets = ((0.1, 50.0), (0.2, 90.0), (0.5, 100.0), (math.inf, 100.0))  # service always <= 0.5 s
    assert qm.probability_total_exceeds(0.5, buckets, 0.0, 1.0) == pytest.approx(0.0)
    with_wait = qm.probability_total_exceeds(0.5, buckets, 0.4, 0.25)
    long_wait = qm.probability_total_exceeds(0.5, buckets, 2.0, 0.25)
    assert with_wait is not None and long_wait is not None
    assert 0.1 < with_wait < long_wait and long_wait > 0.99


def test_tally_reads_slo_on_a_bound_and_between_bounds() -> None:
    buckets = ((0.25, 10.0), (0.5, 30.0), (1.0, 40.0), (math.inf, 50.0))
    on_bound = br.tally_from_buckets(0.0, buckets, 0.5)
    assert on_bound == br.TtftTally(0.0, 50.0, 30.0)
    between = br.tally_from_buckets(0.0, buckets, 0.75)
    assert between is not None and between.within_slo == pytest.approx(35.0)
    beyond = br.tally_from_buckets(0.0, buckets, 5.0)
    assert beyond is not None and beyond.within_slo == 40.0  # the +Inf bucket is over any finite SLO


def test_breach_outcome_fraction_and_reset() -> None:
    a = br.TtftTally(0.0, 100.0, 90.0)
    b = br.TtftTally(2.0, 120.0, 95.0)
    assert br.breach_outcome(a, b) == (pytest.approx(0.75), 20.0)
    assert br.breach_outcome(b, a) is None  # counter reset
    assert br.breach_outcome(a, a) is None  # no traffic, no label


def test_rolling_calibration_needs_enough_requests_and_is_bounded() -> None:
    cal = br.RollingCalibration(capacity=5, min_weight=10)
    cal.add(0.5, 1.0, 4)
    assert cal.report() is None
    for _ in range(10):
        cal.add(0.2, 0.0, 4)
    assert len(cal.rows) == 5
    report = cal.report()
    assert report is not None and report.ece == pytest.approx(0.2)
    assert br.RollingCalibration.from_state([[2.0, 0.0, 1.0], "x"]).rows == type(cal.rows)()


def test_rolling_calibration_report_follows_every_add_once_full() -> None:
    """The report is kept between ticks; each label added (also one that pushes the oldest out of a
    full window, leaving the row count unchanged) gives the report of the rows as they are now."""
    cal = br.RollingCalibration(capacity=4, min_weight=1)
    seen = []
    for p, y in [(0.9, 1.0), (0.1, 0.0), (0.8, 0.0), (0.3, 1.0), (0.7, 1.0), (0.2, 1.0), (0.6, 0.0)]:
        cal.add(p, y, 2.0)
        fresh = br.RollingCalibration(capacity=4, min_weight=1)
        for row in cal.rows:
            fresh.add(*row)
        assert cal.report() == fresh.report()
        assert cal.report() is cal.report()  # asked again without a new label: the same report
        seen.append(cal.report())
    assert len({r.ece for r in seen if r is not None}) > 3


def test_real_capture_breach_probability_tracks_the_burst(tmp_path: Path, fixtures_dir: Path) -> None:
    with tarfile.open(fixtures_dir / "vllm-0.32.0-cpu-aggregated" / "scrapes.tar.gz") as archive:
        archive.extractall(tmp_path, filter="data")
    qi = QueueIntelligence()
    w = TargetWindow(30.0)
    target = Target("agg", "aggregated", "x")
    probs: dict[int, float] = {}
    ece: list[float] = []
    for i, f in enumerate(sorted((tmp_path / "rec").glob("*.prom"))):
        data = f.read_bytes()
        ts = float(data.split(b"\n", 1)[0].split()[2])
        w.add(to_snapshot(parse_exposition(data), ts))
        signals, _ = qi.tick({"agg": (target, w)}, ts, Settings())
        for s in signals:
            if s.name == "phaselens_slo_breach_probability":
                probs[i] = s.value
            if s.name == "phaselens_prediction_calibration_error":
                ece.append(s.value)
    steady = [p for i, p in probs.items() if 10 <= i <= 45]
    burst = [p for i, p in probs.items() if 55 <= i <= 72]
    assert steady and burst
    # the burst's first seconds read 0.72-0.83 since the published probability keeps at least half its
    # weight on the structural one (EvidenceShrink), which rises as the queue shows; then 0.9+
    assert max(steady) < 0.2 < 0.7 < min(burst)
    assert sorted(burst)[len(burst) // 2] > 0.85
    assert ece and all(0 <= e <= 1 for e in ece)
