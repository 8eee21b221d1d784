"""Raw engine counters read straight from a recording, for exact episode totals.

Windowed rates smear a burst over the window, so integrating them undercounts what happened in
an episode; the engine's own cumulative counter, reset-adjusted, gives the exact number.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from phaselens.parsers.engines import to_snapshot
from phaselens.parsers.engines.canonical import PREEMPTIONS
from phaselens.parsers.exposition import parse_exposition
from phaselens.sources.recording import load_all


def cumulative_counter(paths: Sequence[str], name: str = PREEMPTIONS) -> dict[str, pd.Series]:
    """target -> reset-adjusted cumulative value of a canonical counter (summed over engines),
    indexed by scrape wall time."""
    out: dict[str, pd.Series] = {}
    for source in load_all(paths):
        times: list[float] = []
        values: list[float] = []
        total = 0.0
        previous: float | None = None
        for scrape in source.scrapes:
            snapshot = to_snapshot(parse_exposition(scrape.load()), scrape.time)
            found = [v for (n, _), v in snapshot.scalars.items() if n == name]
            if not found:
                continue
            current = sum(found)
            if previous is not None:
                total += current - previous if current >= previous else current
            previous = current
            times.append(scrape.time)
            values.append(total)
        if times:
            out[source.name] = pd.Series(values, index=times, dtype=float)
    return out


def increase_between(series: pd.Series, start: float, end: float) -> float | None:
    """Counter increase from the last sample at or before `start` to the last at or before `end`."""
    before = series[series.index <= start]
    upto = series[series.index <= end]
    if upto.empty:
        return None
    base = float(before.iloc[-1]) if not before.empty else float(series.iloc[0])
    return float(upto.iloc[-1]) - base
