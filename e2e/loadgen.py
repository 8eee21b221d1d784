"""Load client for the end-to-end runs: drives phases of load and records the ground truth.

Each request is streamed (`/v1/completions`, `stream: true`, usage in the last chunk) so the client
sees its own time to first token and time per output token. One JSON line per request goes to the
ground-truth file, plus one line per phase boundary. Closed-loop phases: `concurrency` workers each
send the next request as soon as the previous one ends, until the phase's time is up. Open-loop
phases (`@A-B` in place of the concurrency): Poisson arrivals whose rate moves linearly from A to B
requests per second over the phase, each request sent whatever is still in flight; production
traffic ramps like this, and it is what queueing predictions are judged on (a closed-loop step
puts every new request into the engine in the same instant, before any scrape can see it).

In P/D mode a request goes in two steps, as a P/D proxy does it: the prompt goes to the prefill
server with `max_tokens: 1` and `do_remote_decode`, then the same prompt goes, streamed, to the
decode server with the `kv_transfer_params` the prefill server answered. The client's TTFT spans
both steps (what a user behind the proxy sees).

Usage: python e2e/loadgen.py --url http://127.0.0.1:8011 --out gt.jsonl --phases steady:20:2:20-60:16-48 ...
Phase syntax: NAME:SECONDS:CONCURRENCY:PROMPT_WORDS_MIN-MAX:OUTPUT_TOKENS_MIN-MAX[:prefix]
              (OUTPUT_TOKENS_MIN~MAX: log-uniform output lengths, a heavy right tail)
              NAME:SECONDS:@RATE_START-RATE_END:...  (open loop, requests per second)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import SHARED_PREFIX, random_prompt

REMOTE_DECODE_PARAMS: dict[str, Any] = {
    "do_remote_decode": True,
    "do_remote_prefill": False,
    "remote_engine_id": None,
    "remote_block_ids": None,
    "remote_host": None,
    "remote_port": None,
}


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    seconds: float
    concurrency: int
    prompt_words: tuple[int, int]
    output_tokens: tuple[int, int]
    shared_prefix: bool = False
    rate: tuple[float, float] | None = None  # open loop: arrivals/s at the phase's start and end
    heavy_tail: bool = False  # output tokens log-uniform over the range (`A~B`) instead of uniform

    def draw_output_tokens(self, rng: random.Random) -> int:
        """Uniform over the range; `A~B`: log-uniform, a heavy right tail (median sqrt(A*B), mean ~B/ln(B/A))."""
        lo, hi = self.output_tokens
        if self.heavy_tail and lo >= 1 and hi > lo:
            return min(hi, int(math.exp(rng.uniform(math.log(lo), math.log(hi + 1)))))
        return rng.randint(lo, hi)

    def rate_at(self, elapsed: float) -> float:
        """Open-loop arrival rate `elapsed` seconds into the phase (linear ramp)."""
        if self.rate is None:
            return 0.0
        share = min(1.0, max(0.0, elapsed / self.seconds)) if self.seconds > 0 else 1.0
        return self.rate[0] + share * (self.rate[1] - self.rate[0])

    @classmethod
    def parse(cls, text: str) -> Phase:
        parts = text.split(":")
        if len(parts) not in (5, 6) or (len(parts) == 6 and parts[5] != "prefix"):
            raise ValueError(f"bad phase {text!r}: want NAME:SECONDS:CONCURRENCY:PMIN-PMAX:OMIN-OMAX[:prefix]")
        name, seconds, conc, pw, ot = parts[:5]

        def span(s: str) -> tuple[int, int]:
            lo, _, hi = s.replace("~", "-").partition("-")
            a, b = int(lo), int(hi or lo)
            if a < 0 or b < a:
                raise ValueError(f"bad range {s!r} in phase {text!r}")
            return a, b

        rate: tuple[float, float] | None = None
        if conc.startswith("@"):
            lo, _, hi = conc[1:].partition("-")
            rate = (float(lo), float(hi or lo))
            if min(rate) < 0 or max(rate) <= 0:
                raise ValueError(f"bad arrival rate {conc!r} in phase {text!r}")
            conc = "0"
        phase = cls(name, float(seconds), int(conc), span(pw), span(ot), len(parts) == 6, rate, "~" in ot)
        if phase.seconds < 0 or phase.concurrency < 0:
            raise ValueError(f"negative duration or concurrency in phase {text!r}")
        return phase


@dataclass(slots=True)
class RequestRecord:
    """Ground truth for one request, from the client's side. Times are unix seconds."""

    kind: str = "request"
    id: str = ""
    phase: str = ""
    start: float = 0.0
    end: float = 0.0
    ttft: float | None = None  # seconds from start to the first generated token
    tpot: float | None = None  # (end - first token) / (output_tokens - 1), as vLLM's benchmark
    itl_max: float | None = None  # longest gap between two streamed chunks
    prompt_tokens: int | None = None
    cached_tokens: int | None = None  # usage.prompt_tokens_details.cached_tokens, when the server says
    output_tokens: int = 0
    outcome: str = "ok"  # "ok" or "error: ..."
    prefill_seconds: float | None = None  # P/D only: the prefill step's duration
    decode_ttft: float | None = None  # P/D only: first token seen from the decode server
    prefix: bool = False
    # The engine's own timings of this request (vLLM --enable-per-request-metrics, final chunk):
    # queue wait, scheduled -> first token, first -> last token. Engine-core durations, so
    # engine_queue_s + engine_ttft_s is a lower bound of the TTFT the engine's histogram records
    # for this request (that one starts earlier, at arrival, and ends later, in the front end).
    engine_queue_s: float | None = None
    engine_ttft_s: float | None = None
    engine_generation_s: float | None = None
    chunk_times: list[float] = field(default_factory=list)

    def as_json(self) -> str:
        d = asdict(self)
        d.pop("chunk_times")
        return json.dumps(d, sort_keys=True)


def finish_timing(rec: RequestRecord, first_token: float | None, chunk_times: list[float]) -> None:
    """Fill ttft, tpot and itl_max from the arrival times of the streamed chunks."""
    if first_token is not None:
        rec.ttft = first_token - rec.start
        if rec.output_tokens > 1:
            rec.tpot = (rec.end - first_token) / (rec.output_tokens - 1)
    gaps = [b - a for a, b in itertools.pairwise(chunk_times)]
    rec.itl_max = max(gaps) if gaps else None


def record_engine_metrics(rec: RequestRecord, metrics: dict[str, Any]) -> None:
    """Copy vLLM's per-request timings (milliseconds) into the record, in seconds."""

    def seconds(key: str) -> float | None:
        v = metrics.get(key)
        return float(v) / 1000.0 if isinstance(v, (int, float)) else None

    rec.engine_queue_s = seconds("queue_time_ms")
    rec.engine_ttft_s = seconds("time_to_first_token_ms")
    rec.engine_generation_s = seconds("generation_time_ms")


class LoopLag:
    """How late the load client's own event loop wakes up: its contribution to measured latency.

    A task sleeps TICK_S at a time and records how much later than asked it woke. Under load the
    client parses every streamed chunk; if its loop is late, every TTFT it measures is late too.
    """

    TICK_S = 0.01

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(self.TICK_S)
            self.lags.append(max(0.0, time.monotonic() - t0 - self.TICK_S))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def take(self) -> dict[str, float]:
        """p50, p99 and max lag since the last take, in seconds."""
        xs, self.lags = sorted(self.lags), []
        if not xs:
            return {}
        return {
            "loop_lag_p50_s": xs[len(xs) // 2],
            "loop_lag_p99_s": xs[min(len(xs) - 1, int(0.99 * len(xs)))],
            "loop_lag_max_s": xs[-1],
        }

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def _stream_completion(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], rec: RequestRecord
) -> tuple[float | None, list[float]]:
    """POST a streamed completion; returns the first token's time and every chunk's time."""
    first: float | None = None
    times: list[float] = []
    async with session.post(f"{url}/v1/completions", json=body) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {(await resp.text())[:200]}")
        buf = b""
        async for chunk in resp.content.iter_any():
            buf += chunk
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                line = event.strip()
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    continue
                now = time.time()
                msg = json.loads(payload)
                metrics = msg.get("metrics")
                if isinstance(metrics, dict):
                    record_engine_metrics(rec, metrics)
                usage = msg.get("usage")
                if usage:
                    rec.prompt_tokens = usage.get("prompt_tokens")
                    rec.output_tokens = int(usage.get("completion_tokens") or 0)
                    details = usage.get("prompt_tokens_details")
                    if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
                        rec.cached_tokens = details["cached_tokens"]
                for choice in msg.get("choices") or []:
                    # Random weights can emit bytes that are not yet valid UTF-8: the chunk then
                    # has empty text but carries token ids, and it is still a token arriving.
                    if choice.get("text") or choice.get("token_ids"):
                        if first is None:
                            first = now
                        times.append(now)
    return first, times


async def one_request(
    session: aiohttp.ClientSession,
    url: str,
    prompt: str,
    max_tokens: int,
    rec: RequestRecord,
    prefill_url: str | None = None,
    token_ids: bool = True,
) -> RequestRecord:
    body: dict[str, Any] = {
        "model": "tiny",
        "prompt": prompt,
        "max_tokens": max_tokens,
        "min_tokens": max_tokens,
        "ignore_eos": True,  # random weights: fix the output length instead of waiting for EOS
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "return_token_ids": True,
    }
    if not token_ids:  # Dynamo's frontend rejects the vLLM-only `return_token_ids` (HTTP 400)
        del body["return_token_ids"]
    rec.start = time.time()
    try:
        if prefill_url is not None:
            pre = {
                "model": "tiny",
                "prompt": prompt,
                "max_tokens": 1,
                "temperature": 0.0,
                "kv_transfer_params": REMOTE_DECODE_PARAMS,
            }
            async with session.post(f"{prefill_url}/v1/completions", json=pre) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"prefill HTTP {resp.status}: {(await resp.text())[:200]}")
                answer = await resp.json()
            rec.prefill_seconds = time.time() - rec.start
            body["kv_transfer_params"] = answer.get("kv_transfer_params")
            if not body["kv_transfer_params"]:
                raise RuntimeError("prefill answer has no kv_transfer_params")
        decode_start = time.time()
        first, times = await _stream_completion(session, url, body, rec)
        rec.end = time.time()
        if prefill_url is not None and first is not None:
            rec.decode_ttft = first - decode_start
        finish_timing(rec, first, times)
        if first is None:
            rec.outcome = "error: no token streamed"
    except (TimeoutError, aiohttp.ClientError, RuntimeError, json.JSONDecodeError) as exc:
        rec.end = time.time()
        rec.outcome = f"error: {type(exc).__name__}: {str(exc)[:160]}"
    return rec


class GroundTruthWriter:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def event(self, kind: str, **fields: Any) -> None:
        self._stream.write(json.dumps({"kind": kind, "t": time.time(), **fields}, sort_keys=True) + "\n")
        self._stream.flush()

    def request(self, rec: RequestRecord) -> None:
        self._stream.write(rec.as_json() + "\n")
        self._stream.flush()


async def run_phase(
    session: aiohttp.ClientSession,
    url: str,
    phase: Phase,
    writer: GroundTruthWriter,
    rng: random.Random,
    counter: list[int],
    prefill_url: str | None = None,
    lag: LoopLag | None = None,
    token_ids: bool = True,
    carry: set[asyncio.Task[None]] | None = None,
) -> list[RequestRecord]:
    """Run one phase. With `carry` (open-loop phases), requests still in flight at the phase's end
    are left running in that set instead of awaited: the next phase's arrivals start on time, as
    they would in production, instead of after the queue drained."""
    if lag is not None:
        lag.take()
    writer.event("phase_start", phase=phase.name, concurrency=phase.concurrency, rate=phase.rate)
    began = time.monotonic()
    deadline = began + phase.seconds
    done: list[RequestRecord] = []

    async def send() -> None:
        counter[0] += 1
        n_words = rng.randint(*phase.prompt_words)
        prompt = random_prompt(rng, n_words, SHARED_PREFIX if phase.shared_prefix else "")
        rec = RequestRecord(id=f"r{counter[0]:05d}", phase=phase.name, prefix=phase.shared_prefix)
        await one_request(session, url, prompt, phase.draw_output_tokens(rng), rec, prefill_url, token_ids)
        writer.request(rec)
        done.append(rec)

    async def worker() -> None:
        while time.monotonic() < deadline:
            await send()

    async def arrivals() -> None:
        # Poisson process with a time-varying rate, by thinning (Lewis-Shedler): candidates at the
        # phase's peak rate, each kept with probability rate(t) / peak.
        assert phase.rate is not None
        peak = max(phase.rate)
        in_flight: set[asyncio.Task[None]] = carry if carry is not None else set()
        while True:
            # A gap that reaches past the deadline means no arrival before it: the phase ends at its
            # deadline, not after a sleep past it (at 2 requests/s that overshoot averaged 0.5 s and
            # once reached 4 s, so the next phase started late).
            gap = rng.expovariate(peak)
            if time.monotonic() + gap >= deadline:
                await asyncio.sleep(max(0.0, deadline - time.monotonic()))
                break
            await asyncio.sleep(gap)
            now = time.monotonic()
            if now >= deadline:
                break
            if rng.random() * peak <= phase.rate_at(now - began):
                task = asyncio.get_running_loop().create_task(send())
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        if in_flight and carry is None:
            await asyncio.gather(*in_flight)

    if phase.rate is not None:
        await arrivals()
    elif phase.concurrency == 0:
        await asyncio.sleep(phase.seconds)
    else:
        await asyncio.gather(*(worker() for _ in range(phase.concurrency)))
    writer.event("phase_end", phase=phase.name, requests=len(done), **(lag.take() if lag else {}))
    return done


async def run_phases(
    url: str,
    phases: list[Phase],
    out: Path,
    seed: int = 0,
    prefill_url: str | None = None,
    timeout_s: float = 600.0,
    token_ids: bool = True,
    carry_over: bool = False,
) -> list[RequestRecord]:
    rng = random.Random(seed)
    counter = [0]
    per_phase: list[list[RequestRecord]] = []
    carry: set[asyncio.Task[None]] | None = set() if carry_over else None
    # force_close: a reused keep-alive connection once ended in ServerDisconnected (REAL-ENGINE.md).
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    with out.open("a") as stream:
        writer = GroundTruthWriter(stream)
        lag = LoopLag()
        lag.start()
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                for phase in phases:
                    per_phase.append(
                        await run_phase(session, url, phase, writer, rng, counter, prefill_url, lag, token_ids, carry)
                    )
                if carry:
                    await asyncio.gather(*carry)
        finally:
            lag.stop()
    return [r for done in per_phase for r in done]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="engine base URL (the decode server in P/D mode)")
    ap.add_argument("--prefill-url", help="P/D mode: the prefill server's base URL")
    ap.add_argument("--out", required=True, type=Path, help="ground-truth JSON-lines file (appended)")
    ap.add_argument("--phases", required=True, nargs="+", type=Phase.parse)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-token-ids", action="store_true",
                    help="do not ask for return_token_ids (Dynamo's frontend rejects it with HTTP 400)")
    ap.add_argument(
        "--carry-over", action="store_true", help="open-loop phases do not wait for the previous phase's requests"
    )
    args = ap.parse_args(argv)
    recs = asyncio.run(
        run_phases(
            args.url.rstrip("/"),
            args.phases,
            args.out,
            args.seed,
            args.prefill_url,
            token_ids=not args.no_token_ids,
            carry_over=args.carry_over,
        )
    )
    errors = sum(1 for r in recs if r.outcome != "ok")
    print(f"loadgen: {len(recs)} requests, {errors} errors -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
