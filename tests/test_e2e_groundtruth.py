"""Unit tests of the end-to-end harness's ground-truth arithmetic (e2e/groundtruth.py).

The live run itself is `make e2e`; these only pin down the client-side numbers it is judged by.
"""

from __future__ import annotations

import json
import math

import groundtruth as gt
import pytest


def req(i: int, start: float, end: float, ttft: float | None, tpot: float | None, ok: bool = True) -> object:
    return gt.Request(f"r{i}", "p", start, end, ttft, tpot, 10, ok)


def test_parse_exposition_reads_time_labels_and_values() -> None:
    text = (
        "# scrape_time 1700000000.250\n"
        "# HELP x y\n"
        'vllm:num_requests_waiting{engine="0",model_name="tiny"} 3.0\n'
        'phaselens_ttft_seconds{percentile="50",target="a"} 0.042\n'
        "phaselens_tick_duration_seconds 1e-3\n"
    )
    s = gt.parse_exposition(text)
    assert s.t == 1700000000.25
    assert s.value("vllm:num_requests_waiting") == 3.0
    assert s.value("phaselens_ttft_seconds", percentile="50") == 0.042
    assert s.value("phaselens_ttft_seconds", percentile="90") is None
    assert s.value("phaselens_tick_duration_seconds") == 0.001


def test_parse_exposition_rejects_garbage_and_missing_time() -> None:
    with pytest.raises(ValueError, match="scrape_time"):
        gt.parse_exposition("x 1\n")
    with pytest.raises(ValueError, match="line 2"):
        gt.parse_exposition("# scrape_time 1\nnot a sample line at all {\n")


def test_good_request_needs_both_slos_and_success() -> None:
    assert gt.is_good(req(1, 0, 1, 0.2, 0.04), 0.25, 0.05)
    assert not gt.is_good(req(1, 0, 1, 0.3, 0.04), 0.25, 0.05)
    assert not gt.is_good(req(1, 0, 1, 0.2, 0.06), 0.25, 0.05)
    assert not gt.is_good(req(1, 0, 1, 0.2, 0.04, ok=False), 0.25, 0.05)
    assert gt.is_good(req(1, 0, 1, 0.2, None), 0.25, 0.05)  # one output token: no TPOT
    assert gt.is_good(req(1, 0, 1, 0.27, 0.04), 0.25, 0.05, slack=0.03)


def test_client_goodput_counts_requests_ending_in_window() -> None:
    # 10 good requests ending at 1..10 s, 5 bad ones ending at 1.5..5.5 s
    rs = [req(i, 0, float(i), 0.1, 0.01) for i in range(1, 11)]
    rs += [req(100 + i, 0, i + 0.5, 1.0, 0.01) for i in range(1, 6)]
    g = gt.client_goodput(rs, end=10.0, window=5.0, interval=1.0, slo_ttft=0.25, slo_itl=0.05, classify_slack=0.0)
    assert g.point == pytest.approx(5 / 5.0)  # ends at 6,7,8,9,10
    assert g.requests == 6  # five good ones plus the bad one ending at 5.5
    # the window end may be up to 1 s earlier and its span W - interval to W, counted and divided
    # over the same span: (5.23, 9.9] holds 4 good ones in 4.67 s (the least rate), (5.67, 10] 5
    # in 4.33 s (the most); a span of W - interval counting W's requests (5 / 4) would overstate
    assert g.low == pytest.approx(4 / (4 + 2 / 3))
    assert g.high == pytest.approx(5 / (4 + 1 / 3))
    assert g.low <= g.point <= g.high


def test_client_goodput_slack_only_widens_upwards() -> None:
    rs = [req(i, 0, float(i), 0.26, 0.01) for i in range(1, 11)]  # just over a 0.25 s SLO
    strict = gt.client_goodput(rs, 10.0, 5.0, 1.0, 0.25, 0.05, classify_slack=0.0)
    loose = gt.client_goodput(rs, 10.0, 5.0, 1.0, 0.25, 0.05, classify_slack=0.03)
    assert strict.point == 0.0 and strict.high == 0.0
    assert loose.low == 0.0 and loose.high > 0.0


def test_client_goodput_rejects_window_not_longer_than_interval() -> None:
    with pytest.raises(ValueError):
        gt.client_goodput([], 10.0, 1.0, 1.0, 0.25, 0.05, 0.0)


def test_empirical_quantile_matches_numpy() -> None:
    np = pytest.importorskip("numpy")
    xs = [0.3, 0.01, 0.2, 5.0, 0.07, 0.07, 1.5]
    for q in (0.0, 0.1, 0.5, 0.9, 0.99, 1.0):
        assert gt.empirical_quantile(xs, q) == pytest.approx(float(np.quantile(xs, q)))
    with pytest.raises(ValueError):
        gt.empirical_quantile([], 0.5)
    with pytest.raises(ValueError):
        gt.empirical_quantile(xs, 1.5)


def test_bucket_and_same_bucket() -> None:
    bounds = [0.01, 0.02, 0.04, 0.1, 0.25]
    assert gt.bucket_of(0.03, bounds) == (0.02, 0.04)
    assert gt.bucket_of(0.02, bounds) == (0.01, 0.02)  # upper edge is inclusive (le)
    assert gt.bucket_of(3.0, bounds) == (0.25, math.inf)
    assert gt.same_bucket(0.03, 0.04, bounds)
    assert not gt.same_bucket(0.03, 0.05, bounds)
    assert gt.same_bucket(0.03, 0.041, bounds, slack=0.002)


def test_parse_ground_truth_pairs_phases_and_reads_requests() -> None:
    lines = [
        json.dumps({"kind": "phase_start", "phase": "steady", "t": 10.0}),
        json.dumps({"kind": "request", "id": "r1", "phase": "steady", "start": 10.1, "end": 11.0,
                    "ttft": 0.05, "tpot": 0.01, "output_tokens": 20, "outcome": "ok"}),
        json.dumps({"kind": "request", "id": "r2", "phase": "steady", "start": 10.2, "end": 10.3,
                    "ttft": None, "tpot": None, "output_tokens": 0, "outcome": "error: HTTP 500"}),
        json.dumps({"kind": "phase_end", "phase": "steady", "t": 20.0}),
        "",
    ]  # fmt: skip
    rs, phases = gt.parse_ground_truth(lines)
    assert [p.name for p in phases] == ["steady"] and phases[0].start == 10.0 and phases[0].end == 20.0
    assert [r.ok for r in rs] == [True, False]
    assert rs[0].first_token_at == pytest.approx(10.15)
    with pytest.raises(ValueError, match="line 1"):
        gt.parse_ground_truth(["{not json"])
