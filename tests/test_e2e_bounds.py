"""The bounds the end-to-end checks judge the sidecar by, and the log-rate fix they exposed.

- a request's engine-side TTFT and finish are bounded from below by vLLM's own per-request
  timings (queue + prefill, + decode), read from the stream's last chunk by the load client;
- the load client measures its own event-loop lag (its share of the client-side overhead);
- NIXL bytes/s from vLLM's 10 s `KV Transfer metrics` lines divides by the time those lines
  cover, not by the window (which misstated the rate whenever the two differ);
- NIXL bytes/s from vLLM's byte histogram divides by the time the target was watched, not by the
  span of a histogram that vLLM created at the first transfer, mid-window (12x too high, seen).
"""

from __future__ import annotations

import asyncio
import json
import math

import groundtruth as gt
import loadgen
import pytest
from phaselens.analyzers.nixl import figures_from_logs, figures_from_vllm
from phaselens.analyzers.window import TargetWindow
from phaselens.model import EngineSnapshot, Histogram, LogEvent, make_labels
from phaselens.parsers import logs as L
from phaselens.parsers.engines import canonical as c


def test_engine_metrics_from_the_last_chunk_are_read_in_seconds() -> None:
    rec = loadgen.RequestRecord(id="r")
    loadgen.record_engine_metrics(
        rec, {"queue_time_ms": 12.5, "time_to_first_token_ms": 30.0, "generation_time_ms": None}
    )
    assert rec.engine_queue_s == pytest.approx(0.0125)
    assert rec.engine_ttft_s == pytest.approx(0.03)
    assert rec.engine_generation_s is None
    assert "chunk_times" not in json.loads(rec.as_json())


def test_engine_floors_bound_the_request_from_below() -> None:
    line = {
        "kind": "request", "id": "r1", "phase": "steady", "start": 100.0, "end": 101.0,
        "ttft": 0.30, "tpot": 0.01, "output_tokens": 50, "outcome": "ok",
        "engine_queue_s": 0.05, "engine_ttft_s": 0.04, "engine_generation_s": 0.6,
    }  # fmt: skip
    (r,), _ = gt.parse_ground_truth([json.dumps(line)])
    assert r.engine_ttft_floor == pytest.approx(0.09)
    assert r.engine_end_floor == pytest.approx(100.69)
    # without the engine's timings there is no floor (older recordings fall back to the mean)
    del line["engine_ttft_s"]
    (r2,), _ = gt.parse_ground_truth([json.dumps(line)])
    assert r2.engine_ttft_floor is None and r2.engine_end_floor is None


def test_phase_end_carries_the_clients_loop_lag() -> None:
    lines = [
        json.dumps({"kind": "phase_start", "phase": "steady", "t": 10.0}),
        json.dumps(
            {"kind": "phase_end", "phase": "steady", "t": 20.0, "loop_lag_p99_s": 0.004, "loop_lag_max_s": 0.02}
        ),
    ]
    _, (p,) = gt.parse_ground_truth(lines)
    assert (p.start, p.end, p.loop_lag_p99_s, p.loop_lag_max_s) == (10.0, 20.0, 0.004, 0.02)


async def test_loop_lag_sees_a_blocked_loop() -> None:
    lag = loadgen.LoopLag()
    lag.start()
    await asyncio.sleep(0.05)
    import time

    time.sleep(0.12)  # block the loop, as a slow chunk parser would
    await asyncio.sleep(0.03)
    lag.stop()
    figures = lag.take()
    assert figures["loop_lag_max_s"] >= 0.1
    assert figures["loop_lag_p50_s"] < 0.1
    assert lag.take() == {}


def _kv_line(t: float, n: int, mib: float) -> LogEvent:
    fields = {"successful_transfers": float(n), "avg_xfer_time_ms": 2.0, "avg_mib_per_transfer": mib}
    return LogEvent(L.VLLM_KV_TRANSFER_METRICS, t, fields, "decode")


def test_log_bytes_per_second_divides_by_the_time_its_lines_cover() -> None:
    # steady 1 transfer/s of 0.5 MiB, logged every 10 s: the true rate is 0.5 MiB/s
    events = [_kv_line(1000.0 + 10.0 * k, 10, 0.5) for k in range(6)]
    mib = 1 << 20
    # W = 20, a multiple of P: lines 1030 and 1040 cover (1020, 1040], 20 s either way
    (fig,) = figures_from_logs(events[:5], 1045.0, 20.0, None)
    assert fig.bytes_per_second == pytest.approx(0.5 * mib)
    # W = 15: lines 1020 and 1030 in (1017, 1032] still cover 20 s; 10 MiB / 15 s overstated by a third
    (fig,) = figures_from_logs(events[:4], 1032.0, 15.0, None)
    assert fig.bytes_per_second == pytest.approx(0.5 * mib)


def test_log_quiet_periods_count_as_covered() -> None:
    # transfers stop after the line at 1020; vLLM logs nothing for empty periods
    events = [_kv_line(1000.0 + 10.0 * k, 10, 1.0) for k in range(3)]
    (fig,) = figures_from_logs(events, 1035.0, 20.0, None)
    # (1015, 1035] holds only the line at 1020: it covers (1010, 1020]; (1020, 1030] passed quiet
    assert fig.bytes_per_second == pytest.approx(10 * (1 << 20) / 20.0)
    # a missing line before the window's first one: a line before the window vouches for the gap
    events = [_kv_line(t, 10, 1.0) for t in (1000.0, 1010.0, 1030.0)]
    (fig,) = figures_from_logs(events, 1035.0, 20.0, None)
    # (1015, 1035]: the line at 1030 covers (1020, 1030]; (1015, 1020] is known empty -> 15 s
    assert fig.bytes_per_second == pytest.approx(10 * (1 << 20) / 15.0)


def test_log_rate_with_a_single_line_falls_back_to_the_window() -> None:
    (fig,) = figures_from_logs([_kv_line(1000.0, 4, 1.0)], 1005.0, 20.0, None)
    assert fig.bytes_per_second == pytest.approx(4 * (1 << 20) / 20.0)


def _decode_snapshot(t: float, transfers: int, bytes_each: float) -> EngineSnapshot:
    """A decode scrape; vLLM creates the NIXL histograms at the first transfer, so none before."""
    labels = make_labels({"model_name": "tiny", "engine": "0"})
    hists = {}
    if transfers:
        n, total = float(transfers), transfers * bytes_each
        hists[(c.NIXL_BYTES, labels)] = Histogram(c.NIXL_BYTES, labels, ((1e6, n), (math.inf, n)), total, n)
        hists[(c.NIXL_XFER_SECONDS, labels)] = Histogram(
            c.NIXL_XFER_SECONDS, labels, ((0.005, n), (math.inf, n)), 0.001 * n, n
        )
    return EngineSnapshot("vllm", t, {(c.REQUESTS_RUNNING, labels): 0.0}, hists)


def test_vllm_bytes_per_second_covers_the_time_before_the_histogram_existed() -> None:
    # scraped every second for 20 s; the first transfer at 14.5 s, then one a second (1 MB each)
    window = TargetWindow(horizon_seconds=20.0)
    for t in range(21):
        window.add(_decode_snapshot(1000.0 + t, max(0, t - 14), 1e6))
    (fig,) = figures_from_vllm(window)
    # the series spans 15..20 (5 s) and grew by 5 transfers: 5 MB over the 20 s the target was
    # watched, not over the 5 s the series existed (which said 1 MB/s)
    assert fig.bytes_per_second == pytest.approx(5e6 / 20.0)
