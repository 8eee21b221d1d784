"""A read-only view of a `TargetWindow` at the analyzers' horizon, memoizing repeated queries.

The pipeline may keep a window longer than `settings.window_seconds` (other analyzers need more
history); every signal here is defined over `settings.window_seconds`, so the view binds that
horizon to each query. One view lives for one analysis call, so memoizing is safe.
"""

from __future__ import annotations

from collections.abc import Mapping

from phaselens.analyzers.window import Group, HistogramDelta, MatchKey, TargetWindow, match_key
from phaselens.model import EngineSnapshot


class WindowView:
    def __init__(self, window: TargetWindow, horizon_seconds: float) -> None:
        if horizon_seconds <= 0:
            raise ValueError("analysis horizon must be positive")
        self.window = window
        self.horizon = horizon_seconds
        self._deltas: dict[tuple[str, Group], HistogramDelta | None] = {}
        self._increases: dict[tuple[str, Group, MatchKey], float | None] = {}

    @property
    def latest(self) -> EngineSnapshot | None:
        return self.window.latest

    def groups(self) -> list[Group]:
        return self.window.groups()

    def has(self, name: str, group: Group) -> bool:
        return self.window.has(name, group)

    def info(self, engine: str) -> Mapping[str, str]:
        return self.window.info(engine)

    def gauge(self, name: str, group: Group, match: Mapping[str, str] | None = None) -> float | None:
        return self.window.gauge(name, group, match)

    def gauge_series(
        self, name: str, group: Group, match: Mapping[str, str] | None = None
    ) -> list[tuple[float, float]]:
        return self.window.gauge_series(name, group, self.horizon, match)

    def gauge_series_values(
        self, name: str, group: Group, match: Mapping[str, str] | None = None
    ) -> list[tuple[float, tuple[float, ...]]]:
        return self.window.gauge_series_values(name, group, self.horizon, match)

    def span(self) -> float:
        return self.window.span(self.horizon)

    def increase(self, name: str, group: Group, match: Mapping[str, str] | None = None) -> float | None:
        key = (name, group, match_key(match))
        if key not in self._increases:
            self._increases[key] = self.window.increase(name, group, match, self.horizon)
        return self._increases[key]

    def rate(self, name: str, group: Group, match: Mapping[str, str] | None = None) -> float | None:
        seconds = self.span()
        if seconds <= 0:
            return None
        inc = self.increase(name, group, match)
        return None if inc is None else inc / seconds

    def histogram_delta(self, name: str, group: Group) -> HistogramDelta | None:
        key = (name, group)
        if key not in self._deltas:
            self._deltas[key] = self.window.histogram_delta(name, group, self.horizon)
        return self._deltas[key]
