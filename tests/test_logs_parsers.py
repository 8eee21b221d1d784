"""Log-line parsers on the real vLLM/NIXL logs (gzipped fixtures) and the public samples."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from phaselens.parsers import logs as L
from phaselens.parsers.logs import MalformedLine, nixl_backend, parse_line, parse_lines
from phaselens.sources.log_follow import read_lines

PD = Path("vllm-0.32.0-cpu-pd-1p1d")


def _parse(path: Path, year: int | None = 2026) -> L.LogParseResult:
    return parse_lines(read_lines(path), year=year, source=path.name)


def test_decode_log_counts_and_kv_transfer_totals(fixtures_dir: Path) -> None:
    result = _parse(fixtures_dir / PD / "decode.log.gz")
    counts = result.counts()
    assert counts[L.VLLM_KV_TRANSFER_METRICS] == 34
    assert counts[L.VLLM_ENGINE_STATS] == 40
    assert counts[L.NIXL_BACKEND_INSTANTIATED] == 1 and counts[L.NIXL_AGENT_INITIALIZED] == 1
    assert result.malformed == {}
    kv = [e for e in result.events if e.kind == L.VLLM_KV_TRANSFER_METRICS]
    # The same 110 transfers the decode agent's telemetry ring and /metrics hold.
    assert sum(float(e.fields["successful_transfers"]) for e in kv) == 110
    assert all(e.fields["failed_transfers"] == 0 for e in kv)
    agent = next(e for e in result.events if e.kind == L.NIXL_AGENT_INITIALIZED)
    assert agent.fields["agent"] == "2e6ededa-289e-4bc1-aea5-146d0f4d9d3d"  # the ring's file name
    assert nixl_backend(result.events) == "UCX"


def test_fields_of_hand_checked_lines(fixtures_dir: Path) -> None:
    lines = list(read_lines(fixtures_dir / PD / "decode.log.gz"))
    kv_line = next(line for line in lines if "KV Transfer metrics" in line)
    # (APIServer pid=15204) INFO 11-22 17:51:39 [metrics.py:103] KV Transfer metrics: Num successful
    # transfers=8, Avg xfer time (ms)=191.183, P90 xfer time (ms)=215.72, ... Avg MB per transfer=0.266
    event = parse_line(kv_line, year=2026)
    assert isinstance(event, L.LogEvent)
    assert event.time == pytest.approx(1795369899.0)  # 2026-11-22 17:51:39 UTC
    assert event.fields["successful_transfers"] == 8
    assert event.fields["avg_xfer_time_ms"] == 191.183 and event.fields["p90_xfer_time_ms"] == 215.72
    assert event.fields["avg_mib_per_transfer"] == 0.266
    assert event.fields["notifications_after_expiry"] == 0
    stats_line = next(line for line in lines if "Deferred: 1 reqs" in line)
    stats = parse_line(stats_line, year=2026)
    assert isinstance(stats, L.LogEvent)
    assert stats.fields["running_requests"] == 7 and stats.fields["waiting_requests"] == 1
    assert stats.fields["deferred_requests"] == 1 and stats.fields["kv_fetch_completed_waiting"] == 1
    assert stats.fields["kv_cache_usage_ratio"] == pytest.approx(0.832)
    assert stats.fields["kv_cache_device"] == "CPU"
    assert stats.fields["external_prefix_cache_hit_ratio"] == 1.0


def test_prefill_and_aggregated_logs(fixtures_dir: Path) -> None:
    prefill = _parse(fixtures_dir / PD / "prefill.log.gz").counts()
    assert prefill[L.VLLM_ENGINE_STATS] == 36 and prefill[L.VLLM_KV_TRANSFER_METRICS] == 0
    aggregated = _parse(fixtures_dir / "vllm-0.32.0-cpu-aggregated" / "server.log.gz")
    assert aggregated.counts() == {L.VLLM_ENGINE_STATS: 10}
    assert aggregated.lines > 3900  # access lines skipped by the substring prefilter
    peak = max(float(e.fields["waiting_requests"]) for e in aggregated.events)
    assert peak > 0


def test_nixl_loopback_agent_log(fixtures_dir: Path) -> None:
    result = _parse(fixtures_dir / "nixl-1.5.1-cpu-ucx-loopback" / "agent.log")
    counts = result.counts()
    assert counts[L.NIXL_BACKEND_SELECTED] == 20  # one per transfer on the non-prepped path
    assert counts[L.NIXL_TELEMETRY_ENABLED] == 2 and counts[L.NIXL_BACKEND_INSTANTIATED] == 2
    version = next(e for e in result.events if e.kind == L.NIXL_VERSION)
    assert version.fields == {"version": "1.5.1", "git": "1d2a52eb"}
    bound = next(e for e in result.events if e.kind == L.NIXL_BACKEND_BOUND)
    assert bound.fields["library_version"] == "1.23.0"
    telemetry = next(e for e in result.events if e.kind == L.NIXL_TELEMETRY_ENABLED)
    assert telemetry.fields["capacity_events"] == 4096
    instantiated = next(e for e in result.events if e.kind == L.NIXL_BACKEND_INSTANTIATED)
    assert instantiated.time == pytest.approx(1795370335.0)  # 2026-11-22 17:58:55, full date in the line


def test_public_samples(fixtures_dir: Path) -> None:
    samples = fixtures_dir / "public-samples"
    vllm = _parse(samples / "vllm" / "nixl_connector_log_lines.log", year=None)
    assert vllm.counts() == {
        L.VLLM_KV_TRANSFER_METRICS: 1,
        L.VLLM_KV_EXPIRED: 3,
        L.VLLM_KV_INVALID_READ: 1,
        L.VLLM_NIXL_ENGINE_ID_MISMATCH: 1,
        L.VLLM_NIXL_HANDSHAKE_FAILED: 1,
    }
    expired = [e for e in vllm.events if e.kind == L.VLLM_KV_EXPIRED]
    assert expired[-1].fields["lease_seconds"] == 120.0
    assert all(e.time is None for e in vllm.events)  # no year given
    cpp = _parse(samples / "nixl" / "cpp_absl_log_lines.log")
    assert [e.fields["message"] for e in cpp.events] == [
        "getPluginParams: backend 'UCX' not found",
        "createBackend: unsupported backend 'UCX'",
    ]
    assert cpp.events[0].fields["level"] == "ERROR" and cpp.events[0].fields["line"] == 259
    old = _parse(samples / "nixl" / "python_api_log_pre0.6.log").counts()
    new = _parse(samples / "nixl" / "python_api_log_v0.6plus.log").counts()
    assert old == new == {L.NIXL_BACKEND_INSTANTIATED: 1, L.NIXL_AGENT_INITIALIZED: 1}
    legacy = _parse(samples / "dynamo" / "legacy_v0.1_disagg_worker.log")
    assert nixl_backend(legacy.events) == "UCX_MO"
    jsonl = _parse(samples / "dynamo" / "dynamo_log_jsonl.jsonl")
    assert jsonl.counts() == {L.DYNAMO_REMOTE_PREFILL_SUCCEEDED: 2}
    failure = _parse(samples / "vllm" / "nixl_failure_metric_and_messages.txt")
    assert failure.counts() == {L.NIXL_TELEMETRY_DISABLED: 1}


# Dynamo decision lines in the documented shapes (research §2.5): the text and JSONL forms of the
# current PrefillRouter, and the Dynamo 0.1 `Remote prefill:` INFO line.
DECISION_JSON = json.dumps(
    {
        "time": "2025-10-31T20:52:10.745264Z",
        "level": "DEBUG",
        "target": "dynamo_llm::kv_router::prefill_router",
        "message": "Conditional disagg decision",
        "worker_id": 7,
        "dp_rank": 0,
        "prompt_tokens": 3000,
        "net_new_tokens": 900,
        "overlap_tokens": 2100,
        "cached_tokens": 2100,
        "decode_gate_decision": "bypass_allowed_decode_not_busy",
        "bypass": True,
    }
)
DECISION_TEXT = (
    "2025-10-31T20:52:10.745264Z DEBUG dynamo_llm::kv_router::prefill_router: Conditional disagg decision "
    "worker_id=7 dp_rank=0 prompt_tokens=3000 net_new_tokens=3000 overlap_tokens=0 cached_tokens=0 "
    'decode_gate_decision="bypass_declined_by_policy" bypass=false'
)
OLD_DECISION = (
    "2025-04-24T07:46:08.693Z  INFO disagg_router.prefill_remote: Remote prefill: True "
    "(prefill length: 1200/1500, prefill queue size: 1/2)"
)


def test_dynamo_decisions() -> None:
    result = parse_lines([DECISION_JSON, DECISION_TEXT, OLD_DECISION])
    assert result.counts() == {L.DYNAMO_DISAGG_DECISION: 3} and result.malformed == {}
    bypassed, remote, old = result.events
    assert bypassed.fields["bypass"] is True and bypassed.fields["net_new_tokens"] == 900
    assert bypassed.time == pytest.approx(1761943930.745264)
    assert remote.fields["remote_prefill"] is True
    assert remote.fields["decode_gate_decision"] == "bypass_declined_by_policy"
    assert old.fields == {
        "remote_prefill": True,
        "bypass": False,
        "net_new_tokens": 1200,
        "prompt_tokens": 1500,
        "prefill_queue_size": 1,
        "prefill_queue_max": 2,
    }


def test_structured_nixl_failure_line() -> None:
    line = (
        "(Worker pid=9) ERROR 11-22 17:52:00 [base_worker.py:1260] NIXL transfer failure: "
        "transfer_failed. NIXL_ERR_REMOTE_DISCONNECT | Context: {'failure_type': 'transfer_failed'}"
    )
    event = parse_line(line, year=2026)
    assert isinstance(event, L.LogEvent)
    assert event.fields["failure_type"] == "transfer_failed" and event.fields["category"] == "transfer"
    assert event.fields["detail"] == "NIXL_ERR_REMOTE_DISCONNECT"


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("(APIServer pid=1) INFO 11-22 17:51:39 [metrics.py:103] KV Transfer metrics: Num successful "
         "transfers=oops, Avg xfer time (ms)=1.0", L.VLLM_KV_TRANSFER_METRICS),
        ("(APIServer pid=1) INFO 11-22 17:51:39 [metrics.py:103] KV Transfer metrics: garbage",
         L.VLLM_KV_TRANSFER_METRICS),
        ("(APIServer pid=1) INFO 11-22 17:51:39 [loggers.py:335] Engine 000: Avg prompt throughput: "
         "lots tokens/s", L.VLLM_ENGINE_STATS),
        ("WARNING 01-14 15:08:18 [x.py:1] Releasing expired KV blocks for request", L.VLLM_KV_EXPIRED),
        ('{"message": "Conditional disagg decision", "bypass": "maybe"}', L.DYNAMO_DISAGG_DECISION),
    ],
)  # fmt: skip
def test_malformed_lines_are_counted_not_crashing(line: str, kind: str) -> None:
    result = parse_line(line, year=2026)
    assert isinstance(result, MalformedLine) and result.kind == kind
    assert parse_lines([line, line, "unrelated"]).malformed == {kind: 2}


def test_unrelated_lines_are_skipped() -> None:
    lines = [
        'INFO:     127.0.0.1:39402 - "GET /metrics HTTP/1.1" 200 OK',
        "(APIServer pid=15204) INFO 11-22 17:50:19 [launcher.py:195] Route: /health, Methods: GET",
        "[W1122 17:50:03.685115946 utils.cpp:68] Warning: NUMA binding",
        "",
    ]
    result = parse_lines(lines)
    assert result.events == () and result.malformed == {} and result.lines == 4


def test_read_lines_handles_gzip_and_plain(tmp_path: Path) -> None:
    plain = tmp_path / "a.log"
    plain.write_text("one\r\ntwo\n")
    packed = tmp_path / "b.log.gz"
    with gzip.open(packed, "wt") as handle:
        handle.write("one\ntwo")
    assert list(read_lines(plain)) == list(read_lines(packed)) == ["one", "two"]
