"""`python -m phaselens ...` is the same as the `phaselens` console script."""

from phaselens.entry import main

raise SystemExit(main())
