"""phaselens_decode_saturation_ratio: max(KV utilization, running / batch cap), on real captures.

The captures are tests/fixtures/dynamo-1.6.1-mocker-diagnosis (real Dynamo 1.6.1 frontend +
mocker, see its README): `seat` ran with --max-num-seqs 4 and a KV pool far larger than 4
sequences need (the batch cap binds, KV stays near 0), `kv` with --max-num-seqs 64 and a KV
pool too small for its load (KV binds).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from phaselens.analyzers.saturation import combine
from phaselens.diagnosis_eval import run
from phaselens.model import TickResult
from phaselens.settings import Settings

LABELLED = Path(__file__).parent / "fixtures" / "dynamo-1.6.1-mocker-diagnosis"


def _series(ticks: list[TickResult], name: str) -> list[tuple[float, float, str]]:
    """(time, value, basis) of one signal of the worker target, per tick that has it."""
    out = []
    for tick in ticks:
        for s in tick.signals:
            labels = dict(s.labels)
            if s.name == name and labels.get("role") == "aggregated":
                out.append((tick.time, s.value, labels.get("basis", "")))
    return out


def _by_time(ticks: list[TickResult]) -> list[tuple[float, float, str]]:
    """(KV utilization, saturation, basis) at the ticks that have both."""
    kv = {t: v for t, v, _ in _series(ticks, "phaselens_decode_kv_utilization_ratio")}
    return [(kv[t], v, b) for t, v, b in _series(ticks, "phaselens_decode_saturation_ratio") if t in kv]


def test_seat_bound_worker_reads_full_while_kv_reads_almost_empty() -> None:
    rows = _by_time(run([str(LABELLED / "seat.tar.gz")]))
    seats = [(kv, sat) for kv, sat, basis in rows if basis == "seats"]
    # The worker exports no max_num_seqs: the cap is the running count's plateau under a queue.
    assert len(seats) >= 40
    assert max(kv for kv, _ in seats) < 0.05
    assert sum(1 for _, sat in seats if sat == 1.0) / len(seats) >= 0.8


def test_declared_cap_sees_the_seats_before_a_plateau_forms() -> None:
    inferred = _series(run([str(LABELLED / "seat.tar.gz")]), "phaselens_decode_saturation_ratio")
    declared = _series(run([str(LABELLED / "seat.tar.gz")], Settings(max_num_seqs=4)),
                       "phaselens_decode_saturation_ratio")
    first_inferred = min(t for t, _, b in inferred if b == "seats")
    first_declared = min(t for t, _, b in declared if b == "seats")
    assert first_declared < first_inferred
    # running / 4: only quarters
    assert {round(v * 4, 6) % 1 for _, v, b in declared if b == "seats"} == {0.0}


@pytest.mark.parametrize("name", ["seat", "kv", "light", "prefill"])
def test_never_below_the_kv_utilization_and_equal_to_it_on_the_kv_basis(name: str) -> None:
    rows = _by_time(run([str(LABELLED / f"{name}.tar.gz")]))
    assert rows
    for kv, sat, basis in rows:
        assert 0.0 <= sat <= 1.0
        assert sat >= kv
        if basis == "kv":
            assert sat == kv


def test_kv_bound_worker_stays_on_the_kv_basis_when_full() -> None:
    # max_num_seqs 64 is declared; the KV pool fills long before 64 sequences run.
    rows = _by_time(run([str(LABELLED / "kv.tar.gz")], Settings(max_num_seqs=64)))
    full = [(kv, basis) for kv, _, basis in rows if kv >= 0.9]
    assert full
    assert {basis for _, basis in full} == {"kv"}


def test_combine_terms() -> None:
    assert combine(None, None, None) is None
    kv_only = combine(0.4, 3, None)
    assert kv_only is not None and (kv_only.value, kv_only.basis, kv_only.seats_ratio) == (0.4, "kv", None)
    seats = combine(0.5, 16, 16, "declared")
    assert seats is not None and (seats.value, seats.basis, seats.cap_source) == (1.0, "seats", "declared")
    tie = combine(0.5, 8, 16)
    assert tie is not None and tie.basis == "kv"
    no_kv = combine(None, 4, 16)
    assert no_kv is not None and (no_kv.value, no_kv.basis) == (0.25, "seats")
    over = combine(0.1, 20, 16)  # a cap lower than the running count (a stale plateau) reads full, not > 1
    assert over is not None and over.value == 1.0


def test_max_num_seqs_is_a_setting_and_must_be_positive() -> None:
    from phaselens.config import load_settings
    from phaselens.settings import ConfigError

    assert Settings().max_num_seqs is None
    assert load_settings({"max_num_seqs": "16"}).max_num_seqs == 16
    assert load_settings({}, {"PHASELENS_MAX_NUM_SEQS": "8"}).max_num_seqs == 8
    with pytest.raises(ConfigError, match="max-num-seqs"):
        load_settings({"max_num_seqs": "0"})
