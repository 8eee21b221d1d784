"""Pure helpers for the end-to-end assertions: read the recorded run, compute the client's truth.

No I/O beyond the loaders at the bottom, no clock. The client's ground truth is per request
(`loadgen.RequestRecord` as JSON lines); the sidecar's output is what its `/metrics` exposed at
known instants (recorded as NNNN.prom with `# scrape_time`). This module turns both into numbers
that can be compared, with the tolerances explained where they are computed.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Scrape:
    """One recorded exposition: its time and its samples keyed by (name, sorted labels)."""

    t: float
    samples: dict[tuple[str, Labels], float]

    def values(self, name: str, **match: str) -> list[tuple[dict[str, str], float]]:
        out = []
        for (n, labels), v in self.samples.items():
            if n != name:
                continue
            d = dict(labels)
            if all(d.get(k) == want for k, want in match.items()):
                out.append((d, v))
        return out

    def value(self, name: str, **match: str) -> float | None:
        """The one sample of name matching the labels given, summed if several match."""
        found = self.values(name, **match)
        if not found:
            return None
        return sum(v for _, v in found)

    def names(self) -> set[str]:
        return {n for n, _ in self.samples}


def parse_exposition(text: str) -> Scrape:
    """Parse a recorded scrape (`# scrape_time <unix>` first) into a Scrape. Bad lines raise."""
    t = math.nan
    samples: dict[tuple[str, Labels], float] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if line.startswith("# scrape_time "):
                t = float(line.split()[2])
            continue
        m = _SAMPLE_RE.match(line)
        if m is None:
            raise ValueError(f"line {lineno}: not an exposition sample: {line[:120]!r}")
        labels = tuple(sorted(_LABEL_RE.findall(m.group(3) or "")))
        samples[(m.group(1), labels)] = float(m.group(4))
    if math.isnan(t):
        raise ValueError("no '# scrape_time' line")
    return Scrape(t, samples)


@dataclass(frozen=True, slots=True)
class Request:
    id: str
    phase: str
    start: float
    end: float
    ttft: float | None
    tpot: float | None
    output_tokens: int
    ok: bool
    # The engine stamps a request earlier than the client sees it (HTTP, the API server's event
    # loop, detokenization, the client's own loop). check.py measures that front-end overhead per
    # phase from the engine's own histogram sums and widens each request by it: the engine-side
    # TTFT may be as low as ttft_low, the engine-side finish as early as end_early.
    ttft_low: float | None = None
    end_early: float | None = None
    # vLLM's per-request timings (engine-core durations, see loadgen.RequestRecord), when present.
    engine_queue_s: float | None = None
    engine_ttft_s: float | None = None
    engine_generation_s: float | None = None
    # P/D only: the prefill step's duration and the decode server's first token, client side
    prefill_seconds: float | None = None
    decode_ttft: float | None = None

    @property
    def engine_ttft_floor(self) -> float | None:
        """The least TTFT the engine's histogram can hold for this request: queue + prefill, both
        timed inside the engine core, where the histogram's interval (front-end arrival to the
        front end's handling of the first token) strictly contains them."""
        if self.engine_queue_s is None or self.engine_ttft_s is None:
            return None
        return self.engine_queue_s + self.engine_ttft_s

    @property
    def engine_end_floor(self) -> float | None:
        """The earliest instant the engine can have stamped this request finished: the client's
        start plus queue, prefill and decode as the engine core timed them."""
        floor = self.engine_ttft_floor
        if floor is None or self.engine_generation_s is None:
            return None
        return self.start + floor + self.engine_generation_s

    @property
    def first_token_at(self) -> float | None:
        return None if self.ttft is None else self.start + self.ttft


@dataclass(frozen=True, slots=True)
class PhaseSpan:
    name: str
    start: float
    end: float
    # how late the load client's own event loop woke during the phase (loadgen.LoopLag)
    loop_lag_p99_s: float | None = None
    loop_lag_max_s: float | None = None


def parse_ground_truth(lines: Iterable[str]) -> tuple[list[Request], list[PhaseSpan]]:
    requests: list[Request] = []
    starts: dict[str, float] = {}
    phases: list[PhaseSpan] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"ground truth line {lineno}: {exc}") from exc
        kind = d.get("kind")
        if kind == "request":
            requests.append(
                Request(
                    d["id"],
                    d["phase"],
                    d["start"],
                    d["end"],
                    d.get("ttft"),
                    d.get("tpot"),
                    int(d.get("output_tokens") or 0),
                    d.get("outcome") == "ok",
                    engine_queue_s=d.get("engine_queue_s"),
                    engine_ttft_s=d.get("engine_ttft_s"),
                    engine_generation_s=d.get("engine_generation_s"),
                    prefill_seconds=d.get("prefill_seconds"),
                    decode_ttft=d.get("decode_ttft"),
                )
            )
        elif kind == "phase_start":
            starts[d["phase"]] = d["t"]
        elif kind == "phase_end":
            phases.append(
                PhaseSpan(
                    d["phase"],
                    starts.pop(d["phase"], d["t"]),
                    d["t"],
                    d.get("loop_lag_p99_s"),
                    d.get("loop_lag_max_s"),
                )
            )
    return requests, phases


def is_good(r: Request, slo_ttft: float, slo_itl: float, slack: float = 0.0, engine_side: bool = False) -> bool:
    """vLLM benchmark definition: completed, TTFT and TPOT both within their SLO (plus slack).

    A one-token request has no TPOT; it counts as meeting the TPOT SLO, as in vLLM's benchmark.
    engine_side: judge the lowest TTFT the engine may have stamped (ttft_low) instead of the client's.
    """
    ttft = r.ttft_low if engine_side and r.ttft_low is not None else r.ttft
    if not r.ok or ttft is None:
        return False
    if ttft > slo_ttft + slack:
        return False
    return r.tpot is None or r.tpot <= slo_itl + slack


@dataclass(frozen=True, slots=True)
class GoodputRange:
    """The client's goodput over a window, as a range that absorbs what cannot be pinned down."""

    point: float  # exact window (end - W, end], strict SLOs
    low: float
    high: float
    requests: int  # completed in the exact window


def client_goodput(
    requests: Sequence[Request],
    end: float,
    window: float,
    interval: float,
    slo_ttft: float,
    slo_itl: float,
    classify_slack: float,
    min_span: float | None = None,
) -> GoodputRange:
    """Client goodput in the window ending at `end`, and the range the sidecar may legitimately show.

    Tolerances, each from something the sidecar cannot know better:
    - window edges: the sidecar's newest engine scrape is up to one interval older than the
      moment its /metrics was read, and a rate over samples spans between W - interval and W.
      So the window end ranges over [end - interval, end]. The rate divides the samples' increase
      by their span, from the first scrape after the window start to the newest: between
      `min_span` (default W - interval; W - interval - the longest scrape when scrapes run late)
      and W. Both the counted span and the divisor range over that.
    - classification and timing: the engine stamps TTFT, TPOT and the finish inside the server,
      the client later (HTTP, detokenization, event loops under load). `high` counts a request
      that may be good for the engine (its ttft_low, plus `classify_slack`) and may have finished
      inside the window (anywhere in [end_early, end]); `low` only one surely good and surely inside.
    """
    if window <= interval:
        raise ValueError("window must be longer than the interval")

    def surely(lo: float, hi: float) -> int:
        return sum(
            1 for r in requests
            if lo < (r.end if r.end_early is None else r.end_early) and r.end <= hi
            and is_good(r, slo_ttft, slo_itl)
        )  # fmt: skip

    def possibly(lo: float, hi: float) -> int:
        return sum(
            1 for r in requests
            if lo < r.end and (r.end if r.end_early is None else r.end_early) <= hi
            and is_good(r, slo_ttft, slo_itl, classify_slack, engine_side=True)
        )  # fmt: skip

    point = sum(1 for r in requests if end - window < r.end <= end and is_good(r, slo_ttft, slo_itl)) / window
    shortest = window - interval if min_span is None else min_span
    if not 0 < shortest <= window:
        raise ValueError("min_span must lie in (0, window]")
    lows, highs = [], []
    steps = max(2, int(interval / 0.1) + 1)
    spans = [shortest + (window - shortest) * k / 3 for k in range(4)]
    for i in range(steps):
        e = end - interval * i / (steps - 1)
        for w in spans:
            lows.append(surely(e - w, e) / w)
            highs.append(possibly(e - w, e) / w)
    n = sum(1 for r in requests if end - window < r.end <= end)
    return GoodputRange(point, min(lows), max(highs), n)


def empirical_quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile with linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} outside [0, 1]")
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def bucket_of(value: float, bounds: Sequence[float]) -> tuple[float, float]:
    """The histogram bucket (lower, upper] that holds value; bounds are the finite `le` edges."""
    lower = 0.0
    for b in sorted(bounds):
        if value <= b:
            return lower, b
        lower = b
    return lower, math.inf


def same_bucket(a: float, b: float, bounds: Sequence[float], slack: float = 0.0) -> bool:
    """Whether b falls in the bucket holding a, its edges widened by slack on both sides.

    Edges are closed: an interpolated quantile can sit exactly on a bucket's upper edge.
    """
    lo, hi = bucket_of(a, bounds)
    return lo - slack <= b <= hi + slack


def load_scrapes(folder: Path) -> list[Scrape]:
    return [parse_exposition(p.read_text()) for p in sorted(folder.glob("*.prom"))]


def load_ground_truth(path: Path) -> tuple[list[Request], list[PhaseSpan]]:
    with path.open() as f:
        return parse_ground_truth(f)


def load_jsonl(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    out: list[dict[str, object]] = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
    return out


def signals_to_scrapes(records: Iterable[dict[str, object]]) -> list[Scrape]:
    """The sidecar's /signals snapshots (recorded by e2e/recorder.py) as Scrapes stamped with the
    sidecar's own tick time (`ts`), not the time they were polled: the window the sidecar computed
    ends at its tick, which can be up to an interval before the poll."""
    out: list[Scrape] = []
    for rec in records:
        body = rec.get("signals")
        if not isinstance(body, dict) or not isinstance(body.get("series"), list):
            continue
        ts = body.get("ts", rec.get("t"))
        if not isinstance(ts, (int, float)):
            continue
        samples: dict[tuple[str, Labels], float] = {}
        for item in body["series"]:
            if isinstance(item, dict) and isinstance(item.get("value"), (int, float)):
                labels = item.get("labels") or {}
                key = (str(item["name"]), tuple(sorted((str(k), str(v)) for k, v in labels.items())))
                samples[key] = float(item["value"])
        if out and out[-1].t == float(ts):
            continue  # polled twice within one tick
        out.append(Scrape(float(ts), samples))
    return out
