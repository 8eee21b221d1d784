"""Per-arrival breach labels: what happened to the requests that arrived after a prediction."""

from __future__ import annotations

import math

import pytest
from phaselens.analyzers import breach as br
from phaselens.analyzers.queue_intelligence import QueueIntelligence
from phaselens.analyzers.window import TargetWindow
from phaselens.model import EngineSnapshot, Histogram, Target, make_labels
from phaselens.parsers.engines import canonical as cn
from phaselens.settings import Settings

LBL = make_labels({"model_name": "m", "engine": "0"})
BOUNDS = (0.1, 0.5, 1.0, 2.0, 5.0, math.inf)


def _mark(t: float, arrivals: float, within: float, count: float | None = None) -> br.ArrivalMark:
    return br.ArrivalMark(t, arrivals, br.TtftTally(t, within if count is None else count, within))


def test_within_at_interpolates_and_refuses_outside_the_marks() -> None:
    marks = [_mark(0.0, 0, 10), _mark(1.0, 5, 20), _mark(2.0, 9, 20)]
    assert br.within_at(marks, 0.25) == pytest.approx(12.5)
    assert br.within_at(marks, 2.0) == pytest.approx(20)
    assert br.within_at(marks, 2.5) is None
    assert br.within_at(marks, -0.1) is None


def test_arrival_outcome_counts_late_arrivals_as_breaches() -> None:
    # 10 arrive in (0, 1]; only 4 within-SLO first tokens in the shifted window (0.1, 1.1]
    marks = [_mark(0.0, 0, 0), _mark(1.0, 10, 4), _mark(2.0, 10, 4)]
    outcome = br.arrival_breach_outcome(marks, 0.0, 1.0, 0.0)
    assert outcome == (pytest.approx(0.6), 10)
    # not yet known: the marks do not reach end + shift
    assert br.arrival_breach_outcome(marks[:2], 0.0, 1.0, 0.5) is None
    # nobody arrived: nothing to score
    assert br.arrival_breach_outcome([_mark(0.0, 3, 0), _mark(1.0, 3, 2)], 0.0, 1.0, 0.0) is None
    # counter reset between the marks: no label
    assert br.arrival_breach_outcome([_mark(0.0, 0, 9), _mark(1.0, 4, 1)], 0.0, 1.0, 0.0) is None
    # more within-SLO tokens than arrivals (earlier arrivals finishing): clamped to no breach
    assert br.arrival_breach_outcome([_mark(0.0, 0, 0), _mark(1.0, 2, 5)], 0.0, 1.0, 0.0) == (0.0, 2)


def _snap(t: float, waiting: float, running: float, finished: float, within: float, over: float) -> EngineSnapshot:
    """TTFT histogram: `within` first tokens under 0.1 s, `over` in the (2, 5] s bucket."""
    counts = (within, within, within, within, within + over, within + over)
    hist = Histogram(cn.TTFT_SECONDS, LBL, tuple(zip(BOUNDS, counts, strict=True)), None, within + over)
    scalars = {
        (cn.REQUESTS_WAITING, LBL): waiting,
        (cn.REQUESTS_RUNNING, LBL): running,
        (cn.REQUEST_SUCCESS, LBL): finished,
    }
    return EngineSnapshot("vllm", t, scalars, {(cn.TTFT_SECONDS, LBL): hist})


def test_burst_after_a_quiet_tick_labels_that_tick_by_its_arrivals() -> None:
    """The prediction published just before a burst is scored on the burst's requests (most of them
    late), not on the few fast first tokens the engine emitted in the next seconds."""
    qi = QueueIntelligence()
    window = TargetWindow(30.0)
    target = Target("t", "aggregated", "x")
    snaps = [_snap(float(i), 0, 0, 2.0 * i, 2.0 * i, 0) for i in range(10)]  # 2/s, all fast
    # (9, 10]: 20 arrive, 2 are served fast, 18 wait; then 2 per second leave the queue, late
    snaps.append(_snap(10.0, 18, 2, 18, 20, 0))
    for k in range(1, 6):
        snaps.append(_snap(10.0 + k, 18 - 2 * k, 2, 18 + 2 * k, 20, 2.0 * k))
    for s in snaps:
        window.add(s)
        qi.tick({"t": (target, window)}, s.time, Settings(slo_ttft_seconds=0.5))
    rows = qi.to_state()["targets"]["t"]["calibration"]
    burst = [r for r in rows if r[2] == pytest.approx(20)]
    assert len(burst) == 1 and burst[0][1] > 0.7  # >= 16 of the 20 arrivals missed the SLO
    quiet = [r for r in rows if r[2] == pytest.approx(2)]
    assert len(quiet) >= 7 and all(r[1] == pytest.approx(0.0, abs=1e-9) for r in quiet)
    # after the burst nobody arrives: those predictions have no label (nothing to score)
    assert len(rows) == len(burst) + len(quiet)
    structural = qi.last_structural_probability[("t", "m|0")]
    assert 0.0 < structural < 1.0
