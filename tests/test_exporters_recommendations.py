"""Recommendation log lines: format, and the per-(code, target) rate limit."""

from __future__ import annotations

import io
import json

from phaselens.exporters.recommendations import RecommendationSink
from phaselens.model import Recommendation


def _rec(code: str = "KV_CACHE_PRESSURE", target: str = "decode", confidence: float = 0.9) -> Recommendation:
    return Recommendation(
        code, "warning", "Add decode replicas.", {"kv": 0.97, "nan": float("nan")}, confidence, target, "decode"
    )


def test_line_format_and_rate_limit() -> None:
    out = io.StringIO()
    sink = RecommendationSink(60.0, out)
    sink.emit([_rec(), _rec()], 1000.0)  # duplicate within one tick
    sink.emit([_rec()], 1030.0)  # within the interval
    sink.emit([_rec(target="prefill"), _rec(code="PREFILL_BOTTLENECK", confidence=0.5)], 1030.0)
    sink.emit([_rec()], 1060.0)  # interval passed: reminder
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(x["code"], x["target"], x["ts"]) for x in lines] == [
        ("KV_CACHE_PRESSURE", "decode", 1000.0),
        ("KV_CACHE_PRESSURE", "prefill", 1030.0),
        ("PREFILL_BOTTLENECK", "decode", 1030.0),
        ("KV_CACHE_PRESSURE", "decode", 1060.0),
    ]
    first = lines[0]
    assert first["event"] == "recommendation" and first["level"] == "warning"
    assert first["action"] == "act" and lines[2]["action"] == "escalate"
    assert first["evidence"] == {"kv": 0.97, "nan": None}
    assert set(first) == {
        "ts",
        "level",
        "event",
        "code",
        "severity",
        "message",
        "evidence",
        "confidence",
        "action",
        "target",
        "role",
        "cause",
        "remedy",
    }
    assert sink.suppressed == 2
