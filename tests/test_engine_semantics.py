"""Engine-aware warnings (`engine_metric_suspect`) and the decode KV pressure signal.

Real payloads: SGLang 0.3's percent hit rate (PR #1461) and a real Dynamo 1.6.1 mocker with a host
KV tier (tests/fixtures/dynamo-1.6.1-mocker-host-offload). The pinned-by-offload case never occurs
on the mocker (its tier does not pin utilization, see that SOURCE.md), so its positive cases run
on canonical snapshots built here, named SYNTHETIC.
"""

from __future__ import annotations

import logging
import tarfile
from pathlib import Path

import pytest
from phaselens.analyzers.kv_pressure import PINNED_AT, kv_pressure, window_suspects
from phaselens.analyzers.view import WindowView
from phaselens.analyzers.window import TargetWindow
from phaselens.clock import ManualClock
from phaselens.model import EngineSnapshot, Labels, Target
from phaselens.parsers.engines import canonical as c
from phaselens.parsers.engines import to_snapshot
from phaselens.parsers.engines.semantics import token_usage_max_of_pools
from phaselens.parsers.exposition import parse_exposition
from phaselens.pipeline import Pipeline
from phaselens.server import signals_document
from phaselens.settings import Settings
from phaselens.sources.scraper import ScrapeResult

FIXTURES = Path(__file__).parent / "fixtures"
MOCKER_TAR = FIXTURES / "dynamo-1.6.1-mocker-host-offload" / "worker-scrapes.tar.gz"
MODEL = "m"
GROUP = (MODEL, "0")


def key(name: str, model: str = MODEL, **extra: str) -> tuple[str, Labels]:
    return name, tuple(sorted({"model_name": model, "engine": "0", **extra}.items()))


def mocker_runs(tmp_path: Path) -> dict[str, list[tuple[float, str]]]:
    with tarfile.open(MOCKER_TAR) as tar:
        tar.extractall(tmp_path, filter="data")
    runs: dict[str, list[tuple[float, str]]] = {}
    for run in sorted(p for p in tmp_path.iterdir() if p.is_dir()):
        scrapes = []
        for path in sorted(run.glob("worker_*.prom")):
            text = path.read_text()
            first = text.splitlines()[0]
            assert first.startswith("# scraped_at ")
            scrapes.append((float(first.split()[-1]), text))
        runs[run.name] = scrapes
    return runs


# --------------------------------------------------------------------------- parse-time suspects


def test_percent_ratio_reported_once_in_log_and_in_signals(caplog: pytest.LogCaptureFixture) -> None:
    payload = (FIXTURES / "sglang-0.3-pr1461" / "metrics.prom").read_bytes()
    target = Target("sglang", "aggregated", "http://sglang/metrics")
    clock = ManualClock(100.0)
    pipeline = Pipeline(Settings(targets=(target,)), clock)
    with caplog.at_level(logging.WARNING, logger="phaselens"):
        for i in range(3):
            clock.set(100.0 + i)
            pipeline.submit(ScrapeResult("sglang", 100.0 + i, None, payload, None))
            tick = pipeline.tick()
    suspects = [r for r in caplog.records if getattr(r, "event", "") == "engine_metric_suspect"]
    assert len(suspects) == 1
    assert (suspects[0].code, suspects[0].metric, suspects[0].target) == (
        "ratio_in_percent", "sglang:cache_hit_rate", "sglang"
    )
    doc = signals_document(tick)
    assert {"ts", "signals", "series", "warnings"} <= set(doc)
    (warning,) = doc["warnings"]
    assert warning["code"] == "ratio_in_percent" and warning["first_seen"] == 100.0
    assert warning["value"] == pytest.approx(87.58777633289988)
    # The hit rate itself is exported as the fraction it means.
    hit = [s for s in tick.signals if s.name == "phaselens_kv_prefix_cache_hit_ratio"]
    assert [s.value for s in hit] == [pytest.approx(0.8758777633289988)]


def test_no_warning_for_plain_fractions() -> None:
    for folder in ("sglang-0.4-docs", "sglang-0.5-docs", "triton-trtllm-docs-current", "trtllm-1.1.0rc5-dynamo-docs"):
        text = (FIXTURES / folder / "metrics.prom").read_text()
        assert to_snapshot(parse_exposition(text), 1.0).suspects == ()


def test_vllm_usage_in_percent_is_flagged_and_missing() -> None:
    text = '# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{engine="0",model_name="m"} 87.0\n'
    snap = to_snapshot(parse_exposition(text), 1.0)
    (suspect,) = snap.suspects
    assert suspect.metric == "vllm:kv_cache_usage_perc" and "treats it as missing" in suspect.message
    assert key(c.KV_CACHE_USAGE) not in snap.scalars  # never clamped to 1 (validate.py)


def test_dynamo_usage_percent_is_flagged_and_read_as_percent() -> None:
    text = ("# TYPE dynamo_component_gpu_cache_usage_percent gauge\n"
            'dynamo_component_gpu_cache_usage_percent{dynamo_component="backend",model="m"} 85\n')
    snap = to_snapshot(parse_exposition(text), 1.0)
    assert snap.scalars[key(c.KV_CACHE_USAGE)] == pytest.approx(0.85)
    (suspect,) = snap.suspects
    assert suspect.metric == "dynamo_component_gpu_cache_usage_percent" and "divided by 100" in suspect.message


def test_token_usage_max_of_pools_names_the_binding_pool() -> None:
    """SYNTHETIC canonical snapshot: SGLang's per-pool gauges on a hybrid SWA model."""
    snap = EngineSnapshot(
        "sglang",
        1.0,
        {
            key(c.KV_CACHE_USAGE): 0.74,
            key(c.KV_FULL_POOL_USAGE): 0.52,
            key(c.KV_SWA_POOL_USAGE): 0.74,
            key(c.KV_MAMBA_POOL_USAGE): 0.0,
        },
        {},
    )
    (suspect,) = token_usage_max_of_pools(snap)
    assert suspect.code == "token_usage_max_of_pools" and suspect.value == 0.74
    assert "swa pool" in suspect.message and "max over pools" in suspect.message
    no_hybrid = EngineSnapshot("sglang", 1.0, {key(c.KV_FULL_POOL_USAGE): 0.9, key(c.KV_SWA_POOL_USAGE): 0.0}, {})
    assert token_usage_max_of_pools(no_hybrid) == []


# --------------------------------------------------------------------------- KV pressure


def test_real_mocker_host_tier_is_not_pinned_and_pressure_follows_utilization(tmp_path: Path) -> None:
    """The mocker's host tier leaves utilization meaning demand: requests are preempted."""
    runs = mocker_runs(tmp_path)
    assert set(runs) == {"gpu256-clients24", "gpu160-seqs8-clients12"}
    settings = Settings(window_seconds=30.0, kv_offload_tier=True)
    target = Target("worker", "aggregated", "http://worker/metrics")
    for scrapes in runs.values():
        window = TargetWindow(settings.window_seconds)
        for time_, text in scrapes:
            window.add(to_snapshot(parse_exposition(text), time_))
        view = WindowView(window, settings.window_seconds)
        (group,) = view.groups()
        usage = view.gauge(c.KV_CACHE_USAGE, group)
        preempted = view.increase(c.PREEMPTIONS, group)
        assert usage is not None and preempted is not None and preempted > 0
        result = kv_pressure(view, group, usage, PINNED_AT, offload_declared=True)
        assert result is not None
        assert (result.basis, result.value, result.suspect) == ("utilization", usage, None)
        assert result.host_tier == "declared (--kv-offload-tier)"
        assert window_suspects(window, target, settings) == []


def test_real_mocker_shows_no_host_tier_by_itself(tmp_path: Path) -> None:
    runs = mocker_runs(tmp_path)
    window = TargetWindow(30.0)
    for time_, text in runs["gpu256-clients24"]:
        window.add(to_snapshot(parse_exposition(text), time_))
    view = WindowView(window, 30.0)
    result = kv_pressure(view, view.groups()[0], 0.9, PINNED_AT, offload_declared=False)
    assert result is not None and result.host_tier is None


def _pinned_window(extra: dict[tuple[str, Labels], float] | None = None, info: dict[str, str] | None = None,
                   usage: float = 0.97, preemptions: tuple[float, float] = (4.0, 4.0)) -> TargetWindow:
    """SYNTHETIC: five scrapes 2 s apart with KV utilization pinned and a flat preemption counter."""
    window = TargetWindow(30.0)
    for i in range(5):
        scalars = {key(c.KV_CACHE_USAGE): usage + 0.005 * (i % 2),
                   key(c.PREEMPTIONS): preemptions[0] if i < 4 else preemptions[1],
                   key(c.REQUESTS_RUNNING): 6.0}
        scalars.update(extra or {})
        window.add(EngineSnapshot("vllm", 100.0 + 2 * i, scalars, {}, info={"0": info} if info else {}))
    return window


def test_pinned_with_declared_tier_and_no_preemption_is_not_pressure() -> None:
    window = _pinned_window()
    view = WindowView(window, 30.0)
    result = kv_pressure(view, GROUP, 0.975, PINNED_AT, offload_declared=True)
    assert result is not None and result.pinned
    assert (result.basis, result.value) == ("preemptions", 0.0)
    assert result.suspect is not None and result.suspect.code == "kv_utilization_pinned"
    assert "phaselens_decode_kv_pressure_ratio" in result.suspect.message
    settings = Settings(window_seconds=30.0, kv_offload_tier=True)
    (suspect,) = window_suspects(window, Target("t", "decode", "http://t/metrics"), settings)
    assert suspect.code == "kv_utilization_pinned"


def test_pinned_but_requests_wait_for_kv_is_pressure() -> None:
    extra = {key(c.REQUESTS_WAITING_BY_REASON, reason="capacity"): 3.0}
    result = kv_pressure(WindowView(_pinned_window(extra), 30.0), GROUP, 0.975, PINNED_AT, True)
    assert result is not None and (result.basis, result.value) == ("preemptions", 1.0)


def test_pinned_with_held_tokens_uses_them() -> None:
    """SGLang HiCache shape: the host tier shows in the metrics, held tokens give the pressure."""
    extra = {key(c.HOST_KV_TOTAL_TOKENS): 3908736.0, key(c.KV_USED_TOKENS): 40000.0}
    window = _pinned_window(extra, info={c.INFO_KV_CACHE_SIZE_TOKENS: "160000"})
    result = kv_pressure(WindowView(window, 30.0), GROUP, 0.975, PINNED_AT, offload_declared=False)
    assert result is not None
    assert (result.basis, result.value) == ("held_tokens", 0.25)
    assert result.host_tier is not None and result.host_tier.startswith(c.HOST_KV_TOTAL_TOKENS)


@pytest.mark.parametrize(("case", "kwargs"), [
    ("preempted in the window", {"preemptions": (4.0, 9.0)}),
    ("not pinned", {"usage": 0.90}),
])
def test_pressure_stays_utilization(case: str, kwargs: dict[str, object]) -> None:
    window = _pinned_window(**kwargs)  # type: ignore[arg-type]
    result = kv_pressure(WindowView(window, 30.0), GROUP, 0.97, PINNED_AT, offload_declared=True)
    assert result is not None and (result.basis, result.suspect) == ("utilization", None), case


def test_no_tier_no_claim() -> None:
    result = kv_pressure(WindowView(_pinned_window(), 30.0), GROUP, 0.975, PINNED_AT, offload_declared=False)
    assert result is not None and (result.basis, result.host_tier) == ("utilization", None)


def test_vllm_offloading_config_is_a_tier() -> None:
    result = kv_pressure(WindowView(_pinned_window(info={"kv_offloading_size": "8.0"}), 30.0), GROUP, 0.975,
                         PINNED_AT, offload_declared=False)
    assert result is not None and result.host_tier == "cache_config_info kv_offloading_size=8.0"
    none = kv_pressure(WindowView(_pinned_window(info={"kv_offloading_size": "None"}), 30.0), GROUP, 0.975,
                       PINNED_AT, offload_declared=False)
    assert none is not None and none.host_tier is None


def test_vllm_offload_traffic_is_a_tier() -> None:
    """vLLM's OffloadingConnector counter (names from vllm kv_offload/metrics, research §5)."""
    lines = [
        "# TYPE vllm:kv_offload_total_bytes counter",
        'vllm:kv_offload_total_bytes_total{engine="0",model_name="m",transfer_type="GPU_to_CPU"} %s',
        'vllm:kv_offload_total_bytes_total{engine="0",model_name="m",transfer_type="CPU_to_GPU"} 0',
    ]
    window = TargetWindow(30.0)
    for i, moved in enumerate((1e6, 1e6, 3e6)):
        snap = to_snapshot(parse_exposition("\n".join(lines) % moved + "\n"), 100.0 + i)
        assert snap.scalars[key(c.HOST_KV_OFFLOAD_BYTES)] == moved
        window.add(snap)
    result = kv_pressure(WindowView(window, 30.0), GROUP, 0.5, PINNED_AT, offload_declared=False)
    assert result is not None and result.host_tier == f"{c.HOST_KV_OFFLOAD_BYTES} +2e+06 in the window"


def test_pressure_signal_is_published_next_to_utilization(tmp_path: Path) -> None:
    """The real mocker capture through the pipeline, host tier declared: basis utilization, same value."""
    runs = mocker_runs(tmp_path)
    target = Target("worker", "aggregated", "http://worker/metrics")
    clock = ManualClock(0.0)
    pipeline = Pipeline(Settings(targets=(target,), kv_offload_tier=True, stale_after_seconds=10.0), clock)
    for time_, text in runs["gpu160-seqs8-clients12"]:
        clock.set(time_)
        pipeline.submit(ScrapeResult("worker", time_, None, text.encode(), None))
        tick = pipeline.tick()
    values = {(s.name, dict(s.labels).get("basis")): s.value for s in tick.signals
              if s.name in ("phaselens_decode_kv_pressure_ratio", "phaselens_decode_kv_utilization_ratio")}
    assert values[("phaselens_decode_kv_pressure_ratio", "utilization")] == values[
        ("phaselens_decode_kv_utilization_ratio", None)
    ]
    assert tick.warnings == ()


def test_kv_offload_tier_setting_from_flag_env_and_file(tmp_path: Path) -> None:
    from phaselens.config import load_settings

    target = {"target": ["decode=http://127.0.0.1:9/metrics"]}
    assert load_settings(target, env={}).kv_offload_tier is False
    assert load_settings({**target, "kv_offload_tier": True}, env={}).kv_offload_tier is True
    assert load_settings(target, env={"PHASELENS_KV_OFFLOAD_TIER": "true"}).kv_offload_tier is True
    config = tmp_path / "c.yaml"
    config.write_text("kv_offload_tier: true\n")
    assert load_settings(target, env={}, config_file=str(config)).kv_offload_tier is True
    engine = load_settings({**target, "engine": "sglang"}, env={})
    assert {t.engine for t in engine.targets} == {"sglang"}
