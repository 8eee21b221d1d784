"""The fleet lab's HPA algorithm and manifest parsing (benchmarks/fleet/hpa.py, policies.py).

Expected values follow the Kubernetes HPA documentation's worked rules: desired =
ceil(total / AverageValue), tolerance 0.1, stabilization windows, Pods/Percent policies.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

FLEET = Path(__file__).resolve().parents[1] / "benchmarks" / "fleet"
sys.path.insert(0, str(FLEET))

import hpa  # noqa: E402
import policies  # noqa: E402
import prom  # noqa: E402
import score  # noqa: E402

REPO = FLEET.parents[1]


def spec(up: hpa.Rules = hpa.DEFAULT_UP, down: hpa.Rules = hpa.DEFAULT_DOWN, max_r: int = 10) -> hpa.HpaSpec:
    return hpa.HpaSpec("t", 1, max_r, (hpa.MetricTarget("m", {}, 1.5),), up, down)


def test_quantities() -> None:
    assert hpa.quantity("1500m") == pytest.approx(1.5)
    assert hpa.quantity("800m") == pytest.approx(0.8)
    assert hpa.quantity("5") == 5.0
    assert hpa.quantity(2) == 2.0


def test_average_value_proposal_and_tolerance() -> None:
    # 3 pods, target 1.5 per pod: total 4.8 -> usage 1.067 within 10 %: keep 3
    assert hpa.metric_proposal(4.8, 1.5, 3) == 3
    # total 5.1 -> usage 1.133: ceil(5.1 / 1.5) = 4
    assert hpa.metric_proposal(5.1, 1.5, 3) == 4
    # total 0 -> ceil(0) = 0 (clamped to minReplicas by decide)
    assert hpa.metric_proposal(0.0, 1.5, 3) == 0


def test_shipped_aggregated_hpa_is_parsed_from_the_manifest() -> None:
    s = hpa.load_hpa(REPO / "deploy" / "kubernetes" / "base" / "hpa.yaml")
    assert (s.min_replicas, s.max_replicas) == (2, 8)
    assert {m.name: m.average for m in s.metrics} == {
        "phaselens_pool_prefill_backlog_seconds": pytest.approx(1.5),
        "phaselens_pool_decode_saturation_ratio": pytest.approx(0.8),
    }
    assert s.up.stabilization_s == 0 and s.down.stabilization_s == 300
    assert s.up.policies == (hpa.Policy("Pods", 4, 60.0), hpa.Policy("Percent", 100, 60.0))
    assert s.down.policies == (hpa.Policy("Pods", 1, 300.0),)


def test_overlay_patch_changes_the_metrics_and_max() -> None:
    base = REPO / "deploy" / "kubernetes" / "base" / "hpa.yaml"
    patch = REPO / "deploy" / "kubernetes" / "overlays" / "disaggregated" / "decode" / "hpa-patch.yaml"
    s = hpa.load_hpa(base, patch)
    assert s.max_replicas == 16
    assert [m.selector for m in s.metrics] == [{"role": "decode"}]


def test_scale_up_stabilization_takes_the_lowest_recent_recommendation() -> None:
    s = spec(up=hpa.Rules(60, (hpa.Policy("Pods", 10, 15),)))
    st = hpa.HpaState()
    assert hpa.decide(s, st, 0.0, 2, 2).desired == 2
    # load jumps: the window still holds the recommendation 2 -> no scale-up yet
    assert hpa.decide(s, st, 15.0, 2, 6).desired == 2
    assert hpa.decide(s, st, 59.0, 2, 6).desired == 2
    # 61 s after it, the low recommendation has left the 60 s window
    assert hpa.decide(s, st, 61.0, 2, 6).desired == 6


def test_scale_down_waits_for_the_window_and_the_pods_policy_limits_steps() -> None:
    s = spec(down=hpa.Rules(300, (hpa.Policy("Pods", 1, 300),)))
    st = hpa.HpaState()
    assert hpa.decide(s, st, 0.0, 5, 5).desired == 5
    assert hpa.decide(s, st, 100.0, 5, 1).desired == 5  # 5 still in the 300 s window
    d = hpa.decide(s, st, 301.0, 5, 1)
    assert d.stabilized == 1 and d.desired == 4  # one pod per 300 s
    assert hpa.decide(s, st, 400.0, 4, 1).desired == 4  # the period's one pod is used
    assert hpa.decide(s, st, 602.0, 4, 1).desired == 3


def test_pods_policy_limits_scale_up_per_period() -> None:
    s = spec(up=hpa.Rules(0, (hpa.Policy("Pods", 1, 180),)))
    st = hpa.HpaState()
    assert hpa.decide(s, st, 0.0, 1, 5).desired == 2
    assert hpa.decide(s, st, 15.0, 2, 5).desired == 2
    assert hpa.decide(s, st, 181.0, 2, 5).desired == 3


def test_default_behavior_doubles_or_adds_four() -> None:
    s = spec(max_r=20)
    st = hpa.HpaState()
    assert hpa.decide(s, st, 0.0, 2, 20).desired == 6  # max(2 x 2, 2 + 4)
    st2 = hpa.HpaState()
    assert hpa.decide(s, st2, 0.0, 8, 20).desired == 16


def test_compression_divides_every_duration() -> None:
    s = hpa.load_hpa(REPO / "deploy" / "kubernetes" / "base" / "hpa.yaml").scaled(10)
    assert s.up.stabilization_s == 0 and s.down.stabilization_s == 30
    assert s.up.policies[0].period_s == 6 and s.down.policies[0].period_s == 30


def test_policies_load_from_their_manifests() -> None:
    p = policies.load("phaselens", 10)
    assert p.queries["phaselens_pool_prefill_backlog_seconds"] == (
        'sum(phaselens:prefill_backlog_seconds:hpa_sum{namespace="fleet",role="aggregated"})'
    )
    ps = policies.load("production-stack", 10)
    assert ps.spec.metrics[0].average == 5.0
    assert ps.spec.down.stabilization_s == 30  # Kubernetes default 300 s, compressed
    g = policies.load("gpu-util", 10)
    assert "[6000ms:]" in g.queries["busy_fraction"]
    w = policies.load("llm-d-wva", 10)
    assert w.wva == {"kv_saturated": 0.8, "queue_saturated": 5.0, "spare_kv": 0.1, "spare_queue": 3.0}


def test_rules_compression_keeps_them_valid(tmp_path: Path) -> None:
    import shutil
    import subprocess

    text = prom.compressed_rules(10)
    assert "interval: 1500ms" in text and "[60000ms]" in text
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (make system-deps)")
    f = tmp_path / "rules.yaml"
    f.write_text(text)
    subprocess.run([promtool, "check", "rules", str(f)], check=True, capture_output=True)


def test_direction_changes() -> None:
    assert score.direction_changes([(1, 2), (2, 3), (3, 3), (3, 2), (2, 3)]) == 2
    assert score.direction_changes([(1, 1)]) == 0
