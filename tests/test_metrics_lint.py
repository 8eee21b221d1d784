"""`/metrics` passes Prometheus's own linter (`promtool check metrics`) and a strict OpenMetrics parser.

The live tests run `phaselens demo`, which serves `/metrics` from a real sidecar fed by the
bundled vLLM 0.32.0 capture (the same file as tests/fixtures/vllm-0.32.0-cpu-aggregated). The 1P1D
capture adds the NIXL signals; the spec-table test covers signals no capture here produces.
Window quantiles are gauges, so they carry `percentile`, never the summary-reserved `quantile`.
"""

from __future__ import annotations

import math
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from phaselens.assembly import build_pipeline
from phaselens.clock import ManualClock
from phaselens.exporters.prometheus import build_registry, render
from phaselens.exporters.specs import PERCENTILE_LABEL, SPECS, percentile_label
from phaselens.model import Signal, TickResult, make_labels
from phaselens.pipeline import replay_targets, replay_ticks
from phaselens.settings import Settings
from phaselens.sources.recording import load_sources, merge_by_time
from prometheus_client.openmetrics.parser import text_string_to_metric_families

PROMTOOL = shutil.which("promtool")
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
WINDOW_QUANTILE_SIGNALS = frozenset(spec.name for spec in SPECS if PERCENTILE_LABEL in spec.labels)
LATENCY_SIGNALS = frozenset(
    {"phaselens_ttft_seconds", "phaselens_itl_seconds", "phaselens_queue_wait_seconds", "phaselens_e2e_latency_seconds"}
)

needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool missing: run `bash scripts/system-deps.sh`")


def promtool_findings(body: bytes) -> str:
    """Everything `promtool check metrics` says about an exposition; empty when it passes."""
    assert PROMTOOL is not None
    proc = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=60)
    said = (proc.stdout + proc.stderr).decode().strip()
    if proc.returncode != 0 and not said:
        said = f"promtool exited with {proc.returncode} and said nothing"
    return said


def openmetrics_problems(body: bytes) -> list[str]:
    """Parse strictly (raises on any OpenMetrics error); list the reserved-label misuses on top.

    The parser checks `quantile` only on summaries; a gauge carrying it parses, yet means a summary
    quantile to every consumer, so that is checked here.
    """
    problems = []
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if family.type != "summary" and "quantile" in sample.labels:
                problems.append(f"{family.type} {sample.name} has the summary-reserved label quantile")
            if family.type not in ("histogram", "gaugehistogram") and "le" in sample.labels:
                problems.append(f"{family.type} {sample.name} has the histogram-reserved label le")
            if PERCENTILE_LABEL in sample.labels:
                value = float(sample.labels[PERCENTILE_LABEL])
                if not 0 < value < 100:
                    problems.append(f"{sample.name}: percentile {value} outside (0, 100)")
    return problems


def families(body: bytes) -> set[str]:
    text = body.decode()
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


# ------------------------------------------------------------------ pure helpers


@pytest.mark.parametrize(
    ("q", "label"),
    [(0.5, "50"), (0.9, "90"), (0.95, "95"), (0.99, "99"), (0.999, "99.9"), (0.57, "57"), (0.001, "0.1")],
)
def test_percentile_label_is_the_quantile_in_percent(q: float, label: str) -> None:
    assert percentile_label(q) == label
    assert float(label) / 100 == pytest.approx(q)


@pytest.mark.parametrize("q", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_percentile_label_refuses_what_is_not_a_quantile(q: float) -> None:
    with pytest.raises(ValueError, match="outside"):
        percentile_label(q)


def test_openmetrics_check_catches_a_quantile_label_on_a_gauge() -> None:
    bad = b'# TYPE x_seconds gauge\nx_seconds{quantile="0.9"} 1.0\n# EOF\n'
    assert openmetrics_problems(bad) == ["gauge x_seconds has the summary-reserved label quantile"]
    with pytest.raises(ValueError):  # and the parser is strict: no `# EOF`, no parse
        openmetrics_problems(bad.replace(b"# EOF\n", b""))


# ------------------------------------------------------------------ with promtool


@pytest.mark.integration
@needs_promtool
def test_promtool_catches_the_old_quantile_label() -> None:
    # The linter can fail: the label window quantiles had in 0.1.0 is a finding.
    body = b'# HELP x_seconds y\n# TYPE x_seconds gauge\nx_seconds{quantile="0.9"} 1.0\n'
    assert 'should not have "quantile" label' in promtool_findings(body)


@pytest.mark.integration
@needs_promtool
def test_every_spec_signal_with_every_label_passes_promtool() -> None:
    """One series per spec row, every label set: covers signals no capture here produces (GPU...)."""
    signals = []
    for spec in SPECS:
        values = {label: ("99" if label == PERCENTILE_LABEL else "x") for label in spec.labels}
        signals.append(Signal(spec.name, make_labels(values), 1.0))
    tick = TickResult(100.0, tuple(signals))
    registry = build_registry(lambda: tick)
    text, _ = render(registry, None)
    assert families(text) == {spec.name for spec in SPECS}
    assert promtool_findings(text) == ""
    openmetrics, _ = render(registry, OPENMETRICS)
    assert openmetrics_problems(openmetrics) == []


@pytest.mark.integration
@needs_promtool
def test_pd_capture_with_nixl_passes_promtool(pd_dir: Path) -> None:
    """The 1P1D capture through the pipeline, rendered by the same registry the server serves.

    promtool judges names, types and label names, so one body per new shape of the output is linted.
    """
    sources = load_sources(str(pd_dir))
    clock = ManualClock()
    pipeline = build_pipeline(Settings(targets=replay_targets(sources)), clock, replay=True)
    seen: set[frozenset[tuple[str, tuple[str, ...]]]] = set()
    exported: set[str] = set()
    linted = 0
    for tick in replay_ticks(pipeline, clock, merge_by_time(sources)):
        shape = frozenset((s.name, tuple(k for k, _ in s.labels)) for s in tick.signals)
        if shape in seen:
            continue
        seen.add(shape)
        text, _ = render(build_registry(lambda tick=tick: tick), None)
        assert promtool_findings(text) == "", f"tick at {tick.time}"
        exported |= families(text)
        linted += 1
    assert linted >= 2
    # what this test is for: every window-quantile signal was there to be linted
    assert exported >= WINDOW_QUANTILE_SIGNALS


# ------------------------------------------------------------------ the live sidecar


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, accept: str | None = None) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=5) as response:
        body: bytes = response.read()
        return body


@pytest.fixture(scope="module")
def live_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[bytes]]]:
    """`phaselens demo` serving /metrics at 10x: the text bodies seen while it replays, then its URL."""
    port = _free_port()
    out = tmp_path_factory.mktemp("demo") / "stdout.txt"
    with open(out, "wb") as stdout:
        demo = subprocess.Popen(
            [sys.executable, "-m", "phaselens", "demo", "--listen", f"127.0.0.1:{port}", "--speed", "10"],
            stdout=stdout,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/metrics"
    bodies: list[bytes] = []
    try:
        deadline = time.monotonic() + 60
        while "Replay finished" not in out.read_text():
            assert demo.poll() is None, out.read_text()[-2000:]
            assert time.monotonic() < deadline, "the demo did not finish its replay in 60 s"
            try:
                body = _get(url)
            except OSError:
                body = b""
            if body and (not bodies or body != bodies[-1]):
                bodies.append(body)
            time.sleep(0.5)
        bodies.append(_get(url))
        yield url, bodies
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(15)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait(5)


@pytest.mark.integration
@pytest.mark.slow
@needs_promtool
def test_live_metrics_pass_promtool_check_metrics(live_demo: tuple[str, list[bytes]]) -> None:
    _, bodies = live_demo
    findings = [said for body in bodies if (said := promtool_findings(body))]
    assert not findings, f"{len(findings)} of {len(bodies)} scrapes have findings; the first:\n{findings[0]}"
    # the latency gauges were served, so their labels were linted
    assert set().union(*(families(b) for b in bodies)) >= LATENCY_SIGNALS


@pytest.mark.integration
@pytest.mark.slow
def test_live_openmetrics_parses_strictly(live_demo: tuple[str, list[bytes]]) -> None:
    url, _ = live_demo
    body = _get(url, OPENMETRICS)
    assert body.rstrip().endswith(b"# EOF")
    assert openmetrics_problems(body) == []
    assert families(body) >= LATENCY_SIGNALS
    percentiles = {
        sample.labels[PERCENTILE_LABEL]
        for family in text_string_to_metric_families(body.decode())
        if family.name == "phaselens_ttft_seconds"
        for sample in family.samples
    }
    assert percentiles == {"50", "90", "95", "99"}
