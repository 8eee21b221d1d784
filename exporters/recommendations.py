"""Recommendations as JSON lines on stdout (the pod log), deduplicated and rate-limited.

One object per line (DESIGN.md): `ts`, `level`, `event="recommendation"`, `code`, `severity`,
`message`, `evidence`, `confidence`, `action`, `target`, `role`, `cause`, `remedy`. The same
(code, target, cause) is printed at most once per `min_interval_seconds`: a persistent condition
repeats as a reminder, not as a flood, and a new cause prints at once. `action` is
`Recommendation.action` (calibration gating happens upstream).
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from collections.abc import Iterable
from typing import Any, TextIO

from phaselens.model import Recommendation

_LEVEL_BY_SEVERITY = {"info": "info", "warning": "warning", "critical": "error"}


def _clean(value: float | str) -> float | str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; an unknown number is null, never a made-up value
    return value


def recommendation_fields(rec: Recommendation) -> dict[str, Any]:
    """The recommendation part of a log line (also used by `replay --jsonl`)."""
    return {
        "code": rec.code,
        "severity": rec.severity,
        "message": rec.message,
        "evidence": {key: _clean(value) for key, value in rec.evidence.items()},
        "confidence": round(rec.confidence, 4),
        "action": rec.action,
        "target": rec.target,
        "role": rec.role,
        "cause": rec.cause,
        "remedy": rec.remedy,
    }


def recommendation_line(rec: Recommendation, ts: float) -> str:
    payload = {
        "ts": round(ts, 3),
        "level": _LEVEL_BY_SEVERITY.get(rec.severity, "info"),
        "event": "recommendation",
        **recommendation_fields(rec),
    }
    return json.dumps(payload, separators=(",", ":"), allow_nan=False)


class RecommendationSink:
    """Writes recommendations that pass the per-(code, target) rate limit; counts what it printed."""

    def __init__(self, min_interval_seconds: float, stream: TextIO | None = None) -> None:
        self.min_interval = min_interval_seconds
        self._stream = stream
        self._last_sent: dict[tuple[str, str, str], float] = {}
        self.sent: Counter[str] = Counter()
        self.suppressed = 0

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout

    def admit(self, rec: Recommendation, ts: float) -> bool:
        key = (rec.code, rec.target, rec.cause)
        last = self._last_sent.get(key)
        if last is not None and ts - last < self.min_interval:
            self.suppressed += 1
            return False
        self._last_sent[key] = ts
        return True

    def emit(self, recommendations: Iterable[Recommendation], ts: float) -> list[Recommendation]:
        """Print the admitted ones (deduplicated within this call too); returns them."""
        printed = []
        for rec in recommendations:
            if self.admit(rec, ts):
                self.stream.write(recommendation_line(rec, ts) + "\n")
                self.sent[rec.code] += 1
                printed.append(rec)
        if printed:
            self.stream.flush()
        return printed
