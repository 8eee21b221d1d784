"""Read the NIXL telemetry rings in `NIXL_TELEMETRY_DIR` (one file per agent), poll by poll.

File I/O and cursor keeping only; decoding is `phaselens.parsers.nixl_ring`.

Two modes:
- "consume" (default): the source is the ring's one consumer. It drains [read_pos, write_pos)
  and stores the new `read_pos` in the shared header, as NIXL's own reader does. Without a
  consumer NIXL stops recording once the ring is full (it drops new events, never overwrites).
  Needs write access to the file (the engine's UID: NIXL creates rings with mode 0644).
- "readonly": never writes the file; keeps its own cursor. For when another program owns the
  ring. It reports the losses it can know about: partners of cut transfer groups, v4
  staging-queue drop events, and polls that found the ring full (NIXL drops while full).
  A writer that laps the private cursor by whole groups between two polls cannot be seen
  (positions are stored masked), so poll faster than the ring fills.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from phaselens.model import NixlRingError, NixlTransfer
from phaselens.parsers.nixl_ring import (
    EVENT_DTYPES,
    HEADER_SIZE,
    RawEvents,
    RingFormatError,
    RingHeader,
    RingMode,
    TimedTransfers,
    concat_timed,
    events_from_records,
    group_events,
    parse_header,
    slot_spans,
)

_READ_POS_OFFSET = 8  # the u64 read_pos


@dataclass(slots=True)
class RingStats:
    """Running totals for one ring since the source opened it."""

    events: int = 0
    transfers: int = 0
    bytes: int = 0
    errors: int = 0
    dropped_known: int = 0  # missing partners of cut groups + NIXL-reported staging drops
    full_polls: int = 0  # polls that found the ring full: NIXL was dropping events then
    unknown_events: int = 0


@dataclass(frozen=True, slots=True)
class RingPoll:
    agent: str
    header: RingHeader
    batch: TimedTransfers  # the new transfers as arrays (the sidecar summarises these)
    errors: tuple[NixlRingError, ...]
    events_read: int
    dropped_known: int
    was_full: bool

    @property
    def transfers(self) -> tuple[NixlTransfer, ...]:
        """One frozen record per transfer (built on each access: for tools and tests, not the sidecar)."""
        return tuple(self.batch.to_transfers())


class NixlRing:
    """One ring file, kept open between polls. Reopened when the file is replaced.

    Read with `pread` into numpy buffers, never through a memory map: the engine can truncate
    the file in place (a restart, a full disk), and touching a mapped page past the new end
    kills the process with SIGBUS, which no check made before the access can rule out (the
    truncation can land between the check and the read). A short `pread` is an error we report.
    """

    def __init__(self, path: str | os.PathLike[str], mode: RingMode = "consume") -> None:
        if mode not in ("consume", "readonly"):
            raise ValueError(f"ring mode must be 'consume' or 'readonly', not {mode!r}")
        self.path = Path(path)
        self.agent = self.path.name
        self.mode: RingMode = mode
        self.stats = RingStats()
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None
        self._cursor = 0  # readonly mode only
        self._tail = RawEvents.empty()
        self._open()

    # ------------------------------------------------------------------ lifecycle

    def _open(self) -> None:
        self.close()
        flags = os.O_RDWR if self.mode == "consume" else os.O_RDONLY
        fd = os.open(self.path, flags | getattr(os, "O_CLOEXEC", 0))
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise RingFormatError("not a regular file", str(self.path))
            header = self._header(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._inode = (st.st_dev, st.st_ino)
        self._cursor = header.read_pos
        self._tail = RawEvents.empty(header.version == 1)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def replaced(self) -> bool:
        """True when the path now names another file (the engine restarted and recreated it)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (st.st_dev, st.st_ino) != self._inode

    # ------------------------------------------------------------------ reading

    def _header(self, fd: int) -> RingHeader:
        """The header, checked against the file's size now (a ring cut in place fails here)."""
        size = os.fstat(fd).st_size
        return parse_header(_pread_exact(fd, min(size, HEADER_SIZE), 0, str(self.path)), str(self.path), size)

    def _events(self, fd: int, header: RingHeader, start: int, count: int) -> RawEvents:
        dtype = EVENT_DTYPES[header.version]
        records = np.empty(count, dtype=dtype)
        done = 0
        for slot, n in slot_spans(header, start, count):
            chunk = records[done : done + n]
            _preadinto_exact(fd, chunk, HEADER_SIZE + slot * dtype.itemsize, str(self.path))
            done += n
        return events_from_records(records, header.version)

    # ------------------------------------------------------------------ polling

    def poll(self, now: float) -> RingPoll:
        """Read what was written since the last poll; `now` stamps v2+ events (no stamps there)."""
        if self._fd is None or self.replaced():
            self._open()
        assert self._fd is not None
        header = self._header(self._fd)
        start = header.read_pos if self.mode == "consume" else self._cursor
        count = (header.write_pos - start) & header.mask
        was_full = header.is_full
        fresh = self._events(self._fd, header, start, count)
        if self.mode == "consume" and count:
            # One aligned 8-byte write, after the events were copied out. NIXL reads read_pos
            # only to test for a full ring, and we just drained it, so even a torn write cannot
            # make it overwrite unread events.
            os.pwrite(self._fd, header.write_pos.to_bytes(8, "little"), _READ_POS_OFFSET)
        self._cursor = header.write_pos
        events = self._tail.concat(fresh)
        # While the ring is full the rest of a cut group was dropped: do not wait for it.
        grouped = group_events(events, hold_tail=not was_full)
        self._tail = grouped.tail
        batch = grouped.transfers.timed(self.agent, now)
        errors = tuple(
            NixlRingError(time=now, agent=self.agent, status=name, count=n) for name, n in grouped.errors.items()
        )
        dropped = grouped.missing_events + grouped.reported_dropped
        s = self.stats
        s.events += count
        s.transfers += len(batch)
        s.bytes += int(grouped.transfers.bytes.sum())
        s.errors += sum(grouped.errors.values())
        s.dropped_known += dropped
        s.full_polls += int(was_full)
        s.unknown_events += grouped.unknown_events
        return RingPoll(self.agent, header, batch, errors, count, dropped, was_full)


def _pread_exact(fd: int, size: int, offset: int, path: str) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) < size:
        raise RingFormatError(f"truncated while reading: {offset + len(data)} bytes, needed {offset + size}", path)
    return data


def _preadinto_exact(fd: int, array: np.ndarray, offset: int, path: str) -> None:
    """Fill `array` from the file at `offset` (no intermediate bytes object); short read -> error."""
    view = array.view(np.uint8).data  # the bytes behind the structured slots
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            raise RingFormatError(f"truncated while reading: {offset + done} bytes, needed {offset + len(view)}", path)
        done += got


@dataclass(frozen=True, slots=True)
class DirPoll:
    errors: tuple[NixlRingError, ...]
    rings: tuple[RingPoll, ...]
    problems: dict[str, str] = field(default_factory=dict)  # path -> reason (skipped this poll)

    @property
    def batch(self) -> TimedTransfers:
        """Every ring's new transfers in one table."""
        return concat_timed([ring.batch for ring in self.rings])

    @property
    def transfers(self) -> tuple[NixlTransfer, ...]:
        return tuple(t for ring in self.rings for t in ring.transfers)


class NixlTelemetryDir:
    """All rings in a folder. New agent files are picked up on the next poll; a bad file is
    reported in `problems` and retried when it changes, while the other rings go on."""

    def __init__(self, directory: str | os.PathLike[str], mode: RingMode = "consume") -> None:
        self.directory = Path(directory)
        self.mode: RingMode = mode
        self.rings: dict[str, NixlRing] = {}
        self._bad: dict[str, tuple[float, int, str]] = {}  # path -> (mtime, size, reason)

    def _candidates(self) -> list[Path]:
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return []
        return sorted(Path(e.path) for e in entries if e.is_file(follow_symlinks=False))

    def poll(self, now: float) -> DirPoll:
        problems: dict[str, str] = {}
        seen: set[str] = set()
        for path in self._candidates():
            key = str(path)
            seen.add(key)
            if key not in self.rings and not self._try_open(path, problems):
                continue
        polls: list[RingPoll] = []
        for key in sorted(self.rings):
            ring = self.rings[key]
            if key not in seen:
                ring.close()
                del self.rings[key]
                continue
            try:
                polls.append(ring.poll(now))
            except (RingFormatError, OSError, ValueError) as exc:
                ring.close()
                del self.rings[key]
                self._remember_bad(ring.path, exc, problems)
        for key in list(self._bad):
            if key not in seen:
                del self._bad[key]
        errors = tuple(e for p in polls for e in p.errors)
        return DirPoll(errors, tuple(polls), problems)

    def _try_open(self, path: Path, problems: dict[str, str]) -> bool:
        key = str(path)
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        bad = self._bad.get(key)
        if bad is not None and bad[:2] == (st.st_mtime, st.st_size):
            problems[key] = bad[2]  # unchanged since it failed: do not re-read it every poll
            return False
        try:
            self.rings[key] = NixlRing(path, self.mode)
        except (RingFormatError, OSError, ValueError) as exc:
            self._remember_bad(path, exc, problems)
            return False
        self._bad.pop(key, None)
        return True

    def _remember_bad(self, path: Path, exc: Exception, problems: dict[str, str]) -> None:
        reason = exc.reason if isinstance(exc, RingFormatError) else f"{type(exc).__name__}: {exc}"
        try:
            st = path.stat()
            self._bad[str(path)] = (st.st_mtime, st.st_size, reason)
        except FileNotFoundError:
            pass
        problems[str(path)] = reason

    def close(self) -> None:
        for ring in self.rings.values():
            ring.close()
        self.rings.clear()
