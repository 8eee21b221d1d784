"""Queueing formulas (Erlang C, Gamma quantiles, Little, Kingman) and the observation of a window."""

from __future__ import annotations

import heapq
import math
import random
import tarfile
from pathlib import Path

import pytest
from phaselens.analyzers import queueing as qm
from phaselens.analyzers.queue_intelligence import QueueIntelligence
from phaselens.analyzers.window import TargetWindow
from phaselens.model import EngineSnapshot, Histogram, Target, make_labels
from phaselens.parsers.engines import canonical as cn
from phaselens.parsers.engines import to_snapshot
from phaselens.parsers.exposition import parse_exposition
from phaselens.settings import Settings

GROUP = ("m", "0")
LBL = make_labels({"model_name": "m", "engine": "0"})
BOUNDS = (0.1, 0.5, 1.0, 2.0, 5.0, math.inf)


def snap(
    t: float,
    waiting: float,
    running: float,
    finished: float,
    ttft_counts: list[float] | None = None,
    service: list[float] | None = None,
    service_sum: float = 0.0,
) -> EngineSnapshot:
    hists = {}
    if ttft_counts is not None:
        hists[(cn.TTFT_SECONDS, LBL)] = Histogram(
            cn.TTFT_SECONDS, LBL, tuple(zip(BOUNDS, ttft_counts, strict=True)), None, ttft_counts[-1]
        )
    if service is not None:
        hists[(cn.INFERENCE_TIME_SECONDS, LBL)] = Histogram(
            cn.INFERENCE_TIME_SECONDS, LBL, tuple(zip(BOUNDS, service, strict=True)), service_sum, service[-1]
        )
    return EngineSnapshot(
        "vllm",
        t,
        {(cn.REQUESTS_WAITING, LBL): waiting, (cn.REQUESTS_RUNNING, LBL): running, (cn.REQUEST_SUCCESS, LBL): finished},
        hists,
    )


def test_erlang_c_matches_closed_forms() -> None:
    # M/M/1: probability of waiting equals rho.
    assert qm.erlang_c_probability(1, 0.7) == pytest.approx(0.7)
    # c = 2, a = 1: B = 0.2, C = 0.2 / (1 - 0.5 * 0.8) = 1/3.
    assert qm.erlang_c_probability(2, 1.0) == pytest.approx(1 / 3)
    assert qm.erlang_c_probability(4, 5.0) == 1.0  # overloaded: everyone waits


@pytest.mark.parametrize("shape", [1.0, 3.0, 12.0])
@pytest.mark.parametrize("q", [0.1, 0.5, 0.9])
def test_gamma_quantile_inverts_erlang_cdf(shape: float, q: float) -> None:
    x = qm.gamma_quantile(q, shape, 2.0) / 2.0
    k = int(shape)
    erlang_cdf = 1 - sum(math.exp(-x) * x**i / math.factorial(i) for i in range(k))
    assert erlang_cdf == pytest.approx(q, abs=1e-6)


def test_gamma_quantile_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        qm.gamma_quantile(1.0, 2.0, 1.0)
    with pytest.raises(ValueError):
        qm.gamma_quantile(0.5, 0.0, 1.0)


def _mmc_waits(lam: float, mu: float, c: int, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    free_at = [0.0] * c
    heapq.heapify(free_at)
    t = 0.0
    waits = []
    for _ in range(n):
        t += rng.expovariate(lam)
        earliest = heapq.heappop(free_at)
        start = max(t, earliest)
        waits.append(start - t)
        heapq.heappush(free_at, start + rng.expovariate(mu))
    return waits[n // 10 :]


def _steady_obs(lam: float, mean_service: float) -> qm.QueueObservation:
    return qm.QueueObservation(
        time=0.0,
        seconds=30.0,
        waiting=0.0,
        running=0.0,
        kv_usage=None,
        arrival_rate=lam,
        admission_rate=lam,
        completion_rate=lam,
        mean_service_seconds=mean_service,
        service_scv=1.0,
        arrival_scv=1.0,
        saturated_concurrency=None,
        kv_bound_concurrency=None,
        first_tokens=0.0,
        ttft_p50_seconds=None,
        ttft_p90_seconds=None,
        mean_queue_wait_seconds=None,
    )


def test_erlang_c_wait_and_interval_agree_with_simulated_mmc() -> None:
    lam, mu, c = 2.8, 1.0, 4
    waits = _mmc_waits(lam, mu, c, 100000, seed=7)
    pred = qm.erlang_c_wait(_steady_obs(lam, 1 / mu), float(c))
    assert pred is not None
    assert sum(waits) / len(waits) == pytest.approx(pred.point, rel=0.1)
    # P(W = 0) = 1 - C > 10 % here, so the 10 % quantile is 0 and the upper bound is the 90 % quantile.
    assert pred.lower == 0.0
    assert sum(w <= pred.upper for w in waits) / len(waits) == pytest.approx(0.90, abs=0.02)
    assert sum(w == 0.0 for w in waits) / len(waits) == pytest.approx(
        1 - qm.erlang_c_probability(c, lam / mu), abs=0.02
    )


def test_kingman_equals_erlang_for_exponential_and_grows_with_variability() -> None:
    obs = _steady_obs(0.8, 1.0)
    erlang = qm.erlang_c_wait(obs, 1.0)
    kingman = qm.kingman_wait(obs, 1.0)
    assert erlang is not None and kingman is not None
    assert kingman.point == pytest.approx(erlang.point)
    assert erlang.point == pytest.approx(0.8 / (1 - 0.8))  # M/M/1: rho / (mu - lambda)
    bursty = qm.kingman_wait(_replace_scv(obs, 4.0), 1.0)
    assert bursty is not None and bursty.point == pytest.approx(erlang.point * 2.5)


def _replace_scv(obs: qm.QueueObservation, scv: float) -> qm.QueueObservation:
    from dataclasses import replace

    return replace(obs, service_scv=scv)


def test_little_wait_from_observed_queue() -> None:
    from dataclasses import replace

    obs = replace(_steady_obs(5.0, 1.0), waiting=10.0, admission_rate=5.0)
    pred = qm.little_wait(obs)
    assert pred is not None
    assert pred.point == pytest.approx(2.0)
    assert pred.lower < pred.point < pred.upper
    empty = qm.little_wait(replace(obs, waiting=0.0))
    assert empty == qm.WaitPrediction("little", 0.0, 0.0, 0.0)


def test_transient_wait_when_queue_present() -> None:
    from dataclasses import replace

    obs = replace(_steady_obs(10.0, 2.0), waiting=7.0, running=4.0)
    pred = qm.erlang_c_wait(obs, 4.0)
    assert pred is not None
    assert pred.point == pytest.approx((7 + 1) * 2.0 / 4.0)  # L_q + 1 releases at c / E[S]


def test_observe_counts_arrivals_by_conservation() -> None:
    w = TargetWindow(60.0)
    # every second: 3 finish, population grows by 1 -> 4 arrivals per second
    for i in range(6):
        w.add(
            snap(
                float(i),
                waiting=float(i),
                running=4.0,
                finished=3.0 * i,
                ttft_counts=[3.0 * i] * 6,
                service=[0, 0, 3.0 * i, 3.0 * i, 3.0 * i, 3.0 * i],
                service_sum=0.75 * 3 * i,
            )
        )
    obs = qm.observe(w, GROUP)
    assert obs is not None
    assert obs.arrival_rate == pytest.approx(4.0)
    assert obs.completion_rate == pytest.approx(3.0)
    assert obs.mean_service_seconds == pytest.approx(0.75)
    assert obs.saturated_concurrency == pytest.approx(4.0)
    assert qm.utilization(obs, 4.0) == pytest.approx(4.0 * 0.75 / 4.0)


def test_no_signals_without_data() -> None:
    qi = QueueIntelligence()
    empty = TargetWindow(30.0)
    signals, recs = qi.tick({"t": (Target("t", "aggregated", "x"), empty)}, 0.0, Settings())
    assert signals == [] and recs == []


def _replay(tar: Path, tmp: Path) -> list[tuple[float, list, list]]:
    with tarfile.open(tar) as archive:
        archive.extractall(tmp, filter="data")
    qi = QueueIntelligence()
    w = TargetWindow(30.0)
    target = Target("agg", "aggregated", "x")
    out = []
    for f in sorted((tmp / "rec").glob("*.prom")):
        data = f.read_bytes()
        ts = float(data.split(b"\n", 1)[0].split()[2])
        w.add(to_snapshot(parse_exposition(data), ts))
        signals, recs = qi.tick({"agg": (target, w)}, ts, Settings())
        out.append((ts, signals, recs))
    return out


def test_real_capture_utilization_and_knee_warning(tmp_path: Path, fixtures_dir: Path) -> None:
    ticks = _replay(fixtures_dir / "vllm-0.32.0-cpu-aggregated" / "scrapes.tar.gz", tmp_path)
    rho = {}
    for i, (_, signals, _) in enumerate(ticks):
        for s in signals:
            assert math.isfinite(s.value)
            if s.name == "phaselens_utilization_ratio" and dict(s.labels)["target"] == "agg":
                rho[i] = s.value
    # steady phase (scrapes ~10-28) is far below the knee; the 40-client burst (~50-72) is past it
    assert max(v for i, v in rho.items() if 10 <= i <= 28) < 0.5
    assert min(v for i, v in rho.items() if 55 <= i <= 72) > 0.8
    knee_ticks = [i for i, (_, _, recs) in enumerate(ticks) if any(r.code == "UTILIZATION_PAST_KNEE" for r in recs)]
    assert knee_ticks and min(knee_ticks) >= 45
    waits = [
        s.value
        for _, signals, _ in ticks[60:72]
        for s in signals
        if s.name == "phaselens_predicted_queue_wait_seconds" and dict(s.labels)["bound"] == "point"
    ]
    assert waits and max(waits) > 0.3
