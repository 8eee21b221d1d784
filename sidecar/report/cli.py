"""`phaselens report`: a self-contained HTML page (or Markdown with PNG charts) on a recording."""

from __future__ import annotations

import argparse
import html
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pandas as pd
from phaselens.model import TickResult
from phaselens.report.charts import Chart, target_charts
from phaselens.report.counters import cumulative_counter
from phaselens.report.frame import build_run
from phaselens.report.render import STYLE, _table, render_compare, render_html, render_markdown
from phaselens.report.summary import RunSummary, summarize
from phaselens.settings import Settings
from phaselens.sources.recording import RecordingError

_DEFAULTS = Settings()
TickLoader = Callable[[Sequence[str], Settings], list[TickResult]]


class ReportError(ValueError):
    """Input a report cannot be made from; the message says why."""


def _default_loader(inputs: Sequence[str], settings: Settings) -> list[TickResult]:
    from phaselens.replay import replay_ticks

    return list(replay_ticks(inputs, settings))


def build_summary(
    inputs: Sequence[str],
    settings: Settings,
    loader: TickLoader = _default_loader,
    counters: Callable[[Sequence[str]], Mapping[str, pd.Series]] | None = cumulative_counter,
) -> tuple[RunSummary, dict[str, list[Chart]]]:
    ticks = loader(inputs, settings)
    if not ticks:
        raise ReportError(f"{' '.join(inputs)}: no scrapes to report on")
    run = build_run(" + ".join(inputs), ticks)
    if counters is not None:
        run = replace(run, preemptions=counters(inputs))
    summary = summarize(run)
    if not summary.targets:
        raise ReportError(f"{' '.join(inputs)}: the recording has no engine data (was the engine ever up?)")
    charts = {
        t.target: target_charts(run, t.target, t.episodes, settings.slo_ttft_seconds, settings.slo_itl_seconds)
        for t in summary.targets
    }
    return summary, charts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phaselens report",
        description="Write a self-contained HTML page (or Markdown with PNG charts) on one or more recordings: "
        "summary sentences, episodes, timelines and recommendations; or compare two recordings.",
    )
    parser.add_argument(
        "inputs", nargs="*", metavar="[ROLE=]PATH", help="recording folders or .tar.gz files (merged by scrape time)"
    )
    parser.add_argument("-o", "--output", default="report.html", help="output file (default report.html)")
    parser.add_argument(
        "--format",
        choices=("html", "md"),
        default="html",
        help="html: one self-contained page (default); md: Markdown with the charts as PNG files beside it",
    )
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), help="two recordings to compare (before, after)")
    parser.add_argument(
        "--slo-ttft",
        type=float,
        default=_DEFAULTS.slo_ttft_seconds,
        metavar="S",
        help=f"TTFT SLO in seconds for attainment and goodput (default {_DEFAULTS.slo_ttft_seconds:g})",
    )
    parser.add_argument(
        "--slo-itl",
        type=float,
        default=_DEFAULTS.slo_itl_seconds,
        metavar="S",
        help=f"ITL SLO in seconds for attainment and goodput (default {_DEFAULTS.slo_itl_seconds:g})",
    )
    parser.add_argument(
        "--window",
        type=float,
        default=_DEFAULTS.window_seconds,
        metavar="S",
        help=f"analysis window in seconds, as in replay (default {_DEFAULTS.window_seconds:g})",
    )
    parser.add_argument("--title", default=None, help="page title (default 'phaselens report')")
    return parser


def main(argv: Sequence[str] | None = None, loader: TickLoader = _default_loader) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings(slo_ttft_seconds=args.slo_ttft, slo_itl_seconds=args.slo_itl, window_seconds=args.window)
    out = Path(args.output)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)  # before rendering: Markdown writes its PNGs there
        if args.compare:
            text = _compare(args.compare, settings, loader, args.format, out)
        else:
            if not args.inputs:
                raise ReportError("give at least one recording (folder or .tar.gz), or --compare A B")
            summary, charts = build_summary(args.inputs, settings, loader)
            title = args.title or "phaselens report"
            if args.format == "md":
                text = render_markdown(summary, charts, title, out)
            else:
                text = render_html(summary, charts, title)
    except (ReportError, RecordingError, ValueError, OSError) as err:
        print(f"phaselens report: {err}", file=sys.stderr)
        return 2
    out.write_text(text, encoding="utf-8")
    print(f"phaselens report: wrote {out}", file=sys.stderr)
    return 0


def _compare(pair: Sequence[str], settings: Settings, loader: TickLoader, fmt: str, out: Path) -> str:
    (a, _), (b, _) = (build_summary([p], settings, loader) for p in pair)
    rows = render_compare(a, b)
    if not rows:
        raise ReportError("the two recordings share no target name to compare")
    headers = ["figure", "target", f"A: {pair[0]}", f"B: {pair[1]}", "B - A"]
    if fmt == "md":
        lines = ["# phaselens comparison", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    body = _table(headers, rows)
    sentences = "".join(
        f"<li>{html.escape(name)}: {html.escape(s)}</li>"
        for name, summ in (("A", a), ("B", b))
        for t in summ.targets
        for s in t.sentences[:3]
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>phaselens comparison</title>"
        f"<style>{STYLE}</style></head><body><h1>phaselens comparison</h1><ul>{sentences}</ul>{body}</body></html>"
    )
