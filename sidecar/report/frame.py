"""Tick results -> one long pandas frame (one row per signal value per tick)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from phaselens.model import Recommendation, TickResult

LABEL_COLUMNS = ("target", "role", "model_name", "engine")
SELF_SIGNALS = frozenset(
    {
        "phaselens_target_up",
        "phaselens_scrape_duration_seconds",
        "phaselens_parse_errors_total",
        "phaselens_signal_age_seconds",
        "phaselens_tick_duration_seconds",
    }
)


@dataclass(frozen=True)
class RunData:
    """A replayed run: the long signal frame and every recommendation with its tick time."""

    name: str
    signals: pd.DataFrame  # columns: ts, t, name, target, role, model_name, engine, extra, value
    recommendations: tuple[tuple[float, Recommendation], ...]
    start: float
    end: float
    preemptions: Mapping[str, pd.Series] = field(default_factory=dict)  # target -> cumulative count

    tick_times: tuple[float, ...] = ()  # seconds from the start, one per tick

    @property
    def targets(self) -> list[tuple[str, str]]:
        """Targets with engine data (self-metrics alone, e.g. an engine never up, do not count)."""
        frame = self.signals
        if frame.empty:
            return []
        frame = frame[~frame["name"].isin(SELF_SIGNALS)]
        pairs = frame[["target", "role"]].drop_duplicates()
        pairs = pairs[(pairs["target"] != "") & (pairs["target"] != "pool")]
        return sorted((str(t), str(r)) for t, r in pairs.itertuples(index=False))

    def series(self, name: str, target: str | None = None, **extra: str) -> pd.Series:
        """Values of one signal over time (indexed by seconds from the start), summed over engines."""
        frame = self.signals
        mask = frame["name"] == name
        if target is not None:
            mask &= frame["target"] == target
        for key, value in extra.items():
            mask &= frame["extra"].map(lambda labels, k=key, v=value: labels.get(k) == v)
        picked = frame[mask]
        if picked.empty:
            return pd.Series(dtype=float)
        return picked.groupby("t")["value"].max().sort_index()


def build_run(name: str, ticks: Iterable[TickResult]) -> RunData:
    rows: list[dict[str, Any]] = []
    recs: list[tuple[float, Recommendation]] = []
    times: list[float] = []
    for tick in ticks:
        times.append(tick.time)
        for signal in tick.signals:
            labels = dict(signal.labels)
            row: dict[str, Any] = {"ts": tick.time, "name": signal.name, "value": signal.value}
            for column in LABEL_COLUMNS:
                row[column] = labels.pop(column, "")
            row["extra"] = labels
            rows.append(row)
        recs.extend((tick.time, rec) for rec in tick.recommendations)
    if not times:
        raise ValueError(f"{name}: the recording produced no ticks")
    start = min(times)
    frame = pd.DataFrame(rows, columns=["ts", "name", *LABEL_COLUMNS, "extra", "value"])
    frame["t"] = frame["ts"] - start
    return RunData(
        name=name,
        signals=frame,
        recommendations=tuple(recs),
        start=start,
        end=max(times),
        tick_times=tuple(t - start for t in times),
    )


def extra_matches(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())


def ticks_from_jsonl(lines: Sequence[Mapping[str, Any]]) -> list[TickResult]:
    """Rebuild TickResults from `phaselens replay --jsonl` objects (for reports on saved output)."""
    from phaselens.model import Signal, make_labels

    out: list[TickResult] = []
    for obj in lines:
        signals = tuple(
            Signal(s["name"], make_labels(s.get("labels", {})), float(s["value"])) for s in obj.get("signals", [])
        )
        recs = tuple(
            Recommendation(
                code=r["code"],
                severity=r.get("severity", "info"),
                message=r.get("message", ""),
                evidence=r.get("evidence", {}),
                confidence=float(r.get("confidence", 0.0)),
                target=r.get("target", ""),
                role=r.get("role", ""),
                cause=r.get("cause", ""),
                remedy=r.get("remedy", ""),
            )
            for r in obj.get("recommendations", [])
        )
        out.append(TickResult(time=float(obj["ts"]), signals=signals, recommendations=recs))
    return out
