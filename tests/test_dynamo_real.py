"""Dynamo 1.6.1 from real output: the adapter, the frontend-based signals, the P/D join and what a
broken or partial deployment gives.

Golden data: tests/fixtures/dynamo-1.6.1-mocker-{agg,pd}/scrapes.tar.gz, 1 Hz scrapes of a real
Dynamo 1.6.1 frontend (Rust HTTP + KV router) and `dynamo.mocker` workers recorded by
`make e2e` (e2e/scenario_dynamo.py; README.md beside each). Expected values are computed here
from the raw text with prometheus_client's parser, independently of phaselens' parser.
"""

from __future__ import annotations

import logging
import re
import tarfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from phaselens.analyzers.dynamo_pool import (
    SATURATED_SHARE,
    analyze_dynamo,
    frontend_workers,
    is_frontend,
    router_dispatched_per_second,
    router_prefill_backlog,
    router_prefill_saturation,
    worker_id,
)
from phaselens.analyzers.prefill_saturation import PrefillSaturation
from phaselens.analyzers.target import analyze_target
from phaselens.analyzers.window import TargetWindow
from phaselens.dynamo_stage import DynamoStage
from phaselens.model import EngineSnapshot, Signal, Target, label_value
from phaselens.parsers.engines import canonical as c
from phaselens.parsers.engines import to_snapshot
from phaselens.parsers.exposition import parse_exposition
from phaselens.settings import Settings
from prometheus_client.parser import text_string_to_metric_families

FIXTURES = Path(__file__).parent / "fixtures"
SETTINGS = Settings(window_seconds=30.0, slo_ttft_seconds=0.22, slo_itl_seconds=0.064)
FRONTEND = Target("frontend", "aggregated", "file://frontend", "dynamo")
WORKER = Target("worker", "aggregated", "file://worker", "dynamo")
PREFILL = Target("prefill", "prefill", "file://prefill", "dynamo")
DECODE = Target("decode", "decode", "file://decode", "dynamo")

Texts = dict[str, list[str]]


def load(name: str, tmp_path_factory: pytest.TempPathFactory) -> Texts:
    out = tmp_path_factory.mktemp(name)
    with tarfile.open(FIXTURES / name / "scrapes.tar.gz") as tar:
        tar.extractall(out, filter="data")
    return {d.name: [p.read_text() for p in sorted(d.glob("*.prom"))] for d in sorted(out.iterdir())}


@pytest.fixture(scope="module")
def agg(tmp_path_factory: pytest.TempPathFactory) -> Texts:
    return load("dynamo-1.6.1-mocker-agg", tmp_path_factory)


@pytest.fixture(scope="module")
def pd(tmp_path_factory: pytest.TempPathFactory) -> Texts:
    return load("dynamo-1.6.1-mocker-pd", tmp_path_factory)


def snap(text: str) -> EngineSnapshot:
    return to_snapshot(parse_exposition(text), float(text.splitlines()[0].split()[2]))


def window(texts: list[str], edit: Callable[[str], str] = lambda t: t,
           seconds: float = SETTINGS.window_seconds) -> TargetWindow:
    w = TargetWindow(seconds)
    for text in texts:
        w.add(snap(edit(text)))
    return w


def raw(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body = "\n".join(line for line in text.splitlines() if not line.startswith("# scrape_time"))
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(body) for s in fam.samples}


def raw_sum(text: str, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lb), v in raw(text).items() if n == name and want <= lb)


def value(signals: list[Signal], name: str, **labels: str) -> float | None:
    found = [s.value for s in signals
             if s.name == name and all(label_value(s.labels, k) == v for k, v in labels.items())]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


# ---------------------------------------------------------------------- adapter, golden


def test_frontend_families_map_onto_canonical_series(pd: Texts) -> None:
    text = pd["frontend"][-1]
    s = snap(text)
    assert s.engine_kind == "dynamo" and is_frontend(s)
    key = (("engine", "0"), ("model_name", "tiny"))
    assert s.scalars[(c.REQUESTS_STARTED, key)] == raw_sum(text, "dynamo_frontend_requests_started_total")
    cached = s.histograms[(c.REQUEST_CACHED_TOKENS, key)]
    assert cached.sum == raw_sum(text, "dynamo_frontend_cached_tokens_sum")
    assert cached.count == raw_sum(text, "dynamo_frontend_cached_tokens_count")
    # the router counts each P/D request twice (prefill and decode routing): only prefill counts
    routed = s.histograms[(c.ROUTER_INPUT_TOKENS, key)]
    assert routed.count == raw_sum(text, "dynamo_component_router_input_sequence_tokens_count", phase="prefill")
    both = raw_sum(text, "dynamo_component_router_input_sequence_tokens_count")
    assert both == 2 * routed.count
    assert s.scalars[(c.ROUTER_CACHED_PREFIX_TOKENS, key)] == raw_sum(
        text, "dynamo_component_router_kv_selected_cached_prefix_tokens_total", phase="prefill")
    info = s.info["0"]
    assert info[c.INFO_MAX_NUM_SEQS] == str(int(raw_sum(text, "dynamo_frontend_model_max_num_seqs")))
    assert info[c.INFO_NUM_GPU_BLOCKS] == str(int(raw_sum(text, "dynamo_frontend_model_total_kv_blocks")))
    assert info[c.INFO_BLOCK_SIZE] == str(int(raw_sum(text, "dynamo_frontend_model_kv_cache_block_size")))
    # one series per worker, decimal ids and types as the frontend writes them
    raw_workers = {dict(lb)["worker_id"]: dict(lb)["worker_type"] for (n, lb), _ in raw(text).items()
                   if n == "dynamo_frontend_worker_active_decode_blocks"}
    (fw,) = frontend_workers("frontend", s)
    assert dict(fw.workers) == raw_workers and sorted(raw_workers.values()) == ["decode", "prefill"]
    for wid, wtype in raw_workers.items():
        labels = (*key, ("worker_id", wid), ("worker_type", wtype))
        for family, canonical in (("dynamo_frontend_worker_active_decode_blocks", c.DYNAMO_WORKER_ACTIVE_DECODE_BLOCKS),
                                  ("dynamo_frontend_worker_active_prefill_tokens",
                                   c.DYNAMO_WORKER_ACTIVE_PREFILL_TOKENS)):
            assert s.scalars[(canonical, tuple(sorted(labels)))] == raw_sum(text, family, worker_id=wid)


def test_worker_ids_join_hex_on_workers_decimal_on_the_frontend(pd: Texts) -> None:
    (fw,) = frontend_workers("frontend", snap(pd["frontend"][-1]))
    for role in ("prefill", "decode"):
        text = pd[role][-1]
        hex_id = re.search(r'dynamo_component_uptime_seconds\{worker_id="([0-9a-f]+)"', text)
        assert hex_id is not None
        decimal = worker_id(window([text]))
        assert decimal == str(int(hex_id.group(1), 16))
        assert fw.workers[decimal] == role


def test_pd_prefill_worker_has_no_vllm_series_and_decode_ttft_is_not_the_users(pd: Texts) -> None:
    prefill = snap(pd["prefill"][-1])
    assert not any(name.startswith("vllm:") for name in parse_exposition(pd["prefill"][-1]).families)
    assert not any(name == c.TTFT_SECONDS for name, _ in prefill.histograms)
    assert any(name == c.WORKER_REQUEST_SECONDS for name, _ in prefill.histograms)
    signals, _ = analyze_target(window(pd["decode"]), DECODE, SETTINGS)
    assert value(signals, "phaselens_slo_attainment_ratio", slo="itl", bound="lower") is not None
    for slo in ("ttft", "joint"):
        assert value(signals, "phaselens_slo_attainment_ratio", slo=slo, bound="lower") is None
    assert value(signals, "phaselens_goodput_requests_per_second", bound="lower") is None
    # the same decode TTFT read as an aggregated engine would give an attainment: the rule is the role
    aggregated, _ = analyze_target(window(pd["decode"]), WORKER, SETTINGS)
    assert value(aggregated, "phaselens_slo_attainment_ratio", slo="ttft", bound="lower") is not None


# ---------------------------------------------------------------------- frontend signals, golden


def _delta(first: str, last: str, name: str, **labels: str) -> float:
    return raw_sum(last, name, **labels) - raw_sum(first, name, **labels)


def test_frontend_hit_ratio_is_cached_over_input_tokens(agg: Texts) -> None:
    texts = agg["frontend"]
    signals, _ = analyze_target(window(texts), FRONTEND, SETTINGS)
    # the 30 scrapes span 29 s < 30 s window: the window holds them all
    expected = _delta(texts[0], texts[-1], "dynamo_frontend_cached_tokens_sum") / _delta(
        texts[0], texts[-1], "dynamo_frontend_input_sequence_tokens_sum")
    hit = value(signals, "phaselens_kv_prefix_cache_hit_ratio")
    assert hit == pytest.approx(expected, abs=1e-9)
    assert 0.2 < hit < 1.0  # the capture runs into the shared-prefix phase
    span = snap(texts[-1]).time - snap(texts[0]).time
    rate = _delta(texts[0], texts[-1], "dynamo_frontend_request_duration_seconds_count") / span
    assert value(signals, "phaselens_request_rate_per_second") == pytest.approx(rate, rel=1e-9)
    assert value(signals, "phaselens_slo_attainment_ratio", slo="ttft", bound="lower") is not None


def test_router_estimate_fills_in_without_the_frontends_cached_tokens(agg: Texts) -> None:
    def no_usage(text: str) -> str:
        return "\n".join(line for line in text.splitlines() if not line.startswith("dynamo_frontend_cached_tokens"))

    texts = agg["frontend"]
    signals, _ = analyze_target(window(texts, no_usage), FRONTEND, SETTINGS)
    name = "dynamo_component_router_kv_selected_cached_prefix_tokens_total"
    expected = _delta(texts[0], texts[-1], name, phase="aggregated") / _delta(
        texts[0], texts[-1], "dynamo_component_router_input_sequence_tokens_sum", phase="aggregated")
    assert value(signals, "phaselens_kv_prefix_cache_hit_ratio") == pytest.approx(expected, abs=1e-9)


def test_frontend_arrivals_feed_the_queue_observation(agg: Texts) -> None:
    from phaselens.analyzers.queueing import arrival_counts, observe

    texts = agg["frontend"]
    w = window(texts)
    steps = arrival_counts(w, ("tiny", "0"))
    assert sum(n for _, n in steps) == _delta(texts[0], texts[-1], "dynamo_frontend_requests_started_total")
    obs = observe(w, ("tiny", "0"))
    assert obs is not None and obs.arrival_rate is not None and obs.arrival_rate > 0


# ---------------------------------------------------------------------- P/D pool, golden


def pd_windows(pd: Texts, **edits: Callable[[str], str]) -> dict[str, tuple[Target, TargetWindow]]:
    out = {}
    for target, name in ((FRONTEND, "frontend"), (PREFILL, "prefill"), (DECODE, "decode")):
        out[target.name] = (target, window(pd[name], edits.get(name, lambda t: t)))
    return out


def test_pd_pool_signals_from_frontend_and_workers(pd: Texts) -> None:
    found = analyze_dynamo(pd_windows(pd), SETTINGS)
    assert not found.issues
    assert set(found.joined.values()) == {"prefill", "decode"}
    pool = {"target": "pool", "role": "pool", "engine": "all", "model_name": "tiny"}
    # the last 30 s are the burst: 10 streams on 4 decode seats; the prefill worker stays fast
    assert value(found.signals, "phaselens_phase_bottleneck", phase="decode", **pool) == 1.0
    assert value(found.signals, "phaselens_phase_imbalance_ratio", **pool) < 1.0
    def in_window(texts: list[str]) -> tuple[str, str]:
        end = snap(texts[-1]).time
        inside = [t for t in texts if snap(t).time >= end - SETTINGS.window_seconds]
        return inside[0], inside[-1]

    first, last = in_window(pd["prefill"])
    d_first, d_last = in_window(pd["decode"])
    pre = _delta(first, last, "dynamo_component_request_duration_seconds_sum", dynamo_endpoint="generate")
    dec = _delta(d_first, d_last, "vllm:e2e_request_latency_seconds_sum")
    assert value(found.signals, "phaselens_phase_prefill_time_share_ratio", **pool) == pytest.approx(
        pre / (pre + dec), abs=1e-6)
    score = value(found.signals, "phaselens_disaggregation_score", **pool)
    assert score is not None and 0.0 <= score <= 1.0
    components = {label_value(s.labels, "component") for s in found.signals
                  if s.name == "phaselens_disaggregation_component_ratio"}
    assert components == {"interference_avoided", "prefill_heavy", "kv_capacity_pressure"}


def test_aggregated_dynamo_gives_no_pool_signals(agg: Texts) -> None:
    windows = {"frontend": (FRONTEND, window(agg["frontend"])), "worker": (WORKER, window(agg["worker"]))}
    found = analyze_dynamo(windows, SETTINGS)
    assert found.signals == [] and found.issues == []
    assert len(found.joined) == 1


# ---------------------------------------------------------------------- bad or partial output


def _strip_worker_gauges(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if "dynamo_frontend_worker_" not in line)


def _other_ids(text: str) -> str:
    return re.sub(r'worker_id="[0-9a-f]+"', 'worker_id="abcdef0123456789"', text)


def test_frontend_with_no_workers_logs_and_makes_no_pool_value(pd: Texts, caplog: pytest.LogCaptureFixture) -> None:
    windows = pd_windows(pd, frontend=_strip_worker_gauges)
    stage = DynamoStage(SETTINGS)
    with caplog.at_level(logging.WARNING, logger="phaselens"):
        signals, _ = stage(0.0, windows)
        stage(1.0, windows)
    assert list(signals) == []
    events = [r.__dict__.get("event") for r in caplog.records]
    assert events.count("dynamo_frontend_no_workers") == 1  # once, not every tick
    assert "dynamo_worker_unknown_to_frontend" in events


def test_ids_that_do_not_join_are_logged_and_no_worker_value_is_used(
    pd: Texts, caplog: pytest.LogCaptureFixture
) -> None:
    windows = pd_windows(pd, prefill=_other_ids, decode=_other_ids)
    with caplog.at_level(logging.WARNING, logger="phaselens"):
        signals, _ = DynamoStage(SETTINGS)(0.0, windows)
    events = {r.__dict__.get("event") for r in caplog.records}
    assert {"dynamo_worker_unjoined", "dynamo_worker_unknown_to_frontend"} <= events
    # without joined workers there is no worker-side decode time: no time share is made up
    assert value(list(signals), "phaselens_phase_prefill_time_share_ratio", target="pool") is None
    # the frontend's own view of the prefill worker (its last TTFT) and of the decode blocks remains
    assert value(list(signals), "phaselens_phase_imbalance_ratio", target="pool") is not None


def test_a_worker_gone_is_logged_once_and_cleared_when_it_returns(
    pd: Texts, caplog: pytest.LogCaptureFixture
) -> None:
    full = pd_windows(pd)
    without_decode = {k: v for k, v in full.items() if k != "decode"}
    stage = DynamoStage(SETTINGS)
    with caplog.at_level(logging.INFO, logger="phaselens"):
        stage(0.0, full)
        gone, _ = stage(1.0, without_decode)
        stage(2.0, without_decode)
        stage(3.0, full)
    events = [r.__dict__.get("event") for r in caplog.records]
    assert events.count("dynamo_worker_gone") == 1
    assert events.count("dynamo_worker_unjoined") == 1
    assert "dynamo_issue_cleared" in events
    gone_record = next(r for r in caplog.records if r.__dict__.get("event") == "dynamo_worker_gone")
    assert gone_record.__dict__["target"] == "decode"
    assert value(list(gone), "phaselens_phase_prefill_time_share_ratio", target="pool") is None


def test_a_worker_without_its_id_is_reported(pd: Texts, caplog: pytest.LogCaptureFixture) -> None:
    def no_uptime(text: str) -> str:
        return "\n".join(line for line in text.splitlines() if "dynamo_component_uptime_seconds" not in line)

    with caplog.at_level(logging.WARNING, logger="phaselens"):
        DynamoStage(SETTINGS)(0.0, pd_windows(pd, decode=no_uptime))
    assert "dynamo_worker_id_missing" in {r.__dict__.get("event") for r in caplog.records}


def test_workers_with_vllm_phase_histograms_are_left_to_the_generic_pool_analyzer(pd: Texts) -> None:
    # A real vLLM behind Dynamo exports its own prefill/decode times: analyzers.pool reads those.
    vllm_times = (
        "# TYPE vllm:request_prefill_time_seconds histogram\n"
        'vllm:request_prefill_time_seconds_bucket{engine="0",model_name="tiny",le="+Inf"} 1\n'
        'vllm:request_prefill_time_seconds_sum{engine="0",model_name="tiny"} 0.1\n'
        'vllm:request_prefill_time_seconds_count{engine="0",model_name="tiny"} 1\n'
    )
    found = analyze_dynamo(pd_windows(pd, decode=lambda t: t + vllm_times), SETTINGS)
    # no pool signal; only the router's prefill queue and saturation, the frontend's whatever the workers
    assert {(s.name, label_value(s.labels, "role")) for s in found.signals} == {
        ("phaselens_prefill_queue_depth", "prefill"), ("phaselens_prefill_backlog_seconds", "prefill"),
        ("phaselens_prefill_saturation_ratio", "prefill")}
    assert found.issues == []
    assert set(found.joined.values()) == {"prefill", "decode"}


def test_a_frontend_gone_is_reported_as_such_not_as_every_worker_gone(
    pd: Texts, caplog: pytest.LogCaptureFixture
) -> None:
    full = pd_windows(pd)
    workers_only = {k: v for k, v in full.items() if k != "frontend"}
    stage = DynamoStage(SETTINGS)
    with caplog.at_level(logging.INFO, logger="phaselens"):
        stage(0.0, full)
        signals, _ = stage(1.0, workers_only)
        stage(2.0, full)
    events = [r.__dict__.get("event") for r in caplog.records]
    assert events.count("dynamo_frontend_gone") == 1
    assert "dynamo_worker_gone" not in events
    assert list(signals) == []  # no pool signal without the frontend
    assert "dynamo_issue_cleared" in events


# ---------------------------------------------------------------------- P/D: the prefill queue in the router


@pytest.fixture(scope="module")
def rq(tmp_path_factory: pytest.TempPathFactory) -> Texts:
    return load("dynamo-1.6.1-mocker-pd-router-queue", tmp_path_factory)


PREFILL_POOL = {"target": "pool", "role": "prefill", "engine": "all", "model_name": "tiny"}


def _router_queued(text: str) -> float:
    return raw_sum(text, "dynamo_frontend_router_queue_pending_requests", worker_type="prefill")


def test_router_queue_maps_per_pool(rq: Texts) -> None:
    for text in rq["frontend"]:
        s = snap(text)
        for wtype in ("prefill", "decode"):
            labels = (("engine", "0"), ("model_name", "tiny"), ("worker_type", wtype))
            got = s.scalars[(c.DYNAMO_ROUTER_QUEUED_REQUESTS, labels)]
            assert got == raw_sum(text, "dynamo_frontend_router_queue_pending_requests", worker_type=wtype)
    # the capture holds a real queue in the router while the prefill worker holds at most a few
    assert max(_router_queued(t) for t in rq["frontend"]) >= 40
    inflight = [raw_sum(t, "dynamo_component_inflight_requests", dynamo_endpoint="generate") for t in rq["prefill"]]
    assert max(inflight) <= 5
    assert not any(name.startswith("vllm:") for name in parse_exposition(rq["prefill"][-1]).families)


def _frontend_only(texts: list[str]) -> dict[str, tuple[Target, TargetWindow]]:
    """What the frontend pod's own sidecar sees: the frontend, no worker."""
    return {"frontend": (FRONTEND, window(texts))}


def _expected_backlog(inside: list[str], rate_from: str) -> float:
    """queued x prefill workers / requests served per second, from the raw text of the scrapes inside
    the window: dispatched (arrivals minus the router queue's growth) or finished."""
    seconds = snap(inside[-1]).time - snap(inside[0]).time
    if rate_from == "dispatched":
        arrivals = _delta(inside[0], inside[-1], "dynamo_frontend_requests_started_total")
        served = arrivals - (_router_queued(inside[-1]) - _router_queued(inside[0]))
    else:
        served = _delta(inside[0], inside[-1], "dynamo_frontend_request_duration_seconds_count")
    counts = [n for t in inside if (n := _prefill_workers(t))]
    return _router_queued(inside[-1]) * sum(counts) / len(counts) * seconds / served


def test_the_frontends_sidecar_exports_the_router_queue_for_the_prefill_pool(rq: Texts) -> None:
    texts = rq["frontend"]
    peak = max(range(len(texts)), key=lambda i: _router_queued(texts[i]))
    seen = texts[: peak + 1]
    found = analyze_dynamo(_frontend_only(seen), SETTINGS)
    queued = _router_queued(seen[-1])
    assert value(found.signals, "phaselens_prefill_queue_depth", **PREFILL_POOL) == queued > 0
    prefill_workers = sum(1 for t in frontend_workers("frontend", snap(seen[-1]))[0].workers.values() if t == "prefill")
    assert prefill_workers == 1
    backlog = value(found.signals, "phaselens_prefill_backlog_seconds", **PREFILL_POOL)
    end = snap(seen[-1]).time
    inside = [t for t in seen if snap(t).time >= end - SETTINGS.window_seconds]
    assert backlog == pytest.approx(_expected_backlog(inside, "dispatched"), rel=1e-6)
    assert backlog > 1.5  # the HPA's per-pod target: this queue asks for more prefill pods
    # nothing of it under the frontend's own role or the pool's P/D role
    assert value(found.signals, "phaselens_prefill_backlog_seconds", role="aggregated") is None
    assert value(found.signals, "phaselens_prefill_backlog_seconds", role="pool") is None


@pytest.mark.parametrize("window_s", [3.0, 10.0, 30.0])
def test_router_backlog_golden_at_every_scrape_of_the_router_queue_capture(rq: Texts, window_s: float) -> None:
    # drain time in one pod's seconds: queued x prefill workers / requests dispatched per second
    # (arrivals minus the queue's growth over the window), recomputed from the raw text
    settings = replace(SETTINGS, window_seconds=window_s)
    texts = rq["frontend"]
    checked = differs = 0
    for i in range(2, len(texts) + 1):
        seen = texts[:i]
        end = snap(seen[-1]).time
        inside = [t for t in seen if snap(t).time >= end - window_s]
        found = analyze_dynamo({"frontend": (FRONTEND, window(seen, seconds=window_s))}, settings)
        backlog = value(found.signals, "phaselens_prefill_backlog_seconds", **PREFILL_POOL)
        if _router_queued(seen[-1]) == 0:
            assert backlog == 0.0
            continue
        if len(inside) < 2:
            continue
        expected = _expected_backlog(inside, "dispatched")
        assert backlog == pytest.approx(expected, rel=1e-9), (i, window_s)
        checked += 1
        finished = _delta(inside[0], inside[-1], "dynamo_frontend_request_duration_seconds_count")
        differs += finished > 0 and abs(_expected_backlog(inside, "finished") - expected) > 0.05 * expected
    assert checked >= 10
    assert differs > 0  # the capture tells the two denominators apart


def _with_second_prefill_worker(text: str) -> str:
    """The scrape as if the router had a second prefill worker (id 1) with nothing in flight."""
    extra = [re.sub(r'worker_id="\d+"', 'worker_id="1"', line).rsplit(" ", 1)[0] + " 0"
             for line in text.splitlines()
             if line.startswith("dynamo_frontend_worker_active_prefill_tokens{") and 'worker_type="prefill"' in line]
    return text.rstrip("\n") + "\n" + "\n".join(extra) + "\n"


def test_the_router_backlog_counts_the_workers_that_served_the_window(rq: Texts) -> None:
    # a second prefill worker joins for the last two scrapes: the window's dispatches were served
    # mostly by one worker, so the per-worker rate is over the mean count, not the latest (2)
    texts = rq["frontend"]
    peak = max(range(len(texts)), key=lambda i: _router_queued(texts[i]))
    seen = texts[: peak + 1]
    end = snap(seen[-1]).time
    inside = [t for t in seen if snap(t).time >= end - SETTINGS.window_seconds]
    assert len(inside) >= 4
    edited = seen[:-2] + [_with_second_prefill_worker(t) for t in seen[-2:]]
    assert _prefill_workers(edited[-1]) == 2 and _prefill_workers(edited[0]) == 1
    found = analyze_dynamo(_frontend_only(edited), SETTINGS)
    inside_edited = [t for t in edited if snap(t).time >= end - SETTINGS.window_seconds]
    expected = _expected_backlog(inside_edited, "dispatched")
    backlog = value(found.signals, "phaselens_prefill_backlog_seconds", **PREFILL_POOL)
    assert backlog == pytest.approx(expected, rel=1e-9)
    one_worker = _expected_backlog(inside, "dispatched")
    assert one_worker < backlog < 2 * one_worker  # between the one worker that served and the latest two


def test_the_router_backlog_falls_back_to_the_finished_rate_without_an_arrival_counter(rq: Texts) -> None:
    texts = rq["frontend"]
    peak = max(range(len(texts)), key=lambda i: _router_queued(texts[i]))
    stripped = ["\n".join(line for line in t.splitlines() if "dynamo_frontend_requests_started_total" not in line)
                for t in texts[: peak + 1]]
    found = analyze_dynamo(_frontend_only(stripped), SETTINGS)
    end = snap(stripped[-1]).time
    inside = [t for t in stripped if snap(t).time >= end - SETTINGS.window_seconds]
    assert value(found.signals, "phaselens_prefill_backlog_seconds", **PREFILL_POOL) == pytest.approx(
        _expected_backlog(inside, "finished"), rel=1e-6)


def test_router_dispatched_per_second_formula() -> None:
    def arrivals(count: float | None) -> Callable[[float], float | None]:
        return lambda start: count

    # 30 arrived over 10 s while the queue grew 4 -> 14: 20 dispatched, 2 per second
    assert router_dispatched_per_second([(0.0, 4.0), (5.0, 9.0), (10.0, 14.0)], arrivals(30.0)) == pytest.approx(2.0)
    # a draining queue: 10 arrived, the queue fell by 10, 20 dispatched
    assert router_dispatched_per_second([(0.0, 14.0), (10.0, 4.0)], arrivals(10.0)) == pytest.approx(2.0)
    assert router_dispatched_per_second([(0.0, 4.0), (10.0, 14.0)], arrivals(5.0)) == 0.0  # never negative
    assert router_dispatched_per_second([(0.0, 4.0)], arrivals(5.0)) is None  # one scrape
    assert router_dispatched_per_second([(0.0, 4.0), (10.0, 4.0)], arrivals(None)) is None  # no arrival counter
    # the arrivals are counted from the queue's first scrape in the window
    starts: list[float] = []

    def counted(start: float) -> float:
        starts.append(start)
        return 6.0

    assert router_dispatched_per_second([(3.0, 1.0), (9.0, 1.0)], counted) == pytest.approx(1.0)
    assert starts == [3.0]


def test_an_empty_router_queue_is_a_measured_zero(rq: Texts, pd: Texts) -> None:
    texts = rq["frontend"]
    assert _router_queued(texts[-1]) == 0
    found = analyze_dynamo(_frontend_only(texts), SETTINGS)
    assert value(found.signals, "phaselens_prefill_queue_depth", **PREFILL_POOL) == 0.0
    assert value(found.signals, "phaselens_prefill_backlog_seconds", **PREFILL_POOL) == 0.0
    # without --router-queue-threshold the router queues nothing (requests wait inside the prefill
    # worker, which a mocker does not export): the router's queue reads 0
    found = analyze_dynamo(_frontend_only(pd["frontend"]), SETTINGS)
    assert value(found.signals, "phaselens_prefill_queue_depth", **PREFILL_POOL) == 0.0


def test_an_aggregated_frontend_exports_no_prefill_pool_queue(agg: Texts) -> None:
    found = analyze_dynamo({"frontend": (FRONTEND, window(agg["frontend"]))}, SETTINGS)
    assert value(found.signals, "phaselens_prefill_queue_depth", role="prefill") is None


def test_router_prefill_backlog_formula() -> None:
    assert router_prefill_backlog(0.0, 3, None) == 0.0
    assert router_prefill_backlog(12.0, 3, 6.0) == pytest.approx(6.0)  # 12 queued / (2 per pod per s)
    assert router_prefill_backlog(12.0, 3, None) is None
    assert router_prefill_backlog(12.0, 3, 0.0) is None
    assert router_prefill_backlog(12.0, 0, 6.0) is None


# ---------------------------------------------------------------------- P/D: the prefill pool's saturation


def _prefill_workers(text: str) -> int:
    return sum(1 for (n, lb) in raw(text) if n == "dynamo_frontend_worker_active_prefill_tokens"
               and ("worker_type", "prefill") in lb)


def _expected_saturation(inside: list[str], window_s: float) -> tuple[float, str]:
    """rho x pods from the raw text of the scrapes inside the window (analyzers.dynamo_pool docstring)."""
    queued = [_router_queued(t) for t in inside]
    start = len(inside)
    while start > 0 and queued[start - 1] > 0:
        start -= 1
    held = inside[start:]
    if len(held) >= 2 and snap(held[-1]).time - snap(held[0]).time >= window_s * SATURATED_SHARE:
        arrivals = _delta(held[0], held[-1], "dynamo_frontend_requests_started_total")
        pods = sum(_prefill_workers(t) for t in held) / len(held)
        return pods * arrivals / max(1.0, arrivals - (queued[-1] - queued[start])), "arrivals"
    batch = raw_sum(inside[-1], "dynamo_frontend_model_max_num_batched_tokens")
    tokens = "dynamo_frontend_worker_active_prefill_tokens"
    in_flight = [(raw_sum(t, tokens, worker_type="prefill"), _prefill_workers(t)) for t in inside]
    busy = [n * min(1.0, v / (n * batch)) for v, n in in_flight if n]
    return sum(busy) / len(busy), "tokens"


@pytest.mark.parametrize("window_s", [3.0, 10.0, 30.0])
def test_prefill_saturation_golden_on_the_router_queue_capture(rq: Texts, window_s: float) -> None:
    settings = replace(SETTINGS, window_seconds=window_s)
    texts = rq["frontend"]
    bases = set()
    for i in range(1, len(texts) + 1):
        seen = texts[:i]
        found = analyze_dynamo({"frontend": (FRONTEND, window(seen, seconds=window_s))}, settings)
        end = snap(seen[-1]).time
        inside = [t for t in seen if snap(t).time >= end - window_s]
        expected, basis = _expected_saturation(inside, window_s)
        assert value(found.signals, "phaselens_prefill_saturation_ratio", basis=basis, **PREFILL_POOL) == (
            pytest.approx(expected, rel=1e-9)), (i, window_s)
        bases.add(basis)
    assert bases == {"tokens", "arrivals"}


def test_prefill_saturation_reaches_its_target_before_the_router_queue_forms(rq: Texts) -> None:
    # The fleet lab's window (30 s / K = 10): at the last scrape before the router's first queued
    # request the backlog still reads 0, while the pool's prefill tokens in flight already read the
    # load (0.8 of the worker's batch or more): a flow reads the load, a stock waits for a queue.
    settings = replace(SETTINGS, window_seconds=3.0)
    texts = rq["frontend"]
    first_queue = next(i for i, t in enumerate(texts) if _router_queued(t) > 0)
    found = analyze_dynamo({"frontend": (FRONTEND, window(texts[:first_queue], seconds=3.0))}, settings)
    assert value(found.signals, "phaselens_prefill_backlog_seconds", **PREFILL_POOL) == 0.0
    saturation = value(found.signals, "phaselens_prefill_saturation_ratio", basis="tokens", **PREFILL_POOL)
    assert saturation is not None and saturation >= 0.8
    # and once the queue has held for half a window it says by how much demand exceeds the one worker
    # (the capture's 8 req/s phase on a worker that serves about 4: arrivals basis near 2)
    during = []
    for end in range(first_queue + 4, first_queue + 19):
        found = analyze_dynamo({"frontend": (FRONTEND, window(texts[:end], seconds=3.0))}, settings)
        during.append(value(found.signals, "phaselens_prefill_saturation_ratio", basis="arrivals", **PREFILL_POOL))
    assert None not in during
    assert sorted(during)[len(during) // 2] > 1.2  # median: single 3 s windows are noisy (1.0-3.4)


def _saturation(in_flight: list[tuple[float, float, int]], queued: list[tuple[float, float]],
                arrivals: dict[float, float] | None, horizon: float = 4.0,
                batch: float | None = 2048.0) -> PrefillSaturation | None:
    per_worker = [(t, (v / n,) * n if n else ()) for t, v, n in in_flight]  # the sum spread over n workers
    return router_prefill_saturation(per_worker, batch, queued, lambda t: None if arrivals is None else arrivals[t],
                                     horizon)


def test_router_prefill_saturation_formula() -> None:
    idle = [(0.0, 0.0), (1.0, 0.0)]
    # tokens: in flight over each scrape's workers' full batches, at most 1 per worker, averaged
    s = _saturation([(0.0, 1024.0, 2), (1.0, 3072.0, 2)], idle, {0.0: 10.0})
    assert s == PrefillSaturation(0.5, "tokens", 2.0) and s.pool_sum == 1.0
    # a saturated scrape's overshoot (the router admits whole requests) does not lift an idle one
    assert _saturation([(0.0, 6144.0, 2), (1.0, 0.0, 2)], idle, None) == PrefillSaturation(0.5, "tokens", 2.0)
    # each scrape with its own workers: a third worker arriving at the last scrape does not let the
    # two saturated workers' overshoot through (the latest count would read 3 full workers)
    s = _saturation([(0.0, 6144.0, 2), (1.0, 6144.0, 2), (2.0, 6144.0, 3)], [*idle, (2.0, 0.0)], None)
    assert s is not None and s.basis == "tokens" and s.pool_sum == pytest.approx(7 / 3)
    full = [(float(t), 4096.0, 2) for t in range(5)]
    # queued at every scrape: arrivals over dispatched (30 arrived, the queue grew 10 -> 20: 20 left)
    assert _saturation(full[:3], [(0.0, 10.0), (1.0, 15.0), (2.0, 20.0)], {0.0: 30.0}) == (
        PrefillSaturation(1.5, "arrivals", 2.0))
    # draining queue: the pool at capacity serves 40 while 30 arrive (the queue is the backlog's)
    assert _saturation(full[:3], [(0.0, 20.0), (1.0, 15.0), (2.0, 10.0)], {0.0: 30.0}) == (
        PrefillSaturation(0.75, "arrivals", 2.0))
    # a queue held for the last half of the window: measured over that half only (a step up)
    step = [(0.0, 0.0), (1.0, 0.0), (2.0, 4.0), (3.0, 8.0), (4.0, 12.0)]
    assert _saturation(full, step, {2.0: 20.0}) == PrefillSaturation(20.0 / 12.0, "arrivals", 2.0)
    # held for less than half the window: a burst, it measures nothing about capacity (tokens)
    burst = [(0.0, 0.0), (1.0, 0.0), (2.0, 0.0), (3.0, 3.0), (4.0, 5.0)]
    assert _saturation(full, burst, {3.0: 9.0}) == PrefillSaturation(1.0, "tokens", 2.0)
    # without an arrival counter: the tokens basis
    assert _saturation(full[:3], [(0.0, 10.0), (1.0, 15.0), (2.0, 20.0)], None) == PrefillSaturation(1.0, "tokens", 2.0)
    # nothing dispatched: at least one request's worth
    assert _saturation(full[:3], [(0.0, 5.0), (2.0, 12.0)], {0.0: 7.0}) == PrefillSaturation(7.0, "arrivals", 2.0)
    # no batch size, no worker, no sample: no value
    assert _saturation([(0.0, 1.0, 2)], [], None, batch=None) is None
    assert _saturation([(0.0, 1.0, 0)], [], None) is None
    assert _saturation([], [], None) is None
