"""SGLang and TensorRT-LLM adapters on published `/metrics` output (tests/fixtures/*/SOURCE.md).

Every expected number below is read off the fixture text; histogram totals are cross-checked with
prometheus_client's own parser, independent of the project's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from phaselens.model import EngineSnapshot, Labels
from phaselens.parsers.engines import canonical as c
from phaselens.parsers.engines import detect_engine, to_snapshot
from phaselens.parsers.engines.detect import ALL_TABLE, TABLES
from phaselens.parsers.exposition import parse_exposition
from prometheus_client.parser import text_string_to_metric_families

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
QWEN = "Qwen/Qwen3-0.6B"


def read(fixtures_dir: Path, folder: str) -> str:
    return (fixtures_dir / folder / "metrics.prom").read_text()


def snap_of(text: str, engine: str = "auto") -> EngineSnapshot:
    return to_snapshot(parse_exposition(text), 1.0, engine)


def key(name: str, model: str, engine: str = "0", **extra: str) -> tuple[str, Labels]:
    return name, tuple(sorted({"model_name": model, "engine": engine, **extra}.items()))


def raw_histogram(text: str, family: str) -> tuple[float, float]:
    """(count, sum) of a histogram family by prometheus_client's parser."""
    for fam in text_string_to_metric_families(text):
        if fam.name == family:
            count = next(s.value for s in fam.samples if s.name.endswith("_count"))
            total = next(s.value for s in fam.samples if s.name.endswith("_sum"))
            return count, total
    raise KeyError(family)


# --------------------------------------------------------------------------- SGLang


@pytest.mark.parametrize(("folder", "itl_family"), [
    ("sglang-0.4-docs", "sglang:time_per_output_token_seconds"),
    ("sglang-0.5-docs", "sglang:inter_token_latency_seconds"),
])
def test_sglang_docs_example(fixtures_dir: Path, folder: str, itl_family: str) -> None:
    text = read(fixtures_dir, folder)
    exposition = parse_exposition(text)
    snap = to_snapshot(exposition, 1.0)
    assert detect_engine(exposition) == snap.engine_kind == "sglang"
    assert snap.scalars == {
        key(c.PROMPT_TOKENS, LLAMA): 8128902.0,
        key(c.GENERATION_TOKENS, LLAMA): 7557572.0,
        key(c.KV_CACHE_USAGE, LLAMA): 0.28,
        key(c.PREFIX_CACHE_HIT_RATE_GAUGE, LLAMA): 0.007507552643049313,
        key(c.REQUESTS_RUNNING, LLAMA): 162.0,
        key(c.KV_USED_TOKENS, LLAMA): 123859.0,
        key(c.GENERATION_THROUGHPUT_GAUGE, LLAMA): 86.50814177726902,
        key(c.REQUESTS_WAITING, LLAMA): 2826.0,
    }
    # func_latency_seconds (name="generate_request") is not a model series: not read.
    assert set(snap.histograms) == {
        key(c.TTFT_SECONDS, LLAMA), key(c.E2E_LATENCY_SECONDS, LLAMA), key(c.ITL_SECONDS, LLAMA)
    }
    for canonical, family in (
        (c.TTFT_SECONDS, "sglang:time_to_first_token_seconds"),
        (c.E2E_LATENCY_SECONDS, "sglang:e2e_request_latency_seconds"),
        (c.ITL_SECONDS, itl_family),
    ):
        hist = snap.histograms[key(canonical, LLAMA)]
        assert (hist.count, hist.sum) == raw_histogram(text, family)
    itl = snap.histograms[key(c.ITL_SECONDS, LLAMA)]
    assert itl.buckets[0] == (0.005, 1.0) and itl.count == 7400757.0
    assert snap.suspects == ()


def test_sglang_itl_rename_keeps_the_new_name(fixtures_dir: Path) -> None:
    """A payload with both spellings (an upgrade mid-scrape) keeps inter_token_latency_seconds."""
    old = read(fixtures_dir, "sglang-0.4-docs")
    new = read(fixtures_dir, "sglang-0.5-docs")
    old_block = old[old.index("# HELP sglang:time_per_output"): old.index("# HELP sglang:func_latency")]
    new_block = new[new.index("# HELP sglang:inter_token"): new.index("# HELP sglang:func_latency")]
    # tell the two apart; 50 stays below the next bucket's 73 (non-cumulative buckets are rejected)
    doubled = old_block.replace(' 1.0\n', ' 50.0\n', 1)
    snap = snap_of(doubled + new_block)
    assert snap.histograms[key(c.ITL_SECONDS, LLAMA)].buckets[0] == (0.005, 1.0)
    assert snap_of(doubled).histograms[key(c.ITL_SECONDS, LLAMA)].buckets[0] == (0.005, 50.0)


def test_sglang_first_prometheus_version_percent_hit_rate(fixtures_dir: Path) -> None:
    """SGLang 0.3 (PR #1461): model in `name`, old queue names, cache_hit_rate in percent."""
    snap = snap_of(read(fixtures_dir, "sglang-0.3-pr1461"))
    gemma = "google/gemma-2-9b-it"
    assert snap.engine_kind == "sglang"
    assert snap.scalars == {
        key(c.REQUESTS_RUNNING, gemma): 0.0,
        key(c.REQUESTS_WAITING, gemma): 0.0,
        key(c.GENERATION_THROUGHPUT_GAUGE, gemma): 0.0,
        key(c.KV_CACHE_USAGE, gemma): 0.0,
        key(c.PREFIX_CACHE_HIT_RATE_GAUGE, gemma): pytest.approx(0.8758777633289988),
    }
    (suspect,) = snap.suspects
    assert suspect.code == "ratio_in_percent"
    assert suspect.metric == "sglang:cache_hit_rate"
    assert suspect.value == pytest.approx(87.58777633289988)
    assert "percent" in suspect.message and "87.5878" in suspect.message


def test_sglang_0_3_5_capacity_and_name_label(fixtures_dir: Path) -> None:
    """`max_total_num_tokens` is the KV capacity (info); limits like max_running_requests are not read."""
    model = "/shared/public/elr-models/meta-llama/Llama-3.2-3B/5cc0ffe09ee49f7be6ca7c794ee6bd7245e84e60/"
    snap = snap_of(read(fixtures_dir, "sglang-0.3.5-pr1853"))
    assert snap.engine_kind == "sglang"
    assert snap.scalars == {key(c.PROMPT_TOKENS, model): 230794.0}
    assert snap.info == {"0": {c.INFO_KV_CACHE_SIZE_TOKENS: "570979"}}


def test_sglang_0_5_1_rank_labels_are_dropped(fixtures_dir: Path) -> None:
    snap = snap_of(read(fixtures_dir, "sglang-0.5.1-issue13485"))
    assert snap.scalars == {
        key(c.REQUESTS_RUNNING, "Qwen-32B"): 1.0,
        key(c.KV_USED_TOKENS, "Qwen-32B"): 1.0,
        key(c.KV_CACHE_USAGE, "Qwen-32B"): 0.0,
        key(c.GENERATION_THROUGHPUT_GAUGE, "Qwen-32B"): 0.8371284457403783,
    }


def test_sglang_pd_excerpt_counters_and_engine_type(fixtures_dir: Path) -> None:
    model = "/home/moyun.zty/models/deepseek-ai__DeepSeek-R1"
    snap = snap_of(read(fixtures_dir, "sglang-0.4-pr7944"))
    assert snap.scalars == {
        key(c.REQUEST_SUCCESS, model): 217.0,
        key(c.PROMPT_TOKENS_CACHED, model): 2688.0,
        key(c.REQUESTS_RUNNING, model): 0.0,
        key(c.KV_USED_TOKENS, model): 0.0,
        key(c.KV_CACHE_USAGE, model): 0.0,
    }


def test_sglang_attention_dp_old_pd_queue_name(fixtures_dir: Path) -> None:
    """DP 8 (dp_rank -> engine); `num_prefill_prealloc_queue_reqs` is the bootstrap queue's old name;
    the gauge-era `kv_transfer_*` (last value, before histograms) gives no transfer series."""
    snap = snap_of(read(fixtures_dir, "sglang-0.5-aibrix1614"))
    assert snap.engine_kind == "sglang"
    assert snap.scalars == {
        key(c.PD_PREFILL_BOOTSTRAP_QUEUE, "deepseek-r1", engine=rank): 0.0 for rank in "130247"
    }
    assert snap.histograms == {}


def test_sglang_bootstrap_rename_prefers_the_new_name(fixtures_dir: Path) -> None:
    text = read(fixtures_dir, "sglang-0.5-aibrix1614")
    old = [line for line in text.splitlines() if line.startswith("sglang:num_prefill_prealloc_queue_reqs{")][:1]
    new = old[0].replace("prealloc_queue", "bootstrap_queue").replace("} 0.0", "} 3.0")
    snap = snap_of("\n".join([*old, new]) + "\n")
    assert snap.scalars[key(c.PD_PREFILL_BOOTSTRAP_QUEUE, "deepseek-r1", engine="1")] == 3.0


def test_sglang_tp_copies_are_not_added(fixtures_dir: Path) -> None:
    """`--enable-metrics-for-all-schedulers`: each TP rank reports a copy of one scheduler's gauges."""
    line = read(fixtures_dir, "sglang-0.4-pr7944").splitlines()[10]  # num_running_reqs
    assert line.startswith("sglang:num_running_reqs{engine_type")
    copies = "\n".join(line.replace("{", f'{{tp_rank="{r}",').replace("} 0.0", "} 5.0") for r in range(4))
    snap = snap_of(copies + "\n")
    model = "/home/moyun.zty/models/deepseek-ai__DeepSeek-R1"
    assert snap.scalars == {key(c.REQUESTS_RUNNING, model): 5.0}


def test_sglang_dynamo_worker_capture(fixtures_dir: Path) -> None:
    """A real Dynamo SGLang worker: sglang:* wins over dynamo_component_kvstats_* for the same series,
    the P/D queue gauges (old bootstrap name) and max_total_num_tokens are read, ranks dropped."""
    text = read(fixtures_dir, "sglang-0.5-dynamo-worker")
    snap = snap_of(text)
    assert snap.engine_kind == "dynamo"
    expected = {
        c.GENERATION_TOKENS: 300.0, c.PROMPT_TOKENS: 33.0, c.REQUEST_SUCCESS: 1.0,
        c.GENERATION_THROUGHPUT_GAUGE: 0.0, c.KV_CACHE_USAGE: 0.0, c.KV_SWA_POOL_USAGE: 0.0,
        c.KV_MAMBA_POOL_USAGE: 0.0, c.KV_USED_TOKENS: 0.0, c.PREFIX_CACHE_HIT_RATE_GAUGE: 0.0,
        c.REQUESTS_RUNNING: 0.0, c.REQUESTS_WAITING: 0.0,
        c.PD_PREFILL_BOOTSTRAP_QUEUE: 0.0, c.PD_PREFILL_INFLIGHT_QUEUE: 0.0,
        c.PD_DECODE_PREALLOC_QUEUE: 0.0, c.PD_DECODE_TRANSFER_QUEUE: 0.0,
        # from dynamo_component_* (no sglang:* equivalent)
        c.INFLIGHT_REQUESTS: 0.0, c.KV_ACTIVE_BLOCKS: 0.0, c.KV_TOTAL_BLOCKS: 0.0,
        c.REQUESTS_TOTAL: 1.0,  # the work handler's request counter (the Dynamo adapter's)
    }
    assert snap.scalars == {key(name, QWEN): value for name, value in expected.items()}
    assert snap.info == {"0": {c.INFO_KV_CACHE_SIZE_TOKENS: "92962"}}
    for canonical, family in (
        (c.TTFT_SECONDS, "sglang:time_to_first_token_seconds"),
        (c.ITL_SECONDS, "sglang:inter_token_latency_seconds"),
        (c.E2E_LATENCY_SECONDS, "sglang:e2e_request_latency_seconds"),
        (c.QUEUE_TIME_SECONDS, "sglang:queue_time_seconds"),
    ):
        hist = snap.histograms[key(canonical, QWEN)]
        assert (hist.count, hist.sum) == raw_histogram(text, family)
    assert len(snap.histograms) == 4  # the gauge-era kv_transfer_* give no histogram
    assert snap.suspects == ()  # swa / mamba pools at 0: not a hybrid model


# --------------------------------------------------------------------------- TensorRT-LLM


def test_trtllm_dynamo_worker_capture(fixtures_dir: Path) -> None:
    """A real Dynamo TensorRT-LLM worker: the `_created` gauges Dynamo re-exports are not read."""
    text = read(fixtures_dir, "trtllm-1.1-dynamo-worker")
    snap = snap_of(text)
    assert snap.engine_kind == "dynamo"
    assert snap.scalars == {
        key(c.REQUEST_SUCCESS, QWEN, finished_reason="length"): 2.0,
        key(c.INFLIGHT_REQUESTS, QWEN): 0.0,
        key(c.KV_ACTIVE_BLOCKS, QWEN): 0.0,
        key(c.KV_TOTAL_BLOCKS, QWEN): 0.0,
        key(c.KV_CACHE_USAGE, QWEN): 0.0,
        key(c.PREFIX_CACHE_HIT_RATE_GAUGE, QWEN): 0.0,
        key(c.REQUESTS_TOTAL, QWEN): 2.0,  # the work handler's request counter (the Dynamo adapter's)
    }
    for canonical, family in (
        (c.TTFT_SECONDS, "trtllm_time_to_first_token_seconds"),
        (c.TPOT_REQUEST_SECONDS, "trtllm_time_per_output_token_seconds"),
        (c.E2E_LATENCY_SECONDS, "trtllm_e2e_request_latency_seconds"),
        (c.QUEUE_TIME_SECONDS, "trtllm_request_queue_time_seconds"),
    ):
        hist = snap.histograms[key(canonical, QWEN)]
        assert (hist.count, hist.sum) == raw_histogram(text, family)
    assert snap.histograms[key(c.TTFT_SECONDS, QWEN)].buckets[4] == (0.04, 1.0)




def test_trtllm_under_dynamo_docs_example(fixtures_dir: Path) -> None:
    text = read(fixtures_dir, "trtllm-1.1.0rc5-dynamo-docs")
    exposition = parse_exposition(text)
    snap = to_snapshot(exposition, 1.0)
    assert detect_engine(exposition) == snap.engine_kind == "trtllm"
    assert snap.scalars == {
        key(c.REQUEST_SUCCESS, QWEN, finished_reason="stop"): 150.0,
        key(c.REQUEST_SUCCESS, QWEN, finished_reason="length"): 5.0,
    }
    expected = {
        c.TTFT_SECONDS: "trtllm_time_to_first_token_seconds",
        c.E2E_LATENCY_SECONDS: "trtllm_e2e_request_latency_seconds",
        # TensorRT-LLM observes TPOT once per request: the per-request series, not per-step ITL.
        c.TPOT_REQUEST_SECONDS: "trtllm_time_per_output_token_seconds",
        c.QUEUE_TIME_SECONDS: "trtllm_request_queue_time_seconds",
    }
    assert set(snap.histograms) == {key(name, QWEN) for name in expected}
    for canonical, family in expected.items():
        hist = snap.histograms[key(canonical, QWEN)]
        assert (hist.count, hist.sum) == raw_histogram(text, family)
    ttft = snap.histograms[key(c.TTFT_SECONDS, QWEN)]
    assert ttft.buckets[:2] == ((0.01, 0.0), (0.05, 12.0))


def test_trtllm_dynamo_worker_is_a_dynamo_target(fixtures_dir: Path) -> None:
    text = read(fixtures_dir, "trtllm-1.1.0rc5-dynamo-docs") + "dynamo_component_uptime_seconds 1\n"
    snap = snap_of(text)
    assert snap.engine_kind == "dynamo"
    assert key(c.TTFT_SECONDS, QWEN) in snap.histograms
    assert snap_of(text, "dynamo").histograms.keys() == snap.histograms.keys()


def test_triton_trtllm_current(fixtures_dir: Path) -> None:
    snap = snap_of(read(fixtures_dir, "triton-trtllm-docs-current"))
    assert snap.engine_kind == "trtllm"
    model = "tensorrt_llm"
    assert snap.scalars == {
        key(c.REQUESTS_WAITING, model): 1.0,
        key(c.REQUESTS_RUNNING, model): 1.0,
        key(c.KV_CACHE_USAGE, model): 0.4875,
        key(c.KV_ACTIVE_BLOCKS, model): 1.0,
        key(c.KV_TOTAL_BLOCKS, model): 6239.0,
        key(c.KV_TRANSFER_TIME_SECONDS, model): 0.0,
        key(c.KV_TRANSFERS, model): 0.0,
    }
    assert snap.info == {"0": {c.INFO_BLOCK_SIZE: "64"}}
    assert snap.suspects == ()


def test_triton_trtllm_23_11_has_no_fraction(fixtures_dir: Path) -> None:
    """23.11: no waiting count and no fraction: utilization comes from used / max blocks."""
    from phaselens.analyzers.kv_cache import kv_utilization
    from phaselens.analyzers.view import WindowView
    from phaselens.analyzers.window import TargetWindow

    snap = snap_of(read(fixtures_dir, "triton-trtllm-23.11-readme"))
    model = "tensorrt_llm"
    assert snap.scalars == {
        key(c.REQUESTS_RUNNING, model): 1.0,
        key(c.KV_ACTIVE_BLOCKS, model): 1.0,
        key(c.KV_TOTAL_BLOCKS, model): 6239.0,
    }
    window = TargetWindow(30.0)
    window.add(snap)
    assert kv_utilization(WindowView(window, 30.0), (model, "0")) == pytest.approx(1 / 6239)


def test_triton_millisecond_total_becomes_seconds(fixtures_dir: Path) -> None:
    text = read(fixtures_dir, "triton-trtllm-docs-current").replace(
        'disaggregated_serving_type="kv_cache_transfer_ms",model="tensorrt_llm",version="1"} 0',
        'disaggregated_serving_type="kv_cache_transfer_ms",model="tensorrt_llm",version="1"} 2500',
    )
    assert snap_of(text).scalars[key(c.KV_TRANSFER_TIME_SECONDS, "tensorrt_llm")] == 2.5


def test_old_dynamo_trtllm_colon_prefix_ranks_below(fixtures_dir: Path) -> None:
    """Dynamo <= 0.7 spelled the prefix `trtllm:`; with both present the current one wins."""
    text = read(fixtures_dir, "trtllm-1.1.0rc5-dynamo-docs")
    block = text[: text.index("\n\n")] + "\n"
    colon = block.replace("trtllm_", "trtllm:").replace("} 150.0", "} 1.0")
    assert snap_of(colon).scalars[key(c.REQUEST_SUCCESS, QWEN, finished_reason="stop")] == 1.0
    assert snap_of(colon + block).scalars[key(c.REQUEST_SUCCESS, QWEN, finished_reason="stop")] == 150.0


# --------------------------------------------------------------------------- detection and tables


def test_engine_tables_do_not_overlap() -> None:
    for engine in ("vllm", "sglang", "trtllm"):
        assert set(TABLES[engine]) <= set(ALL_TABLE)
    assert not set(TABLES["sglang"]) & set(TABLES["trtllm"])
    assert not set(TABLES["sglang"]) & set(TABLES["vllm"])


def test_named_engine_reads_only_its_table(fixtures_dir: Path) -> None:
    text = read(fixtures_dir, "sglang-0.4-docs")
    assert snap_of(text, "trtllm").scalars == {}
    assert snap_of(text, "sglang").engine_kind == "sglang"
    with pytest.raises(ValueError, match="unknown engine"):
        snap_of(text, "tgi")
