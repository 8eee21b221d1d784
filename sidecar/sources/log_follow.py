"""Follow a log file (like `tail -F`) or a stream such as standard input, poll by poll.

- rotation by rename: when the path names a new file, the rest of the old one is read first,
  then the new one from its start;
- truncation (copytruncate): when the file shrinks below the read position, reading restarts
  at 0 and the unfinished line is dropped (its continuation went into the copy); NUL bytes a
  non-O_APPEND writer leaves in front are skipped;
- a last line without its newline is held until it is completed.
`poll()` never blocks, so it serves both an asyncio loop (`follow`) and synchronous replay.
`read_lines` reads a whole file at once (.gz allowed).
"""

from __future__ import annotations

import asyncio
import gzip
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Protocol

_CHUNK = 1 << 20
_MAX_PARTIAL = 1 << 20  # a "line" longer than this without a newline is flushed as is


def _split(buffer: bytes, data: bytes) -> tuple[list[str], bytes]:
    data = buffer + data if buffer else data
    cut = data.rfind(b"\n")
    if cut < 0:
        if len(data) > _MAX_PARTIAL:
            return [data.decode("utf-8", "replace")], b""
        return [], data
    text = data[:cut].decode("utf-8", "replace")
    lines = text.split("\n")
    if "\r" in text:
        lines = [line.removesuffix("\r") for line in lines]
    return lines, data[cut + 1 :]


class LineSource(Protocol):
    def poll(self) -> list[str]: ...

    @property
    def gone(self) -> bool: ...

    def close(self) -> None: ...


class FileFollower:
    """Follow one path. `from_start=False` starts at the current end (only new lines)."""

    def __init__(self, path: str | os.PathLike[str], from_start: bool = True) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._ident: tuple[int, int] | None = None
        self._pos = 0
        self._partial = b""
        self.rotations = 0
        self.truncations = 0
        self._open(at_end=not from_start)

    def _open(self, at_end: bool = False) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        st = os.fstat(fd)
        self._fd = fd
        self._ident = (st.st_dev, st.st_ino)
        self._pos = st.st_size if at_end else 0
        return True

    def _read_available(self) -> list[str]:
        assert self._fd is not None
        out: list[str] = []
        while True:
            chunk = os.pread(self._fd, _CHUNK, self._pos)
            if not chunk:
                return out
            if self._pos == 0 and chunk[:1] == b"\0":
                stripped = chunk.lstrip(b"\0")  # hole left by copytruncate + a non-append writer
                self._pos += len(chunk) - len(stripped)
                chunk = stripped
                if not chunk:
                    continue
            self._pos += len(chunk)
            lines, self._partial = _split(self._partial, chunk)
            out.extend(lines)

    def poll(self) -> list[str]:
        """Complete lines written since the last poll."""
        if self._fd is None:
            if not self._open():
                return []
            self.rotations += 1
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        if size < self._pos:
            self.truncations += 1
            self._pos = 0
            self._partial = b""
        lines = self._read_available()
        try:
            st = os.stat(self.path)
            replaced = (st.st_dev, st.st_ino) != self._ident
        except FileNotFoundError:
            replaced = True
        if replaced:
            # The old file was renamed away (rotation): finish it, then switch.
            lines.extend(self._read_available())
            if self._partial:
                lines.append(self._partial.decode("utf-8", "replace"))
                self._partial = b""
            os.close(self._fd)
            self._fd = None
            if self._open():
                self.rotations += 1
                lines.extend(self._read_available())
        return lines

    @property
    def pending_partial(self) -> str:
        return self._partial.decode("utf-8", "replace")

    @property
    def gone(self) -> bool:
        """True while the path names no file (deleted, or renamed away and not recreated yet)."""
        return self._fd is None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class StreamFollower:
    """Follow a pipe or terminal (standard input by default) without blocking."""

    def __init__(self, fd: int = 0) -> None:
        self._fd = fd
        os.set_blocking(fd, False)
        self._partial = b""
        self.eof = False

    def poll(self) -> list[str]:
        out: list[str] = []
        while not self.eof:
            try:
                chunk = os.read(self._fd, _CHUNK)
            except BlockingIOError:
                break
            if not chunk:
                self.eof = True
                if self._partial:
                    out.append(self._partial.decode("utf-8", "replace"))
                    self._partial = b""
                break
            lines, self._partial = _split(self._partial, chunk)
            out.extend(lines)
        return out

    @property
    def gone(self) -> bool:
        """True once the stream has ended (the writer closed it)."""
        return self.eof

    def close(self) -> None:
        self.eof = True


async def follow(source: LineSource, interval_seconds: float = 0.5) -> AsyncIterator[list[str]]:
    """Yield batches of new lines forever (until the task is cancelled or a stream ends)."""
    try:
        while True:
            lines = source.poll()
            if lines:
                yield lines
            if isinstance(source, StreamFollower) and source.eof:
                return
            await asyncio.sleep(interval_seconds)
    finally:
        source.close()


def read_lines(path: str | os.PathLike[str]) -> Iterator[str]:
    """Every line of a file, for replay; gzip-compressed files (by magic bytes) are unpacked."""
    p = Path(path)
    with open(p, "rb") as probe:
        gz = probe.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    with opener(p, "rt", encoding="utf-8", errors="replace", newline="") as handle:
        for line in handle:
            yield line.rstrip("\r\n")
