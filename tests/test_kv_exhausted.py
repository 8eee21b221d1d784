"""A preemption is a full KV cache, whatever the scrapes sampled (tests/fixtures/vllm-0.32.0-cpu-kv-thrash).

vLLM preempts only when it cannot allocate a block, then frees the victims' blocks at once, so a
1 s sample of `kv_cache_usage_perc` can miss every full instant of an engine that preempts hundreds
of times. The pressure rules (KV_CACHE_PRESSURE, the KV_CAPACITY verdict) must not depend on a
scrape landing on the peak.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from phaselens.analyzers.kv_cache import pressure_peak
from phaselens.diagnosis_eval import run, violations
from phaselens.model import TickResult
from phaselens.settings import Settings
from prometheus_client.parser import text_string_to_metric_families

SETTINGS = Settings(window_seconds=20.0, slo_ttft_seconds=0.25, slo_itl_seconds=0.05)  # the e2e scenario's
THRESHOLD = SETTINGS.thresholds.kv_pressure_utilization


def _value(path: Path, name: str) -> float:
    """Read with prometheus_client's parser: the fixture's facts do not rest on ours."""
    text = "".join(line for line in path.read_text().splitlines(keepends=True) if not line.startswith("# scrape_time"))
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def _subset(kv_thrash_dir: Path, dest: Path, first: int, last: int) -> Path:
    dest.mkdir()
    for i in range(first, last + 1):
        shutil.copy(kv_thrash_dir / f"{i:04d}.prom", dest)
    return dest


def test_the_fixture_is_a_window_the_samples_never_show_full(kv_thrash_dir: Path) -> None:
    files = [kv_thrash_dir / f"{i:04d}.prom" for i in range(76, 91)]
    peak = max(_value(f, "vllm:kv_cache_usage_perc") for f in files)
    preempted = _value(files[-1], "vllm:num_preemptions_total") - _value(files[0], "vllm:num_preemptions_total")
    assert peak < THRESHOLD and preempted >= 100  # what made the old rules stay silent


def test_pressure_peak_is_one_when_the_engine_preempted() -> None:
    assert pressure_peak(0.81, exhausted=True) == 1.0
    assert pressure_peak(0.81, exhausted=False) == 0.81
    assert pressure_peak(None, exhausted=False) is None


def _codes(ticks: list[TickResult]) -> set[str]:
    return {r.code for t in ticks for r in t.recommendations}


def test_preempting_engine_with_a_low_sampled_peak_gets_kv_pressure(kv_thrash_dir: Path, tmp_path: Path) -> None:
    ticks = run([f"aggregated={_subset(kv_thrash_dir, tmp_path / 'w', 76, 90)}"], SETTINGS)
    pressure = [r for t in ticks for r in t.recommendations if r.code == "KV_CACHE_PRESSURE"]
    assert pressure, _codes(ticks)
    rec = pressure[0]
    assert rec.evidence["kv_utilization_sampled_peak"] < THRESHOLD
    assert rec.evidence["kv_utilization_peak"] == 1.0
    sampled = rec.evidence["kv_utilization_sampled_peak"]
    assert f"ran out of blocks (the scrapes saw at most {sampled:.0%})" in rec.message
    diagnosis = next(r for t in ticks for r in t.recommendations if r.code == "DIAGNOSIS")
    assert "ran out of blocks (the scrapes saw at most" in diagnosis.message  # both lines tell it alike
    verdicts = [r for t in ticks for r in t.recommendations if r.code == "DIAGNOSIS"]
    assert verdicts and {r.cause for r in verdicts} == {"KV_CAPACITY"}
    assert "DECODE_BOTTLENECK" in _codes(ticks)  # the phase line survives: it agrees with the cause
    assert violations(ticks) == []


def test_verdict_stays_kv_capacity_while_the_engine_keeps_preempting(kv_thrash_dir: Path) -> None:
    """Over the whole overload the cause must not flip to DEMAND_ABOVE_CAPACITY whenever the recent
    samples happen to land on emptied caches (the old code switched there after 22 s)."""
    ticks = run([f"aggregated={kv_thrash_dir}"], SETTINGS)
    causes = [r.cause for t in ticks for r in t.recommendations if r.code == "DIAGNOSIS"]
    assert causes and causes[0] == "KV_CAPACITY"
    assert "DEMAND_ABOVE_CAPACITY" not in causes, causes
    assert violations(ticks) == []


def test_no_preemption_and_a_low_sample_stays_silent(kv_thrash_dir: Path, tmp_path: Path) -> None:
    """The prefix phase before the overload: KV under the threshold, nothing preempted -> no pressure."""
    ticks = run([f"aggregated={_subset(kv_thrash_dir, tmp_path / 'calm', 60, 63)}"], SETTINGS)
    assert "KV_CACHE_PRESSURE" not in _codes(ticks)
