"""The last stage of the breach probability (issue 15, second round): online isotonic recalibration
of the published probability per load stratum, shrunk toward its input by evidence; labels whose
edge noise is carried instead of clamped; and no label used before its horizon has passed."""

from __future__ import annotations

import itertools
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

GRID = [i / 200 for i in range(201)]


def test_no_evidence_publishes_the_input_unchanged() -> None:
    cal = br.IsotonicRecalibration()
    assert all(cal.apply("busy", p, 0.0) == p for p in GRID)
    cal.update("queued", 0.3, 1.0, 10.0, 0.0)
    assert all(cal.apply("busy", p, 1.0) == p for p in GRID)  # another stratum's labels do not count here


def test_little_evidence_stays_near_the_input_and_much_evidence_reaches_the_rate() -> None:
    cal = br.IsotonicRecalibration(prior_requests=5.0)
    cal.update("busy", 0.1, 1.0, 1.0, 0.0)  # one breach where 10 % was published
    one = cal.apply("busy", 0.1, 0.0)
    assert 0.1 < one < 0.3  # (5 * 0.1 + 1) / 6 = 0.25: the prior holds most of the weight
    assert one == pytest.approx((5 * 0.1 + 1) / 6)
    rng = random.Random(3)
    for t in range(2000):  # 10 % published, 40 % breach
        cal.update("busy", 0.1, 1.0 if rng.random() < 0.4 else 0.0, 1.0, float(t) / 100)
    assert cal.apply("busy", 0.1, 20.0) == pytest.approx(0.4, abs=0.04)


def test_the_map_is_monotone_whatever_the_labels() -> None:
    rng = random.Random(11)
    cal = br.IsotonicRecalibration()
    for t in range(3000):
        p = rng.random()
        # adversarial: breaches where the input is low, none where it is high
        y = 1.0 if (p < 0.3 and rng.random() < 0.9) or rng.random() < 0.05 else 0.0
        cal.update("queued", p, y, rng.uniform(0.5, 5.0), float(t))
        if t % 500 == 499:
            out = [cal.apply("queued", p, float(t)) for p in GRID]
            assert all(b >= a - 1e-12 for a, b in itertools.pairwise(out))
            assert all(0.0 <= v <= 1.0 for v in out)


def test_counts_decay_and_are_not_carried_across_a_restart(tmp_path: Path, fixtures_dir: Path) -> None:
    cal = br.IsotonicRecalibration(half_life_seconds=100.0)
    for t in range(50):
        cal.update("idle", 0.05, 1.0, 2.0, float(t))
    early = cal.apply("idle", 0.05, 50.0)
    late = cal.apply("idle", 0.05, 5000.0)  # 50 half-lives later the evidence has faded
    assert early > 0.8 and late == pytest.approx(0.05, abs=0.02)
    # a restart starts the final stage afresh: it learns the workload in front of it
    qi = QueueIntelligence()
    _publish(_scrapes(tmp_path, fixtures_dir), qi)
    assert qi._targets["aggregated"].final.cells
    assert QueueIntelligence.from_state(qi.to_state())._targets["aggregated"].final.cells == {}


def test_carried_labels_telescope_where_clamped_ones_are_biased() -> None:
    """Intervals of 4 arrivals, 1 breach each; the within-SLO count of each shifted window is off by
    +-1.5 (edge noise that cancels between neighbours). Clamped alone, the +1.5 side is cut at 4 and
    the labels overcount breaches; carried, their sum is the truth."""
    rng = random.Random(5)
    true_within = [3.0] * 400
    noise = [rng.uniform(-1.5, 1.5) for _ in range(401)]
    counted = [true_within[i] + noise[i + 1] - noise[i] for i in range(400)]
    clamped = sum(1 - min(1.0, c / 4) for c in counted) * 4
    carry, total = 0.0, 0.0
    for c in counted:
        outcome, carry = br.carried_outcome(max(0.0, c), 4.0, carry)
        total += outcome * 4
    assert total == pytest.approx(400.0, abs=6.0)
    assert clamped > total + 20  # the clamp's bias, which the carry removes


def _scrapes(tmp_path: Path, fixtures_dir: Path) -> list[tuple[float, bytes]]:
    with tarfile.open(fixtures_dir / "dynamo-1.6.1-mocker-frontend" / "run.tar.gz") as archive:
        archive.extractall(tmp_path, filter="data")
    out = []
    for f in sorted((tmp_path / "scrapes" / "aggregated").glob("*.prom")):
        data = f.read_bytes()
        out.append((float(data.split(b"\n", 1)[0].split()[2]), data))
    return out


def _publish(scrapes: list[tuple[float, bytes]], qi: QueueIntelligence) -> list[float]:
    window = TargetWindow(30.0)
    target = Target("aggregated", "aggregated", "x")
    out = []
    for now, data in scrapes:
        window.add(to_snapshot(parse_exposition(data), now))
        signals, _ = qi.tick({"aggregated": (target, window)}, now, Settings(slo_ttft_seconds=0.5))
        out.extend(s.value for s in signals if s.name == "phaselens_slo_breach_probability")
    return out


def test_no_label_is_used_before_its_horizon_has_passed(
    tmp_path: Path, fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real Dynamo 1.6.1 recording (engine-only view). Every label that reaches the final calibrator
    at tick `now` is of an interval (start, end] whose arrivals all had their SLO's time by `now`; and
    what was published up to a tick does not change when the scrapes after it are cut off."""
    scrapes = _scrapes(tmp_path, fixtures_dir)
    seen: list[tuple[float, float]] = []
    original = br.arrival_within_count

    def spy(marks, start, end, shift, slo=None):  # type: ignore[no-untyped-def]
        seen.append((end, max(shift, slo or 0.0)))
        return original(marks, start, end, shift, slo)

    updates: list[tuple[float, float, float]] = []
    original_update = br.IsotonicRecalibration.update

    def record(self, stratum, p, outcome, arrivals, now):  # type: ignore[no-untyped-def]
        end, horizon = seen[-1]
        updates.append((end, horizon, now))
        return original_update(self, stratum, p, outcome, arrivals, now)

    monkeypatch.setattr(br, "arrival_within_count", spy)
    monkeypatch.setattr(br.IsotonicRecalibration, "update", record)
    full = _publish(scrapes, QueueIntelligence())
    assert len(updates) >= 20
    assert all(end + horizon <= now for end, horizon, now in updates)
    cut = len(scrapes) * 2 // 3
    prefix = _publish(scrapes[:cut], QueueIntelligence())
    assert prefix == full[: len(prefix)] and len(prefix) >= cut - 2
