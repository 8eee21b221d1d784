"""The fleet's load client: e2e/loadgen.py's open-loop phases against the Dynamo frontend, one
ground-truth line per request (its own TTFT and inter-token times). Runs as its own process, at
a raised priority where allowed, so the controller and the fleet do not delay its clocks.

Usage: python client.py URL OUT.jsonl SEED PHASE...
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "e2e"))

import loadgen
import procs


def main(argv: list[str]) -> int:
    url, out, seed, *phases = argv
    procs.raise_own_priority()
    recs = asyncio.run(
        # carry_over: each phase's arrivals start on the trace's clock, not once the previous phase's
        # requests have finished; otherwise a policy whose queue does not drain is given a later
        # (and for it easier) step than the others, and reactions are timed from a step that had
        # not come yet (up to 3.5 s of wall time late in the P/D lab).
        loadgen.run_phases(url, [loadgen.Phase.parse(p) for p in phases], Path(out), seed=int(seed),
                           token_ids=False, carry_over=True)
    )
    errors = sum(1 for r in recs if r.outcome != "ok")
    print(f"client: {len(recs)} requests, {errors} errors", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
