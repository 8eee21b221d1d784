"""docs/signals.md is generated from the spec table and must match it."""

from __future__ import annotations

from pathlib import Path

from phaselens.exporters.docs import main, render_signals_doc
from phaselens.exporters.specs import SPECS

DOC = Path(__file__).resolve().parent.parent / "docs" / "signals.md"


def test_committed_doc_matches_the_generator() -> None:
    assert DOC.read_text(encoding="utf-8") == render_signals_doc(), (
        "docs/signals.md is stale: run `python -m phaselens.exporters.docs --write`"
    )


def test_every_signal_has_formula_source_and_limits() -> None:
    missing = [s.name for s in SPECS if not (s.formula and s.source and s.limits)]
    assert missing == [], f"add these to exporters/spec_docs.py: {missing}"


def test_every_signal_is_documented_once() -> None:
    text = render_signals_doc()
    for spec in SPECS:
        assert text.count(f"### {spec.name}\n") == 1
        assert spec.otel_name in text


def test_write_creates_the_file(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "signals.md"
    assert main(["--write", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == render_signals_doc()


def test_every_signal_says_what_dynamo_gives() -> None:
    from phaselens.exporters.spec_docs import DYNAMO_COVERAGE

    names = {s.name for s in SPECS}
    assert names - DYNAMO_COVERAGE.keys() == set(), "add them to spec_docs.DYNAMO_COVERAGE"
    assert DYNAMO_COVERAGE.keys() - names == set(), "DYNAMO_COVERAGE names a signal that does not exist"
    assert "## What NVIDIA Dynamo gives" in render_signals_doc()
