"""State file: atomic JSON, corrupt file -> warning and fresh state, QueueIntelligence survives a restart."""

from __future__ import annotations

import logging
import math
import tarfile
from pathlib import Path

import pytest
from phaselens.analyzers.queue_intelligence import QueueIntelligence
from phaselens.analyzers.window import TargetWindow
from phaselens.model import Target
from phaselens.parsers.engines import to_snapshot
from phaselens.parsers.exposition import parse_exposition
from phaselens.settings import Settings
from phaselens.state import StateFile


def test_round_trip_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "sub" / "state.json")
    assert state.load() == {}
    state.save({"a": [1, 2.5], "b": {"c": None}})
    state.save({"a": [3]})
    assert state.load() == {"a": [3]}
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["state.json"]


def test_non_finite_numbers_become_null(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "s.json")
    state.save({"x": math.nan, "y": [math.inf, 1.0]})
    assert state.load() == {"x": None, "y": [None, 1.0]}


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe garbage"])
def test_corrupt_file_warns_and_starts_fresh(tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        assert StateFile(path).load() == {}
    assert any("state_corrupt" in r.getMessage() or getattr(r, "event", "") == "state_corrupt" for r in caplog.records)
    assert (tmp_path / "state.json.corrupt").read_bytes() == content
    StateFile(path).save({"ok": 1})
    assert StateFile(path).load() == {"ok": 1}


def test_queue_intelligence_survives_restart(tmp_path: Path, fixtures_dir: Path) -> None:
    with tarfile.open(fixtures_dir / "vllm-0.32.0-cpu-aggregated" / "scrapes.tar.gz") as archive:
        archive.extractall(tmp_path, filter="data")
    files = sorted((tmp_path / "rec").glob("*.prom"))
    target = Target("agg", "aggregated", "x")
    qi = QueueIntelligence()
    w = TargetWindow(30.0)
    for f in files[:70]:
        data = f.read_bytes()
        ts = float(data.split(b"\n", 1)[0].split()[2])
        w.add(to_snapshot(parse_exposition(data), ts))
        qi.tick({"agg": (target, w)}, ts, Settings())
    store = StateFile(tmp_path / "qi.json")
    store.save(qi.to_state())
    restored = QueueIntelligence.from_state(store.load())
    assert restored.to_state()["targets"]["agg"]["predictor"] == qi.to_state()["targets"]["agg"]["predictor"]
    assert restored.calibration("agg") == qi.calibration("agg")
    # the next tick on both gives (nearly) the same published probability: only the few seconds of
    # still-unlabelled predictions are not persisted, so the original trains on them once more
    data = files[70].read_bytes()
    ts = float(data.split(b"\n", 1)[0].split()[2])
    w.add(to_snapshot(parse_exposition(data), ts))
    a, _ = qi.tick({"agg": (target, w)}, ts, Settings())
    b, _ = restored.tick({"agg": (target, w)}, ts, Settings())
    pa = [s.value for s in a if s.name == "phaselens_slo_breach_probability"]
    pb = [s.value for s in b if s.name == "phaselens_slo_breach_probability"]
    assert pa and pb and pa[0] == pytest.approx(pb[0], abs=0.01)


@pytest.mark.parametrize(
    "garbage",
    [
        None,
        [],
        {"version": 99},
        {"version": 1, "targets": {"x": "y"}},
        {"version": 1, "targets": {"x": {"predictor": 5, "groups": {"g": 1}}}},
    ],
)
def test_from_state_never_raises(garbage: object) -> None:
    qi = QueueIntelligence.from_state(garbage)  # type: ignore[arg-type]
    assert isinstance(qi.to_state(), dict)
