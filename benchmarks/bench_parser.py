"""Benchmark: phaselens exposition parser vs prometheus_client's text parser.

Run on demand: `python benchmarks/bench_parser.py [--engines 64 --models 20 --repeat 5]`.

Payloads:
  (a) the real 59 KB vLLM 0.32 scrape `rec/0060.prom` from the aggregated capture (tests/fixtures);
  (b) a generated vLLM-shaped payload: ENGINES x MODELS label sets (`engine`, `model_name`), every
      vLLM histogram with its real bucket list (research vllm-metrics.md §2), rendered by a real
      prometheus_client registry (text 0.0.4, single-process: `_created` series included).

prometheus_client is timed consuming every family and sample. Our parser is timed cold (its label
caches emptied first: the first scrape of a target) and warm (caches kept: every later scrape of the
same target, which is the sidecar's steady state). Prints medians and ratios, and the whole tick on
(a): parse + `to_snapshot` + `TargetWindow.add`, what the pipeline does per target per second.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from phaselens.analyzers.window import TargetWindow
from phaselens.parsers import exposition, exposition_template
from phaselens.parsers.exposition import parse_exposition
from phaselens.pipeline import parse_payload
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Histogram as PromHistogram
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
AGGREGATED_TAR = ROOT / "tests" / "fixtures" / "vllm-0.32.0-cpu-aggregated" / "scrapes.tar.gz"

TTFT = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
        20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]  # fmt: skip
ITL = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
       40.0, 80.0]  # fmt: skip
REQ_LAT = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
           240.0, 480.0, 960.0, 1920.0, 7680.0]  # fmt: skip
ITER = [1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
N = [1, 2, 5, 10, 20]
TOK125 = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]  # build_1_2_5_buckets(8192)
KVRES = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600,
         1200, 1800]  # fmt: skip
NIXL_XFER = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 5.0]
NIXL_POST = [0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 5.0]
NIXL_BYTES = [float(2**k) for k in range(11, 34, 2)]
NIXL_DESC = [10, 20, 30, 50, 75, 100, 200, 400, 1000, 2000, 4000, 10000, 20000, 50000]

VLLM_HISTOGRAMS: dict[str, Sequence[float]] = {
    "vllm:iteration_tokens_total": ITER,
    "vllm:time_to_first_token_seconds": TTFT,
    "vllm:inter_token_latency_seconds": ITL,
    "vllm:request_time_per_output_token_seconds": ITL,
    "vllm:e2e_request_latency_seconds": REQ_LAT,
    "vllm:request_queue_time_seconds": REQ_LAT,
    "vllm:request_prefill_time_seconds": REQ_LAT,
    "vllm:request_decode_time_seconds": REQ_LAT,
    "vllm:request_inference_time_seconds": REQ_LAT,
    "vllm:request_prompt_tokens": TOK125,
    "vllm:request_generation_tokens": TOK125,
    "vllm:request_max_num_generation_tokens": TOK125,
    "vllm:request_params_max_tokens": TOK125,
    "vllm:request_prefill_kv_computed_tokens": TOK125,
    "vllm:request_params_n": N,
    "vllm:kv_block_lifetime_seconds": KVRES,
    "vllm:kv_block_idle_before_evict_seconds": KVRES,
    "vllm:kv_block_reuse_gap_seconds": KVRES,
    "vllm:nixl_xfer_time_seconds": NIXL_XFER,
    "vllm:nixl_post_time_seconds": NIXL_POST,
    "vllm:nixl_bytes_transferred": NIXL_BYTES,
    "vllm:nixl_num_descriptors": NIXL_DESC,
}


def real_scrape(name: str) -> str:
    with tarfile.open(AGGREGATED_TAR) as tar:
        member = tar.extractfile(name)
        assert member is not None
        return member.read().decode("utf-8")


def generated_payloads(engines: int, models: int, seed: int = 7) -> tuple[str, str]:
    """Two scrapes of one registry: the second after more observations (same series, new values)."""
    rng = random.Random(seed)
    registry = CollectorRegistry()
    children = []
    for name, buckets in VLLM_HISTOGRAMS.items():
        histogram = PromHistogram(name, f"{name} (benchmark)", ["engine", "model_name"], buckets=buckets,
                                  registry=registry)  # fmt: skip
        top = buckets[-1]
        for engine in range(engines):
            for model in range(models):
                child = histogram.labels(str(engine), f"lora-adapter-{model}")
                children.append((child, top))
                for _ in range(3):
                    child.observe(rng.uniform(0, top * 1.1))
    first = generate_latest(registry).decode("utf-8")
    for child, top in children:
        child.observe(rng.uniform(0, top * 1.1))
    return first, generate_latest(registry).decode("utf-8")


def _consume_prometheus_client(text: str) -> int:
    count = 0
    for family in text_string_to_metric_families(text):
        for _sample in family.samples:
            count += 1
    return count


def _clear_caches() -> None:
    exposition._LABEL_CACHE.clear()
    exposition._GROUP_INTERN.clear()
    exposition_template.clear()


def _median_seconds(run: Callable[[], object], repeat: int, before: Callable[[], None] | None = None) -> float:
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class _NoReuse:
    """The parser as it was before issue 19: every scrape parsed in full (structure reuse off)."""

    def __enter__(self) -> None:
        self.saved = exposition_template.reuse, exposition_template.remember
        exposition_template.reuse = lambda *args: None  # type: ignore[assignment]
        exposition_template.remember = lambda *args: None  # type: ignore[assignment]

    def __exit__(self, *exc: object) -> None:
        exposition_template.reuse, exposition_template.remember = self.saved


def bench(label: str, texts: tuple[str, str], repeat: int, reference_repeat: int) -> dict[str, float]:
    """Ratios against prometheus_client; warm parses alternate two scrapes of one target (same
    series, other values), as the sidecar sees them."""
    text = texts[0]
    samples = sum(len(f.samples) for f in parse_exposition(text).families.values())
    assert samples == _consume_prometheus_client(text), "parsers disagree on the sample count"
    reference = _median_seconds(lambda: _consume_prometheus_client(text), reference_repeat)
    with _NoReuse():
        cold = _median_seconds(lambda: parse_exposition(text), repeat, before=_clear_caches)
        parse_exposition(text)
        full = _median_seconds(lambda: [parse_exposition(t) for t in texts], repeat) / 2
    cold_learn = _median_seconds(lambda: parse_exposition(text), repeat, before=_clear_caches)
    parse_exposition(texts[1])
    warm = _median_seconds(lambda: [parse_exposition(t) for t in texts], repeat) / 2
    size = len(text.encode("utf-8"))
    print(f"\n{label}: {size / 1e6:.2f} MB, {text.count(chr(10))} lines, {samples} samples")
    print(f"  prometheus_client.parser   {reference * 1e3:10.2f} ms  (median of {reference_repeat})")
    rows = [
        ("cold, before (full parse)", cold),
        ("cold, after (+ learn)", cold_learn),
        ("warm, before (full parse)", full),
        ("warm, after (reuse)", warm),
    ]
    for name, seconds in rows:
        print(f"  phaselens {name:27s}{seconds * 1e3:10.2f} ms  {reference / seconds:6.1f}x faster"
              f"  ({seconds / samples * 1e6:.2f} us/sample)")  # fmt: skip
    print(f"  warm after / warm before: {full / warm:.1f}x faster")
    return {name: reference / seconds for name, seconds in rows}


def bench_tick(label: str, texts: tuple[str, str], repeat: int, horizon_seconds: float = 300.0) -> None:
    """One target's work per tick, as `sidecar/pipeline.py` does it: parse the body (bytes, as
    scraped) + `to_snapshot` (`parse_payload`) + `TargetWindow.add`, into a window already holding a
    full horizon of one-per-second snapshots (so its eviction and the garbage it holds are real).
    Before (structure reuse off) and after, in this one run."""
    payloads = [text.encode("utf-8") for text in texts]
    content_type = "text/plain; version=0.0.4; charset=utf-8"
    window = TargetWindow(horizon_seconds)
    clock = 0.0
    for index in range(int(horizon_seconds)):
        clock += 1.0
        window.add(parse_payload(payloads[index % 2], content_type, clock, "auto"))

    def run() -> float:
        nonlocal clock
        times = []
        for index in range(repeat):
            clock += 1.0
            start = time.perf_counter()
            window.add(parse_payload(payloads[index % 2], content_type, clock, "auto"))
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    with _NoReuse():
        before = run()
    after = run()
    print(f"\n{label}: whole tick (parse_payload + TargetWindow.add, {len(window)} snapshots held)")
    print(f"  phaselens tick, before     {before * 1e3:10.2f} ms  (median of {repeat}; target < 2 ms)")
    print(f"  phaselens tick, after      {after * 1e3:10.2f} ms  {before / after:6.1f}x faster")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", type=int, default=64)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5, help="runs of our parser per payload")
    parser.add_argument("--reference-repeat", type=int, default=3, help="runs of prometheus_client")
    args = parser.parse_args(argv)
    print(f"python {sys.version.split()[0]}; medians; ratio = prometheus_client time / phaselens time")
    scrapes = real_scrape("rec/0060.prom"), real_scrape("rec/0061.prom")
    bench("(a) real vLLM scrapes rec/0060.prom, rec/0061.prom", scrapes, args.repeat * 4, args.reference_repeat * 4)
    bench_tick("(a) real vLLM scrapes rec/0060.prom, rec/0061.prom", scrapes, args.repeat * 40)
    if args.engines and args.models:
        started = time.perf_counter()
        payloads = generated_payloads(args.engines, args.models)
        print(f"\n(generated in {time.perf_counter() - started:.1f} s)")
        bench(f"(b) generated {args.engines} engines x {args.models} models, all vLLM histograms",
              payloads, args.repeat, args.reference_repeat)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
