"""Calibration gating of recommendations that rest on predictions."""

from __future__ import annotations

from phaselens.analyzers import gating
from phaselens.analyzers.breach import CalibrationReport
from phaselens.analyzers.queue_intelligence import QueueIntelligence
from phaselens.model import Recommendation
from phaselens.settings import Settings


def rec(code: str, confidence: float, basis: str = "prediction", target: str = "t") -> Recommendation:
    return Recommendation(code, "warning", "m", {"basis": basis}, confidence, target=target)


def report(ece: float) -> CalibrationReport:
    return CalibrationReport(ece=ece, brier=0.05, auroc=0.95, weight=500, examples=100)


def test_calibrated_prediction_keeps_its_tier() -> None:
    out = gating.gate_recommendation(rec("SLO_BREACH_PREDICTED", 0.95), report(0.02), 0.05)
    assert out.action == "act" and out.confidence == 0.95
    assert out.evidence["gate"] == "calibrated" and out.evidence["calibration_error"] == 0.02
    assert out.evidence["brier_score"] == 0.05


def test_miscalibrated_prediction_is_escalated_not_dropped() -> None:
    out = gating.gate_recommendation(rec("SLO_BREACH_PREDICTED", 0.95), report(0.12), 0.05)
    assert out.action == "escalate"
    assert out.evidence["gate"] == "calibration_error_above_limit"
    assert out.code == "SLO_BREACH_PREDICTED"


def test_unproven_calibration_escalates() -> None:
    out = gating.gate_recommendation(rec("KV_PRESSURE_IMMINENT", 0.9), None, 0.05)
    assert out.action == "escalate" and out.evidence["gate"] == "calibration_unproven"


def test_measurement_recommendations_pass_untouched() -> None:
    measured = rec("ARRIVAL_BURST", 0.9, basis="measurement")
    assert gating.gate_recommendation(measured, None, 0.05) is measured
    other = Recommendation("KV_CACHE_PRESSURE", "warning", "m", {"kv": 0.97}, 0.9)
    assert gating.gate_recommendation(other, report(0.5), 0.05) is other


def test_low_confidence_is_never_raised() -> None:
    out = gating.gate_recommendation(rec("SLO_BREACH_PREDICTED", 0.4), report(0.01), 0.05)
    assert out.confidence == 0.4 and out.action == "escalate"


def test_per_target_reports_and_queue_intelligence_gate() -> None:
    recs = [rec("SLO_BREACH_PREDICTED", 0.9, target="good"), rec("SLO_BREACH_PREDICTED", 0.9, target="bad")]
    out = gating.gate_recommendations(recs, {"good": report(0.01), "bad": report(0.2)}, 0.05)
    assert [r.action for r in out] == ["act", "escalate"]
    # a QueueIntelligence that has seen nothing has no calibration: everything predictive escalates
    gated = QueueIntelligence().gate(recs, Settings(calibration_error_limit=0.05))
    assert all(r.action == "escalate" for r in gated)
