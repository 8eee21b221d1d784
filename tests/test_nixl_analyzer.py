"""KV-transfer analytics from each source, on the real 1P1D capture."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from phaselens.analyzers.nixl import analyze_nixl
from phaselens.analyzers.window import TargetWindow
from phaselens.exporters.specs import SPECS_BY_NAME
from phaselens.model import EngineSnapshot, Histogram, LogEvent, NixlTransfer, label_value, make_labels
from phaselens.parsers import logs as L
from phaselens.parsers.engines import canonical as c
from phaselens.parsers.logs import parse_lines
from phaselens.parsers.nixl_ring import decode_ring
from phaselens.settings import Settings
from phaselens.sources.log_follow import read_lines
from prometheus_client.parser import text_string_to_metric_families

PD = Path("vllm-0.32.0-cpu-pd-1p1d")
DECODE_AGENT = "decode-agent-2e6ededa-289e-4bc1-aea5-146d0f4d9d3d"
BASE = {"target": "decode-0", "role": "decode", "model_name": "tiny", "engine": "0"}
# Test-local mapping of the few vLLM names this analyzer reads (the engine adapter is another module).
HISTOGRAMS = {
    "vllm:nixl_xfer_time_seconds": c.NIXL_XFER_SECONDS,
    "vllm:nixl_post_time_seconds": c.NIXL_POST_SECONDS,
    "vllm:nixl_bytes_transferred": c.NIXL_BYTES,
    "vllm:time_to_first_token_seconds": c.TTFT_SECONDS,
}


def _snapshot(path: Path) -> EngineSnapshot:
    text = path.read_text()
    scrape_time = float(text.split("\n", 1)[0].split()[-1])
    prefixes = ("vllm:nixl_", "vllm:time_to_first_token")
    wanted = "\n".join(
        line
        for line in text.splitlines()
        if line.startswith(prefixes) or (line.startswith("# TYPE ") and line[7:].startswith(prefixes))
    )
    histograms = {}
    scalars = {}
    for family in text_string_to_metric_families(wanted + "\n"):
        if family.name in HISTOGRAMS:
            buckets = sorted((float(s.labels["le"]), s.value) for s in family.samples if s.name.endswith("_bucket"))
            total = next(s.value for s in family.samples if s.name.endswith("_sum"))
            count = next(s.value for s in family.samples if s.name.endswith("_count"))
            labels = make_labels({"model_name": "tiny", "engine": "0"})
            name = HISTOGRAMS[family.name]
            histograms[(name, labels)] = Histogram(name, labels, tuple(buckets), total, count)
        elif family.name == "vllm:nixl_num_failed_transfers":
            labels = make_labels({"model_name": "tiny", "engine": "0"})
            scalars[(c.NIXL_FAILED_TRANSFERS, labels)] = family.samples[0].value
    return EngineSnapshot("vllm", scrape_time, scalars, histograms)


@pytest.fixture(scope="module")
def decode_snapshots(pd_dir: Path) -> list[EngineSnapshot]:
    return [_snapshot(path) for path in sorted((pd_dir / "decode").glob("*.prom"))]


@pytest.fixture()
def decode_window(decode_snapshots: list[EngineSnapshot]) -> TargetWindow:
    window = TargetWindow(horizon_seconds=10_000)
    for snapshot in decode_snapshots:
        window.add(snapshot)
    return window


def _by_name(signals: list) -> dict[str, list]:  # type: ignore[type-arg]
    out: dict[str, list] = {}  # type: ignore[type-arg]
    for s in signals:
        out.setdefault(s.name, []).append(s)
    return out


def _check_contract(signals: list) -> None:  # type: ignore[type-arg]
    for s in signals:
        assert math.isfinite(s.value)
        assert tuple(k for k, _ in s.labels) == tuple(sorted(SPECS_BY_NAME[s.name].labels))


def test_vllm_metrics_source(decode_window: TargetWindow, decode_snapshots: list[EngineSnapshot]) -> None:
    settings = Settings()
    signals, recs = analyze_nixl(decode_window, [], [], 0.0, settings, BASE)
    _check_contract(signals)
    by = _by_name(signals)
    assert {label_value(s.labels, "source") for s in signals} == {"vllm_metrics"}
    assert sorted(label_value(s.labels, "percentile") for s in by["phaselens_nixl_transfer_seconds"]) == [
        "50", "90", "99",
    ]  # fmt: skip
    first, last = decode_snapshots[0], decode_snapshots[-1]
    key = (c.NIXL_BYTES, make_labels({"model_name": "tiny", "engine": "0"}))
    seconds = last.time - first.time
    expected_bps = (last.histograms[key].sum - first.histograms[key].sum) / seconds  # type: ignore[operator]
    assert by["phaselens_nixl_transfer_bytes_per_second"][0].value == pytest.approx(expected_bps)
    assert by["phaselens_nixl_transfer_failure_ratio"][0].value == 0.0
    # (17.646518 - xfer sum at the first scrape) / (448.25 - 31.53): transfer share of decode TTFT.
    xkey = (c.NIXL_XFER_SECONDS, key[1])
    tkey = (c.TTFT_SECONDS, key[1])
    share = (last.histograms[xkey].sum - first.histograms[xkey].sum) / (  # type: ignore[operator]
        last.histograms[tkey].sum - first.histograms[tkey].sum  # type: ignore[operator]
    )
    assert by["phaselens_nixl_ttft_share_ratio"][0].value == pytest.approx(share)
    assert 0 < share < 1
    # p90 of this run's transfers is ~0.3 s, above the 0.1 s threshold.
    assert [r.code for r in recs] == ["NIXL_TRANSFER_SLOW"]
    assert recs[0].evidence["source"] == "vllm_metrics" and recs[0].target == "decode-0"


def test_telemetry_ring_source(fixtures_dir: Path) -> None:
    ring = decode_ring((fixtures_dir / PD / "nixl-telemetry" / DECODE_AGENT).read_bytes())
    transfers = ring.grouped.transfers.to_transfers("decode", read_time=1000.0)
    settings = Settings()
    signals, recs = analyze_nixl(None, transfers, [], 1000.0, settings, BASE)
    _check_contract(signals)
    by = _by_name(signals)
    xfer = np.array([t.xfer_seconds for t in transfers])
    quantiles = {label_value(s.labels, "percentile"): s.value for s in by["phaselens_nixl_transfer_seconds"]}
    assert quantiles["90"] == pytest.approx(float(np.quantile(xfer, 0.9)))
    assert quantiles["50"] == pytest.approx(float(np.median(xfer)))
    assert by["phaselens_nixl_transfer_bytes_per_second"][0].value == pytest.approx(31883264 / 30.0)
    assert by["phaselens_nixl_transfer_failure_ratio"][0].value == 0.0
    assert "phaselens_nixl_ttft_share_ratio" not in by  # no decode TTFT without a window
    assert {label_value(s.labels, "source") for s in signals} == {"telemetry_ring"}
    assert [r.code for r in recs] == ["NIXL_TRANSFER_SLOW"]
    # Transfers stamped outside the window are not counted.
    assert analyze_nixl(None, transfers, [], 1000.0 + 31, settings, BASE) == ([], [])


def test_log_source_and_backend_evidence(fixtures_dir: Path) -> None:
    events = list(parse_lines(read_lines(fixtures_dir / PD / "decode.log.gz"), year=2026).events)
    now = max(e.time for e in events if e.time is not None)
    settings = Settings(window_seconds=10_000)
    signals, recs = analyze_nixl(None, [], events, now, settings, BASE)
    _check_contract(signals)
    by = _by_name(signals)
    kv = [e for e in events if e.kind == L.VLLM_KV_TRANSFER_METRICS]
    assert [label_value(s.labels, "percentile") for s in by["phaselens_nixl_transfer_seconds"]] == ["90"]
    assert by["phaselens_nixl_transfer_seconds"][0].value == pytest.approx(
        max(float(e.fields["p90_xfer_time_ms"]) for e in kv) / 1000
    )
    assert {label_value(s.labels, "source") for s in signals} == {"log"}
    (slow,) = recs
    assert slow.code == "NIXL_TRANSFER_SLOW" and slow.evidence["backend"] == "UCX"
    assert slow.evidence["transfers"] == 110


def test_every_source_is_exported_but_only_the_preferred_one_recommends(
    decode_window: TargetWindow, fixtures_dir: Path
) -> None:
    ring = decode_ring((fixtures_dir / PD / "nixl-telemetry" / DECODE_AGENT).read_bytes())
    transfers = ring.grouped.transfers.to_transfers("decode", read_time=0.0)
    signals, recs = analyze_nixl(decode_window, transfers, [], 0.0, Settings(), BASE)
    # Both sources are there to be compared; they describe the same 110 transfers.
    assert {label_value(s.labels, "source") for s in signals} == {"vllm_metrics", "telemetry_ring"}
    assert recs and {r.evidence.get("source") for r in recs} == {"vllm_metrics"}
    _, ring_only_recs = analyze_nixl(None, transfers, [], 0.0, Settings(), BASE)
    assert ring_only_recs and {r.evidence.get("source") for r in ring_only_recs} == {"telemetry_ring"}
    assert analyze_nixl(None, [], [], 0.0, Settings(), BASE) == ([], [])
    assert analyze_nixl(TargetWindow(30.0), [], [], 0.0, Settings(), BASE) == ([], [])


def _kv_line(time: float, ok: float, failed: float) -> LogEvent:
    fields = {
        "successful_transfers": ok,
        "avg_xfer_time_ms": 2.0,
        "p90_xfer_time_ms": 3.0,
        "avg_mib_per_transfer": 1.0,
        "failed_transfers": failed,
    }
    return LogEvent(L.VLLM_KV_TRANSFER_METRICS, time, fields)


def test_failures_recommendation_and_the_telemetry_trap() -> None:
    settings = Settings()
    events = [_kv_line(10.0, 90, 10)]
    signals, recs = analyze_nixl(None, [], events, 20.0, settings, BASE)
    ratio = next(s for s in signals if s.name == "phaselens_nixl_transfer_failure_ratio")
    assert ratio.value == pytest.approx(0.1)
    assert [r.code for r in recs] == ["NIXL_TRANSFER_FAILURES"]  # 3 ms p90: not slow
    assert recs[0].severity == "warning" and recs[0].evidence["failures"] == 10
    trap = [_kv_line(10.0, 0, 50), LogEvent(L.NIXL_TELEMETRY_DISABLED, 1.0, {})]
    _, recs = analyze_nixl(None, [], trap, 20.0, settings, BASE)
    assert recs[0].severity == "critical" and "telemetry" in recs[0].message
    healthy = [_kv_line(10.0, 100, 0)]
    assert analyze_nixl(None, [], healthy, 20.0, settings, BASE)[1] == []


def test_ring_errors_count_as_failures() -> None:
    from phaselens.model import NixlRingError

    transfers = [NixlTransfer(5.0, 1e-5, 1e-3, 1024, 1, "read", "a") for _ in range(9)]
    errors = [NixlRingError(5.0, "a", "agent_err_remote_disconnect", 1)]
    signals, recs = analyze_nixl(None, transfers, [], 6.0, Settings(), BASE, ring_errors=errors)
    ratio = next(s for s in signals if s.name == "phaselens_nixl_transfer_failure_ratio")
    assert ratio.value == pytest.approx(0.1)
    assert [r.code for r in recs] == ["NIXL_TRANSFER_FAILURES"]
