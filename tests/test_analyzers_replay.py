"""The analyzers on the real vLLM captures: scrape -> parse -> to_snapshot -> window -> analyze."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from phaselens.analyzers.pool import analyze_pool
from phaselens.analyzers.target import analyze_target
from phaselens.analyzers.window import TargetWindow
from phaselens.exporters.specs import SPECS_BY_NAME
from phaselens.model import EngineSnapshot, Recommendation, Signal, Target, label_value
from phaselens.parsers.engines import to_snapshot
from phaselens.parsers.exposition import parse_exposition
from phaselens.settings import Settings

SETTINGS = Settings()
AGG = Target("agg", "aggregated", "file://aggregated")
PREFILL = Target("p0", "prefill", "file://prefill")
DECODE = Target("d0", "decode", "file://decode")

# Load phases of the aggregated capture (data README): ~8 s idle, 20 s steady, 20 s shared prefix,
# 25 s burst, 8 s drain. Indices are scrape numbers (1 Hz).
IDLE_START = range(0, 8)
SHARED_PREFIX_SETTLED = range(36, 49)  # hit ratio has had time to rise over the 30 s window
BURST = range(49, 74)
IDLE_END = range(77, 84)


@dataclass(frozen=True)
class Tick:
    signals: list[Signal]
    recommendations: list[Recommendation]

    def value(self, name: str, **labels: str) -> float | None:
        for s in self.signals:
            if s.name == name and all(label_value(s.labels, k) == v for k, v in labels.items()):
                return s.value
        return None

    def codes(self) -> set[str]:
        return {r.code for r in self.recommendations}


def load_snapshots(folder: Path, limit: int | None = None) -> list[EngineSnapshot]:
    snaps = []
    for path in sorted(folder.glob("*.prom"))[:limit]:
        text = path.read_text()
        first = text.splitlines()[0].split()
        assert first[:2] == ["#", "scrape_time"]
        snaps.append(to_snapshot(parse_exposition(text), float(first[2])))
    return snaps


def replay(snaps: Sequence[EngineSnapshot], target: Target) -> list[Tick]:
    window = TargetWindow(SETTINGS.window_seconds)
    ticks = []
    for snap in snaps:
        window.add(snap)
        ticks.append(Tick(*analyze_target(window, target, SETTINGS)))
    return ticks


@pytest.fixture(scope="session")
def aggregated_snaps(aggregated_dir: Path) -> list[EngineSnapshot]:
    return load_snapshots(aggregated_dir)


@pytest.fixture(scope="session")
def aggregated_ticks(aggregated_snaps: list[EngineSnapshot]) -> list[Tick]:
    return replay(aggregated_snaps, AGG)


PD_SCRAPES = 150  # both load phases have started by then; keeps the test set fast
PD_EVERY = 3  # analyze every third scrape (the windows still see every scrape)


@pytest.fixture(scope="session")
def pd_snaps(pd_dir: Path) -> tuple[list[EngineSnapshot], list[EngineSnapshot]]:
    prefill = load_snapshots(pd_dir / "prefill", PD_SCRAPES)
    decode = load_snapshots(pd_dir / "decode", PD_SCRAPES)
    return prefill, decode


@pytest.fixture(scope="session")
def pd_ticks(pd_snaps: tuple[list[EngineSnapshot], list[EngineSnapshot]]) -> list[tuple[Tick, Tick, Tick]]:
    """(prefill target, decode target, pool) at every PD_EVERY-th scrape instant."""
    prefill, decode = pd_snaps
    wp, wd = TargetWindow(SETTINGS.window_seconds), TargetWindow(SETTINGS.window_seconds)
    out = []
    for index, (sp, sd) in enumerate(zip(prefill, decode, strict=True)):
        wp.add(sp)
        wd.add(sd)
        if index % PD_EVERY:
            continue
        out.append((
            Tick(*analyze_target(wp, PREFILL, SETTINGS)),
            Tick(*analyze_target(wd, DECODE, SETTINGS)),
            Tick(*analyze_pool({"p0": (PREFILL, wp), "d0": (DECODE, wd)}, SETTINGS)),
        ))
    return out


# ------------------------------------------------------------------------------------ load phases


def test_capture_has_expected_length(aggregated_ticks: list[Tick]) -> None:
    assert len(aggregated_ticks) == 84


def test_shared_prefix_phase_hits_the_cache(aggregated_ticks: list[Tick]) -> None:
    ratios = [aggregated_ticks[i].value("phaselens_kv_prefix_cache_hit_ratio") for i in SHARED_PREFIX_SETTLED]
    assert all(r is not None and r > 0.5 for r in ratios), ratios
    steady = aggregated_ticks[27].value("phaselens_kv_prefix_cache_hit_ratio")
    assert steady is not None and steady < 0.1  # unique prompts before the shared-prefix phase


def test_burst_saturates_kv_and_queue(aggregated_ticks: list[Tick]) -> None:
    burst = [aggregated_ticks[i] for i in BURST]
    kv = [t.value("phaselens_decode_kv_utilization_ratio") or 0.0 for t in burst]
    queue = [t.value("phaselens_prefill_queue_depth") or 0.0 for t in burst]
    preempt = [t.value("phaselens_kv_preemptions_per_second") or 0.0 for t in burst]
    assert max(kv) > 0.9
    assert sum(q > 20 for q in queue) >= len(burst) // 2
    assert all(p > 0 for p in preempt)
    with_pressure = [t for t in burst if "KV_CACHE_PRESSURE" in t.codes()]
    assert len(with_pressure) >= len(burst) // 2
    rec = next(r for r in with_pressure[0].recommendations if r.code == "KV_CACHE_PRESSURE")
    assert rec.evidence["kv_utilization_peak"] >= SETTINGS.thresholds.kv_pressure_utilization
    assert 0.5 <= rec.confidence <= 1.0


def test_burst_phase_is_decode_bound_with_a_real_backlog(aggregated_ticks: list[Tick]) -> None:
    tick = aggregated_ticks[60]
    assert tick.value("phaselens_phase_bottleneck", phase="decode") == 1.0
    assert tick.value("phaselens_phase_bottleneck", phase="prefill") == 0.0
    imbalance = tick.value("phaselens_phase_imbalance_ratio")
    assert imbalance is not None and imbalance < 1
    backlog = tick.value("phaselens_prefill_backlog_seconds")
    assert backlog is not None and backlog > 0


def test_burst_names_decode_the_bottleneck_and_the_kv_cache_as_its_cause(aggregated_ticks: list[Tick]) -> None:
    burst = [aggregated_ticks[i] for i in BURST]
    both = [t for t in burst if {"KV_CACHE_PRESSURE", "DECODE_BOTTLENECK"} <= t.codes()]
    assert both, [sorted(t.codes()) for t in burst]
    rec = next(r for r in both[0].recommendations if r.code == "DECODE_BOTTLENECK")
    assert "KV_CACHE_PRESSURE" in rec.message
    assert float(rec.evidence["imbalance_ratio"]) <= SETTINGS.thresholds.bottleneck_imbalance_low


def test_idle_recommends_nothing(aggregated_ticks: list[Tick]) -> None:
    for i in (*IDLE_START, *IDLE_END):
        assert aggregated_ticks[i].recommendations == [], (i, aggregated_ticks[i].codes())


def test_idle_start_emits_no_traffic_signals(aggregated_ticks: list[Tick]) -> None:
    for i in IDLE_START:
        names = {s.name for s in aggregated_ticks[i].signals}
        assert "phaselens_ttft_seconds" not in names
        assert "phaselens_kv_prefix_cache_hit_ratio" not in names  # no lookups: no made-up ratio
        assert "phaselens_slo_attainment_ratio" not in names


# ------------------------------------------------------------------------------------ invariants


def check_invariants(signals: Sequence[Signal]) -> None:
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for s in signals:
        assert math.isfinite(s.value), s
        spec = SPECS_BY_NAME[s.name]
        assert {k for k, _ in s.labels} == set(spec.labels), s
        key = (s.name, s.labels)
        assert key not in seen, f"duplicate series {key}"
        seen[key] = s.value
        if s.name.endswith("_ratio") and s.name != "phaselens_phase_imbalance_ratio":
            assert 0.0 <= s.value <= 1.0, s
        else:
            assert s.value >= 0.0, s
    for (name, labels), lower in seen.items():
        if dict(labels).get("bound") == "lower":
            upper_labels = tuple((k, "upper" if k == "bound" else v) for k, v in labels)
            assert lower <= seen[(name, upper_labels)] + 1e-12, (name, labels)


def test_invariants_over_every_aggregated_scrape(aggregated_ticks: list[Tick]) -> None:
    for tick in aggregated_ticks:
        check_invariants(tick.signals)
        for rec in tick.recommendations:
            assert 0.0 <= rec.confidence <= 1.0
            assert rec.message and rec.evidence


def test_invariants_over_every_pd_scrape(pd_ticks: list[tuple[Tick, Tick, Tick]]) -> None:
    for ticks in pd_ticks:
        for tick in ticks:
            check_invariants(tick.signals)


def test_quantiles_are_ordered(aggregated_ticks: list[Tick]) -> None:
    complete = 0
    for tick in aggregated_ticks:
        for name in ("phaselens_ttft_seconds", "phaselens_itl_seconds", "phaselens_e2e_latency_seconds"):
            values = [tick.value(name, percentile=p) for p in ("50", "90", "95", "99")]
            present = [v for v in values if v is not None]
            assert present == sorted(present)
            complete += len(present) == len(values)
    assert complete > 0  # the labels asked for are the ones exported: not ordered because absent


def test_engine_restart_gives_no_negative_or_huge_values(aggregated_snaps: list[EngineSnapshot]) -> None:
    """Splice the busy end of the capture before its idle start: every counter drops (a restart)."""
    first, second = aggregated_snaps[40:], aggregated_snaps[:40]
    shift = first[-1].time + 1.0 - second[0].time
    spliced = [*first, *(replace(s, time=s.time + shift) for s in second)]
    ticks = replay(spliced, AGG)
    for tick in ticks:
        check_invariants(tick.signals)
        rate = tick.value("phaselens_request_rate_per_second")
        preempt = tick.value("phaselens_kv_preemptions_per_second")
        assert rate is None or rate < 500  # the capture peaks near 100 req/s
        assert preempt is None or preempt < 100


# ------------------------------------------------------------------------------------ 1P1D


def test_pd_roles_are_told_apart(pd_ticks: list[tuple[Tick, Tick, Tick]]) -> None:
    prefill, decode, _ = pd_ticks[-1]
    assert {label_value(s.labels, "role") for s in prefill.signals} == {"prefill"}
    assert {label_value(s.labels, "role") for s in decode.signals} == {"decode"}
    # per-target imbalance belongs to aggregated engines; the pool carries it for P/D
    assert prefill.value("phaselens_phase_imbalance_ratio") is None
    assert decode.value("phaselens_phase_imbalance_ratio") is None
    share_p = prefill.value("phaselens_phase_prefill_time_share_ratio")
    share_d = decode.value("phaselens_phase_prefill_time_share_ratio")
    assert share_p is not None and share_d is not None and share_p > share_d


def test_pd_pool_imbalance_and_score(pd_ticks: list[tuple[Tick, Tick, Tick]]) -> None:
    pools = [pool for _, _, pool in pd_ticks]
    computed = [p for p in pools if p.value("phaselens_phase_imbalance_ratio") is not None]
    assert len(computed) > len(pools) // 2
    for pool in computed:
        assert {label_value(s.labels, "target") for s in pool.signals} == {"pool"}
        assert {label_value(s.labels, "engine") for s in pool.signals} == {"all"}
        flags = [pool.value("phaselens_phase_bottleneck", phase=p) for p in ("prefill", "decode")]
        assert sorted(flags) == [0.0, 1.0]  # type: ignore[type-var]
    scored = [p for p in pools if p.value("phaselens_disaggregation_score") is not None]
    assert scored
    share = scored[-1].value("phaselens_disaggregation_component_ratio", component="kv_transfer_ttft_share")
    assert share is not None and 0 < share < 1  # the decode side has NIXL histograms


def test_pool_needs_both_roles(pd_snaps: tuple[list[EngineSnapshot], list[EngineSnapshot]]) -> None:
    window = TargetWindow(SETTINGS.window_seconds)
    for snap in pd_snaps[0][:40]:
        window.add(snap)
    signals, recs = analyze_pool({"p0": (PREFILL, window)}, SETTINGS)
    assert signals == [] and recs == []
