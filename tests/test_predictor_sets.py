"""The breach-prediction protocol's real-vLLM sets (issue 15): the blind set's manifest, the recorder's
--manifest / --out, and how benchmarks/bench_predictors.py finds a set's recordings (`--set=`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_predictors as bench  # noqa: E402
import record_vllm_protocol as recorder  # noqa: E402

FIRST = ROOT / "benchmarks" / "predictor_runs_vllm.json"
BLIND = ROOT / "benchmarks" / "predictor_runs_vllm_b.json"


def _runs(path: Path) -> list[dict[str, object]]:
    return list(json.loads(path.read_text())["runs"])


def test_the_blind_set_repeats_the_first_sets_shapes_with_fresh_seeds() -> None:
    first, blind = _runs(FIRST), _runs(BLIND)
    assert len(blind) == len(first) == 6
    for a, b in zip(first, blind, strict=True):
        assert (a["args"], a["phases"]) == (b["args"], b["phases"])  # same engine flags and load
        assert str(a["name"])[1:] == str(b["name"])[1:]  # v01-ramp -> b01-ramp
    assert [r["seed"] for r in blind] == list(range(501, 507))
    dynamo = {r["seed"] for r in _runs(ROOT / "benchmarks" / "predictor_runs.json")}
    used = {r["seed"] for r in first} | dynamo
    assert not used & {r["seed"] for r in blind}


def test_recorder_writes_each_run_into_the_folder_asked_for(tmp_path: Path) -> None:
    run = _runs(BLIND)[2]
    argv = recorder.command(run, 19000, tmp_path)
    assert argv[argv.index("--out") + 1] == str(tmp_path / "b03-seatcap")
    assert argv[argv.index("--seed") + 1] == "503"
    assert argv[argv.index("--port-offset") + 1] == "19000"
    assert argv[argv.index("--max-num-seqs") + 1] == "2"
    assert argv[argv.index("--phases") + 1 :] == run["phases"]


def test_recorder_skips_a_run_that_holds_ground_truth_already(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No engine is started for a recorded run: only the manifest and --out decide which runs those are."""
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"runs": [{"name": "x01", "seed": 1, "args": [], "phases": ["idle:1:0:0-0:0-0"]}]}))
    (tmp_path / "out" / "x01").mkdir(parents=True)
    (tmp_path / "out" / "x01" / "ground_truth.jsonl").write_text("")
    assert recorder.main(["--manifest", str(manifest), "--out", str(tmp_path / "out")]) == 0
    assert "x01: recorded already" in capsys.readouterr().out


def test_bench_finds_a_vllm_sets_finished_runs_in_manifest_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = tmp_path / "m.json"
    names = ["r02", "r01", "r03", "r04"]
    manifest.write_text(json.dumps({"runs": [{"name": n} for n in names]}))
    folder = tmp_path / "out"
    for name, ok in (("r01", True), ("r02", True), ("r03", False)):  # r03's engine failed, r04 never ran
        (folder / name).mkdir(parents=True)
        (folder / name / "ground_truth.jsonl").write_text("")
        (folder / name / "meta.json").write_text(json.dumps({"ok": ok}))
    monkeypatch.setitem(bench.VLLM_SETS, "vllm-blind", (manifest, folder))
    assert bench.discover_runs("vllm-blind") == [folder / "r02", folder / "r01"]


def test_bench_refuses_an_unknown_set(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--set=vllm-blindd"]) == 2
    out = capsys.readouterr().out
    assert "unknown set 'vllm-blindd'" in out and "vllm-blind" in out


def test_bench_ticks_needs_one_recorded_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--ticks", str(tmp_path / "missing")]) == 2
    assert bench.main(["--ticks"]) == 2
    assert "--ticks needs one run folder" in capsys.readouterr().out


def test_bench_ticks_on_a_real_recording(
    tmp_path: Path, fixtures_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real Dynamo 1.6.1 scrapes (the fixture's frontend and worker); the client side is written here
    (the fixture keeps no ground truth): one request 0.1 s after every fifth scrape, each fourth of
    them failed. Every request is scored once, on the tick before it, and the failed ones are breaches."""
    import tarfile

    with tarfile.open(fixtures_dir / "dynamo-1.6.1-mocker-frontend" / "run.tar.gz") as archive:
        archive.extractall(tmp_path, filter="data")
    times = sorted(t for t, _ in bench.read_scrapes(tmp_path / "scrapes" / "aggregated"))
    requests = [
        {"kind": "request", "phase": "x", "start": t + 0.1, "ttft": 0.1, "outcome": "error" if i % 4 == 3 else "ok"}
        for i, t in enumerate(times[5::5])
    ]
    (tmp_path / "ground_truth.jsonl").write_text("".join(json.dumps(r) + "\n" for r in requests))
    assert bench.main(["--ticks", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    summary = out[out.index(next(line for line in out if line.startswith("stratum"))) + 1 :]
    scored = sum(float(line.split()[1]) for line in summary)
    assert scored == len(requests)
    per_tick = [line.split() for line in out[1 : out.index("")]]
    assert len(per_tick) >= len(times) - 1  # one line per replayed tick
    breaches = [float(row[8]) for row in per_tick if row[7] != "0"]
    assert sum(breaches) == sum(r["outcome"] != "ok" for r in requests)


QUARTER = ROOT / "benchmarks" / "predictor_runs_vllm_q.json"


def test_the_quarter_second_set_repeats_the_shapes_with_fresh_seeds_at_its_interval(tmp_path: Path) -> None:
    first, quarter = _runs(FIRST), _runs(QUARTER)
    for a, q in zip(first, quarter, strict=True):
        assert (a["args"], a["phases"]) == (q["args"], q["phases"])
    seeds = {int(str(r["seed"])) for r in quarter}
    assert seeds == set(range(601, 607))
    assert not seeds & {int(str(r["seed"])) for r in _runs(FIRST) + _runs(BLIND)}
    interval = float(json.loads(QUARTER.read_text())["interval_s"])
    argv = recorder.command(quarter[0], 19000, tmp_path, interval)
    assert argv[argv.index("--interval") + 1] == "0.25"
    assert recorder.command(quarter[0], 19000, tmp_path)[argv.index("--interval") + 1] == "1.0"  # the default
    assert bench.VLLM_SETS["vllm-quarter"][0] == QUARTER
