"""The e2e check that lints the live sidecar's recorded /metrics with `promtool check metrics`."""

from __future__ import annotations

import shutil
from pathlib import Path

import check
import groundtruth as gt
import pytest
from phaselens.assembly import build_pipeline
from phaselens.clock import ManualClock
from phaselens.exporters.prometheus import build_registry, render
from phaselens.model import TickResult
from phaselens.pipeline import replay_targets, replay_ticks
from phaselens.settings import Settings
from phaselens.sources.recording import load_sources, merge_by_time

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool missing: run `bash scripts/system-deps.sh`"
)


@pytest.fixture(scope="module")
def busy_bodies(aggregated_dir: Path) -> list[bytes]:
    """/metrics text bodies of the real aggregated capture's ticks that export TTFT percentiles."""
    sources = load_sources(str(aggregated_dir))
    clock = ManualClock()
    pipeline = build_pipeline(Settings(targets=replay_targets(sources)), clock, replay=True)
    ticks: list[TickResult] = [
        t
        for t in replay_ticks(pipeline, clock, merge_by_time(sources))
        if any(s.name == "phaselens_ttft_seconds" for s in t.signals)
    ]
    assert len(ticks) >= 2
    return [render(build_registry(lambda t=t: t), None)[0] for t in (ticks[len(ticks) // 2], ticks[-1])]


def _record(folder: Path, bodies: list[bytes]) -> Path:
    """The recorder's format: `# scrape_time` then the body, one NNNN.prom per scrape."""
    folder.mkdir()
    for i, body in enumerate(bodies):
        (folder / f"{i:04d}.prom").write_bytes(f"# scrape_time {1000 + i}.000\n".encode() + body)
    return folder


def test_lint_shape_ignores_values_but_not_label_names() -> None:
    a = '# TYPE x gauge\nx{percentile="50",target="a"} 1.0\nx{percentile="99",target="a"} 2.0\n'
    b = '# TYPE x gauge\nx{percentile="50",target="b"} 7.5\n'
    c = '# TYPE x gauge\nx{quantile="0.5",target="a"} 1.0\n'
    assert check.lint_shape(a) == check.lint_shape(b)
    assert check.lint_shape(a) != check.lint_shape(c)
    assert check.lint_shape("y 3\n") == check.lint_shape("y 4\n")


def test_missing_promtool_fails_the_run_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(check.shutil, "which", lambda _name: None)
    rep = check.Report("aggregated")
    check.check_promtool(rep, _record(tmp_path / "sidecar", [b"y 1\n"]))
    (result,) = rep.results
    assert not result.ok and "promtool not found" in result.detail


@pytest.mark.integration
@needs_promtool
def test_clean_recording_passes_and_each_shape_is_linted_once(tmp_path: Path, busy_bodies: list[bytes]) -> None:
    rep = check.Report("aggregated")
    check.check_promtool(rep, _record(tmp_path / "sidecar", [*busy_bodies, busy_bodies[-1]]))
    (result,) = rep.results
    assert result.ok, result.detail
    assert rep.figures["promtool_bodies_linted"] <= 2


@pytest.mark.integration
@needs_promtool
def test_a_summary_reserved_label_on_a_gauge_fails(tmp_path: Path, busy_bodies: list[bytes]) -> None:
    old = busy_bodies[-1].replace(b'percentile="99"', b'quantile="0.99"')
    assert old != busy_bodies[-1]
    rep = check.Report("aggregated")
    check.check_promtool(rep, _record(tmp_path / "sidecar", [busy_bodies[0], old]))
    (result,) = rep.results
    assert not result.ok
    assert "0001.prom: phaselens_" in result.detail and 'should not have "quantile" label' in result.detail


@pytest.mark.integration
@needs_promtool
def test_no_recorded_body_fails(tmp_path: Path) -> None:
    rep = check.Report("aggregated")
    check.check_promtool(rep, _record(tmp_path / "sidecar", []))
    assert not rep.results[0].ok


def _scrape(t: float, body: str) -> gt.Scrape:
    return gt.parse_exposition(f"# scrape_time {t}\n{body}")


@pytest.mark.parametrize(("p50", "ok"), [(0.2, True), (0.6, False)])
def test_ttft_check_reads_the_percentile_label(p50: float, ok: bool) -> None:
    """check_ttft_quantiles takes the quantile from `percentile` (in percent) of the recorded /metrics."""
    # 30 requests with a 0.2 s TTFT, all surely inside the window of a tick at t = 125 (W 30 s, 1 s scrapes)
    requests = [gt.Request(f"r{i}", "p", 100 + i * 0.5, 101 + i * 0.5, 0.2, 0.01, 10, True) for i in range(30)]
    buckets = "".join(
        f'vllm:time_to_first_token_seconds_bucket{{le="{le}"}} 30\n' for le in ("0.1", "0.25", "0.5", "+Inf")
    )
    engine = [_scrape(125.0, buckets)]
    exported = f'phaselens_ttft_seconds{{percentile="50"}} {p50}\nphaselens_ttft_seconds{{percentile="99"}} 0.24\n'
    sidecar = [_scrape(125.0, exported) for _ in range(10)]
    rep = check.Report("aggregated")
    check.check_ttft_quantiles(rep, sidecar, engine, requests, {"window_s": 30, "interval_s": 1})
    (result,) = rep.results
    assert result.ok is ok, result.detail
    assert rep.figures["ttft_quantile_checks"] == 20
    assert rep.figures["ttft_quantile_agree"] == (20 if ok else 10)
