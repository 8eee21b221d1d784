"""The fleet lab's P/D mode (benchmarks/fleet/run.py --mode pd): a policy per pool read from the
shipped manifests, the pools' worker templates, per-pool scores and the P/D table row."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

FLEET = Path(__file__).resolve().parents[1] / "benchmarks" / "fleet"
sys.path.insert(0, str(FLEET))

import policies  # noqa: E402
import prom  # noqa: E402
import run  # noqa: E402
import score  # noqa: E402
import traces  # noqa: E402

PD = ("prefill", "decode")


def test_phaselens_reads_each_pools_overlay_hpa() -> None:
    pols = run.pool_policies(traces.TRACES["mix-shift"], "phaselens", PD)
    pre, dec = pols["prefill"], pols["decode"]
    # prefill: the router's backlog and the prefill saturation summed for the prefill pool;
    # decode: seat-aware saturation
    assert pre.queries == {"phaselens_pool_prefill_backlog_seconds":
                           'sum(phaselens:prefill_backlog_seconds:hpa_sum{namespace="fleet",role="prefill"})',
                           "phaselens_pool_prefill_saturation_ratio":
                           'sum(phaselens:prefill_saturation_ratio:hpa_sum{namespace="fleet",role="prefill"})'}
    assert dec.queries == {"phaselens_pool_decode_saturation_ratio":
                           'sum(phaselens:decode_saturation_ratio:hpa_sum{namespace="fleet",role="decode"})'}
    assert [m.average for m in pre.spec.metrics] == [1.5, 0.8] and [m.average for m in dec.spec.metrics] == [0.8]
    assert (pre.spec.max_replicas, dec.spec.max_replicas) == (8, 16)  # the overlays' maxReplicas
    assert pre.spec.min_replicas == dec.spec.min_replicas == 2  # the base's warm pod, per pool
    assert pre.spec.down.stabilization_s == 30  # 300 s compressed by K = 10
    assert "overlays/disaggregated/prefill/hpa-patch.yaml" in pre.source


def test_a_baseline_reads_each_pools_own_workers() -> None:
    pols = run.pool_policies(traces.TRACES["step"], "production-stack", PD)
    for role in PD:
        (q,) = pols[role].queries.values()
        assert q == f'sum(vllm:num_requests_waiting{{namespace="fleet",pod_role="{role}"}})'
        assert pols[role].spec.metrics[0].average == 5.0
    # the aggregated lab's query is unchanged
    (agg,) = policies.load("production-stack", 10).queries.values()
    assert 'pod_role="aggregated"' in agg
    g = run.pool_policies(traces.TRACES["step"], "gpu-util", PD)["decode"]
    assert 'pod_role="decode"' in g.queries["busy_fraction"] and "aggregated" not in g.queries["busy_fraction"]


def test_for_pool_refuses_a_query_it_cannot_point_at_a_pool() -> None:
    assert policies.for_pool("sum(x)", "aggregated") == "sum(x)"
    with pytest.raises(ValueError, match="decode pool"):
        policies.for_pool('sum(x{pod="a"})', "decode")
    with pytest.raises(ValueError, match="unknown pool role"):
        policies.load("phaselens", 10, role="router")


def test_static_pools_take_the_traces_pd_peak() -> None:
    pols = run.pool_policies(traces.TRACES["mix-shift"], "static", PD)
    assert (pols["prefill"].static_replicas, pols["decode"].static_replicas) == traces.TRACES["mix-shift"].peak_pd
    assert run.pool_policies(traces.TRACES["step"], "static", ("aggregated",))["aggregated"].static_replicas == 4


def test_pd_config_has_a_pool_per_role_and_the_router_queue() -> None:
    cfg = run.config(29000, "pd")
    assert cfg.roles == PD
    assert cfg.template("prefill").mode == "prefill" and cfg.template("decode").mode == "decode"
    assert cfg.template("prefill").speedup_ratio == run.PREFILL_SPEEDUP < 1.0
    assert cfg.template("decode").speedup_ratio == 1.0
    assert "--router-queue-threshold" in cfg.frontend_extra
    agg = run.config(29000)
    assert agg.roles == ("aggregated",) and agg.frontend_extra == () and agg.template("aggregated") == run.WORKER


def test_prometheus_relabels_only_the_frontends_own_series(tmp_path: Path) -> None:
    """The frontend's own series (role aggregated) leave the pool sums; the prefill pool's router
    queue that the frontend's sidecar exports (role prefill) stays in the prefill pool."""
    path = prom.write_config(tmp_path, 0.5, 1.5, "groups: []\n")
    (relabel,) = yaml.safe_load(path.read_text())["scrape_configs"][0]["metric_relabel_configs"]
    assert relabel["source_labels"] == ["pod_role", "role"] and relabel["regex"] == "frontend;aggregated"
    import re

    assert re.fullmatch(relabel["regex"], "frontend;aggregated")
    assert not re.fullmatch(relabel["regex"], "frontend;prefill")


def _w(role: str, created: float, ready: float | None, stopped: float | None) -> dict[str, Any]:
    return {"name": f"{role}{created}", "role": role, "created": created, "ready": ready, "stopping": stopped,
            "stopped": stopped}


def test_pool_scores_keep_each_pool_apart() -> None:
    t0 = 1000.0
    workers = [
        _w("prefill", 990.0, 991.0, None),    # from before the load: counted from t0, 100 s wall
        _w("prefill", 1030.0, 1033.5, 1060.0),  # created after the step at 20 s wall: ready 3.5 s later
        _w("decode", 990.0, 991.0, None),
    ]
    decisions = {"prefill": [(1, 1), (1, 2), (2, 1)], "decode": [(1, 1)]}
    got = score.pool_scores(workers, decisions, t0=t0, length_sim_s=1000.0, k=10.0, steps_sim_s=[200.0])
    assert got["prefill"].replica_seconds == pytest.approx((100 + 30) * 10)
    assert got["decode"].replica_seconds == pytest.approx(100 * 10)
    assert got["prefill"].reaction_s == pytest.approx((135.0,))  # (1033.5 - 1020) x 10
    assert got["decode"].reaction_s == (None,)
    assert (got["prefill"].direction_changes, got["decode"].direction_changes) == (1, 0)
    assert (got["prefill"].max_replicas, got["decode"].max_replicas) == (2, 1)


def _pd_result() -> dict[str, Any]:
    pools = {"prefill": {"replica_seconds": 1200.4, "reaction_s": [40.0, None], "direction_changes": 1,
                         "max_replicas": 3},
             "decode": {"replica_seconds": 2400.0, "reaction_s": [None, 95.0], "direction_changes": 0,
                        "max_replicas": 4}}  # fmt: skip
    return {
        "trace": "mix-shift", "policy": "phaselens", "mode": "pd", "meets_slo": True,
        "min_joint_after_warmup": 0.97, "replica_seconds": 3600.4, "reaction_s": [40.0, 95.0],
        "direction_changes": 1, "max_replicas": 7, "failed": 0, "requests": 700, "pools": pools,
        "host_loadavg_mean": 1.2, "host_loadavg_max": 2.0,
        "windows": [{"start_sim_s": 180.0, "requests": 40, "ttft": 0.98, "itl": 1.0, "joint": 0.97}],
    }  # fmt: skip


def test_pd_row_shows_each_pool() -> None:
    cells = [c.strip() for c in run.fmt_row_pd(_pd_result()).strip("|").split("|")]
    head = [c.strip() for c in run.TABLE_HEAD_PD.splitlines()[0].strip("|").split("|")]
    row = dict(zip(head, cells, strict=True))
    assert row["replica-seconds (P / D)"] == "3600 (1200 / 2400)"
    assert row["reaction (s), P / D"] == "40, - / -, 95"
    assert row["direction changes P / D"] == "1 / 0"
    assert row["max replicas P / D"] == "3 / 4"
    assert row["worst TTFT window"] == "0.980"


def test_table_keeps_pd_runs_in_their_own_table(tmp_path: Path) -> None:
    agg = {**_pd_result(), "mode": "aggregated", "trace": "step", "reaction_s": [10.0], "max_replicas": 4}
    agg.pop("pools")
    for name, r in (("step/phaselens", agg), ("mix-shift/phaselens", _pd_result())):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "result.json").write_text(json.dumps(r))
    text = run.table(tmp_path)
    assert text.count("| trace | policy |") == 2
    assert text.index(run.TABLE_HEAD) < text.index("| step |") < text.index(run.TABLE_HEAD_PD) < text.index(
        "| mix-shift |")
