"""One PNG per run: offered load, replicas (created and ready; per pool in P/D), SLO attainment per window."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import score
import traces


def plot_run(out: Path, trace: traces.Trace, k: float, window_sim_s: float) -> Path:
    reqs, t0 = score.load_ground_truth(out / "ground_truth.jsonl")
    assert t0 is not None
    workers = json.loads((out / "workers.json").read_text())
    result = json.loads((out / "result.json").read_text())
    end = trace.seconds
    fig, axes = plt.subplots(3, 1, figsize=(8, 6.5), sharex=True)
    # load: arrivals per sim minute
    minute = window_sim_s
    bins = [i * minute for i in range(int(end // minute) + 1)]
    starts = [(r["start"] - t0) * k for r in reqs]
    axes[0].hist(starts, bins=bins, color="tab:gray")
    axes[0].set_ylabel("requests / min")
    # replicas over time
    grid = [i * 5.0 for i in range(int(end / 5.0) + 1)]

    def count(field: str, t: float, role: str | None = None) -> int:
        n = 0
        for w in workers:
            if role is not None and w.get("role", "aggregated") != role:
                continue
            a = w[field]
            b = w["stopping"] if w["stopping"] is not None else None
            if a is not None and (a - t0) * k <= t and (b is None or (b - t0) * k > t):
                n += 1
        return n

    roles = sorted({w.get("role", "aggregated") for w in workers}, reverse=True)  # prefill before decode
    if len(roles) > 1:  # P/D: one line per pool
        for role in roles:
            line = axes[1].step(grid, [count("created", t, role) for t in grid], where="post", label=role)
            axes[1].step(grid, [count("ready", t, role) for t in grid], where="post", ls=":",
                         color=line[0].get_color(), label=f"{role} ready")  # fmt: skip
    else:
        axes[1].step(grid, [count("created", t) for t in grid], where="post", label="replicas")
        axes[1].step(grid, [count("ready", t) for t in grid], where="post", label="ready")
    axes[1].set_ylabel("replicas")
    axes[1].legend(loc="upper left", fontsize=8)
    ws = result["windows"]
    xs = [w["start_sim_s"] + minute / 2 for w in ws]
    axes[2].plot(xs, [w["ttft"] for w in ws], marker=".", label="TTFT")
    axes[2].plot(xs, [w["itl"] for w in ws], marker=".", label="ITL")
    axes[2].plot(xs, [w["joint"] for w in ws], marker=".", label="joint")
    axes[2].axhline(0.95, color="red", lw=0.8, ls="--")
    axes[2].axvline(trace.warmup_s, color="gray", lw=0.8, ls=":")
    axes[2].set_ylim(0, 1.02)
    axes[2].set_ylabel("SLO attainment")
    axes[2].set_xlabel("simulated seconds")
    axes[2].legend(loc="lower left", fontsize=8)
    fig.suptitle(f"{trace.name} / {result['policy']}: {result['replica_seconds']:.0f} replica-s, "
                 f"worst window {result['min_joint_after_warmup']:.2f}")  # fmt: skip
    fig.tight_layout()
    path = out / "run.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
