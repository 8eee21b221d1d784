"""Decode NIXL telemetry ring files (the BUFFER exporter's `$NIXL_TELEMETRY_DIR/<agent>` files).

Pure: bytes (or a memoryview, or event slots already read) in, numpy columns and frozen values out. The file I/O, the
consumer cursor and the clock live in `phaselens.sources.nixl_dir`.

Layout (NIXL `cyclic_buffer.h`, identical from 0.7.0 to 1.5.1, checked on real 1.5.1 rings):
a 40-byte little-endian header

    off 0  u64 write_pos    next slot the producer writes (already masked)
    off 8  u64 read_pos     next slot the consumer reads (already masked)
    off 16 i32 version      TELEMETRY_VERSION
    off 20 i32 expected_version
    off 24 u64 capacity     events, a power of two
    off 32 u64 mask         capacity - 1

then `capacity` fixed-size events. The ring keeps one slot free: it is full when
`(write_pos + 1) & mask == read_pos`, and NIXL then drops the *new* event (never overwrites).

Event layouts by version:
    v1 (NIXL 0.6-1.0), 56 B: u64 timestamp_us, i32 category, char[32] name, 4 B pad, u64 value
    v2 (1.1-1.2),      16 B: i32 category, u8 event_type (+3 B pad), u64 value
    v3 (1.3), v4 (>=1.4), 16 B: u8 event_type (+7 B pad; the enum is 8-bit, the padding can
                                hold garbage, as seen in real 1.5.1 rings), u64 value
Type ids (v2+): see EVENT_NAMES. v1 events carry their name as text instead.

Each completed transfer is recorded by the *initiator* as a 4-event group, always in the order
post_time (us), xfer_time (us), {tx|rx}_bytes, {tx|rx}_requests_num (=1).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from phaselens.model import NixlTransfer

HEADER_SIZE: Final = 40
SUPPORTED_VERSIONS: Final = (1, 2, 3, 4)

HEADER_DTYPE: Final = np.dtype(
    [
        ("write_pos", "<u8"),
        ("read_pos", "<u8"),
        ("version", "<i4"),
        ("expected_version", "<i4"),
        ("capacity", "<u8"),
        ("mask", "<u8"),
    ]
)
EVENT_V1_DTYPE: Final = np.dtype(
    [("timestamp_us", "<u8"), ("category", "<i4"), ("name", "S32"), ("pad", "V4"), ("value", "<u8")]
)
EVENT_V2_DTYPE: Final = np.dtype([("category", "<i4"), ("event_type", "u1"), ("pad", "V3"), ("value", "<u8")])
EVENT_V3_DTYPE: Final = np.dtype([("event_type", "u1"), ("pad", "V7"), ("value", "<u8")])
assert HEADER_DTYPE.itemsize == HEADER_SIZE
assert EVENT_V1_DTYPE.itemsize == 56 and EVENT_V2_DTYPE.itemsize == 16 and EVENT_V3_DTYPE.itemsize == 16

EVENT_DTYPES: Final[dict[int, np.dtype]] = {
    1: EVENT_V1_DTYPE,
    2: EVENT_V2_DTYPE,
    3: EVENT_V3_DTYPE,
    4: EVENT_V3_DTYPE,
}

# Event type ids shared by v2-v4 (`telemetry_event.h`); the index is the id.
TX_BYTES: Final = 0
RX_BYTES: Final = 1
TX_REQUESTS: Final = 2
RX_REQUESTS: Final = 3
MEMORY_REGISTERED: Final = 4
MEMORY_DEREGISTERED: Final = 5
XFER_TIME: Final = 6
XFER_POST_TIME: Final = 7
FIRST_ERROR: Final = 8
LAST_ERROR: Final = 19
EVENTS_DROPPED: Final = 20  # v4 only: events the staging queue dropped, value = count
UNKNOWN_TYPE: Final = 255

_COMMON_NAMES: Final = (
    "agent_tx_bytes",
    "agent_rx_bytes",
    "agent_tx_requests_num",
    "agent_rx_requests_num",
    "agent_memory_registered",
    "agent_memory_deregistered",
    "agent_xfer_time",
    "agent_xfer_post_time",
    "agent_err_not_posted",
    "agent_err_invalid_param",
    "agent_err_backend",
    "agent_err_not_found",
    "agent_err_mismatch",
    "agent_err_not_allowed",
    "agent_err_repost_active",
    "agent_err_unknown",
    "agent_err_not_supported",
    "agent_err_remote_disconnect",
    "agent_err_canceled",
    "agent_err_no_telemetry",
)
EVENT_NAMES: Final[dict[int, tuple[str, ...]]] = {
    # One v2 source tree also names id 20 `agent_backend`; it never belongs to a transfer group.
    2: (*_COMMON_NAMES, "agent_backend"),
    3: _COMMON_NAMES,
    4: (*_COMMON_NAMES, "agent_telemetry_events_dropped"),
}
# v1 names -> the v2+ ids, so one grouping routine serves every version. v1 errors are named by
# the status string (`NIXL_ERR_BACKEND`, category 4); backend plugins may add their own names.
_V1_NAME_TO_ID: Final[dict[bytes, int]] = {name.encode(): i for i, name in enumerate(_COMMON_NAMES)}
_V1_ERROR_CATEGORY: Final = 4

_GROUP_LEN: Final = 4


class RingFormatError(ValueError):
    """A ring file that cannot be decoded: `reason` says why (unknown version, truncated, ...)."""

    def __init__(self, reason: str, path: str = "") -> None:
        self.reason = reason
        self.path = path
        super().__init__(f"{path}: {reason}" if path else reason)


@dataclass(frozen=True, slots=True)
class RingHeader:
    write_pos: int
    read_pos: int
    version: int
    expected_version: int
    capacity: int
    mask: int

    @property
    def event_size(self) -> int:
        return EVENT_DTYPES[self.version].itemsize

    @property
    def total_size(self) -> int:
        return HEADER_SIZE + self.capacity * self.event_size

    @property
    def pending(self) -> int:
        """Events written and not yet consumed."""
        return (self.write_pos - self.read_pos) & self.mask

    @property
    def is_full(self) -> bool:
        """True when NIXL drops every new event until a consumer advances `read_pos`."""
        return ((self.write_pos + 1) & self.mask) == self.read_pos


def parse_header(buf: bytes | bytearray | memoryview, path: str = "", file_size: int | None = None) -> RingHeader:
    """Validate and decode the header; raises RingFormatError when the numbers do not add up.

    `buf` is the ring image, or only its first HEADER_SIZE bytes with the file's size in `file_size`.
    """
    size = len(buf) if file_size is None else file_size
    if len(buf) < HEADER_SIZE or size < HEADER_SIZE:
        size = min(size, len(buf))
        raise RingFormatError(f"truncated: {size} bytes, a ring header needs {HEADER_SIZE}", path)
    raw = np.frombuffer(buf, dtype=HEADER_DTYPE, count=1).copy()[0]
    header = RingHeader(
        write_pos=int(raw["write_pos"]),
        read_pos=int(raw["read_pos"]),
        version=int(raw["version"]),
        expected_version=int(raw["expected_version"]),
        capacity=int(raw["capacity"]),
        mask=int(raw["mask"]),
    )
    if header.version not in SUPPORTED_VERSIONS:
        raise RingFormatError(
            f"unknown telemetry format version {header.version} (supported: "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))})",
            path,
        )
    cap = header.capacity
    if cap < 2 or cap & (cap - 1):
        raise RingFormatError(f"capacity {cap} is not a power of two >= 2", path)
    if header.mask != cap - 1:
        raise RingFormatError(f"mask {header.mask} does not match capacity {cap} (expected {cap - 1})", path)
    if header.write_pos >= cap or header.read_pos >= cap:
        raise RingFormatError(
            f"positions out of range: write_pos {header.write_pos}, read_pos {header.read_pos}, "
            f"capacity {cap}",
            path,
        )
    if size < header.total_size:
        raise RingFormatError(
            f"truncated: {size} bytes, header says {header.total_size} "
            f"({HEADER_SIZE} + {cap} x {header.event_size}-byte v{header.version} events)",
            path,
        )
    return header


# --------------------------------------------------------------------------- raw events


@dataclass(frozen=True, slots=True)
class RawEvents:
    """Decoded events in ring order: type ids (v2+ numbering, 255 unknown), values, v1 timestamps."""

    types: npt.NDArray[np.uint8]
    values: npt.NDArray[np.uint64]
    timestamps_us: npt.NDArray[np.uint64] | None = None  # v1 only

    def __len__(self) -> int:
        return int(self.types.shape[0])

    @staticmethod
    def empty(with_timestamps: bool = False) -> RawEvents:
        ts = np.zeros(0, dtype=np.uint64) if with_timestamps else None
        return RawEvents(np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=np.uint64), ts)

    def slice(self, start: int, stop: int | None = None) -> RawEvents:
        ts = None if self.timestamps_us is None else self.timestamps_us[start:stop]
        return RawEvents(self.types[start:stop], self.values[start:stop], ts)

    def concat(self, other: RawEvents) -> RawEvents:
        if len(self) == 0:
            return other
        if len(other) == 0:
            return self
        ts = None
        if self.timestamps_us is not None and other.timestamps_us is not None:
            ts = np.concatenate((self.timestamps_us, other.timestamps_us))
        return RawEvents(
            np.concatenate((self.types, other.types)), np.concatenate((self.values, other.values)), ts
        )


def _v1_type_ids(records: np.ndarray) -> npt.NDArray[np.uint8]:
    """Map v1 event names to v2+ ids once per distinct name (vectorised through np.unique)."""
    names, inverse = np.unique(records["name"], return_inverse=True)
    categories = records["category"]
    # A C string: whatever follows the first NUL is not part of the name.
    clean = [bytes(n).split(b"\0", 1)[0] for n in names]
    lookup = np.array([_V1_NAME_TO_ID.get(n, UNKNOWN_TYPE) for n in clean], dtype=np.uint8)
    ids = lookup[inverse.reshape(-1)]
    # Errors are named after the status (NIXL_ERR_*): keep them as one error class.
    unknown_error = (ids == UNKNOWN_TYPE) & (categories == _V1_ERROR_CATEGORY)
    ids[unknown_error] = FIRST_ERROR + 7  # agent_err_unknown: the specific status stays unknown
    for i, raw_name in enumerate(clean):
        text = raw_name.decode("ascii", "replace")
        if text.startswith("NIXL_ERR_"):
            specific = "agent_err_" + text.removeprefix("NIXL_ERR_").lower()
            if specific in _COMMON_NAMES:
                ids[(inverse.reshape(-1) == i)] = _COMMON_NAMES.index(specific)
    return ids


def _records_to_events(records: np.ndarray, version: int) -> RawEvents:
    if version == 1:
        return RawEvents(_v1_type_ids(records), records["value"].copy(), records["timestamp_us"].copy())
    types = records["event_type"].copy()
    if version != 4:
        # id 20 means "events dropped" only in v4; elsewhere it is not a transfer event.
        types[types == EVENTS_DROPPED] = UNKNOWN_TYPE
    types[types > EVENTS_DROPPED] = UNKNOWN_TYPE
    return RawEvents(types, records["value"].copy())


def slot_spans(header: RingHeader, start: int, count: int) -> list[tuple[int, int]]:
    """The (first slot, slots) runs holding `count` events from slot `start` on: one, or two on a wrap."""
    if count <= 0:
        return []
    if count > header.capacity:
        raise ValueError(f"cannot read {count} events from a ring of {header.capacity}")
    start &= header.mask
    first = min(count, header.capacity - start)
    return [(start, first)] + ([(0, count - first)] if count > first else [])


def events_from_records(records: np.ndarray, version: int) -> RawEvents:
    """Events from event slots already copied out of the ring (a structured array of EVENT_DTYPES)."""
    if records.shape[0] == 0:
        return RawEvents.empty(version == 1)
    return _records_to_events(records, version)


def ring_records(buf: bytes | bytearray | memoryview, header: RingHeader) -> np.ndarray:
    """All `capacity` event slots as a structured array viewing `buf` (no copy)."""
    return np.frombuffer(buf, dtype=EVENT_DTYPES[header.version], count=header.capacity, offset=HEADER_SIZE)


def read_events(buf: bytes | bytearray | memoryview, header: RingHeader, start: int, count: int) -> RawEvents:
    """`count` events from slot `start` on, following the wrap-around; vectorised (two slices)."""
    spans = slot_spans(header, start, count)
    if not spans:
        return RawEvents.empty(header.version == 1)
    records = ring_records(buf, header)
    parts = [records[slot : slot + n] for slot, n in spans]
    return _records_to_events(parts[0] if len(parts) == 1 else np.concatenate(parts), header.version)


# --------------------------------------------------------------------------- grouping into transfers


@dataclass(frozen=True, slots=True)
class TransferColumns:
    """Transfers in columns (cheap to build for millions of events); `to_transfers` makes objects."""

    post_us: npt.NDArray[np.uint64]
    xfer_us: npt.NDArray[np.uint64]
    bytes: npt.NDArray[np.uint64]
    requests: npt.NDArray[np.uint64]
    is_read: npt.NDArray[np.bool_]  # rx (READ initiated here) vs tx (WRITE)
    timestamps_us: npt.NDArray[np.uint64] | None = None  # v1: stamp of the xfer_time event

    def __len__(self) -> int:
        return int(self.post_us.shape[0])

    def to_transfers(self, agent: str, read_time: float | None) -> list[NixlTransfer]:
        """Frozen records; v2+ rings have no timestamps, so the reader's time stamps them."""
        times: list[float | None]
        if self.timestamps_us is not None:
            times = [t / 1e6 for t in self.timestamps_us.tolist()]
        else:
            times = [read_time] * len(self)
        return self.records(agent, times)

    def records(self, agent: str, times: Sequence[float | None]) -> list[NixlTransfer]:
        return [
            NixlTransfer(
                time=t,
                post_seconds=p / 1e6,
                xfer_seconds=x / 1e6,
                bytes=b,
                requests=r,
                direction="read" if rd else "write",
                agent=agent,
            )
            for t, p, x, b, r, rd in zip(
                times,
                self.post_us.tolist(),
                self.xfer_us.tolist(),
                self.bytes.tolist(),
                self.requests.tolist(),
                self.is_read.tolist(),
                strict=True,
            )
        ]

    def timed(self, agent: str, read_time: float | None) -> TimedTransfers:
        """The columns with each transfer's time in seconds (v1: its stamp; v2+: `read_time`)."""
        if self.timestamps_us is not None:
            times = self.timestamps_us / 1e6
        else:
            times = np.full(len(self), np.nan if read_time is None else read_time, dtype=np.float64)
        return TimedTransfers(times, self, agent)


@dataclass(frozen=True, slots=True)
class TimedTransfers:
    """Transfers as arrays with their times (NaN: no time), for summaries without a Python object per
    transfer; `to_transfers` makes the objects where one is wanted (JSON lines, tests)."""

    times: npt.NDArray[np.float64]
    columns: TransferColumns
    agent: str = ""

    def __len__(self) -> int:
        return int(self.times.shape[0])

    @staticmethod
    def empty(agent: str = "") -> TimedTransfers:
        return _empty_columns(False).timed(agent, None)

    def select(self, keep: npt.NDArray[np.bool_] | npt.NDArray[np.intp]) -> TimedTransfers:
        """The transfers a boolean mask keeps, or those at the given positions, in that order."""
        c = self.columns
        ts = None if c.timestamps_us is None else c.timestamps_us[keep]
        columns = TransferColumns(
            c.post_us[keep], c.xfer_us[keep], c.bytes[keep], c.requests[keep], c.is_read[keep], ts
        )
        return TimedTransfers(self.times[keep], columns, self.agent)

    def to_transfers(self) -> list[NixlTransfer]:
        """The same records as `TransferColumns.to_transfers`, times taken from `times`."""
        times = [None if math.isnan(t) else t for t in self.times.tolist()]
        return self.columns.records(self.agent, times)


def concat_timed(parts: Sequence[TimedTransfers]) -> TimedTransfers:
    """One table of several (the agent of each transfer is not kept: summaries do not need it)."""
    if not parts:
        return TimedTransfers.empty()
    if len(parts) == 1:
        return parts[0]
    cols = [p.columns for p in parts]
    columns = TransferColumns(
        np.concatenate([c.post_us for c in cols]),
        np.concatenate([c.xfer_us for c in cols]),
        np.concatenate([c.bytes for c in cols]),
        np.concatenate([c.requests for c in cols]),
        np.concatenate([c.is_read for c in cols]),
        None,
    )
    return TimedTransfers(np.concatenate([p.times for p in parts]), columns, "")


@dataclass(frozen=True, slots=True)
class GroupedEvents:
    """What a batch of events meant: transfers, errors, registrations, losses, a held-back tail."""

    transfers: TransferColumns
    errors: dict[str, int] = field(default_factory=dict)  # event name -> count
    memory_registered_bytes: int = 0
    memory_deregistered_bytes: int = 0
    reported_dropped: int = 0  # v4 `agent_telemetry_events_dropped` values (staging-queue losses)
    incomplete_events: int = 0  # transfer events whose group was cut (their partners were lost)
    missing_events: int = 0  # partners those cut groups lack: events known to be lost
    unknown_events: int = 0
    tail: RawEvents = field(default_factory=RawEvents.empty)  # an unfinished group to prepend next time


def _empty_columns(with_timestamps: bool) -> TransferColumns:
    z = np.zeros(0, dtype=np.uint64)
    return TransferColumns(z, z, z, z, np.zeros(0, dtype=np.bool_), z if with_timestamps else None)


def group_events(events: RawEvents, hold_tail: bool) -> GroupedEvents:
    """Find the post/xfer/bytes/requests groups with shifted comparisons (no per-event loop).

    With `hold_tail`, a trailing prefix of a group (post; post+xfer; post+xfer+bytes) is returned
    as `tail` instead of being counted as lost: the writer may be between two pushes. Callers
    pass `hold_tail=False` once they know no more events will come (ring full, one-shot decode).
    """
    n = len(events)
    t = events.types
    v = events.values
    if n == 0:
        return GroupedEvents(_empty_columns(events.timestamps_us is not None), tail=events)

    tail_len = 0
    if hold_tail:
        for k in (3, 2, 1):
            if n >= k and _is_group_prefix(t[n - k :]):
                tail_len = k
                break
    body_n = n - tail_len
    tb = t[:body_n]

    starts = np.zeros(body_n, dtype=np.bool_)
    if body_n >= _GROUP_LEN:
        m = body_n - (_GROUP_LEN - 1)
        b2 = tb[2 : 2 + m]
        b3 = tb[3 : 3 + m]
        starts[:m] = (
            (tb[:m] == XFER_POST_TIME)
            & (tb[1 : 1 + m] == XFER_TIME)
            & ((b2 == TX_BYTES) | (b2 == RX_BYTES))
            & ((b3 == TX_REQUESTS) | (b3 == RX_REQUESTS))
            & ((b2 == RX_BYTES) == (b3 == RX_REQUESTS))
        )
    idx = np.flatnonzero(starts)
    # Overlapping matches are impossible: a group starts with post_time and holds none inside.
    in_group = np.zeros(body_n, dtype=np.bool_)
    for k in range(_GROUP_LEN):
        in_group[idx + k] = True

    ts = events.timestamps_us
    columns = TransferColumns(
        post_us=v[idx],
        xfer_us=v[idx + 1],
        bytes=v[idx + 2],
        requests=v[idx + 3],
        is_read=t[idx + 2] == RX_BYTES,
        timestamps_us=None if ts is None else ts[idx + 1],
    )

    rest_t = tb[~in_group]
    rest_v = v[:body_n][~in_group]
    errors: dict[str, int] = {}
    err_mask = (rest_t >= FIRST_ERROR) & (rest_t <= LAST_ERROR)
    if err_mask.any():
        ids, counts = np.unique(rest_t[err_mask], return_counts=True)
        errors = {_COMMON_NAMES[int(i)]: int(c) for i, c in zip(ids, counts, strict=True)}
    transfer_kinds = (
        (rest_t == XFER_POST_TIME)
        | (rest_t == XFER_TIME)
        | (rest_t == TX_BYTES)
        | (rest_t == RX_BYTES)
        | (rest_t == TX_REQUESTS)
        | (rest_t == RX_REQUESTS)
    )
    incomplete = int(transfer_kinds.sum())
    missing = _missing_partners(rest_t[transfer_kinds])
    return GroupedEvents(
        transfers=columns,
        errors=errors,
        memory_registered_bytes=int(rest_v[rest_t == MEMORY_REGISTERED].sum()),
        memory_deregistered_bytes=int(rest_v[rest_t == MEMORY_DEREGISTERED].sum()),
        reported_dropped=int(rest_v[rest_t == EVENTS_DROPPED].sum()),
        incomplete_events=incomplete,
        missing_events=missing,
        unknown_events=int((rest_t == UNKNOWN_TYPE).sum()),
        tail=events.slice(body_n),
    )


_GROUP_POSITION: Final[dict[int, int]] = {
    XFER_POST_TIME: 0,
    XFER_TIME: 1,
    TX_BYTES: 2,
    RX_BYTES: 2,
    TX_REQUESTS: 3,
    RX_REQUESTS: 3,
}


def _is_group_prefix(types: npt.NDArray[np.uint8]) -> bool:
    return all(_GROUP_POSITION.get(int(x), -1) == i for i, x in enumerate(types))


def _missing_partners(orphans: npt.NDArray[np.uint8]) -> int:
    """Lost events implied by cut groups: walk the (few) orphans as runs of group positions."""
    missing = 0
    expected = 0  # position the next event would have in the current partial run
    in_run = False
    for raw in orphans.tolist():
        pos = _GROUP_POSITION[raw]
        if in_run and pos == expected:
            expected += 1
            if expected == _GROUP_LEN:
                in_run = False
            continue
        if in_run:
            missing += _GROUP_LEN - expected
        missing += pos  # members before this one were lost
        expected = pos + 1
        in_run = expected < _GROUP_LEN
    if in_run:
        missing += _GROUP_LEN - expected
    return missing


# --------------------------------------------------------------------------- one-shot decode


@dataclass(frozen=True, slots=True)
class RingDecode:
    """A whole ring decoded at once (CLI, tests): the pending events from read_pos to write_pos."""

    header: RingHeader
    events: RawEvents
    grouped: GroupedEvents

    @property
    def dropped_events_known(self) -> int:
        """Events known lost: partners of cut groups and the staging-queue drops NIXL reported."""
        return self.grouped.missing_events + self.grouped.reported_dropped

    @property
    def unfinished_tail_events(self) -> int:
        """Trailing events of a group the writer may still be completing (ring not full)."""
        return len(self.grouped.tail)

    def event_names(self) -> Iterator[str]:
        names = EVENT_NAMES.get(self.header.version, _COMMON_NAMES)
        for raw in self.events.types.tolist():
            yield names[raw] if raw < len(names) else "unknown"

    def distinct_event_names(self) -> list[str]:
        """`sorted(set(self.event_names()))`, from the distinct type ids (no loop over the events)."""
        names = EVENT_NAMES.get(self.header.version, _COMMON_NAMES)
        return sorted({names[raw] if raw < len(names) else "unknown" for raw in np.unique(self.events.types).tolist()})


def decode_ring(buf: bytes | bytearray | memoryview, path: str = "") -> RingDecode:
    """Decode every pending event of a ring image.

    A trailing partial group counts as lost when the ring is full (NIXL dropped its partners);
    otherwise it is reported as an unfinished tail (the writer may be between two pushes).
    """
    header = parse_header(buf, path)
    events = read_events(buf, header, header.read_pos, header.pending)
    grouped = group_events(events, hold_tail=not header.is_full)
    return RingDecode(header, events, grouped)


RingMode = Literal["consume", "readonly"]
