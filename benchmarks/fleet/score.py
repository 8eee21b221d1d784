"""Scores of one run, from the load client's per-request ground truth and the fleet's own record
of each replica (created, ready, stopped) and of each controller decision. Pure functions.

- attainment per window: share of the requests *started* in the window (sim 60 s) with
  TTFT <= SLO (ttft) / mean inter-token time <= SLO (itl) / both (joint); a failed request misses;
- meets SLO: joint attainment >= 0.95 in every window after warm-up;
- replica-seconds: sum over replicas of (stopped or load end) - created, clipped to the load
  period, in sim seconds (a starting replica costs: its GPU is allocated);
- reaction time: from a load step to the first replica created after it becoming ready (sim s);
- direction changes: times the scale direction reversed (up then down, or down then up).
P/D: the same per pool (`pool_scores`); attainment is the user's, one for the whole fleet.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Window:
    start_sim_s: float
    requests: int
    ttft: float
    itl: float
    joint: float


@dataclass(frozen=True, slots=True)
class Score:
    requests: int
    failed: int
    windows: tuple[Window, ...]
    min_joint_after_warmup: float
    meets_slo: bool
    replica_seconds: float
    reaction_s: tuple[float | None, ...]
    direction_changes: int
    max_replicas: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_ground_truth(path: Path) -> tuple[list[dict[str, Any]], float | None]:
    """Requests, and the time the first measured phase started."""
    reqs, start = [], None
    for line in path.read_text().splitlines():
        d = json.loads(line)
        if d.get("kind") == "request":
            reqs.append(d)
        elif d.get("kind") == "phase_start" and start is None:
            start = float(d["t"])
    return reqs, start


def windows(reqs: Sequence[dict[str, Any]], t0: float, length_s: float, window_s: float, k: float,
            slo_ttft: float, slo_itl: float) -> list[Window]:  # fmt: skip
    out = []
    n = int(length_s // window_s + (1 if length_s % window_s > 1e-9 else 0))
    for i in range(n):
        lo, hi = t0 + i * window_s, t0 + (i + 1) * window_s
        ws = [r for r in reqs if lo <= r["start"] < hi]
        if not ws:
            out.append(Window(i * window_s * k, 0, 1.0, 1.0, 1.0))
            continue

        def ok_ttft(r: dict[str, Any]) -> bool:
            return r["outcome"] == "ok" and r["ttft"] is not None and r["ttft"] <= slo_ttft

        def ok_itl(r: dict[str, Any]) -> bool:
            return r["outcome"] == "ok" and (r["tpot"] is None or r["tpot"] <= slo_itl)

        out.append(Window(
            i * window_s * k, len(ws),
            sum(ok_ttft(r) for r in ws) / len(ws),
            sum(ok_itl(r) for r in ws) / len(ws),
            sum(ok_ttft(r) and ok_itl(r) for r in ws) / len(ws),
        ))  # fmt: skip
    return out


def replica_seconds(workers: Sequence[dict[str, Any]], t0: float, t1: float) -> float:
    total = 0.0
    for w in workers:
        a = max(t0, float(w["created"]))
        b = min(t1, float(w["stopped"] if w["stopped"] is not None else t1))
        total += max(0.0, b - a)
    return total


def reaction_times(workers: Sequence[dict[str, Any]], steps_wall: Sequence[float]) -> list[float | None]:
    out: list[float | None] = []
    for s in steps_wall:
        ready = [float(w["ready"]) for w in workers if float(w["created"]) >= s and w["ready"] is not None]
        out.append(min(ready) - s if ready else None)
    return out


def direction_changes(decisions: Sequence[tuple[int, int]]) -> int:
    """(current, desired) per sync -> number of reversals of the scaling direction."""
    last, changes = 0, 0
    for current, desired in decisions:
        d = (desired > current) - (desired < current)
        if d != 0:
            if last != 0 and d != last:
                changes += 1
            last = d
    return changes


@dataclass(frozen=True, slots=True)
class PoolScore:
    """One pool's share of a P/D run (replica-seconds, reaction, reversals, peak size)."""

    replica_seconds: float
    reaction_s: tuple[float | None, ...]
    direction_changes: int
    max_replicas: int


def pool_scores(
    workers: Sequence[dict[str, Any]], decisions: Mapping[str, Sequence[tuple[int, int]]], *,
    t0: float, length_sim_s: float, k: float, steps_sim_s: Sequence[float],
) -> dict[str, PoolScore]:
    """Per pool (the workers' `role`): each pool is scaled by its own controller and scored on its own."""
    out = {}
    steps = [t0 + s / k for s in steps_sim_s]
    for role, ds in decisions.items():
        mine = [w for w in workers if w.get("role", "aggregated") == role]
        out[role] = PoolScore(
            replica_seconds=replica_seconds(mine, t0, t0 + length_sim_s / k) * k,
            reaction_s=tuple(None if r is None else r * k for r in reaction_times(mine, steps)),
            direction_changes=direction_changes(ds),
            max_replicas=max((d for _, d in ds), default=0),
        )
    return out


def score(gt: Path, workers: Sequence[dict[str, Any]], decisions: Sequence[tuple[int, int]], *,
          k: float, window_sim_s: float, warmup_sim_s: float, length_sim_s: float, steps_sim_s: Sequence[float],
          slo_ttft: float, slo_itl: float) -> Score:  # fmt: skip
    reqs, t0 = load_ground_truth(gt)
    if t0 is None:
        raise ValueError(f"{gt}: no phase_start line")
    length = length_sim_s / k
    ws = windows(reqs, t0, length, window_sim_s / k, k, slo_ttft, slo_itl)
    after = [w for w in ws if w.start_sim_s >= warmup_sim_s and w.requests > 0]
    worst = min((w.joint for w in after), default=1.0)
    rs = replica_seconds(workers, t0, t0 + length) * k
    reactions = [None if r is None else r * k for r in reaction_times(workers, [t0 + s / k for s in steps_sim_s])]
    return Score(
        requests=len(reqs),
        failed=sum(1 for r in reqs if r["outcome"] != "ok"),
        windows=tuple(ws),
        min_joint_after_warmup=worst,
        meets_slo=worst >= 0.95,
        replica_seconds=rs,
        reaction_s=tuple(reactions),
        direction_changes=direction_changes(decisions),
        max_replicas=max((d for _, d in decisions), default=0),
    )
