"""The previous scrape's structure (parsers/exposition_template.py): a body parsed from a kept
structure must equal the full parse of that body, and anything the structure does not fit (a
malformed value, a changed help text, a timestamp, another target) goes to the full parser."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from phaselens.model import Exposition
from phaselens.parsers import exposition_template
from phaselens.parsers.exposition import parse_exposition


@pytest.fixture()
def reused(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the parses answered from a kept structure."""
    exposition_template.clear()
    calls: list[int] = []
    reuse = exposition_template.reuse

    def counting(lines: list[str], openmetrics: bool) -> Exposition | None:
        found = reuse(lines, openmetrics)
        if found is not None:
            calls.append(1)
        return found

    monkeypatch.setattr(exposition_template, "reuse", counting)
    yield calls
    exposition_template.clear()


def _cold(text: str) -> Exposition:
    exposition_template.clear()
    return parse_exposition(text)


def _scrapes(folder: Path) -> list[str]:
    return [path.read_text(encoding="utf-8") for path in sorted(folder.glob("*.prom"))]


@pytest.mark.parametrize("capture", ["aggregated", "prefill", "decode"])
def test_every_real_scrape_from_the_kept_structure_equals_the_full_parse(
    capture: str, aggregated_dir: Path, pd_dir: Path, reused: list[int]
) -> None:
    folder = aggregated_dir if capture == "aggregated" else pd_dir / capture
    texts = _scrapes(folder)
    warm = []
    for text in texts:
        warm.append(parse_exposition(text))
    hits = len(reused)
    # vLLM adds series as traffic starts (new label sets): those scrapes are full parses
    assert hits > len(texts) // 2, f"only {hits} of {len(texts)} scrapes reused a structure"
    for text, parsed in zip(texts, warm, strict=True):
        assert exposition_template.same_exposition(parsed, _cold(text))


def test_two_targets_alternating_both_reuse(aggregated_dir: Path, pd_dir: Path, reused: list[int]) -> None:
    a = _scrapes(aggregated_dir)[-3:]
    b = _scrapes(pd_dir / "decode")[-3:]
    for text_a, text_b in zip(a, b, strict=True):
        parse_exposition(text_a)
        parse_exposition(text_b)
    assert len(reused) == 4  # the first scrape of each target is a full parse


BODY = """# HELP req_total Requests.
# TYPE req_total counter
req_total{model="m"} 3
# HELP lat Latency.
# TYPE lat histogram
lat_bucket{model="m",le="0.1"} 1
lat_bucket{model="m",le="1.0"} 2
lat_bucket{model="m",le="+Inf"} 4
lat_sum{model="m"} 2.5
lat_count{model="m"} 4
"""


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        ('req_total{model="m"} 3', 'req_total{model="m"} 1_000', "value is not a number"),
        ('req_total{model="m"} 3', 'req_total{model="m"} three', "value is not a number"),
        ('lat_count{model="m"} 4', 'lat_count{model="m"} 4 x', "timestamp is not a number"),
    ],
)
def test_a_malformed_value_in_a_known_structure_is_reported(old: str, new: str, reason: str, reused: list[int]) -> None:
    parse_exposition(BODY)
    parsed = parse_exposition(BODY.replace(old, new))
    assert parsed.issue_count == 1
    assert reason in parsed.issues[0].reason
    assert reused == []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("# HELP req_total Requests.", "# HELP req_total Requests served."),  # help text: the last word changed
        ('req_total{model="m"} 3', 'req_total{model="m"} 3 1700000000000'),  # a timestamp
        ('req_total{model="m"} 3', 'req_total{model="m"}\t3'),  # a tab, not a space
        ('lat_sum{model="m"} 2.5', 'lat_sum{model="n"} 2.5'),  # another label value
    ],
)
def test_a_changed_structure_is_parsed_in_full(old: str, new: str, reused: list[int]) -> None:
    parse_exposition(BODY)
    body = BODY.replace(old, new)
    assert exposition_template.same_exposition(parse_exposition(body), _cold(body))
    assert reused == []


def test_new_values_land_in_samples_and_buckets(reused: list[int]) -> None:
    parse_exposition(BODY)
    body = BODY.replace("} 3\n", "} 7\n").replace('"1.0"} 2', '"1.0"} 3').replace("2.5", "NaN")
    parsed = parse_exposition(body)
    assert reused == [1]
    assert exposition_template.same_exposition(parsed, _cold(body))
    (histogram,) = parsed.families["lat"].histograms
    assert histogram.buckets == ((0.1, 1.0), (1.0, 3.0), (float("inf"), 4.0))
    assert histogram.sum != histogram.sum  # NaN
    assert parsed.families["req"].samples[0].value == 7.0


def test_a_churning_body_keeps_one_structure(reused: list[int]) -> None:
    """A target whose label values change every scrape holds one structure, not one per scrape."""
    for scrape in range(20):
        parse_exposition(BODY.replace('model="m"', f'model="m{scrape}"'))
    assert reused == []
    assert sum(map(len, exposition_template._TEMPLATES.values())) == 1
