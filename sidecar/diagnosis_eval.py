"""Verdict-vs-truth on labelled recordings, and the consistency rules of docs/diagnosis.md.

Used by tests/test_diagnosis_consistency.py and `python -m phaselens.diagnosis_eval DIR...`
(prints the table in docs/diagnosis.md). A labelled recording is a `.tar.gz` of role sub-folders
(`aggregated/`, or `prefill/` + `decode/`) with a `labels.json` beside it naming its set-up cause.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from phaselens.analyzers.diagnosis import CAUSES, DIAGNOSIS_CODE, POOL, POOL_SPECIFIC, REMEDIES, SIGNAL
from phaselens.model import TickResult
from phaselens.replay import replay_ticks
from phaselens.settings import Settings


@dataclass(frozen=True, slots=True)
class Outcome:
    name: str
    label: str
    verdict: str
    held_out: bool
    ticks_by_cause: dict[str, int]

    @property
    def match(self) -> bool:
        return self.verdict == self.label


def run(paths: Sequence[str], settings: Settings | None = None) -> list[TickResult]:
    return list(replay_ticks(paths, settings or Settings()))


def dominant_cause(ticks: Sequence[TickResult], role_order: Sequence[str] = (POOL, "decode", "aggregated", "prefill"),
                   ) -> tuple[str, dict[str, int]]:
    """The cause held for the most ticks by the most telling target ("none" if no cause ever held).

    P/D runs are judged on the pool; aggregated runs on their one target.
    """
    counts: dict[str, Counter[str]] = {}
    for tick in ticks:
        for rec in tick.recommendations:
            if rec.code == DIAGNOSIS_CODE:
                counts.setdefault(rec.target if rec.target == POOL else rec.role, Counter())[rec.cause] += 1
    for role in role_order:
        if role in counts:
            cause, _ = counts[role].most_common(1)[0]
            return cause, dict(counts[role])
    return "none", {}


def violations(ticks: Sequence[TickResult]) -> list[str]:
    """Every breach of the consistency rules (empty when all hold)."""
    out: list[str] = []
    for tick in ticks:
        causes: dict[str, set[str]] = {}
        act_causes: dict[str, set[str]] = {}
        codes: dict[str, set[str]] = {}
        lines: Counter[str] = Counter()
        for rec in tick.recommendations:
            codes.setdefault(rec.target, set()).add(rec.code)
            if rec.cause and rec.cause not in CAUSES:
                out.append(f"{tick.time}: unknown cause {rec.cause}")
            if rec.remedy and rec.remedy not in REMEDIES:
                out.append(f"{tick.time}: unknown remedy {rec.remedy}")
            if rec.cause:
                causes.setdefault(rec.target, set()).add(rec.cause)
            if rec.action == "act":
                act_causes.setdefault(rec.target, set()).add(rec.cause)
            if rec.code == DIAGNOSIS_CODE:
                lines[rec.target] += 1
            if rec.role == "decode" and rec.remedy == "add_prefill_capacity":
                out.append(f"{tick.time}: decode target {rec.target} told add_prefill_capacity ({rec.code})")
            if rec.role == "prefill" and rec.remedy == "add_decode_capacity":
                out.append(f"{tick.time}: prefill target {rec.target} told add_decode_capacity ({rec.code})")
            if rec.role == "aggregated" and rec.remedy in POOL_SPECIFIC:
                out.append(f"{tick.time}: aggregated target {rec.target} told {rec.remedy} ({rec.code})")
        for target, found in causes.items():
            if len(found) > 1:
                out.append(f"{tick.time}: {target} has causes {sorted(found)}")
        for target, found in act_causes.items():
            if len(found) > 1:
                out.append(f"{tick.time}: {target} has act lines with causes {sorted(found)}")
        for target, n in lines.items():
            if n > 1:
                out.append(f"{tick.time}: {target} has {n} DIAGNOSIS lines")
        preempting = {dict(s.labels).get("target") for s in tick.signals
                      if s.name == "phaselens_kv_preemptions_per_second" and s.value > 0}
        for target, found in codes.items():
            if "KV_PRESSURE_IMMINENT" in found and ("KV_CACHE_PRESSURE" in found or target in preempting):
                out.append(f"{tick.time}: {target} predicts preemptions that are measured")
            if "SLO_BREACH_PREDICTED" in found and "SLO_AT_RISK" in found:
                out.append(f"{tick.time}: {target} predicts an SLO breach that is measured")
        ones: dict[str, list[str]] = {}
        for s in tick.signals:
            if s.name == SIGNAL and s.value == 1.0:
                labels = dict(s.labels)
                ones.setdefault(labels["target"], []).append(labels["cause"])
        for target, causes_on in ones.items():
            if len(causes_on) > 1:
                out.append(f"{tick.time}: {SIGNAL} is 1 for {causes_on} on {target}")
        for rec in tick.recommendations:
            if rec.code == DIAGNOSIS_CODE and ones.get(rec.target) != [rec.cause]:
                out.append(f"{tick.time}: {SIGNAL} on {rec.target} disagrees with its DIAGNOSIS line")
    return out


def evaluate(folder: Path) -> list[Outcome]:
    labels = json.loads((folder / "labels.json").read_text())
    outcomes = []
    for name, meta in sorted(labels.items()):
        ticks = run([str(folder / f"{name}.tar.gz")])
        verdict, counts = dominant_cause(ticks)
        outcomes.append(Outcome(name, meta["label"], verdict, bool(meta.get("held_out")), counts))
    return outcomes


def main(argv: Sequence[str]) -> int:
    for folder in argv or [str(Path("tests/fixtures/dynamo-1.6.1-mocker-diagnosis"))]:
        print("| run | set-up cause | verdict | held out | ticks per cause | match |")
        print("|---|---|---|---|---|---|")
        for o in evaluate(Path(folder)):
            counts = ", ".join(f"{k} {v}" for k, v in sorted(o.ticks_by_cause.items())) or "-"
            print(f"| {o.name} | {o.label} | {o.verdict} | {'yes' if o.held_out else 'no'} | {counts} | "
                  f"{'yes' if o.match else 'NO'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
