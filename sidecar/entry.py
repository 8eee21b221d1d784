"""The `phaselens` console script and `python -m phaselens`: the one-shot subcommands with their
own parser start without importing the sidecar; everything else is `phaselens.cli.main`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from phaselens.delegates import DELEGATES, run_delegate


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in DELEGATES:
        return run_delegate(arguments[0], arguments[1:])
    from phaselens.cli import main as cli_main  # the sidecar's imports, only for its own commands

    return cli_main(arguments)
