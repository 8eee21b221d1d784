"""Online SLO-breach probability: P(a request arriving now misses the TTFT SLO).

Model: logistic regression over a few queue features, trained online (Adagrad SGD) on fractional
labels. The label of a prediction made at time t is what happened next: among the requests that
got their first token in (t, t + horizon], the fraction whose TTFT exceeded the SLO (from the
TTFT histogram's delta). Each example is weighted by that number of requests, so the model is
calibrated per request, which is what a client sees.

The predictor is an explicit state object that the pipeline owns (`QueueIntelligence`) and
updates in place: `predict(features)` never changes it, `update(features, outcome, weight)` does.
`RollingCalibration` scores the published probabilities against the same labels: ECE, Brier
score, AUROC over the last N labelled predictions.

The first feature is a structural probability, P(W + X > SLO): X the engine's own prefill time
(its histogram over the window: what a request costs once scheduled), W the predicted queue wait
(Gamma, from the Little model: L_q departures at the observed rate). The starting weights are a
prior, not a blank: weight 1 on the logit of that probability and 0 elsewhere, so the first minutes
already give the queueing model's answer; the regression then learns the corrections (client
overheads, burst dynamics). Calibration gating (analyzers/gating.py) keeps it from being acted on
until enough labels prove it calibrated.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

FEATURE_NAMES: tuple[str, ...] = (
    "logit_structural_probability",
    "log_predicted_ttft_over_slo",
    "log1p_queue_depth",
    "recent_breach_fraction",
    "log_recent_p90_ttft_over_slo",
    "kv_usage",
    "clipped_utilization",
    "queue_growth_per_second",
    # inputs that come before the queue a scrape shows
    "log_arrivals_over_free_slots",
    "log_arrival_trend",
    "upstream_arrivals_ahead_per_slot",
    "log_prompt_tokens_over_kv_free_tokens",
)
PRIOR_WEIGHTS: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
PRIOR_BIAS = 0.0


@dataclass(frozen=True, slots=True)
class BreachFeatures:
    """Inputs of the breach model; all finite, bounded transforms of what the sidecar sees."""

    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.values) != len(FEATURE_NAMES):
            raise ValueError(f"expected {len(FEATURE_NAMES)} features, got {len(self.values)}")
        if not all(math.isfinite(v) for v in self.values):
            raise ValueError(f"breach features must be finite: {self.values}")

    def as_dict(self) -> dict[str, float]:
        return dict(zip(FEATURE_NAMES, self.values, strict=True))


def make_features(
    *,
    slo_seconds: float,
    structural_probability: float,
    predicted_wait_seconds: float,
    queue_depth: float,
    recent_p50_ttft_seconds: float | None,
    recent_p90_ttft_seconds: float | None,
    recent_breach_fraction: float | None,
    kv_usage: float | None,
    utilization: float | None,
    queue_growth_per_second: float,
    precursors: Precursors | None = None,
) -> BreachFeatures:
    """Bounded feature transforms; missing inputs take their neutral value (no traffic = no signal)."""
    pre = precursors or Precursors()
    if slo_seconds <= 0:
        raise ValueError("TTFT SLO must be positive")
    floor = 0.01 * slo_seconds
    p50 = recent_p50_ttft_seconds if recent_p50_ttft_seconds is not None else floor
    p90 = recent_p90_ttft_seconds if recent_p90_ttft_seconds is not None else floor
    predicted_ttft = max(floor, predicted_wait_seconds + p50)
    sp = _clamp(structural_probability, 0.002, 0.998)
    return BreachFeatures(
        (
            math.log(sp / (1 - sp)),
            _clamp(math.log(predicted_ttft / slo_seconds), -5.0, 5.0),
            _clamp(math.log1p(max(0.0, queue_depth)), 0.0, 10.0),
            _clamp(recent_breach_fraction or 0.0, 0.0, 1.0),
            _clamp(math.log(max(floor, p90) / slo_seconds), -5.0, 5.0),
            _clamp(kv_usage or 0.0, 0.0, 1.0),
            _clamp(utilization or 0.0, 0.0, 3.0),
            _clamp(queue_growth_per_second, -10.0, 10.0),
            *pre.values(),
        )
    )


@dataclass(frozen=True, slots=True)
class Precursors:
    """What precedes the queue a scrape shows; None = not known (the feature is then neutral, 0).

    - arrival_rate: arrivals/s over the last scrape step (a frontend's `requests_started` where one is
      scraped, else the engine's conservation count), `slots` the batch cap (effective concurrency),
      `running` / `waiting` the engine now: log((arrivals in the next second + 1) / (free slots + 1));
    - short / long arrival-rate EWMAs (10 s / 300 s): log((short + 0.1) / (long + 0.1));
    - upstream_rate: the frontend's arrivals/s, against the engine's own count for the same step:
      requests accepted upstream that the engine does not show yet, per slot;
    - prompt tokens waiting (waiting + next second's arrivals, times the mean prompt length) against
      the KV headroom in tokens ((1 - usage) x pool size): log((demand + 1) / (headroom + 1)).
    """

    arrival_rate: float | None = None
    engine_arrival_rate: float | None = None
    upstream_rate: float | None = None
    slots: float | None = None
    running: float = 0.0
    waiting: float = 0.0
    trend_short: float | None = None
    trend_long: float | None = None
    mean_prompt_tokens: float | None = None
    kv_usage: float | None = None
    kv_tokens: float | None = None

    def values(self) -> tuple[float, float, float, float]:
        rate = self.arrival_rate if self.arrival_rate is not None else None
        fill = 0.0
        if rate is not None and self.slots is not None and self.slots >= 1:
            free = max(0.0, self.slots - self.running - self.waiting)
            fill = _clamp(math.log((rate + 1) / (free + 1)), -5.0, 5.0)
        trend = 0.0
        if self.trend_short is not None and self.trend_long is not None:
            trend = _clamp(math.log((self.trend_short + 0.1) / (self.trend_long + 0.1)), -3.0, 3.0)
        ahead = 0.0
        if self.upstream_rate is not None and self.engine_arrival_rate is not None:
            ahead = _clamp((self.upstream_rate - self.engine_arrival_rate) / max(1.0, self.slots or 1.0), -3.0, 3.0)
        kv = 0.0
        if self.mean_prompt_tokens is not None and self.kv_usage is not None and self.kv_tokens is not None:
            demand = (self.waiting + (rate or 0.0)) * self.mean_prompt_tokens
            headroom = max(0.0, 1 - self.kv_usage) * self.kv_tokens
            kv = _clamp(math.log((demand + 1) / (headroom + 1)), -5.0, 5.0)
        return fill, trend, ahead, kv


def _clamp(value: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, value))


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1 / (1 + math.exp(-z))
    e = math.exp(z)
    return e / (1 + e)


@dataclass
class BreachPredictor:
    """Logistic regression with Adagrad updates on weighted, fractional labels."""

    learning_rate: float = 0.1
    l2: float = 1e-4
    max_weight: float = 50.0
    weights: list[float] = field(default_factory=lambda: list(PRIOR_WEIGHTS))
    bias: float = PRIOR_BIAS
    grad_sq: list[float] = field(default_factory=lambda: [1e-6] * (len(FEATURE_NAMES) + 1))
    examples: float = 0.0

    def predict(self, features: BreachFeatures) -> float:
        z = self.bias + sum(w * x for w, x in zip(self.weights, features.values, strict=True))
        return _sigmoid(z)

    def update(self, features: BreachFeatures, outcome: float, weight: float = 1.0) -> None:
        """One weighted gradient step of the log loss toward `outcome` (a fraction in [0, 1])."""
        if not 0.0 <= outcome <= 1.0 or not math.isfinite(outcome):
            raise ValueError(f"outcome must be a fraction in [0, 1], got {outcome}")
        if weight <= 0:
            return
        # Cap the per-example weight so one huge window cannot wipe out what was learned; repeat
        # the step a few times for heavy windows so their influence still grows with their size.
        w = min(weight, self.max_weight)
        steps = max(1, int(math.log2(1 + w)))
        for _ in range(steps):
            error = (self.predict(features) - outcome) * w / steps
            grads = [error * x + self.l2 * wt for x, wt in zip(features.values, self.weights, strict=True)]
            grads.append(error)
            for i, g in enumerate(grads):
                self.grad_sq[i] += g * g
                step = self.learning_rate * g / math.sqrt(self.grad_sq[i])
                if i < len(self.weights):
                    self.weights[i] -= step
                else:
                    self.bias -= step
        self.examples += weight

    def to_state(self) -> dict[str, Any]:
        return {
            "weights": list(self.weights),
            "bias": self.bias,
            "grad_sq": list(self.grad_sq),
            "examples": self.examples,
            "features": list(FEATURE_NAMES),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> BreachPredictor:
        """Restore; a state written for other features (or damaged) gives a fresh predictor."""
        try:
            if list(state.get("features", [])) != list(FEATURE_NAMES):
                return cls()
            weights = [float(w) for w in state["weights"]]
            grad_sq = [float(g) for g in state["grad_sq"]]
            bias = float(state["bias"])
            examples = float(state.get("examples", 0.0))
        except (KeyError, TypeError, ValueError, AttributeError):
            return cls()
        values = [*weights, *grad_sq, bias, examples]
        if (
            len(weights) != len(FEATURE_NAMES)
            or len(grad_sq) != len(FEATURE_NAMES) + 1
            or not all(math.isfinite(v) for v in values)
        ):
            return cls()
        return cls(weights=weights, bias=bias, grad_sq=grad_sq, examples=examples)


# ----------------------------------------------------------------------------- recalibration

STRATA: tuple[str, ...] = ("idle", "busy", "queued")


def load_stratum(waiting: float, running: float) -> str:
    """The engine's state at the last scrape: idle (<= 1 request, no queue), busy, or queued."""
    if waiting >= 0.5:
        return "queued"
    return "idle" if running <= 1.0 else "busy"


@dataclass
class BinnedRecalibration:
    """Online histogram-binning recalibration of the regression's output, per load stratum.

    Histogram binning (Zadrozny & Elkan, ICML 2001): the published probability for a raw score in
    bin b is the observed breach share of the labelled arrivals whose raw score fell in b, shrunk
    toward the raw score by `prior_requests` pseudo-arrivals:

        p = (prior_requests * raw + breaches_b) / (prior_requests + arrivals_b)

    Bins are the 10 equal-width bins the ECE is scored on, kept separately per stratum (idle, busy,
    queued at the last scrape), so the hundreds of labelled arrivals of an overload cannot move the
    probability published for a quiet engine, whose own arrivals are few. Counts decay with a
    half-life in seconds so that the table follows a workload that changes.
    """

    bins: int = 10
    prior_requests: float = 5.0
    half_life_seconds: float = 600.0
    cells: dict[tuple[str, int], list[float]] = field(default_factory=dict)  # -> [breaches, arrivals, time]

    def _bin(self, raw: float) -> int:
        return min(self.bins - 1, max(0, int(raw * self.bins)))

    def _decayed(self, cell: list[float], now: float) -> tuple[float, float]:
        age = max(0.0, now - cell[2])
        keep = 0.5 ** (age / self.half_life_seconds) if self.half_life_seconds > 0 else 1.0
        return cell[0] * keep, cell[1] * keep

    def apply(self, stratum: str, raw: float, now: float) -> float:
        cell = self.cells.get((stratum, self._bin(raw)))
        if cell is None:
            return raw
        breaches, arrivals = self._decayed(cell, now)
        return _clamp((self.prior_requests * raw + breaches) / (self.prior_requests + arrivals), 0.0, 1.0)

    def update(self, stratum: str, raw: float, outcome: float, arrivals: float, now: float) -> None:
        if arrivals <= 0 or not 0.0 <= outcome <= 1.0:
            return
        key = (stratum, self._bin(raw))
        cell = self.cells.get(key)
        breaches, total = self._decayed(cell, now) if cell is not None else (0.0, 0.0)
        self.cells[key] = [breaches + outcome * arrivals, total + arrivals, now]

    def to_state(self) -> list[list[Any]]:
        return [[stratum, b, *cell] for (stratum, b), cell in sorted(self.cells.items())]

    @classmethod
    def from_state(cls, rows: Any) -> BinnedRecalibration:
        out = cls()
        try:
            for stratum, b, breaches, arrivals, when in rows or []:
                values = (float(breaches), float(arrivals), float(when))
                if (
                    stratum in STRATA
                    and isinstance(b, int)
                    and 0 <= b < out.bins
                    and all(math.isfinite(v) for v in values)
                    and 0.0 <= values[0] <= values[1]
                ):
                    out.cells[(stratum, b)] = list(values)
        except (TypeError, ValueError):
            return cls()
        return out


@dataclass
class EvidenceShrink:
    """How far the published probability may move from the structural one toward the learned one.

    Two forecasters, per load stratum: `s` the structural probability P(W + X > SLO) (no learning)
    and `r` the learned one (the regression, recalibrated by `BinnedRecalibration`). Each labelled
    prediction adds the difference of their log losses on the arrivals it was scored on (fractional
    label y, n arrivals: n (l(s) - l(r)), l(p) = -(y ln p + (1 - y) ln(1 - p)), p clipped to
    [0.001, 0.999]) to an evidence sum E in nats, decayed with a half-life and kept within
    +-`max_evidence_nats`. The published probability is the mixture

        p = (1 - w) s + w r,   w = 1 / (1 + e^-(logit(prior) + E))

    Without the bound this is the Bayes mixture of the two (Vovk's aggregating algorithm, eta = 1):
    w is the posterior weight of the learned forecaster given the labels so far. The bound is what
    fixed-share (Herbster & Warmuth 1998) buys: weight that was earned on one stretch of load can be
    lost within a nat or two when the learned part starts to hurt, instead of after as many nats as it
    had won. Consequences (prior 1/4, 1 nat): with no evidence w = 1/4, and w stays within
    [0.11, 0.48]: the structural probability keeps at least half the weight, however much the
    learned part seemed to win; per request the published log loss exceeds the structural one's by
    at most -ln(1 - w): ln(4/3) = 0.29 nats before any evidence, 0.12 nats once the learned part has
    lost a nat in that stratum.
    """

    prior: float = 0.25
    max_evidence_nats: float = 1.0
    half_life_seconds: float = 600.0
    cells: dict[str, list[float]] = field(default_factory=dict)  # stratum -> [evidence nats, time]

    def _evidence(self, stratum: str, now: float) -> float:
        cell = self.cells.get(stratum)
        if cell is None:
            return 0.0
        keep = 0.5 ** (max(0.0, now - cell[1]) / self.half_life_seconds) if self.half_life_seconds > 0 else 1.0
        return cell[0] * keep

    def weight(self, stratum: str, now: float) -> float:
        """Weight of the learned forecaster in `stratum`."""
        return _sigmoid(math.log(self.prior / (1 - self.prior)) + self._evidence(stratum, now))

    def apply(self, stratum: str, structural: float, learned: float, now: float) -> float:
        w = self.weight(stratum, now)
        return _clamp((1 - w) * structural + w * learned, 0.0, 1.0)

    def update(
        self, stratum: str, structural: float, learned: float, outcome: float, arrivals: float, now: float
    ) -> None:
        if arrivals <= 0 or not 0.0 <= outcome <= 1.0:
            return
        gain = arrivals * (_log_loss(structural, outcome) - _log_loss(learned, outcome))
        cap = self.max_evidence_nats
        self.cells[stratum] = [_clamp(self._evidence(stratum, now) + gain, -cap, cap), now]


def _log_loss(p: float, y: float) -> float:
    q = _clamp(p, 0.001, 0.999)
    return -(y * math.log(q) + (1 - y) * math.log(1 - q))


# ----------------------------------------------------------------------------- calibration


@dataclass(frozen=True, slots=True)
class CalibrationReport:
    ece: float
    brier: float
    auroc: float | None
    weight: float
    examples: int


def expected_calibration_error(
    probabilities: Sequence[float], outcomes: Sequence[float], weights: Sequence[float], bins: int = 10
) -> float | None:
    """Weighted ECE with equal-width bins: sum over bins of |mean p - mean outcome| * bin share."""
    total = sum(weights)
    if total <= 0:
        return None
    sums_p = [0.0] * bins
    sums_y = [0.0] * bins
    sums_w = [0.0] * bins
    for p, y, w in zip(probabilities, outcomes, weights, strict=True):
        b = min(bins - 1, int(p * bins))
        sums_p[b] += p * w
        sums_y[b] += y * w
        sums_w[b] += w
    return sum(abs(sp - sy) for sp, sy, sw in zip(sums_p, sums_y, sums_w, strict=True) if sw > 0) / total


def brier_score(probabilities: Sequence[float], outcomes: Sequence[float], weights: Sequence[float]) -> float | None:
    """Weighted Brier score; with fractional labels the irreducible within-window part is included."""
    total = sum(weights)
    if total <= 0:
        return None
    # A window with outcome fraction y is y*w positives and (1-y)*w negatives: E[(p - Y)^2].
    return (
        sum(w * (y * (1 - p) ** 2 + (1 - y) * p**2) for p, y, w in zip(probabilities, outcomes, weights, strict=True))
        / total
    )


def auroc(probabilities: Sequence[float], outcomes: Sequence[float], weights: Sequence[float]) -> float | None:
    """Weighted Mann-Whitney AUROC; an example counts y*w as positive and (1-y)*w as negative.

    Ties in score count one half. None when there are no positives or no negatives.
    """
    rows: dict[float, list[float]] = {}
    for p, y, w in zip(probabilities, outcomes, weights, strict=True):
        acc = rows.setdefault(p, [0.0, 0.0])
        acc[0] += y * w
        acc[1] += (1 - y) * w
    total_pos = sum(v[0] for v in rows.values())
    total_neg = sum(v[1] for v in rows.values())
    if total_pos <= 0 or total_neg <= 0:
        return None
    concordant = 0.0
    neg_below = 0.0
    for score in sorted(rows):
        pos, neg = rows[score]
        concordant += pos * (neg_below + neg / 2)
        neg_below += neg
    return concordant / (total_pos * total_neg)


@dataclass
class RollingCalibration:
    """The last `capacity` labelled predictions (p, outcome fraction, weight)."""

    capacity: int = 600
    min_weight: float = 50.0
    rows: deque[tuple[float, float, float]] = field(default_factory=deque)
    # The last report and the `_added` it was computed at: the sidecar asks every tick (4 a second
    # at `--interval 0.25`) and the rows change only when a prediction is labelled.
    _added: int = field(default=0, init=False, repr=False, compare=False)
    _report: tuple[int, int, CalibrationReport | None] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def add(self, probability: float, outcome: float, weight: float) -> None:
        if weight <= 0:
            return
        self._added += 1
        self.rows.append((probability, outcome, weight))
        while len(self.rows) > self.capacity:
            self.rows.popleft()

    def report(self) -> CalibrationReport | None:
        """None until `min_weight` requests were labelled: an unproven model has no calibration."""
        held = self._report
        if held is not None and held[0] == self._added and held[1] == len(self.rows):
            return held[2]
        found = self._compute()
        self._report = (self._added, len(self.rows), found)
        return found

    def _compute(self) -> CalibrationReport | None:
        if not self.rows:
            return None
        ps, ys, ws = zip(*self.rows, strict=True)
        weight = sum(ws)
        if weight < self.min_weight:
            return None
        ece = expected_calibration_error(ps, ys, ws)
        brier = brier_score(ps, ys, ws)
        if ece is None or brier is None:
            return None
        return CalibrationReport(ece=ece, brier=brier, auroc=auroc(ps, ys, ws), weight=weight, examples=len(self.rows))

    def to_state(self) -> list[list[float]]:
        return [list(r) for r in self.rows]

    @classmethod
    def from_state(cls, rows: Any, capacity: int = 600, min_weight: float = 50.0) -> RollingCalibration:
        out = cls(capacity=capacity, min_weight=min_weight)
        try:
            for p, y, w in rows or []:
                p, y, w = float(p), float(y), float(w)
                if 0 <= p <= 1 and 0 <= y <= 1 and w > 0 and math.isfinite(w):
                    out.add(p, y, w)
        except (TypeError, ValueError):
            return cls(capacity=capacity, min_weight=min_weight)
        return out


# ----------------------------------------------------------------------------- labels


@dataclass(frozen=True, slots=True)
class TtftTally:
    """Cumulative TTFT histogram position at one scrape: requests so far, and those within the SLO."""

    time: float
    count: float
    within_slo: float


def tally_from_buckets(time: float, buckets: Sequence[tuple[float, float]], slo_seconds: float) -> TtftTally | None:
    """Read (count, count <= SLO) from cumulative buckets; between bounds, interpolate linearly."""
    if not buckets:
        return None
    count = buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, cumulative in buckets:
        if bound >= slo_seconds:
            if math.isinf(bound) or bound == lower_bound:
                return TtftTally(time, count, lower_count if math.isinf(bound) else cumulative)
            share = (slo_seconds - lower_bound) / (bound - lower_bound)
            return TtftTally(time, count, lower_count + share * (cumulative - lower_count))
        lower_bound, lower_count = bound, cumulative
    return TtftTally(time, count, count)


def breach_outcome(start: TtftTally, end: TtftTally) -> tuple[float, float] | None:
    """(fraction over the SLO, number of requests) between two tallies; None on reset or no traffic."""
    n = end.count - start.count
    within = end.within_slo - start.within_slo
    if n <= 0 or within < -1e-9 or within > n + 1e-9:
        return None
    return _clamp(1 - within / n, 0.0, 1.0), n


@dataclass(frozen=True, slots=True)
class PendingPrediction:
    time: float
    features: BreachFeatures
    probability: float
    tally: TtftTally
    shift: float = 0.0  # typical within-SLO TTFT when predicted: aligns first tokens to arrivals
    raw: float | None = None  # the regression's own output, before recalibration
    stratum: str = "busy"  # load stratum at the prediction (BinnedRecalibration)
    structural: float | None = None  # the structural probability P(W + X > SLO) (EvidenceShrink)
    learned: float | None = None  # the recalibrated regression, before the shrink
    blended: float | None = None  # after the shrink, before the final recalibration (IsotonicRecalibration)


# ----------------------------------------------------------------------------- per-arrival labels


@dataclass(frozen=True, slots=True)
class ArrivalMark:
    """One tick of a group: cumulative arrivals (by conservation) and the TTFT tally at that time."""

    time: float
    arrivals: float
    tally: TtftTally


def _mark_time(mark: ArrivalMark) -> float:
    return mark.time


def within_at(marks: Sequence[ArrivalMark], t: float) -> float | None:
    """Cumulative within-SLO first tokens at time t, linear between the marks around it.

    `marks` in strictly increasing time (as a group's marks are kept), so the pair around t is
    found by bisection: the sidecar asks this for hundreds of marks on every labelled tick."""
    if not marks or t < marks[0].time or t > marks[-1].time:
        return None
    if len(marks) == 1:
        return marks[0].tally.within_slo  # t is its time
    # the first pair (a, b) with a.time <= t <= b.time: b is the first mark at or after t
    right = max(1, bisect.bisect_left(marks, t, key=_mark_time))
    a, b = marks[right - 1], marks[right]
    if b.time <= a.time:
        return b.tally.within_slo
    share = (t - a.time) / (b.time - a.time)
    return a.tally.within_slo + share * (b.tally.within_slo - a.tally.within_slo)


def mark_at(marks: Sequence[ArrivalMark], t: float) -> ArrivalMark | None:
    """The mark at exactly time t (marks in strictly increasing time)."""
    index = bisect.bisect_left(marks, t, key=_mark_time)
    return marks[index] if index < len(marks) and marks[index].time == t else None


def first_mark_after(marks: Sequence[ArrivalMark], t: float) -> ArrivalMark | None:
    """The first mark later than t (marks in strictly increasing time)."""
    index = bisect.bisect_right(marks, t, key=_mark_time)
    return marks[index] if index < len(marks) else None


def arrival_within_count(
    marks: Sequence[ArrivalMark], start: float, end: float, shift: float, slo: float | None = None
) -> tuple[float, float] | None:
    """(within-SLO first tokens counted for the requests that ARRIVED in (start, end], their number).

    The count is not clamped to the arrivals: a shifted window's edges can count a few first tokens
    of neighbouring arrivals, and the caller carries that excess to the next interval (clamping it
    away would bias the labels toward breaches). `arrival_breach_outcome` is the clamped fraction.
    `marks` in strictly increasing time.

    A request that arrives at x and gets its first token within the SLO does so at x + tau, tau <= SLO;
    counting within-SLO first tokens in (start + shift, end + shift], shift the typical such tau,
    counts those arrivals (edge effects cancel in expectation). Every other arrival missed the SLO,
    whether or not its first token has come yet: this is the per-request, per-arrival event a client
    scores, unlike the fraction of first tokens, which describes requests that arrived long ago.
    None without arrivals, before the marks reach `end + shift`, or across a counter reset.

    With `slo`, sparse traffic is counted exactly instead: the cancellation above needs arrivals on
    both sides of each edge, and with a request every few seconds part of a fast first token is
    interpolated into a neighbouring interval that has no arrivals (so no label), which made quiet
    periods look like ~10 % breaches. An in-SLO first token comes within `slo` of its arrival, so:
    when no request arrived from the last mark at or before `start - slo` to `start`, nothing can
    spill in and the count starts at `start`; when none arrived from `end` to the first mark at or
    after `end + slo`, every in-SLO first token of this interval's arrivals came by that mark, and
    only theirs, so the count runs to it.
    """
    at_start, at_end = mark_at(marks, start), mark_at(marks, end)
    if at_start is None or at_end is None:
        return None
    n = at_end.arrivals - at_start.arrivals
    lo_time, hi_time = start + shift, end + shift
    if slo is not None:
        before = bisect.bisect_right(marks, start - slo, key=_mark_time)  # marks[before - 1]: the last at or before
        earlier = marks[before - 1] if before else None
        if earlier is not None and at_start.arrivals - earlier.arrivals < 0.5:
            lo_time = start
        after = bisect.bisect_left(marks, end + slo, key=_mark_time)  # marks[after]: the first at or after
        later = marks[after] if after < len(marks) else None
        if later is not None and later.arrivals - at_end.arrivals < 0.5:
            hi_time = max(hi_time, later.time)
    lo, hi = within_at(marks, lo_time), within_at(marks, hi_time)
    if n < 0.5 or lo is None or hi is None:
        return None
    within = hi - lo
    if within < -1e-9:
        return None
    return max(0.0, within), n


def carried_outcome(within: float, arrivals: float, carried: float) -> tuple[float, float]:
    """(breach fraction of one interval's arrivals, the excess to carry to the next interval).

    `within` is the interval's own count of within-SLO first tokens (`arrival_within_count`),
    `carried` the excess of the interval before it. First tokens counted beyond the arrivals belong
    to neighbouring arrivals (the shifted window's edges): carried on, they telescope, so the labels'
    sum matches the arrivals' true breaches over a run instead of keeping only the noise's upward
    half, as clamping each interval at 0 breaches alone did."""
    total = within + max(0.0, carried)
    return _clamp(1 - total / arrivals, 0.0, 1.0), max(0.0, total - arrivals)


def arrival_breach_outcome(
    marks: Sequence[ArrivalMark], start: float, end: float, shift: float, slo: float | None = None
) -> tuple[float, float] | None:
    """(fraction of the requests that arrived in (start, end] which missed the SLO, their number):
    `arrival_within_count` clamped, for one interval on its own."""
    counted = arrival_within_count(marks, start, end, shift, slo)
    if counted is None:
        return None
    within, n = counted
    return _clamp(1 - within / n, 0.0, 1.0), n


@dataclass
class IsotonicRecalibration:
    """Online recalibration of the published probability, per load stratum: histogram binning shrunk
    toward the input by evidence, made monotone by isotonic regression.

    Per stratum and per bin b of the input p (the 10 equal-width bins the ECE is scored on), with the
    labelled arrivals whose input fell in b (counts halving every `half_life_seconds`): N_b arrivals,
    B_b breaches, m_b their mean input. The bin's posterior mean breach rate under a Beta prior of
    `prior_requests` pseudo-arrivals centred on the input is

        r_b = (k m_b + B_b) / (k + N_b)

    Pool-adjacent-violators (weights k + N_b) makes the r_b non-decreasing in b; the published value
    is the linear interpolation of the points (m_b, r_b) between the anchors (0, 0) and (1, 1).
    No evidence: the identity (p is published as it is). Few labels: close to it. The map is
    non-decreasing in p, so within a stratum it never reorders predictions.
    """

    bins: int = 10
    prior_requests: float = 5.0
    half_life_seconds: float = 600.0
    cells: dict[tuple[str, int], list[float]] = field(default_factory=dict)  # -> [breaches, arrivals, sum p*n, t]

    def _bin(self, p: float) -> int:
        return min(self.bins - 1, max(0, int(p * self.bins)))

    def _decayed(self, cell: list[float], now: float) -> tuple[float, float, float]:
        keep = 0.5 ** (max(0.0, now - cell[3]) / self.half_life_seconds) if self.half_life_seconds > 0 else 1.0
        return cell[0] * keep, cell[1] * keep, cell[2] * keep

    def points(self, stratum: str, now: float) -> list[tuple[float, float]]:
        """The monotone (input, output) points of a stratum, anchors included."""
        k = self.prior_requests
        rows: list[list[float]] = []  # [mean input, rate, weight]
        for b in range(self.bins):
            cell = self.cells.get((stratum, b))
            if cell is None:
                continue
            breaches, n, sum_p = self._decayed(cell, now)
            if n <= 1e-9:
                continue
            m = sum_p / n
            rows.append([m, (k * m + breaches) / (k + n), k + n])
        blocks: list[list[float]] = []  # pool adjacent violators: [sum w*m, sum w*r, sum w]
        for m, r, w in rows:
            blocks.append([w * m, w * r, w])
            while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] > blocks[-1][1] / blocks[-1][2]:
                last = blocks.pop()
                blocks[-1] = [blocks[-1][0] + last[0], blocks[-1][1] + last[1], blocks[-1][2] + last[2]]
        pts = [(0.0, 0.0), *((sm / w, sr / w) for sm, sr, w in blocks), (1.0, 1.0)]
        out: list[tuple[float, float]] = []
        for x, y in pts:  # the anchors may violate order against a pooled block: keep it monotone
            if out and y < out[-1][1]:
                y = out[-1][1]
            if out and x <= out[-1][0]:
                out[-1] = (out[-1][0], max(out[-1][1], y))
                continue
            out.append((x, y))
        return out

    def apply(self, stratum: str, p: float, now: float) -> float:
        if not any(key[0] == stratum for key in self.cells):
            return p
        pts = self.points(stratum, now)
        x = _clamp(p, 0.0, 1.0)
        for (x0, y0), (x1, y1) in itertools.pairwise(pts):
            if x0 <= x <= x1:
                return _clamp(y0 + (y1 - y0) * (x - x0) / (x1 - x0), 0.0, 1.0) if x1 > x0 else y1
        return x

    def update(self, stratum: str, p: float, outcome: float, arrivals: float, now: float) -> None:
        if arrivals <= 0 or not 0.0 <= outcome <= 1.0 or not 0.0 <= p <= 1.0:
            return
        key = (stratum, self._bin(p))
        cell = self.cells.get(key)
        breaches, n, sum_p = self._decayed(cell, now) if cell is not None else (0.0, 0.0, 0.0)
        self.cells[key] = [breaches + outcome * arrivals, n + arrivals, sum_p + p * arrivals, now]
