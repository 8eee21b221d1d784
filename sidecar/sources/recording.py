"""Recorded scrapes: read them for `replay`/`demo`, write them for `record`.

Format (the one in the project's captures): a folder of `NNNN.prom` files, each the body of one
`GET /metrics` preceded by one comment line `# scrape_time <unix seconds>`. A source is a folder
holding such files, or a `.tar.gz` of them; a folder or archive whose sub-folders hold them (the
1P1D capture has `prefill/` and `decode/`) yields one source per sub-folder. Several sources are
merged by scrape time into ticks.
"""

from __future__ import annotations

import asyncio
import os
import re
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from phaselens.model import ROLES, Role

SCRAPE_FILE = re.compile(r"^(\d+)\.prom$")
SCRAPE_TIME_PREFIX = b"# scrape_time "
_FIRST_LINE_LIMIT = 256


class RecordingError(ValueError):
    """A recording that cannot be read: the message says which file and why."""


@dataclass(frozen=True, slots=True)
class RecordedScrape:
    """One scrape: its time and where its body is (in memory for archives, on disk for folders)."""

    time: float
    origin: str
    payload: bytes | None = None
    path: Path | None = None

    def load(self) -> bytes:
        if self.payload is not None:
            return self.payload
        assert self.path is not None  # one of the two is always set by the readers below
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise RecordingError(f"{self.origin}: cannot read ({exc.strerror or exc})") from exc


@dataclass(frozen=True, slots=True)
class RecordedSource:
    name: str
    role: Role
    scrapes: tuple[RecordedScrape, ...]


def split_role(arg: str) -> tuple[Role | None, str]:
    """`[ROLE=]VALUE` -> (role or None, value). Only a known role before `=` counts as a role."""
    head, sep, tail = arg.partition("=")
    if sep and head in ROLES:
        return cast(Role, head), tail
    if sep and head and "/" not in head and ":" not in head:
        raise RecordingError(f"{arg!r}: unknown role {head!r} (expected one of {', '.join(ROLES)})")
    return None, arg


def parse_scrape_time(first_line: bytes, origin: str) -> float:
    if not first_line.startswith(SCRAPE_TIME_PREFIX):
        raise RecordingError(f"{origin}: first line is not '# scrape_time <unix seconds>'")
    text = first_line[len(SCRAPE_TIME_PREFIX) :].strip()
    try:
        value = float(text)
    except ValueError:
        raise RecordingError(f"{origin}: scrape_time {text.decode(errors='replace')!r} is not a number") from None
    if not value > 0 or value != value or value == float("inf"):
        raise RecordingError(f"{origin}: scrape_time {value} is not a positive unix time")
    return value


def _first_line(data: bytes) -> bytes:
    return data[:_FIRST_LINE_LIMIT].split(b"\n", 1)[0]


def _source_name(role: Role | None, folder: str) -> tuple[str, Role]:
    if role is not None:
        return role, role
    if folder in ROLES:
        return folder, cast(Role, folder)
    return folder, "aggregated"


def _from_groups(arg: str, role: Role | None, groups: dict[str, list[RecordedScrape]]) -> list[RecordedSource]:
    if not groups:
        raise RecordingError(f"{arg}: no NNNN.prom scrape files found")
    if role is not None and len(groups) > 1:
        names = ", ".join(sorted(groups))
        raise RecordingError(f"{arg}: holds several sources ({names}); ROLE= applies to a single one")
    sources = []
    for folder, scrapes in sorted(groups.items()):
        name, source_role = _source_name(role, folder)
        ordered = tuple(sorted(scrapes, key=lambda s: s.time))
        sources.append(RecordedSource(name=name, role=source_role, scrapes=ordered))
    return sources


def _read_folder(path: Path) -> dict[str, list[RecordedScrape]]:
    groups: dict[str, list[RecordedScrape]] = {}
    candidates = [path, *sorted(p for p in path.iterdir() if p.is_dir())]
    for folder in candidates:
        files = sorted(p for p in folder.iterdir() if p.is_file() and SCRAPE_FILE.match(p.name))
        if not files:
            continue
        scrapes = []
        for file in files:
            origin = str(file)
            try:
                with file.open("rb") as handle:
                    first = handle.readline(_FIRST_LINE_LIMIT)
            except OSError as exc:
                raise RecordingError(f"{origin}: cannot read ({exc.strerror or exc})") from exc
            scrapes.append(RecordedScrape(parse_scrape_time(first.rstrip(b"\r\n"), origin), origin, path=file))
        groups[folder.name] = scrapes
        if folder == path:
            break  # scrape files at the top: the folder itself is the one source
    return groups


def _read_archive(path: Path) -> dict[str, list[RecordedScrape]]:
    groups: dict[str, list[RecordedScrape]] = {}
    stem = path.name.removesuffix(".gz").removesuffix(".tgz").removesuffix(".tar")
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                base = os.path.basename(member.name)
                if not member.isfile() or not SCRAPE_FILE.match(base):
                    continue
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                data = handle.read()
                origin = f"{path}:{member.name}"
                if len(data) != member.size:
                    raise RecordingError(f"{origin}: archive is truncated")
                folder = os.path.basename(os.path.dirname(member.name)) or stem
                groups.setdefault(folder, []).append(
                    RecordedScrape(parse_scrape_time(_first_line(data), origin), origin, payload=data)
                )
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise RecordingError(f"{path}: not a readable .tar.gz ({type(exc).__name__}: {exc})") from exc
    return groups


def load_sources(arg: str) -> list[RecordedSource]:
    """Sources named by one `[ROLE=]PATH` argument."""
    role, raw_path = split_role(arg)
    path = Path(raw_path)
    if not path.exists():
        raise RecordingError(f"{raw_path}: no such file or folder")
    if path.is_dir():
        try:
            groups = _read_folder(path)
        except OSError as exc:
            raise RecordingError(f"{raw_path}: cannot list ({exc.strerror or exc})") from exc
    elif path.name.endswith((".tar.gz", ".tgz", ".tar")):
        groups = _read_archive(path)
    else:
        raise RecordingError(f"{raw_path}: expected a folder or a .tar.gz of NNNN.prom files")
    return _from_groups(raw_path, role, groups)


def load_all(args: Sequence[str]) -> list[RecordedSource]:
    """All sources of several arguments; target names must end up unique."""
    sources: list[RecordedSource] = []
    for arg in args:
        sources.extend(load_sources(arg))
    seen: set[str] = set()
    for source in sources:
        if source.name in seen:
            raise RecordingError(f"two sources are named {source.name!r}: prefix one with ROLE=")
        seen.add(source.name)
    return sources


@dataclass(frozen=True, slots=True)
class Tick:
    """Scrapes taken at (about) the same instant, one per source at most."""

    time: float
    scrapes: dict[str, RecordedScrape]


def merge_by_time(sources: Iterable[RecordedSource], tolerance_seconds: float = 0.5) -> Iterator[Tick]:
    """Ticks in time order: scrapes of different sources within `tolerance_seconds` share a tick.

    The tick's time is its latest scrape's time, so no data is ever from the future.
    """
    events = sorted(
        ((scrape.time, source.name, scrape) for source in sources for scrape in source.scrapes),
        key=lambda event: (event[0], event[1]),
    )
    group: dict[str, RecordedScrape] = {}
    start = 0.0
    for time, name, scrape in events:
        if group and (time - start > tolerance_seconds or name in group):
            yield Tick(max(s.time for s in group.values()), group)
            group = {}
        if not group:
            start = time
        group[name] = scrape
    if group:
        yield Tick(max(s.time for s in group.values()), group)


class RecordingWriter:
    """Writes scrapes as `<out>/NNNN.prom` with the `# scrape_time` first line."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        existing = [int(m.group(1)) for p in out_dir.iterdir() if (m := SCRAPE_FILE.match(p.name))]
        self.next_index = max(existing) + 1 if existing else 0

    def write(self, time: float, payload: bytes) -> Path:
        path = self.out_dir / f"{self.next_index:04d}.prom"
        tmp = path.with_suffix(".prom.tmp")
        with tmp.open("wb") as handle:
            handle.write(SCRAPE_TIME_PREFIX + f"{time:.3f}\n".encode())
            handle.write(payload)
        tmp.replace(path)  # readers never see half a file
        self.next_index += 1
        return path


async def record(
    url: str, out_dir: Path, interval: float, timeout: float, count: int | None, duration: float | None
) -> int:
    """Scrape `url` every `interval` seconds into `out_dir` until `count` scrapes or `duration` seconds.

    A failed scrape is logged and skipped (nothing is written for it). Returns how many were written.
    """
    import time

    import aiohttp
    from phaselens.logs import get_logger, log_event
    from phaselens.sources.scraper import ScrapeError, fetch_metrics

    log = get_logger("record")
    writer = RecordingWriter(out_dir)
    written = 0
    start = time.monotonic()
    attempt = 0
    async with aiohttp.ClientSession() as session:
        while (count is None or written < count) and (duration is None or time.monotonic() - start < duration):
            due = start + attempt * interval
            attempt += 1
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            try:
                payload, _ = await fetch_metrics(session, url, timeout)
            except ScrapeError as exc:
                log_event(log, "scrape_failed", 30, url=url, err=str(exc))
                continue
            path = writer.write(time.time(), payload)
            written += 1
            log_event(log, "record_written", 10, path=str(path))
    log_event(log, "record_finished", out=str(out_dir), scrapes=written)
    return written
