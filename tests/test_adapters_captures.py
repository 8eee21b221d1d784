"""Engine adapter on every scrape of the real vLLM 0.32.0 captures (aggregated and 1P1D).

Expected values come from the raw text itself, read by a small line reader in this file (not the
project's parser), through a name table written here independently of the adapter's rules.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from phaselens.model import EngineSnapshot, Labels
from phaselens.parsers.engines import canonical as c
from phaselens.parsers.engines import detect_engine, to_snapshot
from phaselens.parsers.exposition import parse_exposition
from prometheus_client.parser import text_string_to_metric_families

# raw sample name -> (canonical name, raw extra label kept)
SCALARS: dict[str, tuple[str, str | None]] = {
    "vllm:num_requests_running": (c.REQUESTS_RUNNING, None),
    "vllm:num_requests_waiting": (c.REQUESTS_WAITING, None),
    "vllm:num_requests_waiting_by_reason": (c.REQUESTS_WAITING_BY_REASON, "reason"),
    "vllm:kv_cache_usage_perc": (c.KV_CACHE_USAGE, None),
    "vllm:prompt_tokens_total": (c.PROMPT_TOKENS, None),
    "vllm:generation_tokens_total": (c.GENERATION_TOKENS, None),
    "vllm:prompt_tokens_by_source_total": (c.PROMPT_TOKENS_BY_SOURCE, "source"),
    "vllm:prompt_tokens_cached_total": (c.PROMPT_TOKENS_CACHED, None),
    "vllm:prefix_cache_queries_total": (c.PREFIX_CACHE_QUERIES, None),
    "vllm:prefix_cache_hits_total": (c.PREFIX_CACHE_HITS, None),
    "vllm:external_prefix_cache_queries_total": (c.EXTERNAL_PREFIX_CACHE_QUERIES, None),
    "vllm:external_prefix_cache_hits_total": (c.EXTERNAL_PREFIX_CACHE_HITS, None),
    "vllm:num_preemptions_total": (c.PREEMPTIONS, None),
    "vllm:request_success_total": (c.REQUEST_SUCCESS, "finished_reason"),
    "vllm:nixl_num_failed_transfers_total": (c.NIXL_FAILED_TRANSFERS, None),
    "vllm:nixl_num_failed_notifications_total": (c.NIXL_FAILED_NOTIFICATIONS, None),
    "vllm:nixl_num_kv_expired_reqs_total": (c.NIXL_KV_EXPIRED_REQUESTS, None),
}
HISTOGRAMS: dict[str, str] = {
    "vllm:time_to_first_token_seconds": c.TTFT_SECONDS,
    "vllm:inter_token_latency_seconds": c.ITL_SECONDS,
    "vllm:request_time_per_output_token_seconds": c.TPOT_REQUEST_SECONDS,
    "vllm:e2e_request_latency_seconds": c.E2E_LATENCY_SECONDS,
    "vllm:request_queue_time_seconds": c.QUEUE_TIME_SECONDS,
    "vllm:request_prefill_time_seconds": c.PREFILL_TIME_SECONDS,
    "vllm:request_decode_time_seconds": c.DECODE_TIME_SECONDS,
    "vllm:request_inference_time_seconds": c.INFERENCE_TIME_SECONDS,
    "vllm:request_prompt_tokens": c.REQUEST_PROMPT_TOKENS,
    "vllm:request_generation_tokens": c.REQUEST_GENERATION_TOKENS,
    "vllm:request_prefill_kv_computed_tokens": c.REQUEST_PREFILL_KV_COMPUTED_TOKENS,
    "vllm:iteration_tokens_total": c.ITERATION_TOKENS,
    "vllm:kv_block_lifetime_seconds": c.KV_BLOCK_LIFETIME_SECONDS,
    "vllm:kv_block_idle_before_evict_seconds": c.KV_BLOCK_IDLE_BEFORE_EVICT_SECONDS,
    "vllm:kv_block_reuse_gap_seconds": c.KV_BLOCK_REUSE_GAP_SECONDS,
    "vllm:nixl_xfer_time_seconds": c.NIXL_XFER_SECONDS,
    "vllm:nixl_post_time_seconds": c.NIXL_POST_SECONDS,
    "vllm:nixl_bytes_transferred": c.NIXL_BYTES,
    "vllm:nixl_num_descriptors": c.NIXL_DESCRIPTORS,
}


def _raw_lines(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample line; the captures have simple label values."""
    out: list[tuple[str, dict[str, str], float]] = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if "{" in head:
            name, _, rest = head.partition("{")
            pairs = [p.split("=", 1) for p in rest.rstrip("}").split('",') if p]
            labels = {k: v.strip('"') for k, v in pairs}
        else:
            name, labels = head, {}
        out.append((name, labels, float(value)))
    return out


def _key(canonical: str, raw: dict[str, str], extra: str | None) -> tuple[str, Labels]:
    pairs = [("engine", raw.get("engine", "0")), ("model_name", raw["model_name"])]
    if extra is not None:
        pairs.append((extra, raw[extra]))
    return canonical, tuple(sorted(pairs))


def _check_scrape(path: Path, block_size: int, num_gpu_blocks: int) -> EngineSnapshot:
    text = path.read_text()
    time = float(text.split("\n", 1)[0].split()[-1])
    exposition = parse_exposition(text)
    snap = to_snapshot(exposition, time)
    assert snap.engine_kind == "vllm" == detect_engine(exposition)
    assert snap.time == time
    assert snap.parse_issues == 0
    assert snap.prefix_cache_unit == "tokens"

    expected_scalars: dict[tuple[str, Labels], float] = {}
    buckets: dict[tuple[str, Labels], list[tuple[float, float]]] = {}
    sums: dict[tuple[str, Labels], float] = {}
    counts: dict[tuple[str, Labels], float] = {}
    for name, labels, value in _raw_lines(text):
        if name in SCALARS:
            canonical, extra = SCALARS[name]
            expected_scalars[_key(canonical, labels, extra)] = value
            continue
        for suffix, store in (("_sum", sums), ("_count", counts)):
            base = name[: -len(suffix)]
            if name.endswith(suffix) and base in HISTOGRAMS:
                store[_key(HISTOGRAMS[base], labels, None)] = value
        base = name.removesuffix("_bucket")
        if name.endswith("_bucket") and base in HISTOGRAMS:
            bound = float(labels.pop("le"))
            buckets.setdefault(_key(HISTOGRAMS[base], labels, None), []).append((bound, value))

    assert expected_scalars, "capture has no vLLM series"
    assert dict(snap.scalars) == expected_scalars
    assert set(snap.histograms) == set(buckets) == set(counts) == set(sums)
    for key, hist in snap.histograms.items():
        assert hist.name == key[0] and hist.labels == key[1]
        assert list(hist.buckets) == sorted(buckets[key])
        assert math.isinf(hist.buckets[-1][0])
        assert hist.count == counts[key] and hist.sum == pytest.approx(sums[key], rel=1e-15)

    info = snap.info["0"]
    assert info[c.INFO_BLOCK_SIZE] == str(block_size)
    assert info[c.INFO_NUM_GPU_BLOCKS] == str(num_gpu_blocks)
    assert info[c.INFO_KV_CACHE_SIZE_TOKENS] == str(block_size * num_gpu_blocks)
    assert info[c.INFO_ENABLE_PREFIX_CACHING] == "True"
    return snap


def test_every_aggregated_scrape(aggregated_dir: Path) -> None:
    paths = sorted(aggregated_dir.glob("*.prom"))
    assert len(paths) == 84
    snaps = [_check_scrape(p, 32, 48) for p in paths]
    # The aggregated run has --kv-cache-metrics: the residency histograms are there, NIXL's are not.
    assert all(any(k[0] == c.KV_BLOCK_LIFETIME_SECONDS for k in s.histograms) for s in snaps)
    assert not any(k[0] == c.NIXL_XFER_SECONDS for s in snaps for k in s.histograms)
    # The burst phase really reached a deep queue and a nearly full cache (data/README.md).
    waiting = max(v for s in snaps for (n, _), v in s.scalars.items() if n == c.REQUESTS_WAITING)
    usage = max(v for s in snaps for (n, _), v in s.scalars.items() if n == c.KV_CACHE_USAGE)
    assert waiting >= 30 and 0.9 <= usage <= 1.0


@pytest.mark.parametrize("role", ["prefill", "decode"])
def test_every_pd_scrape(pd_dir: Path, role: str) -> None:
    paths = sorted((pd_dir / role).glob("*.prom"))
    assert len(paths) == 269
    snaps = [_check_scrape(p, 32, 96) for p in paths]
    last = snaps[-1]
    xfer = last.histograms[(c.NIXL_XFER_SECONDS, (("engine", "0"), ("model_name", "tiny")))]
    by_source = {
        dict(labels)["source"]: v for (n, labels), v in last.scalars.items() if n == c.PROMPT_TOKENS_BY_SOURCE
    }
    if role == "decode":
        # Pull mode: the decode side initiates the NIXL reads and gets its prompt KV from the transfer.
        assert xfer.count and xfer.count > 0
        assert by_source["external_kv_transfer"] > 0 and by_source["local_compute"] == 0
    else:
        assert xfer.count == 0
        assert by_source["local_compute"] > 0 and by_source["external_kv_transfer"] == 0


def test_adapter_agrees_with_prometheus_client_parser(aggregated_dir: Path) -> None:
    """Cross-check on one busy scrape through prometheus_client's own parser."""
    text = (aggregated_dir / "0060.prom").read_text()
    snap = to_snapshot(parse_exposition(text), 0.0)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    prompt = next(s for s in families["vllm:prompt_tokens"].samples if s.name.endswith("_total"))
    assert snap.scalars[(c.PROMPT_TOKENS, (("engine", "0"), ("model_name", "tiny")))] == prompt.value
    ttft = snap.histograms[(c.TTFT_SECONDS, (("engine", "0"), ("model_name", "tiny")))]
    raw = [s for s in families["vllm:time_to_first_token_seconds"].samples if s.name.endswith("_bucket")]
    assert [count for _, count in ttft.buckets] == [s.value for s in raw]
    assert [bound for bound, _ in ttft.buckets] == [float(s.labels["le"]) for s in raw]
