"""Which engine produced a payload, from its family names alone."""

from __future__ import annotations

from typing import Final

from phaselens.model import EngineKind, Exposition
from phaselens.parsers.engines.dynamo import DYNAMO_TABLE
from phaselens.parsers.engines.mapping import Binding, Source, kind_of, merge_tables
from phaselens.parsers.engines.nixl_exporter import NIXL_EXPORTER_TABLE
from phaselens.parsers.engines.sglang import SGLANG_TABLE
from phaselens.parsers.engines.trtllm import TRTLLM_TABLE
from phaselens.parsers.engines.vllm import VLLM_TABLE

ALL_TABLE: Final[dict[str, Binding]] = merge_tables(
    VLLM_TABLE, DYNAMO_TABLE, NIXL_EXPORTER_TABLE, SGLANG_TABLE, TRTLLM_TABLE
)

TABLES: Final[dict[str, dict[str, Binding]]] = {
    "vllm": VLLM_TABLE,
    # A Dynamo worker re-exposes its engine's series (vllm:*, sglang:*, trtllm_*) next to dynamo_*.
    "dynamo": merge_tables(DYNAMO_TABLE, VLLM_TABLE, SGLANG_TABLE, TRTLLM_TABLE),
    "nixl": NIXL_EXPORTER_TABLE,
    "sglang": SGLANG_TABLE,
    "trtllm": TRTLLM_TABLE,
}


def detect_engine(exposition: Exposition) -> EngineKind:
    """`dynamo` if any `dynamo_*` family is present (a worker payload with engine series is still a
    Dynamo target), else `vllm` for known vLLM names (any spelling), else `sglang` for `sglang:*`,
    else `trtllm` for `trtllm_*` / Triton's `nv_trt_llm_*`, else `nixl` for NIXL's exporter, else
    `unknown`. The same rule `to_snapshot` applies during its pass."""
    sources: set[Source] = set()
    saw_dynamo = False
    for name in exposition.families:
        binding = ALL_TABLE.get(name)
        if binding is not None:
            sources.add(binding.rule.source)
        elif name.startswith("dynamo_"):
            saw_dynamo = True
    return kind_of(sources, saw_dynamo)
