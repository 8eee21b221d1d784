"""Recorded scrapes: reading folders and archives, merging sources by time, writing them back."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest
from phaselens.sources.recording import (
    RecordingError,
    RecordingWriter,
    load_all,
    load_sources,
    merge_by_time,
    split_role,
)

FIXTURES = Path(__file__).parent / "fixtures"
AGG_TAR = FIXTURES / "vllm-0.32.0-cpu-aggregated" / "scrapes.tar.gz"
PD_TAR = FIXTURES / "vllm-0.32.0-cpu-pd-1p1d" / "scrapes.tar.gz"


def test_archive_and_folder_give_the_same_scrapes(aggregated_dir: Path) -> None:
    from_tar = load_sources(str(AGG_TAR))
    from_dir = load_sources(str(aggregated_dir))
    assert len(from_tar) == len(from_dir) == 1
    assert len(from_tar[0].scrapes) == len(from_dir[0].scrapes) == 84
    assert [s.time for s in from_tar[0].scrapes] == [s.time for s in from_dir[0].scrapes]
    assert from_tar[0].scrapes[10].load() == from_dir[0].scrapes[10].load()
    times = [s.time for s in from_tar[0].scrapes]
    assert times == sorted(times)


def test_role_prefix_names_the_source() -> None:
    (source,) = load_sources(f"decode={AGG_TAR}")
    assert (source.name, source.role) == ("decode", "decode")
    assert split_role("prefill=/x") == ("prefill", "/x")
    assert split_role("/a=b/c") == (None, "/a=b/c")
    with pytest.raises(RecordingError, match="unknown role"):
        split_role("middle=/x")


def test_pd_archive_yields_two_sources_merged_into_shared_ticks() -> None:
    sources = load_all([str(PD_TAR)])
    assert {(s.name, s.role) for s in sources} == {("prefill", "prefill"), ("decode", "decode")}
    ticks = list(merge_by_time(sources))
    assert len(ticks) == 269  # taken at the same instants: one tick per pair
    assert all(set(t.scrapes) == {"prefill", "decode"} for t in ticks)
    assert all(t.time == max(s.time for s in t.scrapes.values()) for t in ticks)


def test_two_separate_sources_merge_in_time_order(pd_dir: Path) -> None:
    sources = load_all([f"prefill={pd_dir / 'prefill'}", f"decode={pd_dir / 'decode'}"])
    ticks = list(merge_by_time(sources))
    assert len(ticks) == 269
    assert [t.time for t in ticks] == sorted(t.time for t in ticks)


def test_writer_round_trip(tmp_path: Path) -> None:
    writer = RecordingWriter(tmp_path / "out")
    writer.write(1000.5, b"# TYPE up gauge\nup 1\n")
    writer.write(1001.5, b"up 0\n")
    (source,) = load_sources(str(tmp_path / "out"))
    assert [s.time for s in source.scrapes] == [1000.5, 1001.5]
    assert source.scrapes[0].load().splitlines()[0] == b"# scrape_time 1000.500"
    # a second writer continues the numbering instead of overwriting
    assert RecordingWriter(tmp_path / "out").write(1002.0, b"up 1\n").name == "0002.prom"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "no such file"),
        ("empty", "no NNNN.prom"),
        ("no_time", "scrape_time"),
        ("bad_time", "not a number"),
        ("truncated", "not a readable"),
        ("other_file", "expected a folder"),
    ],
)
def test_bad_recordings_have_clear_errors(tmp_path: Path, setup: str, message: str) -> None:
    path = tmp_path / "rec"
    if setup == "empty":
        path.mkdir()
    elif setup in ("no_time", "bad_time"):
        path.mkdir()
        first = b"# HELP x y\n" if setup == "no_time" else b"# scrape_time soon\n"
        (path / "0000.prom").write_bytes(first + b"x 1\n")
    elif setup == "truncated":
        path = tmp_path / "cut.tar.gz"
        path.write_bytes(AGG_TAR.read_bytes()[:50_000])
    elif setup == "other_file":
        path = tmp_path / "x.txt"
        path.write_text("hi")
    with pytest.raises(RecordingError, match=message):
        load_all([str(path)])


def test_archive_member_without_scrape_time_is_rejected(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = b"up 1\n"
        info = tarfile.TarInfo("rec/0000.prom")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    path = tmp_path / "x.tar.gz"
    path.write_bytes(gzip.compress(buffer.getvalue()))
    with pytest.raises(RecordingError, match=r"rec/0000.prom: first line"):
        load_sources(str(path))
