"""Per-arrival breach labels: what happened to the requests that arrived after a prediction."""

from __future__ import annotations

import itertools
import math
import random

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
    # every labelled prediction was made at an idle engine (nothing queued or running at the
    # scrape): they recalibrate the idle bins, the burst included, and never train the regression
    state = qi.to_state()["targets"]["t"]
    assert state["predictor"]["examples"] == 0
    idle_arrivals = sum(row[3] for row in state["recalibration"] if row[0] == "idle")
    assert idle_arrivals == pytest.approx(20 + 2 * len(quiet), rel=0.02)  # decayed over ~15 s


def test_sparse_arrival_is_not_scored_a_breach_by_interpolation() -> None:
    """One request in (1, 2], first token within the SLO at ~2.2 s, nothing else for seconds: the
    shifted window (1.3, 2.3] interpolates only part of that token in, which used to read as a
    partial breach (quiet periods looked like ~10 % breaches). With the SLO known, the count runs
    to the next quiet mark and starts at `start` when nothing arrived before it."""
    marks = [_mark(0.0, 0, 0), _mark(1.0, 0, 0), _mark(2.0, 1, 0), _mark(3.0, 1, 1), _mark(4.0, 1, 1)]
    plain = br.arrival_breach_outcome(marks, 1.0, 2.0, 0.3)
    assert plain is not None and plain[0] == pytest.approx(0.7)  # the interpolation artefact
    assert br.arrival_breach_outcome(marks, 1.0, 2.0, 0.3, slo=0.5) == (0.0, 1)
    # a genuine breach stays one: the first token came only at ~3.5 s (after the SLO)
    late = [_mark(0.0, 0, 0), _mark(1.0, 0, 0), _mark(2.0, 1, 0), _mark(3.0, 1, 0), _mark(4.0, 1, 0)]
    assert br.arrival_breach_outcome(late, 1.0, 2.0, 0.3, slo=0.5) == (1.0, 1)
    # when more requests arrive right after, the count stays at end + shift (they are not ours)
    busy = [_mark(0.0, 0, 0), _mark(1.0, 0, 0), _mark(2.0, 1, 0), _mark(3.0, 6, 1), _mark(4.0, 6, 6)]
    got = br.arrival_breach_outcome(busy, 1.0, 2.0, 0.3, slo=0.5)
    assert got is not None and got[0] == pytest.approx(0.7)


def test_recalibration_learns_per_stratum_and_decays() -> None:
    recal = br.BinnedRecalibration(prior_requests=5.0, half_life_seconds=100.0)
    assert recal.apply("idle", 0.3, 0.0) == 0.3  # nothing learned: the raw score
    # under load, raw 0.3 turned out to be a 90 % breach rate (100 arrivals)
    recal.update("queued", 0.35, 0.9, 100.0, 0.0)
    assert recal.apply("queued", 0.31, 0.0) == pytest.approx((5 * 0.31 + 90) / 105)
    assert recal.apply("idle", 0.31, 0.0) == 0.31  # the quiet stratum is not moved by it
    assert recal.apply("queued", 0.75, 0.0) == 0.75  # nor another bin
    # one half-life later the evidence counts half
    assert recal.apply("queued", 0.31, 100.0) == pytest.approx((5 * 0.31 + 45) / 55)
    restored = br.BinnedRecalibration.from_state(recal.to_state())
    assert restored.apply("queued", 0.31, 0.0) == pytest.approx(recal.apply("queued", 0.31, 0.0))
    # damaged state: what cannot be read is dropped, never raised
    assert br.BinnedRecalibration.from_state([["queued", 3, 5.0, 1.0, 0.0], ["nope", 1, 0, 1, 0]]).cells == {}
    assert br.BinnedRecalibration.from_state("garbage").cells == {}
    assert br.load_stratum(0, 1) == "idle" and br.load_stratum(0, 3) == "busy" and br.load_stratum(2, 0) == "queued"


# The linear scans these functions were before they bisected (the oracle for the test below).
def _walk_within_at(marks: list[br.ArrivalMark], t: float) -> float | None:
    if not marks or t < marks[0].time or t > marks[-1].time:
        return None
    for a, b in itertools.pairwise(marks):
        if a.time <= t <= b.time:
            if b.time <= a.time:
                return b.tally.within_slo
            share = (t - a.time) / (b.time - a.time)
            return a.tally.within_slo + share * (b.tally.within_slo - a.tally.within_slo)
    return marks[-1].tally.within_slo if t == marks[-1].time else None


def _walk_outcome(
    marks: list[br.ArrivalMark], start: float, end: float, shift: float, slo: float | None
) -> tuple[float, float] | None:
    by_time = {m.time: m for m in marks}
    if start not in by_time or end not in by_time:
        return None
    n = by_time[end].arrivals - by_time[start].arrivals
    lo_time, hi_time = start + shift, end + shift
    if slo is not None:
        earlier = max((m for m in marks if m.time <= start - slo), key=lambda m: m.time, default=None)
        if earlier is not None and by_time[start].arrivals - earlier.arrivals < 0.5:
            lo_time = start
        later = min((m for m in marks if m.time >= end + slo), key=lambda m: m.time, default=None)
        if later is not None and later.arrivals - by_time[end].arrivals < 0.5:
            hi_time = max(hi_time, later.time)
    lo, hi = _walk_within_at(marks, lo_time), _walk_within_at(marks, hi_time)
    if n < 0.5 or lo is None or hi is None:
        return None
    within = hi - lo
    if within < -1e-9:
        return None
    return min(1.0, max(0.0, 1 - within / n)), n


@pytest.mark.parametrize("seed", range(5))
def test_bisected_marks_answer_as_the_linear_scans_did(seed: int) -> None:
    """Marks as a group keeps them (strictly increasing times, bursts and quiet stretches); every
    interpolation point and every (start, end) label is the same, to the bit, as the scans gave."""
    rng = random.Random(seed)
    marks, t, arrivals, within = [], 100.0, 0.0, 0.0
    for _ in range(rng.randint(1, 300)):
        t += rng.choice([0.25, 0.25, 0.5, 1.7])
        arrivals += rng.choice([0, 0, 0, 1, 3, 8])
        within += rng.choice([0, 0, 1, 2, 5])
        marks.append(_mark(t, arrivals, within))
    times = [m.time for m in marks]
    probes = times + [x + d for x in times for d in (-0.3, -0.1, 0.07, 0.25)] + [times[0] - 1, times[-1] + 1]
    for x in probes:
        assert br.within_at(marks, x) == _walk_within_at(marks, x)
        after = br.first_mark_after(marks, x)
        assert (after.time if after else None) == next((m.time for m in marks if m.time > x), None)
    labelled = 0
    for _ in range(300):
        start = rng.choice(times)
        end = rng.choice([m for m in times if m >= start])
        shift, slo = rng.choice([0.0, 0.3, 1.0]), rng.choice([None, 0.5, 2.0])
        got = br.arrival_breach_outcome(marks, start, end, shift, slo)
        assert got == _walk_outcome(marks, start, end, shift, slo)
        labelled += got is not None
    assert labelled > 0 or len(marks) < 5
