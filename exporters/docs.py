"""Generate docs/signals.md from the signal spec table (names, units, labels, formulas, sources).

    python -m phaselens.exporters.docs --write [PATH]   # write the file (default: <repo>/docs/signals.md)
    python -m phaselens.exporters.docs                  # print it

A test compares the committed file with `render_signals_doc()`, so the doc cannot drift.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from phaselens.exporters.spec_docs import DYNAMO, DYNAMO_COVERAGE
from phaselens.exporters.specs import SPECS, SignalSpec

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "docs" / "signals.md"

GROUP_TITLES: dict[str, str] = {
    "autoscaling": "Autoscaling",
    "phase": "Phases",
    "kv": "KV cache",
    "latency": "Latency",
    "goodput": "Goodput and SLOs",
    "nixl": "NIXL KV transfer",
    "disaggregation": "Disaggregation",
    "queue": "Queue intelligence",
    "gpu": "GPU telemetry",
    "self": "Sidecar health",
}

HEADER = """# Signals

Generated from `exporters/specs.py` and `exporters/spec_docs.py` by
`python -m phaselens.exporters.docs --write`; do not edit by hand.

Every signal is computed over the window (`--window`, default 30 s) unless it says otherwise. A
signal that cannot be computed (no traffic, metric absent) is not exported: never a made-up 0,
never NaN. Pool signals (`target="pool"`, `role="pool"`, `engine="all"`) exist only when at least one
prefill and one decode target serve the model.
"""


def _labels(spec: SignalSpec) -> str:
    return ", ".join(f"`{label}`" for label in spec.labels) or "none"


def _summary(specs: Sequence[SignalSpec]) -> list[str]:
    lines = ["| Signal | Type | Unit | Labels |", "|---|---|---|---|"]
    for spec in specs:
        lines.append(f"| [`{spec.name}`](#{spec.name}) | {spec.kind} | `{spec.unit}` | {_labels(spec)} |")
    return lines


def _section(spec: SignalSpec) -> list[str]:
    return [
        f"### {spec.name}",
        "",
        spec.help,
        "",
        f"- Type: {spec.kind}; unit: `{spec.unit}`; OpenTelemetry name: `{spec.otel_name}`",
        f"- Labels: {_labels(spec)}",
        f"- Formula: {spec.formula or '(not documented)'}",
        f"- Source: {spec.source or '(not documented)'}",
        f"- Known limits: {spec.limits or '(not documented)'}",
        "",
    ]


def _dynamo(specs: Sequence[SignalSpec]) -> list[str]:
    lines = [
        "## What NVIDIA Dynamo gives",
        "",
        f"Source: {DYNAMO}. A Dynamo deployment is read from its frontend (`dynamo_frontend_*`, the KV "
        "router's `dynamo_component_router_*`) and its workers (`dynamo_component_*` and, on the mocker "
        "and vLLM workers, `vllm:*`). Worker ids are decimal on the frontend and hex on the workers; "
        "phaselens joins them (log events `dynamo_worker_unjoined`, `dynamo_worker_unknown_to_frontend`, "
        "`dynamo_worker_id_missing`, `dynamo_frontend_no_workers`, `dynamo_worker_gone`, "
        "`dynamo_frontend_gone`). The routing share "
        "per worker is not in the router's metrics (its counters carry the router's own id, one series for "
        "all workers; checked with two workers): it is each worker target's "
        "`phaselens_request_rate_per_second` over their sum. Not available in 1.6.1 at all: KV-transfer "
        "times, `kvstats` gauges (KV load travels on the event plane).",
        "",
        "| Signal | From Dynamo 1.6.1 |",
        "|---|---|",
    ]
    for spec in specs:
        lines.append(f"| `{spec.name}` | {DYNAMO_COVERAGE.get(spec.name, '(not documented)')} |")
    return [*lines, ""]


def render_signals_doc(specs: Sequence[SignalSpec] = SPECS) -> str:
    lines = [HEADER, "## Summary", "", *_summary(specs), "", *_dynamo(specs)]
    groups: list[str] = []
    for spec in specs:
        if spec.group not in groups:
            groups.append(spec.group)
    for group in groups:
        lines += [f"## {GROUP_TITLES.get(group, group.capitalize())}", ""]
        for spec in specs:
            if spec.group == group:
                lines += _section(spec)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate docs/signals.md from the signal specs.")
    parser.add_argument("--write", nargs="?", const=str(DEFAULT_PATH), default=None, metavar="PATH",
                        help="write the document (default path: the repository's docs/signals.md)")
    args = parser.parse_args(argv)
    text = render_signals_doc()
    if args.write is None:
        sys.stdout.write(text)
        return 0
    path = Path(args.write)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
