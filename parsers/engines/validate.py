"""Validation of canonical series: a value that cannot be true is missing, never clamped.

Every engine adapter's output goes through `validate_snapshot` (from `map_exposition`). A
canonical series whose value breaks its kind's rule (canonical.py: RATIOS, COUNT_GAUGES,
COUNTERS, the rest histograms) is left out of the snapshot for that scrape and reported as a
`SeriesRejection`; the pipeline counts it in `phaselens_parse_errors_total` and logs
`series_rejected` once per (target, series, reason). A 0.36 KV cache reported as 7.5 must not
export 1.0 to the decode autoscaler; an infinite queue must not predict a day of waiting.

Rules (docs/hardening.md lists them with the reasons):
- ratio: finite and within 0..1 after the adapter's unit conversion (a rule that reads a 0-100
  percentage converts it first, see mapping.py `fraction_or_percent`);
- count gauge and counter: finite and >= 0;
- histogram: bucket bounds increasing, cumulative counts finite, >= 0 and non-decreasing, the
  +Inf bucket equal to `_count`, a finite `_sum` >= 0 (every canonical histogram observes
  durations, token counts or bytes).
`check_scalar` and `check_histogram` are the rules on their own, for adapters that want them.
"""

from __future__ import annotations

import math
from dataclasses import replace

from phaselens.model import EngineSnapshot, Histogram, Labels, SeriesRejection, label_value
from phaselens.parsers.engines.canonical import COUNT_GAUGES, COUNTERS, LATEST_GAUGES, RATIOS


def check_scalar(name: str, value: float) -> str | None:
    """Why `value` cannot be canonical series `name`, or None. NaN is "no value" and passes (the
    adapters skip it)."""
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "not finite"
    if name in RATIOS and not 0.0 <= value <= 1.0:
        return "ratio outside 0..1"
    if (name in COUNTERS or name in COUNT_GAUGES) and value < 0:
        return "negative count"
    if name in LATEST_GAUGES and value < 0:
        return "negative duration"
    return None


def check_histogram(hist: Histogram) -> str | None:
    """Why `hist` cannot be a histogram of durations, tokens or bytes, or None."""
    previous_bound = -math.inf
    previous_count = 0.0
    for bound, count in hist.buckets:
        if not bound > previous_bound:
            return "bucket bounds not increasing"
        if not math.isfinite(count) or count < 0:
            return "bucket count not finite or negative"
        if count < previous_count:
            return "bucket counts not cumulative (non-monotonic)"
        previous_bound, previous_count = bound, count
    if hist.count is not None:
        if not math.isfinite(hist.count) or hist.count < 0:
            return "count not finite or negative"
        if hist.buckets and math.isinf(hist.buckets[-1][0]) and not math.isclose(
            hist.buckets[-1][1], hist.count, rel_tol=1e-9, abs_tol=1e-9
        ):
            return "+Inf bucket differs from _count"
    if hist.sum is not None and (not math.isfinite(hist.sum) or hist.sum < 0):
        return "sum not finite or negative"
    return None


def _group(labels: Labels) -> tuple[str, str]:
    return label_value(labels, "model_name"), label_value(labels, "engine")


def validate_snapshot(snapshot: EngineSnapshot, known: tuple[SeriesRejection, ...] = ()) -> EngineSnapshot:
    """The snapshot without the series that fail their rule, each counted as a parse issue.

    A rejected series takes its siblings (same canonical name, model and engine, other extra labels:
    the other `finished_reason`s of `request_success`) with it for this scrape: analyzers sum them,
    and a sum missing one part would be a confident undercount. `known` are rejections found
    earlier (duplicates, already counted by the parser): their siblings go too.
    """
    rejected: list[SeriesRejection] = []
    for (name, labels), value in snapshot.scalars.items():
        reason = check_scalar(name, value)
        if reason is not None:
            rejected.append(SeriesRejection(name, labels, reason))
    for (name, labels), hist in snapshot.histograms.items():
        reason = check_histogram(hist)
        if reason is not None:
            rejected.append(SeriesRejection(name, labels, reason))
    if not rejected and not known:
        return snapshot
    poisoned = {(r.series, _group(r.labels)) for r in (*known, *rejected)}
    scalars = {key: value for key, value in snapshot.scalars.items() if (key[0], _group(key[1])) not in poisoned}
    histograms = {key: hist for key, hist in snapshot.histograms.items()
                  if (key[0], _group(key[1])) not in poisoned}
    return replace(
        snapshot,
        scalars=scalars,
        histograms=histograms,
        rejected=(*snapshot.rejected, *known, *rejected),
        parse_issues=snapshot.parse_issues + len(rejected),
    )
