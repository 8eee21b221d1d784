"""Dynamo and NIXL-exporter adapters: public Dynamo samples, the real NIXL exporter scrape, and
hand-written payloads for the names those samples do not show (Dynamo >= 1.3, NIXL histograms)."""



from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest
from phaselens.model import EngineSnapshot, Labels
from phaselens.parsers.engines import canonical as c
from phaselens.parsers.engines import detect_engine, to_snapshot
from phaselens.parsers.exposition import parse_exposition
from prometheus_client.parser import text_string_to_metric_families

QWEN = "Qwen/Qwen3-0.6B"


def snap_of(text: str) -> EngineSnapshot:
    return to_snapshot(parse_exposition(textwrap.dedent(text).lstrip()), 1.0)


def key(name: str, model: str = QWEN, engine: str = "0", **extra: str) -> tuple[str, Labels]:
    return name, tuple(sorted({"model_name": model, "engine": engine, **extra}.items()))


def _raw(text: str, family: str) -> list[tuple[str, dict[str, str], float]]:
    """Samples of one family through prometheus_client's parser (independent of ours)."""
    for fam in text_string_to_metric_families(text):
        if fam.name == family:
            return [(s.name, s.labels, s.value) for s in fam.samples]
    raise KeyError(family)


# ---------------------------------------------------------------------- Dynamo public samples


def test_dynamo_frontend_sample(fixtures_dir: Path) -> None:
    text = (fixtures_dir / "public-samples/dynamo/frontend_metrics.prom").read_text()
    exposition = parse_exposition(text)
    snap = to_snapshot(exposition, 1.0)
    assert snap.engine_kind == "dynamo" == detect_engine(exposition)
    # Request metrics say "qwen/qwen3-0.6b" (lowercased by the frontend), the model_* gauges
    # "Qwen/Qwen3-0.6B": one model, one spelling.
    assert {dict(labels)["model_name"] for _, labels in (*snap.scalars, *snap.histograms)} == {QWEN}
    assert snap.scalars == {
        key(c.INFLIGHT_REQUESTS): 0.0,
        key(c.REQUESTS_WAITING): 0.0,
        key(c.GENERATION_TOKENS): 300.0,
        key(c.REQUESTS_TOTAL, status="success"): 1.0,
        key(c.KV_TOTAL_BLOCKS): 92962.0,
    }
    assert snap.info["0"] == {
        c.INFO_BLOCK_SIZE: "1",
        c.INFO_NUM_GPU_BLOCKS: "92962",
        c.INFO_KV_CACHE_SIZE_TOKENS: "92962",
        c.INFO_MAX_NUM_SEQS: "2",  # dynamo_frontend_model_max_num_seqs, the model card
        c.INFO_MAX_NUM_BATCHED_TOKENS: "16384",  # dynamo_frontend_model_max_num_batched_tokens
    }
    for family, canonical in (
        ("dynamo_frontend_time_to_first_token_seconds", c.TTFT_SECONDS),
        ("dynamo_frontend_inter_token_latency_seconds", c.ITL_SECONDS),
        ("dynamo_frontend_request_duration_seconds", c.E2E_LATENCY_SECONDS),
        ("dynamo_frontend_input_sequence_tokens", c.REQUEST_PROMPT_TOKENS),
        ("dynamo_frontend_output_sequence_tokens", c.REQUEST_GENERATION_TOKENS),
    ):
        raw = _raw(text, family)
        hist = snap.histograms[key(canonical)]
        assert [b for b, _ in hist.buckets] == [float(lb["le"]) for n, lb, _ in raw if n.endswith("_bucket")]
        assert [v for _, v in hist.buckets] == [v for n, _, v in raw if n.endswith("_bucket")]
        assert hist.count == next(v for n, _, v in raw if n.endswith("_count"))
        assert hist.sum == next(v for n, _, v in raw if n.endswith("_sum"))
    assert snap.histograms[key(c.ITL_SECONDS)].count == 299.0


def test_dynamo_worker_sample_old_kvstats_and_vllm_passthrough(fixtures_dir: Path) -> None:
    text = (fixtures_dir / "public-samples/dynamo/vllm_worker_metrics_excerpt.prom").read_text()
    snap = to_snapshot(parse_exposition(text), 1.0)
    assert snap.engine_kind == "dynamo"
    assert snap.scalars == {
        # kvstats carry no model label: the payload's only model is theirs.
        key(c.KV_ACTIVE_BLOCKS): 0.0,
        key(c.KV_TOTAL_BLOCKS): 5943.0,
        key(c.KV_CACHE_USAGE): 0.0,
        key(c.PREFIX_CACHE_HIT_RATE_GAUGE): 0.0,
        key(c.INFLIGHT_REQUESTS): 0.0,  # only the `generate` endpoint's handler
        key(c.REQUESTS_TOTAL): 2.0,  # dynamo_component_requests_total, `generate` endpoint only
    }
    assert snap.histograms[key(c.REQUEST_PREFILL_KV_COMPUTED_TOKENS)].sum == 66.0
    info = snap.info["0"]
    assert (info[c.INFO_BLOCK_SIZE], info[c.INFO_NUM_GPU_BLOCKS]) == ("16", "5943")
    assert info[c.INFO_KV_CACHE_SIZE_TOKENS] == str(16 * 5943)
    assert info[c.INFO_ENABLE_PREFIX_CACHING] == "False"


# ---------------------------------------------------------------------- Dynamo names not in samples


def test_vllm_series_win_over_dynamo_ones_and_dynamo_fills_gaps() -> None:
    snap = snap_of("""
        # TYPE dynamo_component_kvstats_gpu_cache_usage_percent gauge
        dynamo_component_kvstats_gpu_cache_usage_percent{dynamo_component="backend",dynamo_namespace="dynamo"} 0.1
        # TYPE dynamo_component_kvstats_active_blocks gauge
        dynamo_component_kvstats_active_blocks{dynamo_component="backend",dynamo_namespace="dynamo"} 12
        # TYPE vllm:kv_cache_usage_perc gauge
        vllm:kv_cache_usage_perc{engine="0",model_name="Qwen/Qwen3-0.6B"} 0.4
        # TYPE dynamo_frontend_output_tokens_total counter
        dynamo_frontend_output_tokens_total{model="qwen/qwen3-0.6b"} 999
        # TYPE vllm:generation_tokens_total counter
        vllm:generation_tokens_total{engine="0",model_name="Qwen/Qwen3-0.6B"} 300.0
        # TYPE dynamo_frontend_model_kv_cache_block_size gauge
        dynamo_frontend_model_kv_cache_block_size{model="Qwen/Qwen3-0.6B"} 1
        # TYPE vllm:cache_config_info gauge
        vllm:cache_config_info{block_size="16",engine="0",num_gpu_blocks="100"} 1.0
    """)
    assert snap.scalars == {
        key(c.KV_CACHE_USAGE): 0.4,
        key(c.GENERATION_TOKENS): 300.0,
        key(c.KV_ACTIVE_BLOCKS): 12.0,
    }
    assert snap.info["0"][c.INFO_BLOCK_SIZE] == "16"  # the engine's own config wins
    assert snap.info["0"][c.INFO_KV_CACHE_SIZE_TOKENS] == "1600"


@pytest.mark.parametrize(
    ("help_text", "raw", "expected"),
    [
        ("GPU cache usage as a percentage (0.0-1.0)", "0.45", 0.45),
        ("GPU cache usage percent", "45", 0.45),  # no range stated, a value > 1: a percentage
        ("GPU cache usage percent", "0.45", 0.45),
        ("GPU cache usage (0-100)", "0.5", 0.005),
    ],
)
def test_dynamo_gpu_cache_usage_percent_normalised(help_text: str, raw: str, expected: float) -> None:
    snap = snap_of(f"""
        # HELP dynamo_component_gpu_cache_usage_percent {help_text}
        # TYPE dynamo_component_gpu_cache_usage_percent gauge
        dynamo_component_gpu_cache_usage_percent{{dynamo_component="backend",model="m"}} {raw}
    """)
    assert snap.scalars == {key(c.KV_CACHE_USAGE, "m"): pytest.approx(expected)}


def test_dynamo_new_names_win_over_old_ones() -> None:
    snap = snap_of("""
        # TYPE dynamo_frontend_inflight_requests gauge
        dynamo_frontend_inflight_requests{model="m"} 1
        # TYPE dynamo_frontend_active_requests gauge
        dynamo_frontend_active_requests{model="m"} 7
        # TYPE dynamo_frontend_queued_requests gauge
        dynamo_frontend_queued_requests{model="m"} 1
        # TYPE dynamo_frontend_stage_requests gauge
        dynamo_frontend_stage_requests{phase="prefill",stage="preprocess"} 2
        dynamo_frontend_stage_requests{phase="prefill",stage="route"} 3
        dynamo_frontend_stage_requests{phase="prefill",stage="dispatch"} 4
        dynamo_frontend_stage_requests{phase="decode",stage="generate"} 50
        # TYPE dynamo_component_kvstats_total_blocks gauge
        dynamo_component_kvstats_total_blocks{dynamo_component="backend"} 10
        # TYPE dynamo_component_total_blocks gauge
        dynamo_component_total_blocks{dynamo_component="backend",dp_rank="1"} 5943
        # TYPE dynamo_component_kv_cache_hit_rate gauge
        dynamo_component_kv_cache_hit_rate{dynamo_component="backend",dp_rank="1"} 0.25
        # TYPE dynamo_frontend_model_total_kv_blocks gauge
        dynamo_frontend_model_total_kv_blocks{model="m"} 999
    """)
    assert snap.scalars == {
        key(c.INFLIGHT_REQUESTS, "m"): 7.0,
        key(c.REQUESTS_WAITING, "m"): 9.0,  # preprocess + route + dispatch, not generate
        key(c.KV_TOTAL_BLOCKS, "m", engine="1"): 5943.0,  # worker (dp_rank 1) over the frontend's
        key(c.PREFIX_CACHE_HIT_RATE_GAUGE, "m", engine="1"): 0.25,
    }
    assert snap.info["0"][c.INFO_NUM_GPU_BLOCKS] == "999"


def test_dynamo_without_model_label_and_two_models() -> None:
    snap = snap_of("""
        # TYPE dynamo_frontend_inflight_requests gauge
        dynamo_frontend_inflight_requests{model="a"} 1
        dynamo_frontend_inflight_requests{model="b"} 2
        # TYPE dynamo_component_kvstats_total_blocks gauge
        dynamo_component_kvstats_total_blocks{dynamo_component="backend"} 10
    """)
    # With two models a label-less series cannot be attributed: it goes to model "".
    assert snap.scalars == {
        key(c.INFLIGHT_REQUESTS, "a"): 1.0,
        key(c.INFLIGHT_REQUESTS, "b"): 2.0,
        key(c.KV_TOTAL_BLOCKS, ""): 10.0,
    }


# ---------------------------------------------------------------------- NIXL's exporter


def test_nixl_exporter_real_scrape(fixtures_dir: Path) -> None:
    text = (fixtures_dir / "nixl-1.5.1-cpu-ucx-loopback/nixl-prometheus-exporter.prom").read_text()
    exposition = parse_exposition(text)
    snap = to_snapshot(exposition, 1.0)
    assert snap.engine_kind == "nixl" == detect_engine(exposition)
    # The capture ends mid-line ("agent_erro"): reported, and everything before it kept.
    assert snap.parse_issues == 1
    expected: dict[tuple[str, Labels], float] = {}
    canonical = {
        "agent_tx_bytes_total": c.NIXL_AGENT_TX_BYTES,
        "agent_rx_bytes_total": c.NIXL_AGENT_RX_BYTES,
        "agent_tx_requests_num_total": c.NIXL_AGENT_TX_REQUESTS,
        "agent_rx_requests_num_total": c.NIXL_AGENT_RX_REQUESTS,
        "agent_memory_registered_total": c.NIXL_AGENT_MEMORY_REGISTERED_BYTES,
        "agent_memory_deregistered_total": c.NIXL_AGENT_MEMORY_DEREGISTERED_BYTES,
        "agent_xfer_time_total": c.NIXL_AGENT_XFER_TIME_SECONDS,
        "agent_xfer_post_time_total": c.NIXL_AGENT_XFER_POST_TIME_SECONDS,
        "agent_telemetry_events_dropped_total": c.NIXL_AGENT_EVENTS_DROPPED,
    }
    for line in text.splitlines():
        name = line.split("{", 1)[0]
        if name in canonical:
            agent = line.split('agent_name="', 1)[1].split('"', 1)[0]
            scale = 1e-6 if "time" in name else 1.0
            expected[key(canonical[name], "", agent_name=agent)] = float(line.rsplit(" ", 1)[1]) * scale
    assert len(expected) == 18  # nine counters x two agents
    assert snap.scalars == expected
    assert snap.scalars[key(c.NIXL_AGENT_MEMORY_REGISTERED_BYTES, "", agent_name="target")] == 262144.0


NIXL_WITH_TRAFFIC = """
    # TYPE agent_xfer_time_total counter
    agent_xfer_time_total{agent_name="dec",hostname="h"} 2500000
    # TYPE agent_xfer_time gauge
    agent_xfer_time{agent_name="dec",hostname="h"} 1200
    # TYPE agent_errors_total counter
    agent_errors_total{agent_name="dec",hostname="h",status="backend"} 3
    # TYPE agent_xfer_time_us histogram
    agent_xfer_time_us_bucket{agent_name="dec",hostname="h",le="100"} 1
    agent_xfer_time_us_bucket{agent_name="dec",hostname="h",le="1000"} 3
    agent_xfer_time_us_bucket{agent_name="dec",hostname="h",le="+Inf"} 4
    agent_xfer_time_us_sum{agent_name="dec",hostname="h"} 2500000
    agent_xfer_time_us_count{agent_name="dec",hostname="h"} 4
    agent_xfer_time_us_bucket{agent_name="pre",hostname="h",le="100"} 0
    agent_xfer_time_us_bucket{agent_name="pre",hostname="h",le="1000"} 1
    agent_xfer_time_us_bucket{agent_name="pre",hostname="h",le="+Inf"} 1
    agent_xfer_time_us_sum{agent_name="pre",hostname="h"} 500
    agent_xfer_time_us_count{agent_name="pre",hostname="h"} 1
"""


def test_nixl_exporter_microseconds_become_seconds() -> None:
    snap = snap_of(NIXL_WITH_TRAFFIC)
    assert snap.scalars == {
        key(c.NIXL_AGENT_XFER_TIME_SECONDS, "", agent_name="dec"): pytest.approx(2.5),
        key(c.NIXL_AGENT_ERRORS, "", agent_name="dec", status="backend"): 3.0,
    }  # the last-operation gauge `agent_xfer_time` is not a counter sample
    hist = snap.histograms[key(c.NIXL_XFER_SECONDS, "")]
    assert [b for b, _ in hist.buckets] == pytest.approx([1e-4, 1e-3, math.inf])
    assert [n for _, n in hist.buckets] == [1.0, 4.0, 5.0]  # both agents merged
    assert hist.sum == pytest.approx(2.5005) and hist.count == 5.0


def test_nixl_1_0_counters_without_total_suffix() -> None:
    snap = snap_of("""
        # TYPE agent_tx_bytes counter
        agent_tx_bytes{agent_name="p",category="TRANSFER",hostname="h"} 1048576
    """)
    assert snap.scalars == {key(c.NIXL_AGENT_TX_BYTES, "", agent_name="p"): 1048576.0}
