"""`phaselens report` on the real captures: what the summary says, formats, comparison, bad input."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from phaselens.report.cli import main as report_main

CLOCK = r"t\+(\d+)s \(\d\d:\d\d:\d\d UTC\)"


def _text(page: Path) -> str:
    html = page.read_text(encoding="utf-8")
    html = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_summary_names_the_burst_as_kv_pressure_with_its_time_range(aggregated_report: Path) -> None:
    text = _text(aggregated_report)
    found = re.search(rf"KV-cache pressure from {CLOCK} to {CLOCK} \((\d+) s\).*?about (\d+) preemptions", text)
    assert found, text[:2000]
    start, end, seconds, preemptions = (int(g) for g in found.groups())
    # The capture's burst phase: roughly 48 s to 75 s after the first scrape (data README).
    assert 44 <= start <= 55 and 65 <= end <= 80 and seconds == end - start
    # The engine's own counter went from 34 to ~600 during the burst: hundreds, not a handful.
    assert 300 <= preemptions <= 700


def test_report_opens_with_the_verdict(aggregated_report: Path) -> None:
    html = aggregated_report.read_text(encoding="utf-8")
    assert html.index("id='verdict'") < html.index("id='summary'")
    verdict = html[html.index("id='verdict'"):html.index("id='summary'")]
    assert "KV_CAPACITY from t+" in verdict and "remedy add_replicas" in verdict
    assert "expected: KV utilization" in verdict


def test_summary_gives_the_shared_prefix_hit_ratio(aggregated_report: Path) -> None:
    text = _text(aggregated_report)
    found = re.search(rf"Prefix-cache reuse from {CLOCK} to {CLOCK} .*?hit ratio (\d+)% on average, peak (\d+)%", text)
    assert found, text[:2000]
    start, _, mean, peak = (int(g) for g in found.groups())
    assert 25 <= start <= 45  # the shared-prefix phase starts ~28 s in
    assert 50 <= mean <= peak <= 100


def test_headline_latency_figures_come_from_the_percentile_series(aggregated_report: Path) -> None:
    # The report reads the window quantiles by their `percentile` label: a wrong label gives n/a.
    text = _text(aggregated_report)
    for figure in ("worst TTFT p99 (s)", "median TTFT p50 (s)", "median ITL p50 (s)"):
        found = re.search(re.escape(figure) + r" ([\d.e+-]+) ", text)
        assert found, f"{figure}: {text[text.find(figure) :][:60]}"
        assert float(found.group(1)) > 0
    assert "TTFT quantiles vs SLO" in text and "ITL quantiles vs SLO" in text


def test_report_lists_recommendations_with_evidence_and_confidence(aggregated_report: Path) -> None:
    html = aggregated_report.read_text(encoding="utf-8")
    assert "KV_CACHE_PRESSURE" in html
    section = html.split("id='recommendations'")[1]
    assert re.search(r"<td>(act|recommend|escalate)</td>", section)
    assert re.search(r"<td>0\.\d\d</td>", section)  # confidence


def test_pd_report_shows_both_roles_and_nixl(pd_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "pd.html"
    assert report_main([f"prefill={pd_dir / 'prefill'}", f"decode={pd_dir / 'decode'}", "-o", str(out)]) == 0
    text = _text(out)
    assert "prefill (prefill)" in text and "decode (decode)" in text
    assert "NIXL KV transfer" in text
    assert re.search(r"NIXL on decode \(vllm_metrics\): transfer time p50 [\d.]+ ms", text)
    assert "Pool imbalance" in text


def test_markdown_format_writes_png_charts_beside_it(aggregated_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "not-yet" / "r.md"  # a folder that does not exist yet
    assert report_main([str(aggregated_dir), "-o", str(out), "--format", "md"]) == 0
    text = out.read_text(encoding="utf-8")
    images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert len(images) >= 5
    for name in images:
        data = (out.parent / name).read_bytes()
        assert data.startswith(b"\x89PNG")
    assert "KV-cache pressure" in text


def test_figures_read_as_percentages_and_equal_bounds_as_one_figure(aggregated_report: Path) -> None:
    text = _text(aggregated_report)
    # Ratios in the figure table are percentages, as in the sentences.
    assert "peak KV utilization 100%" in text
    assert re.search(r"peak prefix-cache hit ratio \d+%", text)
    assert re.search(r"median joint SLO attainment \(lower\) \d+%", text)
    assert "peak_kv_utilization=100%" in text
    # Bounds that read the same are one figure, not "between 100% and 100%".
    assert not re.search(r"between (\d+%) and \1", text)
    assert re.search(r"SLO attainment \(both SLOs\) was (\d+%|between \d+% and \d+%) at the median window", text)


def test_compare_puts_two_recordings_side_by_side(aggregated_dir: Path, tmp_path: Path) -> None:
    # B: the same run cut before the burst, so its peaks must be lower.
    before = tmp_path / "before" / "rec"
    before.mkdir(parents=True)
    for path in sorted(aggregated_dir.glob("*.prom"))[:45]:
        shutil.copy(path, before / path.name)
    out = tmp_path / "cmp.html"
    assert report_main(["--compare", str(aggregated_dir), str(before), "-o", str(out)]) == 0
    text = _text(out)
    row = re.search(r"peak queue depth rec (\S+) (\S+) (\S+)", text)
    assert row, text[:1500]
    a, b, delta = (float(x) for x in row.groups())
    assert a > b and delta == pytest.approx(b - a, abs=0.01)


def test_empty_folder_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report_main([str(empty), "-o", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("phaselens report:") and "Traceback" not in err
    assert not (tmp_path / "x.html").exists()


def test_truncated_archive_is_a_clear_error(
    fixtures_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = (fixtures_dir / "vllm-0.32.0-cpu-aggregated" / "scrapes.tar.gz").read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[: len(data) // 3])
    assert report_main([str(cut), "-o", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("phaselens report:") and "Traceback" not in err


def test_recording_with_gaps_still_reports_and_says_so(aggregated_dir: Path, tmp_path: Path) -> None:
    # Drop scrapes 10-29 (a 20 s hole, e.g. the sidecar was down): the report is still made and
    # the gap shows as the target being absent, not as invented values.
    gappy = tmp_path / "gappy" / "rec"
    gappy.mkdir(parents=True)
    for path in sorted(aggregated_dir.glob("*.prom")):
        if not 10 <= int(path.stem) < 30:
            shutil.copy(path, gappy / path.name)
    out = tmp_path / "gappy.html"
    assert report_main([str(gappy), "-o", str(out)]) == 0
    text = _text(out)
    assert "KV-cache pressure" in text
    gap = re.search(rf"gap of (\d+) s with no scrapes, from {CLOCK}", text)
    assert gap and 18 <= int(gap.group(1)) <= 22 and 8 <= int(gap.group(2)) <= 11


def test_a_recording_of_garbage_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "junk"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i:04d}.prom").write_text(f"# scrape_time {1700000000 + i}\nthis is not exposition\n")
    assert report_main([str(folder), "-o", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert "no engine data" in err
