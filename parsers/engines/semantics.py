"""Engine-aware plausibility checks on one scrape: values an adapter maps faithfully but a reader
would misread. Each finding is a `Suspect`; the pipeline logs each once (`engine_metric_suspect`)
and lists the current ones in `/signals` under `warnings`.

Checks (pure functions of the parsed exposition and its canonical snapshot):
- `ratio_in_percent`: a family every adapter documents as a 0-1 ratio (KV usage, hit rates,
  SGLang pool usages, TensorRT-LLM utilizations) carries a value in (1, 100]. The adapters that
  accept both (`fraction_or_percent`: SGLang, TensorRT-LLM, Dynamo) then read the family as
  percent; the others (vLLM) treat it as missing (validate.py: a ratio outside 0..1). Either way
  the engine build deserves a look.
- `token_usage_max_of_pools`: SGLang's `token_usage` is max(full, SWA, Mamba pool usage)
  (SGLang's collector says so: "misleadingly named"). When a SWA or Mamba pool is in use, the KV
  utilization phaselens reports is the fullest pool, not the full-attention KV cache.

The window-level check (KV usage pinned near 1 while a host/offload tier holds blocks and nothing
is preempted) needs a window, so it lives with the KV pressure analysis
(analyzers/kv_pressure.py) and produces the same `Suspect`.

Generic validation (ratios in 0..1, finite counts, monotonic buckets) is a separate concern: a
series that fails it is treated as missing elsewhere; these checks only explain.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from phaselens.model import EngineSnapshot, Exposition, Suspect
from phaselens.parsers.engines import canonical as c
from phaselens.parsers.engines.mapping import Binding

RATIO_CANONICALS: frozenset[str] = frozenset(
    {
        c.KV_CACHE_USAGE,
        c.PREFIX_CACHE_HIT_RATE_GAUGE,
        c.KV_FULL_POOL_USAGE,
        c.KV_SWA_POOL_USAGE,
        c.KV_MAMBA_POOL_USAGE,
        c.HOST_KV_USAGE,
    }
)
"""Canonical series that are fractions 0-1 (canonical.py: "Units are normalised: ratios 0-1")."""

_PERCENT_CEILING = 100.0


_RATIO_NAMES: dict[int, tuple[Mapping[str, Binding], frozenset[str]]] = {}


def _ratio_names(table: Mapping[str, Binding]) -> frozenset[str]:
    """Raw family names of a table that hold 0-1 ratios (computed once per table: every scrape asks)."""
    held = _RATIO_NAMES.get(id(table))
    if held is not None and held[0] is table:
        return held[1]
    names = frozenset(name for name, binding in table.items() if _holds_ratio(binding))
    _RATIO_NAMES[id(table)] = (table, names)
    return names


def _holds_ratio(binding: Binding) -> bool:
    rule = binding.rule
    if rule.kind != "gauge":
        return False
    if rule.by_label is not None:
        return any(canonical in RATIO_CANONICALS for _, canonical, _ in rule.by_label[1])
    return rule.canonical in RATIO_CANONICALS


def ratio_in_percent(exposition: Exposition, table: Mapping[str, Binding]) -> list[Suspect]:
    """One suspect per ratio family whose raw samples exceed 1 (but not 100)."""
    out: list[Suspect] = []
    for name in _ratio_names(table) & exposition.families.keys():
        family = exposition.families[name]
        binding = table[name]
        rule = binding.rule
        if rule.by_label is not None:
            ratio_values = {value for value, canonical, _ in rule.by_label[1] if canonical in RATIO_CANONICALS}
            label = rule.by_label[0]
            values = [
                s.value for s in family.samples if any(k == label and v in ratio_values for k, v in s.labels)
            ]
        else:
            values = [s.value for s in family.samples if s.name == binding.base]
        finite = [v for v in values if math.isfinite(v)]
        high = [v for v in finite if 1.0 < v <= _PERCENT_CEILING]
        if not high:
            continue
        read_as = "reads it as percent (divided by 100)" if rule.fraction_or_percent else "treats it as missing"
        out.append(
            Suspect(
                code="ratio_in_percent",
                metric=name,
                message=(
                    f"{name} is documented as a 0-1 ratio but reports {max(high):g}: it looks like a "
                    f"percentage; phaselens {read_as}. Check the engine version's unit for this metric."
                ),
                value=max(high),
            )
        )
    return out


def token_usage_max_of_pools(snapshot: EngineSnapshot) -> list[Suspect]:
    """SGLang hybrid models: `token_usage` (our KV utilization) is the max over pools."""
    if snapshot.engine_kind not in ("sglang", "dynamo"):  # only SGLang (or a Dynamo SGLang worker) has pools
        return []
    pools: dict[str, float] = {}
    for (name, _), value in snapshot.scalars.items():
        for canonical, pool in (
            (c.KV_FULL_POOL_USAGE, "full"),
            (c.KV_SWA_POOL_USAGE, "swa"),
            (c.KV_MAMBA_POOL_USAGE, "mamba"),
        ):
            if name == canonical and math.isfinite(value):
                pools[pool] = max(pools.get(pool, 0.0), value)
    hybrid = {pool: v for pool, v in pools.items() if pool != "full" and v > 0}
    if not hybrid:
        return []
    binding = max(pools, key=lambda pool: pools[pool])
    shown = ", ".join(f"{pool}={pools[pool]:.3g}" for pool in sorted(pools))
    return [
        Suspect(
            code="token_usage_max_of_pools",
            metric="sglang:token_usage",
            message=(
                f"sglang:token_usage is the largest of several KV pools ({shown}): the KV utilization "
                f"phaselens reports is the {binding} pool's, a max over pools, not the full-attention "
                "KV cache alone; the per-pool gauges say which pool binds."
            ),
            value=pools[binding],
        )
    ]


def check_scrape(exposition: Exposition, snapshot: EngineSnapshot, table: Mapping[str, Binding]) -> tuple[Suspect, ...]:
    return (*ratio_in_percent(exposition, table), *token_usage_max_of_pools(snapshot))
