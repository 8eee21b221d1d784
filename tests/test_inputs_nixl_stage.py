"""The NIXL/log side inputs wired into the pipeline: replay releases log lines by their time and
leaves untimed ring events out; live, the stage consumes the ring and exports every source."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

from phaselens.analyzers.window import TargetWindow
from phaselens.cli import main as cli_main
from phaselens.inputs import NixlStage
from phaselens.model import Target, label_value
from phaselens.parsers.engines import to_snapshot
from phaselens.parsers.exposition import parse_exposition
from phaselens.settings import Settings

PD = "vllm-0.32.0-cpu-pd-1p1d"
DECODE_AGENT = "decode-agent-2e6ededa-289e-4bc1-aea5-146d0f4d9d3d"


def _replay(args: list[str], capsys) -> list[dict]:  # type: ignore[no-untyped-def]
    assert cli_main(["replay", *args, "--jsonl"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def _by_source(tick: dict, name: str) -> dict[str, float]:
    return {s["labels"]["source"]: s["value"] for s in tick["signals"] if s["name"] == name}


def test_replay_with_logs_and_rings_exports_metrics_and_log_sources_that_agree(
    pd_dir: Path, fixtures_dir: Path, capsys  # type: ignore[no-untyped-def]
) -> None:
    ticks = _replay(
        [
            f"prefill={pd_dir / 'prefill'}",
            f"decode={pd_dir / 'decode'}",
            "--nixl-telemetry-dir",
            str(fixtures_dir / PD / "nixl-telemetry"),
            "--log-file",
            f"decode={fixtures_dir / PD / 'decode.log.gz'}",
        ],
        capsys,
    )
    assert len(ticks) == 269
    both = [
        t for t in ticks
        if {"vllm_metrics", "log"} <= set(_by_source(t, "phaselens_nixl_transfer_bytes_per_second"))
    ]
    assert len(both) > 150
    ratios = sorted(
        rates["log"] / rates["vllm_metrics"]
        for rates in (_by_source(t, "phaselens_nixl_transfer_bytes_per_second") for t in both)
        if rates["vllm_metrics"] > 20_000
    )
    # Same transfers, different edges: the log line reports every ~10 s (so it trails the metrics
    # at the start of a burst), the metrics every scrape. Typically they agree.
    assert 0.9 <= ratios[len(ratios) // 2] <= 1.1, ratios
    share = [
        _by_source(t, "phaselens_nixl_ttft_share_ratio") for t in both
    ]
    assert all(0.0 <= v <= 1.0 for d in share for v in d.values())
    # The rings are format v4 (no timestamps): they cannot be placed on the replay clock.
    assert not any("telemetry_ring" in _by_source(t, "phaselens_nixl_transfer_bytes_per_second") for t in ticks)
    # Every NIXL series is attributed to the decode side.
    roles = {s["labels"]["role"] for t in ticks for s in t["signals"] if s["name"].startswith("phaselens_nixl_")}
    assert roles == {"decode"}


def _decode_window(pd_dir: Path, last: int) -> TargetWindow:
    window = TargetWindow(30.0)
    for path in sorted((pd_dir / "decode").glob("*.prom"))[last - 30 : last]:
        data = path.read_bytes()
        when = float(data.split(b"\n", 1)[0].split()[-1])
        window.add(to_snapshot(parse_exposition(data), when))
    return window


def _ring_rate(signals: list) -> float | None:  # type: ignore[type-arg]
    return next(
        (
            s.value
            for s in signals
            if s.name == "phaselens_nixl_transfer_bytes_per_second"
            and label_value(s.labels, "source") == "telemetry_ring"
        ),
        None,
    )


def _copied_ring(fixtures_dir: Path, tmp_path: Path) -> tuple[Path, Path, int, int]:
    """A writable copy of the real decode ring: (folder, file, write_pos, read_pos)."""
    ring_dir = tmp_path / "nixl"
    ring_dir.mkdir()
    ring = ring_dir / DECODE_AGENT
    shutil.copy(fixtures_dir / PD / "nixl-telemetry" / DECODE_AGENT, ring)
    ring.chmod(0o644)
    write_pos, read_pos = struct.unpack_from("<QQ", ring.read_bytes(), 0)
    assert read_pos != write_pos  # NIXL left unread events
    return ring_dir, ring, write_pos, read_pos


def test_live_stage_consumes_the_ring_and_exports_ring_and_metric_sources(
    pd_dir: Path, fixtures_dir: Path, tmp_path: Path
) -> None:
    ring_dir, ring, write_pos, read_pos = _copied_ring(fixtures_dir, tmp_path)
    # The sidecar starts while the producer's write position is still at the reader's: the 110
    # transfers are written after the start (restored below, between the two polls).
    with ring.open("r+b") as f:
        f.write(struct.pack("<Q", read_pos))

    window = _decode_window(pd_dir, 269)
    now = window.latest.time if window.latest else 0.0
    stage = NixlStage(Settings(nixl_telemetry_dir=str(ring_dir)))
    targets = {"decode": (Target("decode", "decode", "x"), window)}
    first, _ = stage(now, targets)
    assert _ring_rate(first) in (None, 0.0)
    with ring.open("r+b") as f:
        f.write(struct.pack("<Q", write_pos))
    signals, _ = stage(now + 1.0, targets)
    stage.close()

    sources = {label_value(s.labels, "source") for s in signals}
    assert {"telemetry_ring", "vllm_metrics"} <= sources
    ring_rate = _ring_rate(signals)
    assert ring_rate is not None
    # All 110 transfers (31,883,264 bytes, checked against the engine in the ring tests) read in this poll.
    assert abs(ring_rate * Settings().window_seconds - 31_883_264) < 1.0
    # Consumer mode: the sidecar advanced read_pos to write_pos as NIXL's own reader does.
    new_write, new_read = struct.unpack_from("<QQ", ring.read_bytes(), 0)
    assert new_read == new_write == write_pos


def test_live_stage_leaves_the_rings_backlog_at_start_out_of_the_window(
    pd_dir: Path, fixtures_dir: Path, tmp_path: Path
) -> None:
    """v2+ ring events have no time: what the ring held before the sidecar started cannot be
    placed in the window, so it is consumed but not counted as if it had just happened."""
    ring_dir, ring, write_pos, _ = _copied_ring(fixtures_dir, tmp_path)

    window = _decode_window(pd_dir, 269)
    now = window.latest.time if window.latest else 0.0
    stage = NixlStage(Settings(nixl_telemetry_dir=str(ring_dir)))
    signals, _ = stage(now, {"decode": (Target("decode", "decode", "x"), window)})
    stage.close()

    assert _ring_rate(signals) in (None, 0.0)
    assert any(label_value(s.labels, "source") == "vllm_metrics" for s in signals)
    new_write, new_read = struct.unpack_from("<QQ", ring.read_bytes(), 0)
    assert new_read == new_write == write_pos  # consumed all the same
