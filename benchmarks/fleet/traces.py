"""The load traces, in simulated (control-plane) seconds; `phases(trace, K)` turns them into the
load client's open-loop phases with every duration divided by K. Arrival rates and request
shapes are per wall second: requests are not compressed (see docs/fleet.md, "Time scale").

Each phase: (name, sim seconds, rate at start, rate at end, prompt words, output tokens).
`peak_replicas` sizes the static pool; `peak_pd` the static P/D pools (prefill, decode), from the
capacity of the lab's P/D workers (docs/fleet.md, "P/D fleet"); `steps` are the sim times of the
load steps that the reaction time is measured from.
"""

from __future__ import annotations

from dataclasses import dataclass

Span = tuple[int, int]
PhaseSpec = tuple[str, float, float, float, Span, Span]

MIXED_P: Span = (150, 450)  # prompt words (about 1.3 tokens each)
MIXED_O: Span = (20, 60)  # output tokens


@dataclass(frozen=True, slots=True)
class Trace:
    name: str
    phases: tuple[PhaseSpec, ...]
    peak_replicas: int
    steps: tuple[float, ...] = ()
    warmup_s: float = 120.0  # sim seconds excluded from the SLO check (the pool's first minutes)
    peak_pd: tuple[int, int] = (2, 2)  # static P/D pools: (prefill, decode) replicas

    @property
    def seconds(self) -> float:
        return sum(p[1] for p in self.phases)


TRACES: dict[str, Trace] = {
    t.name: t
    for t in (
        Trace("step", (
            ("low", 180, 3.0, 3.0, MIXED_P, MIXED_O),
            ("high", 600, 12.0, 12.0, MIXED_P, MIXED_O),
            ("low2", 240, 3.0, 3.0, MIXED_P, MIXED_O),
        ), peak_replicas=4, steps=(180.0,), peak_pd=(2, 4)),
        # The "step ramp": a staircase up, then back down.
        Trace("step-ramp", (
            ("s3", 180, 3.0, 3.0, MIXED_P, MIXED_O),
            ("s6", 180, 6.0, 6.0, MIXED_P, MIXED_O),
            ("s9", 180, 9.0, 9.0, MIXED_P, MIXED_O),
            ("s12", 240, 12.0, 12.0, MIXED_P, MIXED_O),
            ("down", 240, 3.0, 3.0, MIXED_P, MIXED_O),
        ), peak_replicas=4, steps=(180.0, 360.0, 540.0), peak_pd=(2, 4)),
        Trace("bursts", (
            ("base", 180, 3.0, 3.0, MIXED_P, MIXED_O),
            ("burst1", 120, 10.0, 10.0, MIXED_P, MIXED_O),
            ("base2", 240, 3.0, 3.0, MIXED_P, MIXED_O),
            ("burst2", 120, 10.0, 10.0, MIXED_P, MIXED_O),
            ("base3", 240, 3.0, 3.0, MIXED_P, MIXED_O),
        ), peak_replicas=4, steps=(180.0, 540.0), peak_pd=(2, 4)),
        Trace("day", (
            ("night", 180, 1.5, 1.5, MIXED_P, MIXED_O),
            ("morning", 360, 1.5, 11.0, MIXED_P, MIXED_O),
            ("noon", 180, 11.0, 11.0, MIXED_P, MIXED_O),
            ("evening", 360, 11.0, 1.5, MIXED_P, MIXED_O),
        ), peak_replicas=4, peak_pd=(2, 4)),
        Trace("prefill-heavy", (
            ("low", 180, 2.0, 2.0, (600, 1200), (4, 12)),
            ("high", 600, 10.0, 10.0, (600, 1200), (4, 12)),
            ("low2", 180, 2.0, 2.0, (600, 1200), (4, 12)),
        ), peak_replicas=4, steps=(180.0,), peak_pd=(3, 2)),
        Trace("decode-heavy", (
            ("low", 180, 1.5, 1.5, (20, 60), (100, 200)),
            ("high", 600, 8.0, 8.0, (20, 60), (100, 200)),
            ("low2", 180, 1.5, 1.5, (20, 60), (100, 200)),
        ), peak_replicas=4, steps=(180.0,), peak_pd=(1, 4)),
        Trace("mix-shift", (
            ("warm", 180, 3.0, 3.0, MIXED_P, MIXED_O),
            ("prefill", 420, 10.0, 10.0, (600, 1200), (4, 12)),
            ("decode", 420, 8.0, 8.0, (20, 60), (100, 200)),
        ), peak_replicas=4, steps=(180.0, 600.0), peak_pd=(3, 4)),
        # The CI trace: one step up, short.
        Trace("ci-step", (
            ("low", 150, 3.0, 3.0, MIXED_P, MIXED_O),
            ("high", 450, 12.0, 12.0, MIXED_P, MIXED_O),
        ), peak_replicas=4, steps=(150.0,), warmup_s=90.0),
    )
}  # fmt: skip


def phases(trace: Trace, compression: float) -> list[str]:
    """loadgen phase strings (open loop, `@A-B` requests per second)."""
    out = []
    for name, sim_s, r0, r1, (p0, p1), (o0, o1) in trace.phases:
        out.append(f"{name}:{sim_s / compression:g}:@{r0:g}-{r1:g}:{p0}-{p1}:{o0}-{o1}")
    return out
