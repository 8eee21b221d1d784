"""Subcommands with their own argument parser, run without importing the sidecar.

`phaselens nixl-telemetry`, `report` and `plan` need neither asyncio nor aiohttp nor the pipeline:
`phaselens.entry` dispatches them from here first, so a one-shot command does not pay the
sidecar's imports (half a second of the whole `nixl-telemetry` process on a 4 M-event ring).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Delegate:
    """A subcommand with its own parser: `module.build_parser()` and `module.main(argv) -> int`."""

    module: str
    help: str
    extra: str | None = None  # the optional dependency group it needs, if any
    extra_modules: tuple[str, ...] = ()  # top-level modules that group installs


DELEGATES: dict[str, Delegate] = {
    "nixl-telemetry": Delegate("phaselens.nixl_cli", "read NIXL telemetry ring files"),
    "report": Delegate(
        "phaselens.report.cli",
        "write an HTML or Markdown report of a recording",
        extra="report",
        extra_modules=("pandas", "matplotlib"),
    ),
    "plan": Delegate("phaselens.plan", "print a three-layer autoscaling plan from a PLAN.yaml"),
}


def install_hint(extra: str) -> str:
    return f"pip install 'phaselens[{extra}]' (from a source checkout: pip install -e '.[{extra}]')"


def run_delegate(name: str, argv: list[str]) -> int:
    delegate = DELEGATES[name]
    try:
        module = importlib.import_module(delegate.module)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if delegate.extra is not None and missing in delegate.extra_modules:
            print(
                f"phaselens {name}: needs the optional '{delegate.extra}' dependencies ({missing} is not "
                f"installed): {install_hint(delegate.extra)}",
                file=sys.stderr,
            )
        else:
            print(f"phaselens {name}: cannot import {exc.name} (a broken install?)", file=sys.stderr)
        return 2
    result: int = module.main(argv)
    return result


