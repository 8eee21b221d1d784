"""The verdict that `demo`, `replay` and `report` open with: the primary cause per episode, its
time range, the remedy and its expected effect (from the diagnosis stage's DIAGNOSIS lines).

An episode is a stretch of ticks in which one target (or the pool) kept one cause; a gap of up to
`gap_seconds` without a DIAGNOSIS line is bridged (a stale scrape), a longer one ends it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from phaselens.analyzers.diagnosis import DIAGNOSIS_CODE, human_remedy
from phaselens.model import Recommendation, TickResult


@dataclass
class CauseEpisode:
    target: str
    role: str
    cause: str
    remedy: str
    start: float
    end: float
    effect: str
    peak_confidence: float
    findings: set[str] = field(default_factory=set)

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class VerdictLog:
    gap_seconds: float = 5.0
    episodes: list[CauseEpisode] = field(default_factory=list)
    start: float | None = None
    end: float | None = None
    _open: dict[str, CauseEpisode] = field(default_factory=dict)

    def observe(self, tick: TickResult) -> None:
        self.start = tick.time if self.start is None else self.start
        self.end = tick.time
        for rec in tick.recommendations:
            if rec.code == DIAGNOSIS_CODE:
                self.add(rec, tick.time)

    def add(self, rec: Recommendation, now: float) -> None:
        """Extend or open the episode of one DIAGNOSIS line seen at `now`."""
        episode = self._open.get(rec.target)
        effect = str(rec.evidence.get("expected_effect", ""))
        findings = {f for f in str(rec.evidence.get("findings", "")).split(",") if f}
        if episode is not None and episode.cause == rec.cause and now - episode.end <= self.gap_seconds:
            episode.end = now
            if rec.confidence > episode.peak_confidence:  # the first tick at the peak: the state it rests on
                episode.peak_confidence, episode.effect = rec.confidence, effect or episode.effect
            episode.findings |= findings
            return
        episode = CauseEpisode(rec.target, rec.role, rec.cause, rec.remedy, now, now, effect, rec.confidence, findings)
        self._open[rec.target] = episode
        self.episodes.append(episode)

    def observe_all(self, ticks: Iterable[TickResult]) -> None:
        for tick in ticks:
            self.observe(tick)

    def lines(self) -> list[str]:
        origin = self.start or 0.0
        if not self.episodes:
            return ["Verdict: no primary cause in this run (nothing binds: no queue, KV room, latency in budget)."]
        out = ["Verdict (primary cause per episode; docs/diagnosis.md):"]
        for e in sorted(self.episodes, key=lambda e: (e.start, e.target)):
            head = (f"  {e.target} ({e.role}): {e.cause} from +{e.start - origin:.0f} s to +{e.end - origin:.0f} s "
                    f"({e.seconds:.0f} s)")
            out.append(head)
            out.append(f"    remedy: {e.remedy} ({human_remedy(e.remedy)})")
            if e.effect:
                out.append(f"    expected: {e.effect}")
            if e.findings:
                out.append(f"    evidence: {', '.join(sorted(e.findings))}")
        return out


def human_line(rec: Recommendation, offset: float) -> str:
    """One recommendation as a person reads it (demo and replay without --json)."""
    head = f"[+{offset:5.0f} s] {rec.severity.upper():8} {rec.code}"
    tags = f"{rec.action}, {rec.confidence:.2f}"
    if rec.cause:
        tags += f", cause {rec.cause}"
    if rec.remedy:
        tags += f", remedy {rec.remedy}"
    return f"{head} [{rec.target}] ({tags}): {rec.message}"
