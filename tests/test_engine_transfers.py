"""Engine-reported KV transfers (SGLang, TensorRT-LLM, Triton) as a source of the KV-transfer signals,
and the prefix-cache hit ratio from engines without lookup counters.

The published SGLang / TensorRT-LLM payloads carry no transfer in flight (their transfer series are
zero or gauges), so the windows here are canonical snapshots built in the test (SYNTHETIC), in the
shape the adapters produce (tests/test_adapters_sglang_trtllm.py checks that shape on real output).
"""

from __future__ import annotations

import math

import pytest
from phaselens.analyzers.kv_cache import prefix_hit_ratio
from phaselens.analyzers.nixl import analyze_nixl, figures_from_engine
from phaselens.analyzers.view import WindowView
from phaselens.analyzers.window import TargetWindow
from phaselens.model import EngineSnapshot, Histogram, Labels
from phaselens.parsers.engines import canonical as c
from phaselens.settings import Settings

MODEL = "m"
LABELS: Labels = (("engine", "0"), ("model_name", MODEL))
GROUP = (MODEL, "0")


def hist(name: str, counts: tuple[float, ...], bounds: tuple[float, ...], total: float) -> Histogram:
    return Histogram(name, LABELS, tuple(zip(bounds, counts, strict=True)), total, counts[-1])


def transfer_window(kind: str = "sglang") -> TargetWindow:
    """Two scrapes 10 s apart: 20 transfers of which 18 within 0.25 s, 1.5 GiB moved, 2 failures."""
    bounds = (0.1, 0.25, 1.0, math.inf)
    window = TargetWindow(30.0)
    start = EngineSnapshot(kind, 100.0, {(c.KV_TRANSFER_FAILURES, LABELS): 1.0}, {
        (c.KV_TRANSFER_SECONDS, LABELS): hist(c.KV_TRANSFER_SECONDS, (0, 0, 0, 0), bounds, 0.0),
        (c.KV_TRANSFER_BYTES, LABELS): hist(c.KV_TRANSFER_BYTES, (0, 0), (1e9, math.inf), 0.0),
    })
    end = EngineSnapshot(kind, 110.0, {(c.KV_TRANSFER_FAILURES, LABELS): 3.0,
                                       (c.PD_PREFILL_INFLIGHT_QUEUE, LABELS): 7.0}, {
        (c.KV_TRANSFER_SECONDS, LABELS): hist(c.KV_TRANSFER_SECONDS, (10, 18, 20, 20), bounds, 3.0),
        (c.KV_TRANSFER_BYTES, LABELS): hist(c.KV_TRANSFER_BYTES, (20, 20), (1e9, math.inf), 1.5 * 2**30),
    })
    window.add(start)
    window.add(end)
    return window


def test_sglang_transfers_feed_the_transfer_signals_with_their_source() -> None:
    window = transfer_window()
    (fig,) = figures_from_engine(window, "sglang_metrics")
    assert (fig.transfers, fig.xfer_seconds_sum, fig.failures) == (20.0, 3.0, 2.0)
    assert fig.quantiles[0.5] == pytest.approx(0.1)
    assert fig.failure_ratio == pytest.approx(2 / 22)
    base = {"target": "prefill", "role": "prefill", "model_name": MODEL, "engine": "0"}
    signals, _ = analyze_nixl(None, [], [], 110.0, Settings(), {"target": "x", "role": "decode",
                              "model_name": "", "engine": "0"}, engine_windows=[(base, "sglang", window)])
    by_name = {(s.name, dict(s.labels).get("percentile")): s for s in signals}
    p50 = by_name[("phaselens_nixl_transfer_seconds", "50")]
    assert dict(p50.labels)["source"] == "sglang_metrics" and dict(p50.labels)["target"] == "prefill"
    assert by_name[("phaselens_nixl_transfer_bytes_per_second", None)].value == pytest.approx(1.5 * 2**30 / 10)
    assert by_name[("phaselens_nixl_transfer_failure_ratio", None)].value == pytest.approx(2 / 22)


def test_slow_engine_transfers_are_advised_with_the_pd_queues_as_evidence() -> None:
    base = {"target": "prefill", "role": "prefill", "model_name": MODEL, "engine": "0"}
    _, recommendations = analyze_nixl(None, [], [], 110.0, Settings(), base,
                                      engine_windows=[(base, "sglang", transfer_window())])
    slow = next(r for r in recommendations if r.code == "NIXL_TRANSFER_SLOW")
    assert slow.target == "prefill"
    assert slow.evidence["source"] == "sglang_metrics"
    assert slow.evidence["prefill_inflight_queue_requests"] == 7.0


def test_triton_running_totals_give_a_mean_without_quantiles() -> None:
    window = TargetWindow(30.0)
    for t, seconds, count in ((100.0, 1.0, 10.0), (110.0, 4.0, 16.0)):
        window.add(EngineSnapshot("trtllm", t, {(c.KV_TRANSFER_TIME_SECONDS, LABELS): seconds,
                                                (c.KV_TRANSFERS, LABELS): count}, {}))
    (fig,) = figures_from_engine(window, "trtllm_metrics")
    assert fig.quantiles == {} and fig.mean_seconds == pytest.approx(0.5)


def test_no_engine_series_no_figures() -> None:
    window = TargetWindow(30.0)
    window.add(EngineSnapshot("sglang", 100.0, {(c.REQUESTS_RUNNING, LABELS): 1.0}, {}))
    assert figures_from_engine(window, "sglang_metrics") == []


def _counter_window(values: dict[str, tuple[float, float]]) -> WindowView:
    window = TargetWindow(30.0)
    for i in range(2):
        window.add(EngineSnapshot("sglang", 100.0 + 10 * i, {(n, LABELS): v[i] for n, v in values.items()}, {}))
    return WindowView(window, 30.0)


def test_hit_ratio_from_cached_over_prompt_tokens() -> None:
    view = _counter_window({c.PROMPT_TOKENS: (1000.0, 3000.0), c.PROMPT_TOKENS_CACHED: (100.0, 1600.0)})
    assert prefix_hit_ratio(view, GROUP) == (pytest.approx(0.75), "tokens", 2000.0)


def test_hit_ratio_from_reused_and_missed_blocks() -> None:
    view = _counter_window({c.PREFIX_CACHE_HITS: (10.0, 40.0), c.PREFIX_CACHE_MISSES: (5.0, 15.0)})
    ratio, _, queries = prefix_hit_ratio(view, GROUP)
    assert ratio == pytest.approx(0.75) and queries == 40.0
