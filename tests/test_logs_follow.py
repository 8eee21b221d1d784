"""Following a log file: rotation by rename, truncation (copytruncate), partial last lines, stdin."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from phaselens.parsers.logs import parse_lines
from phaselens.sources.log_follow import FileFollower, StreamFollower, follow, read_lines


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


def test_partial_last_line_is_held_until_completed(tmp_path: Path) -> None:
    path = tmp_path / "engine.log"
    path.write_text("first\nsec")
    follower = FileFollower(path)
    assert follower.poll() == ["first"]
    assert follower.pending_partial == "sec"
    assert follower.poll() == []
    _append(path, "ond\nthird\n")
    assert follower.poll() == ["second", "third"]
    follower.close()


def test_rotation_by_rename_reads_the_rest_of_the_old_file_first(tmp_path: Path) -> None:
    path = tmp_path / "engine.log"
    path.write_text("a1\n")
    follower = FileFollower(path)
    assert follower.poll() == ["a1"]
    _append(path, "a2\na3-unfinished")
    path.rename(tmp_path / "engine.log.1")
    path.write_text("b1\n")
    assert follower.poll() == ["a2", "a3-unfinished", "b1"]
    assert follower.rotations == 1
    _append(path, "b2\n")
    assert follower.poll() == ["b2"]
    follower.close()


def test_missing_file_then_created(tmp_path: Path) -> None:
    path = tmp_path / "late.log"
    follower = FileFollower(path)
    assert follower.poll() == []
    path.write_text("hello\n")
    assert follower.poll() == ["hello"]
    follower.close()


def test_copytruncate_restarts_at_zero(tmp_path: Path) -> None:
    path = tmp_path / "engine.log"
    path.write_text("old1\nold2\nhalf")
    follower = FileFollower(path)
    assert follower.poll() == ["old1", "old2"]
    os.truncate(path, 0)  # logrotate copytruncate
    _append(path, "new1\n")
    assert follower.poll() == ["new1"]
    assert follower.truncations == 1
    follower.close()


def test_truncation_by_a_non_append_writer_skips_the_hole(tmp_path: Path) -> None:
    path = tmp_path / "engine.log"
    path.write_text("x" * 50 + "\n")
    follower = FileFollower(path)
    assert len(follower.poll()) == 1
    with open(path, "r+b") as handle:
        handle.truncate(0)
        handle.seek(30)  # the writer's offset survives the truncation: a NUL hole is left in front
        handle.write(b"after\n")
    # size 36 < 51: truncation seen; the hole's NULs are skipped
    assert follower.poll() == ["after"]
    follower.close()


def test_start_at_end_only_sees_new_lines(tmp_path: Path) -> None:
    path = tmp_path / "engine.log"
    path.write_text("history\n")
    follower = FileFollower(path, from_start=False)
    assert follower.poll() == []
    _append(path, "live\n")
    assert follower.poll() == ["live"]
    follower.close()


def test_stdin_like_stream_and_async_follow(tmp_path: Path) -> None:
    read_fd, write_fd = os.pipe()
    stream = StreamFollower(read_fd)
    os.write(write_fd, b"one\ntw")
    assert stream.poll() == ["one"]

    async def collect() -> list[str]:
        got: list[str] = []
        closed = False
        async for batch in follow(stream, interval_seconds=0.01):
            got.extend(batch)
            if not closed:
                os.write(write_fd, b"x\ny-unterminated")
                os.close(write_fd)  # end of stream: the follow loop ends after flushing
                closed = True
        return got

    os.write(write_fd, b"o\none2\n")
    stream_lines = asyncio.run(collect())
    assert stream_lines == ["two", "one2", "x", "y-unterminated"]
    assert stream.eof
    os.close(read_fd)


def test_follow_then_parse_a_real_log_in_chunks(fixtures_dir: Path, tmp_path: Path) -> None:
    lines = list(read_lines(fixtures_dir / "vllm-0.32.0-cpu-pd-1p1d" / "decode.log.gz"))
    path = tmp_path / "decode.log"
    path.write_text("")
    follower = FileFollower(path)
    seen: list[str] = []
    text = "\n".join(lines) + "\n"
    for start in range(0, len(text), 4096):  # writes that cut lines anywhere
        _append(path, text[start : start + 4096])
        seen.extend(follower.poll())
    follower.close()
    assert seen == lines
    assert parse_lines(seen).counts() == parse_lines(lines).counts()
