"""NIXL telemetry ring decoding on the real rings (NIXL 1.5.1) and on corrupt inputs."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest
from phaselens.parsers.nixl_ring import (
    RingFormatError,
    decode_ring,
    group_events,
    parse_header,
    read_events,
)
from phaselens.sources.nixl_dir import NixlRing, NixlTelemetryDir
from prometheus_client.parser import text_string_to_metric_families

LOOPBACK = "nixl-1.5.1-cpu-ucx-loopback"
PD_TELEMETRY = Path("vllm-0.32.0-cpu-pd-1p1d") / "nixl-telemetry"
DECODE_AGENT = "decode-agent-2e6ededa-289e-4bc1-aea5-146d0f4d9d3d"
PREFILL_AGENT = "prefill-agent-926208c8-974f-48ce-89aa-da95cc64c17f"


def _final_decode_scrape(pd_dir: Path) -> dict[str, float]:
    """`vllm:nixl_*` _count/_sum values of the last decode scrape, read with prometheus_client."""
    last = sorted((pd_dir / "decode").glob("*.prom"))[-1]
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(last.read_text()):
        for sample in family.samples:
            if sample.name.startswith("vllm:nixl_") and not sample.name.endswith("_bucket"):
                values[sample.name] = sample.value
    return values


def test_decode_ring_matches_final_decode_scrape(fixtures_dir: Path, pd_dir: Path) -> None:
    ring = decode_ring((fixtures_dir / PD_TELEMETRY / DECODE_AGENT).read_bytes())
    columns = ring.grouped.transfers
    scrape = _final_decode_scrape(pd_dir)
    assert ring.header.version == 4
    assert len(ring.events) == 441  # one registration + 4 events for each transfer
    assert len(columns) == 110 == scrape["vllm:nixl_xfer_time_seconds_count"]
    assert columns.xfer_us.sum() / 1e6 == pytest.approx(scrape["vllm:nixl_xfer_time_seconds_sum"], abs=1e-6)
    assert columns.xfer_us.sum() / 1e6 == pytest.approx(17.65, abs=0.01)
    assert columns.post_us.sum() / 1e6 == pytest.approx(scrape["vllm:nixl_post_time_seconds_sum"], abs=1e-6)
    assert int(columns.bytes.sum()) == scrape["vllm:nixl_bytes_transferred_sum"]
    assert bool(columns.is_read.all())  # vLLM's pull mode: the decode agent READs
    assert set(columns.requests.tolist()) == {1}
    assert ring.grouped.memory_registered_bytes == 3 * 1024 * 1024
    assert ring.dropped_events_known == 0 and ring.grouped.incomplete_events == 0


def test_prefill_ring_has_only_the_registration(fixtures_dir: Path) -> None:
    ring = decode_ring((fixtures_dir / PD_TELEMETRY / PREFILL_AGENT).read_bytes())
    assert len(ring.grouped.transfers) == 0
    assert list(ring.event_names()) == ["agent_memory_registered"]


def test_loopback_initiator_has_twenty_one_mib_writes(fixtures_dir: Path) -> None:
    ring = decode_ring((fixtures_dir / LOOPBACK / "initiator.ring").read_bytes())
    transfers = ring.grouped.transfers.to_transfers("initiator", read_time=123.0)
    assert len(transfers) == 20
    assert {t.bytes for t in transfers} == {1 << 20}
    assert {t.direction for t in transfers} == {"write"}
    assert all(t.time == 123.0 for t in transfers)  # v4 has no stamps: the reader's time
    assert all(0 < t.post_seconds < t.xfer_seconds for t in transfers)


def test_capacity64_ring_is_full_and_reports_the_cut_group(fixtures_dir: Path) -> None:
    ring = decode_ring((fixtures_dir / LOOPBACK / "initiator-capacity64-full.ring").read_bytes())
    assert ring.header.capacity == 64 and ring.header.write_pos == 63
    assert ring.header.is_full
    # 63 events: a registration, 15 whole groups, then post+xfer whose bytes/requests NIXL dropped.
    assert len(ring.grouped.transfers) == 15
    assert {int(b) for b in ring.grouped.transfers.bytes} == {256 * 1024}
    assert ring.grouped.incomplete_events == 2
    assert ring.dropped_events_known == 2


def test_v1_and_v4_synthetic_rings_decode_to_the_same_transfer(fixtures_dir: Path) -> None:
    samples = fixtures_dir / "public-samples" / "nixl"
    v1 = decode_ring((samples / "telemetry_ring_v1_SYNTHETIC.bin").read_bytes())
    v4 = decode_ring((samples / "telemetry_ring_v4_SYNTHETIC.bin").read_bytes())
    t1 = v1.grouped.transfers.to_transfers("a", None)
    t4 = v4.grouped.transfers.to_transfers("a", 5.0)
    assert len(t1) == len(t4) == 1
    assert (t1[0].bytes, t1[0].xfer_seconds, t1[0].post_seconds) == (t4[0].bytes, t4[0].xfer_seconds, 41e-6)
    assert t1[0].bytes == 70 * 1024 * 1024 and t1[0].direction == "read"
    assert t1[0].time == pytest.approx(1758547733.009862)  # v1 carries its own timestamp
    assert next(iter(v1.event_names())) == "agent_memory_registered"


# --------------------------------------------------------------------------- corrupt inputs


def _header(write: int, read: int, version: int, capacity: int, mask: int) -> bytes:
    return struct.pack("<QQiiQQ", write, read, version, version, capacity, mask)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\0" * 10, "truncated"),
        (_header(0, 0, 7, 8, 7) + bytes(8 * 16), "unknown telemetry format version 7"),
        (_header(0, 0, 4, 8, 7) + bytes(8 * 16 - 1), "truncated"),
        (_header(0, 0, 4, 8, 3) + bytes(8 * 16), "mask 3 does not match capacity 8"),
        (_header(0, 0, 4, 12, 11) + bytes(12 * 16), "not a power of two"),
        (_header(9, 0, 4, 8, 7) + bytes(8 * 16), "positions out of range"),
        (_header(0, 0, 1, 8, 7) + bytes(8 * 16), "truncated"),  # v1 events are 56 bytes
    ],
)
def test_corrupt_headers_raise_a_clear_error(data: bytes, reason: str) -> None:
    with pytest.raises(RingFormatError) as info:
        decode_ring(data, "bad.ring")
    assert reason in info.value.reason
    assert "bad.ring" in str(info.value)


def test_directory_source_skips_bad_files_and_picks_up_new_ones(fixtures_dir: Path, tmp_path: Path) -> None:
    shutil.copy(fixtures_dir / PD_TELEMETRY / DECODE_AGENT, tmp_path / "decode")
    (tmp_path / "garbage").write_bytes(_header(0, 0, 42, 8, 7) + bytes(128))
    source = NixlTelemetryDir(tmp_path, mode="consume")
    first = source.poll(now=100.0)
    assert len(first.transfers) == 110
    assert "unknown telemetry format version 42" in first.problems[str(tmp_path / "garbage")]
    assert parse_header((tmp_path / "decode").read_bytes()).read_pos == 441  # consumed

    shutil.copy(fixtures_dir / LOOPBACK / "initiator.ring", tmp_path / "late-agent")
    second = source.poll(now=101.0)
    assert [p.agent for p in second.rings] == ["decode", "late-agent"]
    assert len(second.transfers) == 20 and {t.agent for t in second.transfers} == {"late-agent"}
    assert str(tmp_path / "garbage") in second.problems  # still reported, not re-read

    (tmp_path / "late-agent").unlink()
    third = source.poll(now=102.0)
    assert [p.agent for p in third.rings] == ["decode"] and third.transfers == ()
    source.close()


def test_truncated_file_while_open_is_reported_and_others_continue(fixtures_dir: Path, tmp_path: Path) -> None:
    shutil.copy(fixtures_dir / LOOPBACK / "initiator.ring", tmp_path / "a")
    shutil.copy(fixtures_dir / LOOPBACK / "initiator.ring", tmp_path / "b")
    source = NixlTelemetryDir(tmp_path, mode="readonly")
    assert len(source.poll(1.0).transfers) == 40
    # The engine restarted and left a short file under the same name.
    (tmp_path / "short").write_bytes((tmp_path / "a").read_bytes()[:100])
    (tmp_path / "short").replace(tmp_path / "a")
    result = source.poll(2.0)
    assert "truncated" in result.problems[str(tmp_path / "a")]
    assert [p.agent for p in result.rings] == ["b"]


def test_read_events_follows_the_wrap(fixtures_dir: Path) -> None:
    data = (fixtures_dir / LOOPBACK / "initiator.ring").read_bytes()
    header = parse_header(data)
    wrapped = read_events(data, header, header.capacity - 2, 6)  # two empty slots, then 4 real
    assert len(wrapped) == 6
    assert wrapped.types[2:].tolist() == read_events(data, header, 0, 4).types.tolist()
    grouped = group_events(read_events(data, header, 1, 7), hold_tail=True)
    assert len(grouped.transfers) == 1 and len(grouped.tail) == 3  # post, xfer, bytes held back


def test_ring_reader_in_readonly_mode_never_writes(fixtures_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "full.ring"
    shutil.copy(fixtures_dir / LOOPBACK / "initiator-capacity64-full.ring", path)
    before = path.read_bytes()
    ring = NixlRing(path, mode="readonly")
    poll = ring.poll(now=1.0)
    assert poll.was_full and len(poll.transfers) == 15 and poll.dropped_known == 2
    assert ring.poll(now=2.0).events_read == 0
    assert ring.stats.full_polls == 2
    ring.close()
    assert path.read_bytes() == before


def test_cli_prints_transfers_and_summary(
    fixtures_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from phaselens.nixl_cli import main

    bad = tmp_path / "bad"
    bad.write_bytes(b"short")
    status = main([str(fixtures_dir / LOOPBACK / "initiator-capacity64-full.ring"), str(bad)])
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    assert status == 1
    assert len(records) == 16 and records[0]["bytes"] == 256 * 1024
    summary = records[-1]["summary"]
    assert summary["transfers"] == 15 and summary["full"] is True and summary["dropped_events_known"] == 2
    assert json.loads(err)["error"].startswith("truncated")


def test_cli_v2_ring_has_no_time_field_and_says_why(fixtures_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Format v2+ rings carry no timestamps: no `"time": null` per transfer, one note in the summary."""
    import json

    from phaselens.nixl_cli import main

    assert main([str(fixtures_dir / PD_TELEMETRY / DECODE_AGENT)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    transfers, summary = records[:-1], records[-1]["summary"]
    assert summary["version"] >= 2 and summary["timestamps"] is False
    assert "no timestamps" in summary["note"]
    assert len(transfers) == summary["transfers"] > 0
    assert all("time" not in t for t in transfers)
    # Seconds at the ring's microsecond resolution: no binary float noise such as 0.056559000000000005.
    floats = [t[k] for t in transfers for k in ("post_seconds", "xfer_seconds")]
    floats += [summary["xfer_seconds_sum"], summary["post_seconds_sum"], *summary["xfer_seconds_quantiles"].values()]
    assert all(len(repr(x).partition(".")[2]) <= 6 or "e-" in repr(x) for x in floats), floats


def test_cli_v1_ring_keeps_its_timestamps(fixtures_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from phaselens.nixl_cli import main

    # The one v1 ring we have is NIXL's own synthetic test sample (no real v1 capture exists here).
    ring = fixtures_dir / "public-samples" / "nixl" / "telemetry_ring_v1_SYNTHETIC.bin"
    assert main([str(ring)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    summary = records[-1]["summary"]
    assert summary["version"] == 1 and summary["timestamps"] is True and "note" not in summary
    assert len(records) > 1 and records[0]["time"] == 1758547733.009862
