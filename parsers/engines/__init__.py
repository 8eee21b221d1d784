"""Engine adapters: raw exposition families -> canonical series (`EngineSnapshot`).

Entry points: `to_snapshot` and `detect_engine`. Canonical names live in `canonical.py`; each
engine's name table in `vllm.py`, `dynamo.py`, `nixl_exporter.py`, `sglang.py`, `trtllm.py`; the
one-pass mapper and the precedence/aggregation rules in `mapping.py`; engine-aware plausibility
warnings in `semantics.py`.
"""

from __future__ import annotations

from dataclasses import replace

from phaselens.model import EngineKind, EngineSnapshot, Exposition
from phaselens.parsers.engines.detect import ALL_TABLE, TABLES, detect_engine
from phaselens.parsers.engines.mapping import Binding, map_exposition
from phaselens.parsers.engines.semantics import check_scrape

ENGINE_CHOICES = ("auto", "vllm", "dynamo", "nixl", "sglang", "trtllm")

__all__ = ["ENGINE_CHOICES", "detect_engine", "to_snapshot"]


def to_snapshot(exposition: Exposition, time: float, engine: str = "auto") -> EngineSnapshot:
    """Map one parsed scrape onto canonical series.

    `engine="auto"` applies every known table and reports the detected kind; a named engine applies
    only its table (Dynamo's includes the engines' passthrough names). Unknown families are ignored;
    `parse_issues` counts the exposition's skipped lines; `suspects` holds the engine-aware
    plausibility findings (semantics.py).
    """
    if engine == "auto":
        return _checked(exposition, map_exposition(exposition, ALL_TABLE, time, None), ALL_TABLE)
    table = TABLES.get(engine)
    if table is None:
        raise ValueError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINE_CHOICES)}")
    kind: EngineKind = _KINDS[engine]
    return _checked(exposition, map_exposition(exposition, table, time, kind), table)


def _checked(exposition: Exposition, snapshot: EngineSnapshot, table: dict[str, Binding]) -> EngineSnapshot:
    suspects = check_scrape(exposition, snapshot, table)
    return replace(snapshot, suspects=suspects) if suspects else snapshot


_KINDS: dict[str, EngineKind] = {
    "vllm": "vllm",
    "dynamo": "dynamo",
    "nixl": "nixl",
    "sglang": "sglang",
    "trtllm": "trtllm",
}
