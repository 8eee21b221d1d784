"""`python -m phaselens ...` is the same as the `phaselens` console script."""

from phaselens.cli import main

raise SystemExit(main())
