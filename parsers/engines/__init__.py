"""Engine adapters: raw exposition families -> canonical series (`EngineSnapshot`).

Entry points: `to_snapshot` and `detect_engine`. Canonical names live in `canonical.py`; each
engine's name table in `vllm.py`, `dynamo.py`, `nixl_exporter.py`; the one-pass mapper and the
precedence/aggregation rules in `mapping.py`.
"""

from __future__ import annotations

from phaselens.model import EngineSnapshot, Exposition
from phaselens.parsers.engines.detect import ALL_TABLE, TABLES, detect_engine
from phaselens.parsers.engines.mapping import map_exposition

ENGINE_CHOICES = ("auto", "vllm", "dynamo", "nixl")

__all__ = ["ENGINE_CHOICES", "detect_engine", "to_snapshot"]


def to_snapshot(exposition: Exposition, time: float, engine: str = "auto") -> EngineSnapshot:
    """Map one parsed scrape onto canonical series.

    `engine="auto"` applies every known table and reports the detected kind; a named engine applies
    only its table (Dynamo's includes vLLM's passthrough names). Unknown families are ignored;
    `parse_issues` counts the exposition's skipped lines.
    """
    if engine == "auto":
        return map_exposition(exposition, ALL_TABLE, time, None)
    table = TABLES.get(engine)
    if table is None:
        raise ValueError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINE_CHOICES)}")
    kind = "vllm" if engine == "vllm" else "dynamo" if engine == "dynamo" else "nixl"
    return map_exposition(exposition, table, time, kind)
