"""`phaselens` command line: one function per subcommand, listed in `COMMANDS`.

To add a subcommand, write `_configure_<name>(parser)` and `_run_<name>(args) -> int` and add a
`Command` row; a subcommand with its own argument parser (`nixl-telemetry`) is a `DELEGATES` row
naming its module, which has `build_parser()` and `main(argv) -> int`. Exit codes: 0 ok, 1 failed
check / runtime failure, 2 bad usage or bad input (with a one-line message on stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phaselens import __version__
from phaselens.clock import ManualClock, SystemClock
from phaselens.config import add_options, load_settings, require_targets, settings_for_log
from phaselens.delegates import DELEGATES, run_delegate
from phaselens.exporters.recommendations import RecommendationSink, recommendation_fields
from phaselens.logs import get_logger, log_event, setup_logging
from phaselens.model import TickResult
from phaselens.redact import redact
from phaselens.settings import ConfigError, Settings
from phaselens.sources.recording import RecordingError, load_all, merge_by_time
from phaselens.verdict import VerdictLog, human_line

_log = get_logger("cli")
REPLAY_OPTIONS = (
    "slo_ttft",
    "slo_itl",
    "window",
    "stale_after",
    "engine",
    "recommendation_interval",
    "nixl_telemetry",
    "log_file",
    "log_level",
)


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """Bad input named on the command line: printed as one line, exit code 2."""


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    return {key: value for key, value in vars(args).items() if value is not None}


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(_flags(args), os.environ, getattr(args, "config", None))


def tick_json(tick: TickResult) -> str:
    """One `--jsonl` line: exactly the series `/metrics` exports at this tick."""
    return json.dumps(
        {
            "ts": tick.time,
            "signals": [{"name": s.name, "labels": dict(s.labels), "value": s.value} for s in tick.signals],
            "recommendations": [recommendation_fields(rec) for rec in tick.recommendations],
        },
        separators=(",", ":"),
        allow_nan=False,
    )


# --------------------------------------------------------------------------- run


def _configure_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON settings file [env PHASELENS_CONFIG]")
    parser.add_argument("--check-config", action="store_true", help="validate the settings, print them, exit 0/1")
    add_options(parser)


def _run_run(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args)
        require_targets(settings)
    except ConfigError as exc:
        print(redact(f"phaselens: invalid configuration: {exc}"), file=sys.stderr)
        return 1 if args.check_config else 2
    if args.check_config:
        print(json.dumps({"config": "ok", "settings": settings_for_log(settings)}, indent=2))
        return 0
    setup_logging(settings.log_level)
    log_event(_log, "settings", version=__version__, settings=settings_for_log(settings))
    from phaselens.server import Sidecar, serve

    sidecar = Sidecar(settings, SystemClock())
    app = sidecar.build_app()
    asyncio.run(serve(app, settings.listen_host, settings.listen_port, settings.shutdown_timeout_seconds))
    return 0


# --------------------------------------------------------------------------- replay


def _configure_replay(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="[ROLE=]PATH", help="folder or .tar.gz of NNNN.prom scrapes")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--jsonl", action="store_true", help="print one JSON object per tick")
    out.add_argument("--json", action="store_true", help="print recommendations as the pod-log JSON lines")
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON settings file")
    add_options(parser, only=REPLAY_OPTIONS)


def _run_replay(args: argparse.Namespace) -> int:
    from phaselens.assembly import build_pipeline
    from phaselens.pipeline import replay_targets, replay_ticks

    try:
        settings = _settings(args)
        sources = load_all(args.paths)
    except (ConfigError, RecordingError) as exc:
        print(f"phaselens replay: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    targets = replay_targets(sources, args.engine or "auto")
    clock = ManualClock()
    pipeline = build_pipeline(settings, clock, targets=targets, replay=True)
    sink = RecommendationSink(settings.recommendation_min_interval_seconds)
    verdict = VerdictLog()
    held: list[str] = []
    ticks = 0
    try:
        for tick in replay_ticks(pipeline, clock, merge_by_time(sources)):
            ticks += 1
            if args.jsonl:
                sys.stdout.write(tick_json(tick) + "\n")
            elif args.json:
                sink.emit(tick.recommendations, tick.time)
            else:
                verdict.observe(tick)
                for rec in tick.recommendations:
                    if sink.admit(rec, tick.time):
                        sink.sent[rec.code] += 1
                        held.append(human_line(rec, tick.time - (verdict.start or tick.time)))
    except RecordingError as exc:
        print(f"phaselens replay: {exc}", file=sys.stderr)
        return 2
    if not args.jsonl and not args.json:
        # The verdict first, then the details (the same human form as `demo`).
        span = (verdict.end or 0.0) - (verdict.start or 0.0)
        sys.stdout.write("\n".join(verdict.lines()) + "\n\nDetails:\n" + "".join(f"{line}\n" for line in held))
        sys.stdout.write(f"Replayed {ticks} ticks ({span:.0f} s); recommendations: {sum(sink.sent.values())} "
                         f"({', '.join(sorted(sink.sent)) or 'none'})\n")
    sys.stdout.flush()
    log_event(
        _log,
        "replay_finished",
        ticks=ticks,
        targets=[t.name for t in targets],
        recommendations=dict(sink.sent),
        analyzer_failures=pipeline.analyzer_failures_total,
    )
    return 0


# --------------------------------------------------------------------------- record


def _configure_record(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", required=True, metavar="URL", help="metrics endpoint to record")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for NNNN.prom files")
    parser.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between scrapes")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S", help="per-scrape timeout")
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--count", type=int, metavar="N", help="stop after N scrapes")
    stop.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")


def _run_record(args: argparse.Namespace) -> int:
    from phaselens.config import parse_target
    from phaselens.sources.recording import record

    setup_logging("info")
    try:
        target = parse_target(args.target)
        if args.interval <= 0 or args.timeout <= 0:
            raise ConfigError("--interval and --timeout must be positive")
        if args.count is not None and args.count <= 0:
            raise ConfigError("--count must be positive")
    except ConfigError as exc:
        print(redact(f"phaselens record: {exc}"), file=sys.stderr)
        return 2
    try:
        written = asyncio.run(
            record(target.url, Path(args.out), args.interval, args.timeout, args.count, args.duration)
        )
    except OSError as exc:
        print(f"phaselens record: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0 if written else 1


# --------------------------------------------------------------------------- demo


def _configure_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--once", action="store_true", help="replay as fast as possible, print, exit")
    parser.add_argument("--listen", default="127.0.0.1:9469", metavar="HOST:PORT", help="where to serve /metrics")
    parser.add_argument(
        "--speed", type=float, default=10.0, metavar="X", help="replay speed-up when serving (default 10x)"
    )
    parser.add_argument("--json", action="store_true", help="print recommendations as the pod-log JSON lines")


def _run_demo(args: argparse.Namespace) -> int:
    from phaselens.demo import run_demo

    if args.speed <= 0:
        print("phaselens demo: --speed must be positive", file=sys.stderr)
        return 2
    setup_logging("warning")
    return run_demo(once=args.once, listen=args.listen, speed=args.speed, as_json=args.json)


# --------------------------------------------------------------------------- table and entry point

COMMANDS: tuple[Command, ...] = (
    Command("run", "run the sidecar: scrape, analyze, serve /metrics", _configure_run, _run_run),
    Command("replay", "run the pipeline on recorded scrapes", _configure_replay, _run_replay),
    Command("record", "record scrapes of a metrics endpoint", _configure_record, _run_record),
    Command("demo", "replay the bundled real capture", _configure_demo, _run_demo),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="phaselens", description="LLM-serving phase and KV-cache signals")
    parser.add_argument("--version", action="version", version=f"phaselens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.configure(sub.add_parser(command.name, help=command.help, description=command.help))
    for name, delegate in DELEGATES.items():
        sub.add_parser(name, help=delegate.help, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in DELEGATES:
        return run_delegate(arguments[0], arguments[1:])
    args = build_parser().parse_args(arguments)
    command = next(c for c in COMMANDS if c.name == args.command)
    try:
        return command.run(args)
    except BrokenPipeError:
        # stdout closed early (`| head`): not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0  # unreachable: argparse rejects unknown commands


if __name__ == "__main__":
    raise SystemExit(main())
