"""Every subcommand's `--help` documents every option, and a missing optional extra names its install command."""

from __future__ import annotations

import argparse
import importlib
import sys

import pytest
from phaselens import cli


def _all_parsers() -> dict[str, argparse.ArgumentParser]:
    """`phaselens` itself, each built-in subcommand, and each delegated subcommand's own parser."""
    top = cli.build_parser()
    parsers = {"phaselens": top}
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if name not in cli.DELEGATES:
                    parsers[name] = sub
    for name, delegate in cli.DELEGATES.items():
        parsers[name] = importlib.import_module(delegate.module).build_parser()
    return parsers


def test_every_subcommand_is_walked() -> None:
    assert set(_all_parsers()) == {"phaselens", *(c.name for c in cli.COMMANDS), *cli.DELEGATES}
    assert {"run", "replay", "record", "demo", "nixl-telemetry", "report", "plan"} <= set(_all_parsers())


@pytest.mark.parametrize("name", sorted(_all_parsers()))
def test_every_option_has_help(name: str) -> None:
    parser = _all_parsers()[name]
    undocumented = [
        "/".join(action.option_strings) or action.dest
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction)
        and (not action.help or action.help == argparse.SUPPRESS or not action.help.strip())
    ]
    assert undocumented == [], f"phaselens {name}: options without help text: {undocumented}"
    assert parser.description, f"phaselens {name} has no description"


@pytest.mark.parametrize("name", ["run", "replay", "record", "demo", "nixl-telemetry", "report", "plan"])
def test_help_prints_usage_once(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.count("usage:") == 1
    # The description must not be a second usage line (`phaselens report [ROLE=]PATH ... -o ...`).
    assert f"phaselens {name} [" not in out.split("\n\n", 1)[1], out


def test_report_without_its_extra_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for module in [m for m in sys.modules if m.startswith("phaselens.report")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if the `report` extra were not installed
    assert cli.main(["report", "some-recording"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'phaselens[report]'" in err and "pandas" in err
