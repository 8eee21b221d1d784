"""docs/signals.md's per-engine coverage comes from the adapters' tables and agrees with real output."""

from __future__ import annotations

from pathlib import Path

import pytest
from phaselens.exporters.engine_coverage import ENGINES, SIGNAL_INPUTS, coverage, describe, produced
from phaselens.exporters.specs import SPECS
from phaselens.parsers.engines import canonical as c
from phaselens.parsers.engines import to_snapshot
from phaselens.parsers.exposition import parse_exposition

CANONICAL = {value for name, value in vars(c).items() if name.isupper() and isinstance(value, str)}
FIXTURE_ENGINE = {
    "sglang-0.3-pr1461": "SGLang",
    "sglang-0.3.5-pr1853": "SGLang",
    "sglang-0.5.1-issue13485": "SGLang",
    "sglang-0.4-docs": "SGLang",
    "sglang-0.4-pr7944": "SGLang",
    "sglang-0.5-aibrix1614": "SGLang",
    "sglang-0.5-docs": "SGLang",
    "trtllm-1.1.0rc5-dynamo-docs": "TensorRT-LLM",
    "sglang-0.5-dynamo-worker": "Dynamo+SGLang",
    "trtllm-1.1-dynamo-worker": "Dynamo+TensorRT-LLM",
    "triton-trtllm-23.11-readme": "Triton TensorRT-LLM",
    "triton-trtllm-docs-current": "Triton TensorRT-LLM",
}


def test_every_signal_says_where_it_comes_from() -> None:
    assert set(SIGNAL_INPUTS) == {spec.name for spec in SPECS}


def test_inputs_are_canonical_names() -> None:
    for needs in SIGNAL_INPUTS.values():
        if isinstance(needs, str):
            continue
        for alternative in needs:
            for name in alternative:
                assert name in CANONICAL or name.removeprefix("info:") in CANONICAL, name


@pytest.mark.parametrize("folder", sorted(FIXTURE_ENGINE))
def test_real_output_stays_within_what_the_table_claims(fixtures_dir: Path, folder: str) -> None:
    snap = to_snapshot(parse_exposition((fixtures_dir / folder / "metrics.prom").read_text()), 1.0)
    tables = dict(ENGINES)
    tables["Dynamo+SGLang"] = {**tables["Dynamo"], **tables["SGLang"]}
    tables["Dynamo+TensorRT-LLM"] = {**tables["Dynamo"], **tables["TensorRT-LLM"]}
    table = tables[FIXTURE_ENGINE[folder]]
    names = {name for name, _ in (*snap.scalars, *snap.histograms)}
    names |= {"info:" + key for info in snap.info.values() for key in info}
    assert names and names <= produced(table)


def test_what_tensorrt_llm_cannot_give(fixtures_dir: Path) -> None:
    """Its TPOT is per request: no per-step ITL quantile, no preemption rate (real output agrees)."""
    text = (fixtures_dir / "trtllm-1.1.0rc5-dynamo-docs" / "metrics.prom").read_text()
    snap = to_snapshot(parse_exposition(text), 1.0)
    assert c.TPOT_REQUEST_SECONDS in {name for name, _ in snap.histograms}
    assert c.ITL_SECONDS not in {name for name, _ in snap.histograms}
    itl = coverage("phaselens_itl_seconds")
    assert not isinstance(itl, str)
    assert {cov.engine: cov.gives for cov in itl} == {
        "vLLM": True, "Dynamo": True, "SGLang": True, "TensorRT-LLM": False, "Triton TensorRT-LLM": False
    }
    assert "TensorRT-LLM (no itl_seconds)" in describe("phaselens_itl_seconds")
    assert "not from" in describe("phaselens_kv_preemptions_per_second")


def test_engine_independent_signals() -> None:
    assert describe("phaselens_target_up") == "the sidecar itself, any engine"
    assert "NIXL telemetry rings" in describe("phaselens_nixl_transfer_seconds")
