"""Inputs beside the scrapes: NIXL telemetry rings and engine logs, held for the window.

Live (`run`), the ring folder and the log files are polled every tick; ring transfers from
format v2+ carry no timestamp, so the reader stamps them with the poll time. Offline (`replay`),
log lines are released by their own timestamps as the replay clock passes them; ring files are
the end state of a run and v2+ events have no time, so untimed ring transfers cannot be placed
on the replay clock and are left out (said once in the log; `phaselens nixl-telemetry` reads
them whole).
"""

from __future__ import annotations

import logging
import time as _time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from phaselens.analyzers.nixl import analyze_nixl
from phaselens.analyzers.window import TargetWindow
from phaselens.logs import get_logger, log_event
from phaselens.model import LogEvent, NixlRingError, Recommendation, Signal, Target
from phaselens.parsers.logs import parse_lines
from phaselens.parsers.nixl_ring import TimedTransfers, concat_timed
from phaselens.settings import Settings
from phaselens.sources.log_follow import FileFollower, LineSource, StreamFollower, read_lines
from phaselens.sources.nixl_dir import NixlTelemetryDir
from phaselens.sources.recording import split_role

_log = get_logger("inputs")


def _year(now: float) -> int:
    return _time.gmtime(now).tm_year


@dataclass
class SideInputs:
    """Recent ring transfers, ring errors and log events, trimmed to the analysis window."""

    settings: Settings
    replay: bool = False
    transfers: TimedTransfers = field(default_factory=TimedTransfers.empty)  # arrays: no object per transfer
    ring_errors: deque[NixlRingError] = field(default_factory=deque)
    log_events: deque[LogEvent] = field(default_factory=deque)
    _ring_dir: NixlTelemetryDir | None = None
    _followers: list[tuple[str, LineSource]] = field(default_factory=list)
    _pending_logs: list[LogEvent] | None = None
    _reported: set[str] = field(default_factory=set)
    _rings_read: bool = False
    _gone: set[str] = field(default_factory=set)  # followed logs that are missing now

    def __post_init__(self) -> None:
        if self.settings.nixl_telemetry_dir:
            mode = "readonly" if self.replay else self.settings.nixl_ring_mode
            self._ring_dir = NixlTelemetryDir(self.settings.nixl_telemetry_dir, mode=mode)
        if not self.replay:
            self._followers = [(path, _follower(path)) for path in (split_role(a)[1] for a in self.settings.log_files)]

    def _once(self, event: str, **fields: object) -> None:
        key = event + repr(sorted(fields.items()))
        if key not in self._reported:
            self._reported.add(key)
            log_event(_log, event, logging.WARNING, **fields)

    def poll(self, now: float) -> None:
        self._poll_rings(now)
        self._poll_logs(now)
        horizon = now - max(self.settings.window_seconds, 1.0) * 2
        if len(self.transfers) and not self.transfers.times[0] >= horizon:
            self.transfers = self.transfers.select(~(self.transfers.times < horizon))  # NaN (no time): kept
        for queue in (self.ring_errors, self.log_events):
            while queue and (queue[0].time or now) < horizon:
                queue.popleft()

    def _poll_rings(self, now: float) -> None:
        if self._ring_dir is None:
            return
        if self.replay and self._rings_read:
            return  # a recorded ring is the end state of the run: read it once
        poll = self._ring_dir.poll(now)
        for path, reason in poll.problems.items():
            self._once("nixl_ring_unreadable", path=path, reason=reason)
        if self.replay:
            self._rings_read = True
            # Only format v1 events carry their own time; v2+ transfers were stamped with this read.
            timed = [ring.batch for ring in poll.rings if ring.header.version == 1]
            untimed = sum(len(ring.batch) for ring in poll.rings if ring.header.version != 1)
            if untimed:
                self._once(
                    "nixl_ring_untimed_in_replay",
                    transfers=untimed,
                    note="ring format v2+ has no timestamps; use phaselens nixl-telemetry to read them",
                )
            batch = concat_timed(timed)
            batch = batch.select(~np.isnan(batch.times))
            self.transfers = batch.select(np.argsort(batch.times, kind="stable"))
            return
        batch = poll.batch
        if not self._rings_read:
            self._rings_read = True
            # The first read finds what the rings held before this sidecar started (since the
            # engine started, or since the previous sidecar's last read). Format v2+ events have
            # no time, so that backlog would all land in the current window as if it had just
            # happened (seen live: a slow warm-up transfer gave a TTFT share of 1.0 at idle).
            timed = batch.select(batch.times < now)
            if len(timed) < len(batch):
                skipped = len(batch) - len(timed)
                log_event(_log, "nixl_ring_backlog_skipped", logging.INFO, transfers=skipped)
            batch = timed
        if len(batch):
            self.transfers = concat_timed([self.transfers, batch]) if len(self.transfers) else batch
        self.ring_errors.extend(poll.errors)

    def _poll_logs(self, now: float) -> None:
        if self.replay:
            if self._pending_logs is None:
                events: list[LogEvent] = []
                for path in (split_role(arg)[1] for arg in self.settings.log_files):
                    try:
                        events.extend(parse_lines(read_lines(path), year=_year(now), source=path).events)
                    except OSError as exc:
                        self._once("log_unreadable", path=path, reason=str(exc))
                self._pending_logs = sorted((e for e in events if e.time is not None), key=lambda e: e.time or 0)
                self._pending_logs.reverse()  # pop() from the end releases the oldest first
            while self._pending_logs and (self._pending_logs[-1].time or 0) <= now:
                self.log_events.append(self._pending_logs.pop())
            return
        for path, follower in self._followers:
            lines = follower.poll()
            self._note_presence(path, follower.gone)
            if lines:
                parsed = parse_lines(lines, year=_year(now), source=path)
                self.log_events.extend(
                    e if e.time is not None else LogEvent(e.kind, now, e.fields, e.source) for e in parsed.events
                )

    def _note_presence(self, path: str, gone: bool) -> None:
        """`log_file_gone` when a followed file disappears (or a stream ends), `log_file_back` when it returns."""
        if gone == (path in self._gone):
            return
        if gone:
            self._gone.add(path)
            reason = "the stream ended" if path == "-" else "no file at this path"
            action = "following the path; no log lines until it is back"
            log_event(_log, "log_file_gone", logging.WARNING, path=path, reason=reason, action=action)
        else:
            self._gone.discard(path)
            log_event(_log, "log_file_back", path=path)

    def close(self) -> None:
        if self._ring_dir is not None:
            self._ring_dir.close()
        for _, follower in self._followers:
            follower.close()


def _follower(path: str) -> LineSource:
    """`-` follows standard input (an engine piped into the sidecar); anything else is a file."""
    return StreamFollower(0) if path == "-" else FileFollower(path)


def _decode_side(fresh: Mapping[str, tuple[Target, TargetWindow]]) -> tuple[Target, TargetWindow] | None:
    """The target whose engine pulls KV (the decode role), or the only engine target there is."""
    engines = [(t, w) for t, w in fresh.values() if w.latest is not None and w.latest.engine_kind != "nixl"]
    decode = [pair for pair in engines if pair[0].role == "decode"]
    if decode:
        return decode[0]
    return engines[0] if len(engines) == 1 else None


def _exporter_window(fresh: Mapping[str, tuple[Target, TargetWindow]]) -> TargetWindow | None:
    for _, window in fresh.values():
        if window.latest is not None and window.latest.engine_kind == "nixl":
            return window
    return None


class NixlStage:
    """Pipeline stage: KV-transfer signals from the best source there is (metrics, NIXL exporter,
    rings, logs), attributed to the decode-side target."""

    def __init__(self, settings: Settings, replay: bool = False) -> None:
        self.inputs = SideInputs(settings, replay=replay)
        self.settings = settings

    def __call__(
        self, now: float, fresh: Mapping[str, tuple[Target, TargetWindow]]
    ) -> tuple[Sequence[Signal], Sequence[Recommendation]]:
        self.inputs.poll(now)
        side = _decode_side(fresh)
        if side is None:
            return [], []
        engine_windows = []
        for other, other_window in fresh.values():
            latest = other_window.latest
            # SGLang records transfers on the prefill side: every engine target is read (a target
            # without the engine transfer series gives nothing).
            if latest is not None and latest.engine_kind not in ("nixl", "vllm", "unknown"):
                other_groups = other_window.groups()
                other_model, other_engine = other_groups[0] if other_groups else ("", "0")
                labels = {"target": other.name, "role": other.role, "model_name": other_model, "engine": other_engine}
                engine_windows.append((labels, latest.engine_kind, other_window))
        target, window = side
        groups = window.groups()
        model, engine = groups[0] if groups else ("", "0")
        base = {"target": target.name, "role": target.role, "model_name": model, "engine": engine}
        return analyze_nixl(
            window,
            self.inputs.transfers,
            list(self.inputs.log_events),
            now,
            self.settings,
            base,
            exporter_window=_exporter_window(fresh),
            ring_errors=list(self.inputs.ring_errors),
            engine_windows=engine_windows,
        )

    def close(self) -> None:
        self.inputs.close()
