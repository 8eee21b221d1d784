"""Value types that flow between the pipeline stages.

Data flows one way: sources -> parsers -> window -> analyzers -> signals -> exporters.
Every type here is a frozen dataclass so a stage can never mutate what another stage holds.
No third-party imports in this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

Labels = tuple[tuple[str, str], ...]
"""Label pairs sorted by name: hashable and deterministic."""

Role = Literal["aggregated", "prefill", "decode"]
ROLES: tuple[Role, ...] = ("aggregated", "prefill", "decode")

EngineKind = Literal["vllm", "dynamo", "nixl", "sglang", "trtllm", "unknown"]


def make_labels(pairs: Mapping[str, str] | Iterable[tuple[str, str]]) -> Labels:
    """Sorted, hashable label tuple from a mapping or pairs."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    return tuple(sorted(items))


def label_value(labels: Labels, name: str, default: str = "") -> str:
    for key, value in labels:
        if key == name:
            return value
    return default


# --------------------------------------------------------------------------- exposition (parser output)


@dataclass(frozen=True, slots=True)
class Sample:
    """One exposition line: full sample name (with `_total`, `_bucket`, ...), labels, value."""

    name: str
    labels: Labels
    value: float
    timestamp: float | None = None


@dataclass(frozen=True, slots=True)
class Histogram:
    """A histogram series grouped from `_bucket`/`_sum`/`_count` lines (labels exclude `le`).

    `buckets` holds (upper bound, cumulative count) sorted by bound; the last bound is +inf when
    the exposition had it.
    """

    name: str
    labels: Labels
    buckets: tuple[tuple[float, float], ...]
    sum: float | None
    count: float | None


FamilyType = Literal[
    "counter", "gauge", "histogram", "gaugehistogram", "summary", "info", "stateset", "unknown"
]


@dataclass(frozen=True, slots=True)
class MetricFamily:
    """A family as `prometheus_client.parser` would name it (counter names without `_total`)."""

    name: str
    type: FamilyType
    help: str
    unit: str
    samples: tuple[Sample, ...]
    histograms: tuple[Histogram, ...] = ()


@dataclass(frozen=True, slots=True)
class ParseIssue:
    """A malformed line that was skipped: where it was and why."""

    line_no: int
    reason: str
    text: str


@dataclass(frozen=True, slots=True)
class Exposition:
    families: Mapping[str, MetricFamily]
    issues: tuple[ParseIssue, ...] = ()
    format: Literal["prometheus", "openmetrics"] = "prometheus"
    issue_count: int = 0
    """All malformed lines seen; `issues` keeps only the first few (a garbage body has millions)."""
    duplicates: tuple[tuple[str, Labels], ...] = ()
    """(sample name, labels) of series that appeared more than once: dropped, every copy (the first few)."""


# --------------------------------------------------------------------------- canonical snapshot (adapter output)


@dataclass(frozen=True, slots=True)
class SeriesRejection:
    """A canonical series left out of a snapshot because its value cannot be true (docs/hardening.md)."""

    series: str
    labels: Labels
    reason: str


@dataclass(frozen=True, slots=True)
class Suspect:
    """A metric an engine reports that a reader would likely misread (unit, meaning).

    `code` is stable (`ratio_in_percent`, `token_usage_max_of_pools`, `kv_utilization_pinned`);
    `metric` names the raw (or canonical) series; `message` says what it means and what to use.
    """

    code: str
    metric: str
    message: str
    value: float | None = None


SeriesKey = tuple[str, Labels]
"""(canonical name, canonical labels). Canonical labels always include `model_name` and `engine`."""


@dataclass(frozen=True, slots=True)
class EngineSnapshot:
    """One scrape of one target after the engine adapter mapped raw names to canonical keys.

    `scalars` holds gauges and counters (counters by their cumulative value); `histograms` the
    histogram series; `info` static configuration (block size, pool size) per engine index.
    `time` is the scrape's wall time (the pipeline clock in replay).
    """

    engine_kind: EngineKind
    time: float
    scalars: Mapping[SeriesKey, float]
    histograms: Mapping[SeriesKey, Histogram]
    info: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    prefix_cache_unit: Literal["tokens", "blocks"] | None = None
    parse_issues: int = 0
    engine_version_hint: str | None = None
    rejected: tuple[SeriesRejection, ...] = ()
    """Series treated as missing for this scrape (out of range, inconsistent, duplicated)."""

    suspects: tuple[Suspect, ...] = ()
    """Engine-aware plausibility findings on this scrape (parsers/engines/semantics.py)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A configured scrape target."""

    name: str
    role: Role
    url: str
    engine: EngineKind | Literal["auto"] = "auto"


# --------------------------------------------------------------------------- analyzer output


@dataclass(frozen=True, slots=True)
class Signal:
    """One exported value: exactly what `/metrics` shows for that name and labels."""

    name: str
    labels: Labels
    value: float


@dataclass(frozen=True, slots=True)
class Recommendation:
    """A plain-language finding for the pod log (format in DESIGN.md)."""

    code: str
    severity: Literal["info", "warning", "critical"]
    message: str
    evidence: Mapping[str, float | str]
    confidence: float
    target: str = ""
    role: str = ""
    cause: str = ""
    """The primary cause of its target or pool now (analyzers/diagnosis.py CAUSES), "" when none."""
    remedy: str = ""
    """A stable remedy code (analyzers/diagnosis.py REMEDIES), "" when none applies yet."""

    @property
    def action(self) -> Literal["act", "recommend", "escalate"]:
        return action_for(self.confidence)


def action_for(confidence: float) -> Literal["act", "recommend", "escalate"]:
    """Calibration-gated action tier (DESIGN.md): act >= 0.85, recommend 0.60-0.85, else escalate."""
    if confidence >= 0.85:
        return "act"
    if confidence >= 0.60:
        return "recommend"
    return "escalate"


@dataclass(frozen=True, slots=True)
class EngineWarning:
    """A `Suspect` seen on a target, as published in `/signals` (`warnings`)."""

    target: str
    suspect: Suspect
    first_seen: float


@dataclass(frozen=True, slots=True)
class TickResult:
    """What the pipeline publishes once per tick: the exporters read only this."""

    time: float
    signals: tuple[Signal, ...]
    recommendations: tuple[Recommendation, ...] = ()
    warnings: tuple[EngineWarning, ...] = ()


# --------------------------------------------------------------------------- NIXL and log sources


@dataclass(frozen=True, slots=True)
class NixlTransfer:
    """One completed KV transfer from a NIXL telemetry ring (initiator side).

    `time` is wall seconds: the event's own stamp in format v1, the reader's time in v2+ (those
    rings carry no timestamps, so resolution is the poll interval). `direction` is "read" for
    rx events (the initiator pulled, vLLM's default) and "write" for tx events.
    """

    time: float | None
    post_seconds: float
    xfer_seconds: float
    bytes: int
    requests: int
    direction: Literal["read", "write"]
    agent: str = ""


@dataclass(frozen=True, slots=True)
class NixlRingError:
    """Error events (`agent_err_*`) read from a ring in one poll: name -> count."""

    time: float | None
    agent: str
    status: str
    count: int


LogValue = str | int | float | bool


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One recognised log line: `kind` (stable name), `time` (wall seconds when the line has a
    full date, or the reader stamps it), `fields` (parsed values, units in the key names)."""

    kind: str
    time: float | None
    fields: Mapping[str, LogValue]
    source: str = ""


# --------------------------------------------------------------------------- GPU telemetry (NVML source output)


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One GPU read through NVML. Fields the driver does not support are None.

    `utilization_ratio` is NVML's utilization.gpu (share of the sample period in which any kernel
    ran, 0-1): it is not SM occupancy, see analyzers/gpu.py.
    """

    index: int
    uuid: str
    name: str
    time: float
    utilization_ratio: float | None = None
    memory_used_bytes: float | None = None
    memory_total_bytes: float | None = None
    power_watts: float | None = None
    power_limit_watts: float | None = None
    temperature_celsius: float | None = None
    slowdown_temperature_celsius: float | None = None
    throttle_reasons: tuple[str, ...] = ()
    ecc_uncorrected_errors: float | None = None
