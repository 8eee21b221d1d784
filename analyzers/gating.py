"""Calibration gating (VGAC's idea): a prediction earns the right to be acted on only while its
rolling calibration is good.

A recommendation rests on a prediction when its evidence says `basis="prediction"` or its code is
in `PREDICTIVE_CODES`. For those:

* calibration unknown (fewer labelled requests than the calibration's minimum) -> confidence capped
  just below the `recommend` tier, so the action is `escalate` (a person decides); evidence
  `gate="calibration_unproven"`;
* rolling ECE above `limit` -> the same cap, evidence `gate="calibration_error_above_limit"` and the
  ECE: the recommendation is still logged (people should see it) but never `act`;
* rolling ECE within the limit -> confidence unchanged, evidence records the ECE it was checked against.

The report is the calibration of the probability that was published (`phaselens_slo_breach_probability`
after recalibration and the shrink toward the structural probability), never of an internal score;
its Brier score travels in the evidence beside the ECE.

Recommendations built on measurements alone pass through untouched. Nothing is dropped: a
downgraded finding is still useful to a person, and dropping it would hide that the model drifted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from phaselens.analyzers.breach import CalibrationReport
from phaselens.model import Recommendation

PREDICTIVE_CODES: frozenset[str] = frozenset(
    {
        "SLO_BREACH_PREDICTED",
        "UTILIZATION_PAST_KNEE",
        "KV_PRESSURE_IMMINENT",
        "PEAK_HOUR_CONTENTION",
    }
)
ESCALATE_CAP = 0.59
"""Just below the `recommend` tier of phaselens.model.action_for (0.60)."""


def is_predictive(rec: Recommendation) -> bool:
    return rec.evidence.get("basis") == "prediction" or rec.code in PREDICTIVE_CODES


def gate_recommendation(rec: Recommendation, report: CalibrationReport | None, limit: float) -> Recommendation:
    if not is_predictive(rec):
        return rec
    evidence = dict(rec.evidence)
    if report is None:
        evidence["gate"] = "calibration_unproven"
        return replace(rec, confidence=min(rec.confidence, ESCALATE_CAP), evidence=evidence)
    evidence["calibration_error"] = round(report.ece, 4)
    evidence["brier_score"] = round(report.brier, 4)
    evidence["calibration_error_limit"] = limit
    if report.ece > limit:
        evidence["gate"] = "calibration_error_above_limit"
        return replace(rec, confidence=min(rec.confidence, ESCALATE_CAP), evidence=evidence)
    evidence["gate"] = "calibrated"
    return replace(rec, evidence=evidence)


def gate_recommendations(
    recs: Sequence[Recommendation],
    reports: Mapping[str, CalibrationReport | None],
    limit: float,
) -> list[Recommendation]:
    """Gate each recommendation by the calibration of its target (`reports[rec.target]`).

    A target with no entry falls back to the pooled report under key "" if present.
    """
    return [gate_recommendation(rec, reports.get(rec.target, reports.get("")), limit) for rec in recs]
