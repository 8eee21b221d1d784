"""The fleet lab's table rows and CI check (benchmarks/fleet/run.py): what docs/fleet.md shows."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

FLEET = Path(__file__).resolve().parents[1] / "benchmarks" / "fleet"
sys.path.insert(0, str(FLEET))

import run  # noqa: E402


def result(**over: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "trace": "step", "policy": "phaselens", "meets_slo": False, "min_joint_after_warmup": 0.5,
        "replica_seconds": 3302.4, "reaction_s": [137.2], "direction_changes": 1, "max_replicas": 4,
        "failed": 0, "requests": 836,
        "windows": [
            # the warm-up window (step: 120 s) is not scored, even with a TTFT miss
            {"start_sim_s": 60.0, "requests": 10, "ttft": 0.2, "itl": 1.0, "joint": 0.2},
            {"start_sim_s": 180.0, "requests": 50, "ttft": 0.9, "itl": 0.5, "joint": 0.5},
            {"start_sim_s": 240.0, "requests": 0, "ttft": 0.0, "itl": 0.0, "joint": 0.0},
        ],
    }  # fmt: skip
    r.update(over)
    return r


def test_row_shows_worst_ttft_after_warmup_and_unknown_host_load() -> None:
    cells = [c.strip() for c in run.fmt_row(result()).strip("|").split("|")]
    head = [c.strip() for c in run.TABLE_HEAD.splitlines()[0].strip("|").split("|")]
    row = dict(zip(head, cells, strict=True))
    assert row["worst window (joint)"] == "0.500"
    assert row["worst TTFT window"] == "0.900"  # not 0.2 (warm-up) nor 0.0 (an empty window)
    assert row["replica-seconds"] == "3302"
    assert row["host load (mean / max)"] == "n/a"
    assert row["policy"] == "phaselens"


def test_row_names_an_ablation_floor_and_the_host_load() -> None:
    row = run.fmt_row(result(policy="production-stack", min_replicas_override=2,
                             host_loadavg_mean=14.6, host_loadavg_max=20.3))  # fmt: skip
    assert "| production-stack (min 2) |" in row
    assert row.endswith("| 15 / 20 |")


def test_check_flags_lost_requests_and_no_reaction() -> None:
    assert run.check(result()) == []
    assert run.check(result(failed=9)) == ["step/phaselens: 9 of 836 requests failed"]
    assert run.check(result(reaction_s=[None])) == ["step/phaselens: no replica became ready after the load step"]
    assert run.check(result(policy="static", reaction_s=[None])) == []
