"""The one injected clock: wall time for timestamps, monotonic time for intervals."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def wall(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to: replay (scrape times) and tests."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._mono = 0.0

    def wall(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def set(self, wall: float) -> None:
        if wall > self._now:
            self._mono += wall - self._now
        self._now = wall

    def advance(self, seconds: float) -> None:
        self.set(self._now + seconds)
