"""`phaselens plan`: refusals and every computed number, with the arithmetic written out."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from phaselens import plan as planmod

EXAMPLES = Path(__file__).resolve().parents[1] / "deploy" / "examples"


def _doc() -> dict[str, Any]:
    loaded = yaml.safe_load((EXAMPLES / "plan-disaggregated-h100.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _with(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(_doc())
    for dotted, value in changes.items():
        node = doc
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return doc


def test_capacities_and_steady_pods() -> None:
    plan = planmod.parse_plan(_doc())
    # prefill: V_P 20000 tok/s / (ISL 2000 x (1 - 0.5 hit)) = 20 req/s per pod
    assert planmod.prefill_capacity_rps(plan) == pytest.approx(20.0)
    # decode: 64 concurrent / (OSL 250 x ITL 0.05 s) = 5.12 req/s per pod
    assert planmod.decode_capacity_rps(plan) == pytest.approx(5.12)
    # steady: ceil(10 / (20 x 0.8)) = 1 ; ceil(10 / (5.12 x 0.8)) = ceil(2.44) = 3
    assert planmod.steady_pods(10, 20, 0.8) == 1
    assert planmod.steady_pods(10, 5.12, 0.8) == 3


def test_warm_pool_worked_numbers() -> None:
    # prefill: burst 30 req/s, N=1, c=20, rho=0.8, T=480 s, slack 1.95 s
    # excess (30 - 16) x 480 = 6720; absorbed 1 x 20 x 1.95 = 39; (6720 - 39) / (20 x 480) = 0.696 -> 1
    assert planmod.warm_pool_pods(30, 1, 20, 0.8, 480, 1.95) == 1
    # decode: N=3, c=5.12: excess (30 - 12.288) x 480 = 8501.76; / (5.12 x 480) = 3.46 -> 4
    assert planmod.warm_pool_pods(30, 3, 5.12, 0.8, 480, 0.0) == 4
    # a burst the running pods absorb within the TTFT slack needs no warm pods:
    # excess (17 - 16) x 10 = 10 <= absorbed 1 x 20 x 1.95 = 39
    assert planmod.warm_pool_pods(17, 1, 20, 0.8, 10, 1.95) == 0
    # no cold start (capacity appears instantly) -> nothing to keep warm
    assert planmod.warm_pool_pods(100, 1, 20, 0.8, 0, 1.0) == 0


def test_break_even_is_a_multiple_of_cold_start() -> None:
    assert planmod.break_even(480, 1.0) == 480
    assert planmod.break_even(480, 1.5) == 720
    result = planmod.build_plan(planmod.parse_plan(_with(autoscaling__break_even_multiple=2.0)))
    assert result.cold_start_seconds == 480          # 300 s node + 180 s model load
    assert result.break_even_node_seconds == 960     # 2 x 480
    assert result.break_even_pod_seconds == 360      # 2 x 180 (node already there)


def test_build_plan_end_to_end_numbers() -> None:
    result = planmod.build_plan(planmod.parse_plan(_doc()))
    assert result.prefill_service_seconds == pytest.approx(0.05)   # 1000 uncached tokens / 20000 tok/s
    assert result.ttft_slack_seconds == pytest.approx(1.95)        # 2.0 - 0.05
    assert (result.prefill.steady_pods, result.prefill.warm_pods) == (1, 1)
    assert (result.decode.steady_pods, result.decode.warm_pods) == (3, 4)
    text = planmod.render(result)
    assert "consolidationPolicy: WhenEmpty" in text
    assert "consolidateAfter: 1h" in text
    assert "kind: PodGroup" in text  # TP=4 -> gang scheduling
    assert "Kill switch" in text and "phaselens_prefill_backlog_seconds" in text
    # GPU limit = 2 x planned peak GPUs = 2 x ((1+1) + (3+4)) x 4 GPUs
    assert "nvidia.com/gpu: '72'" in text


@pytest.mark.parametrize(("changes", "needle"), [
    ({"autoscaling__decode_signal": "DCGM_FI_DEV_GPU_UTIL"}, "GPU utilization"),
    ({"autoscaling__prefill_signal": "DCGM_FI_DEV_FB_USED"}, "GPU utilization / GPU memory"),
    ({"autoscaling__decode_signal": "nvidia_gpu_memory_used_bytes"}, "not a scaling signal"),
    ({"karpenter__consolidation_policy": "WhenEmptyOrUnderutilized"}, "WhenEmptyOrUnderutilized"),
    ({"scheduler__gang_scheduling": False}, "without gang scheduling"),
    ({"cluster__node_groups": [{"name": "one", "gpu_type": "L4", "gpus_per_node": 1, "count": 1}],
      "workload__prefill": {"tensor_parallel": 1}, "workload__decode": {"tensor_parallel": 1}},
     "single node with a single GPU"),
])
def test_refusals(changes: dict[str, Any], needle: str) -> None:
    plan = planmod.parse_plan(_with(**changes))
    reasons = planmod.check_refusals(plan)
    assert any(needle in reason for reason in reasons), reasons
    with pytest.raises(planmod.PlanRefused):
        planmod.build_plan(plan)


def test_gang_not_required_for_tp1_and_static_single_gpu_is_fine() -> None:
    plan = planmod.parse_plan(yaml.safe_load((EXAMPLES / "plan-single-gpu-static.yaml").read_text()))
    assert planmod.check_refusals(plan) == []
    text = planmod.render(planmod.build_plan(plan))
    assert "kind: PodGroup" not in text and "kind: NodePool" not in text


def test_main_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert planmod.main([str(EXAMPLES / "plan-disaggregated-h100.yaml")]) == 0
    assert "Layer 3" in capsys.readouterr().out
    assert planmod.main([str(EXAMPLES / "plan-refused-gpu-utilization.yaml")]) == 2
    assert "refused" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster: {node_groups: []}\n")
    assert planmod.main([str(bad)]) == 1
    assert "node_groups" in capsys.readouterr().err
    assert planmod.main([str(tmp_path / "missing.yaml")]) == 1


@pytest.mark.parametrize(("changes", "message"), [
    ({"workload__isl_tokens": "many"}, "isl_tokens: expected float"),
    ({"workload__prefix_hit_ratio": 1.0}, "prefix_hit_ratio"),
    ({"workload__burst_factor": 0.5}, "burst_factor"),
    ({"slo__ttft_p99_seconds": -1}, "must not be negative"),
])
def test_bad_input_is_a_clear_error(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(planmod.PlanError, match=message):
        planmod.parse_plan(_with(**changes))
