"""1 Hz recorder for end-to-end runs, in the `phaselens record` format.

Scrapes every engine target at the same instant and writes `<out>/scrapes/<role>/NNNN.prom`, each
file the body of one `GET /metrics` preceded by `# scrape_time <unix>` (the request's midpoint).
With --sidecar it also saves the sidecar's `/signals` JSON (one line per poll in signals.jsonl)
and its `/metrics` (`<out>/sidecar/NNNN.prom`), so that the assertions compare what the sidecar
exported at known instants with the client's ground truth.

Why not `phaselens record`: one process scraping every role at the same instant keeps the
prefill and decode recordings aligned, and the run keeps working while the sidecar is the thing
under test. The format is the same, so `phaselens replay` reads these folders.
Usage: python e2e/recorder.py --out DIR --target ROLE=URL [...] [--sidecar [NAME=]URL ...] [--interval 1]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType
from typing import TextIO


def scrape(url: str, timeout_s: float) -> tuple[float, bytes | None, str]:
    t0 = time.time()
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body = bytes(resp.read())
        return (t0 + time.time()) / 2, body, ""
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return t0, None, f"{type(exc).__name__}: {exc}"


def write_scrape(folder: Path, index: int, when: float, body: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{index:04d}.prom").write_bytes(f"# scrape_time {when:.3f}\n".encode() + body)


def parse_target(text: str) -> tuple[str, str]:
    role, sep, url = text.partition("=")
    if not sep or not role or not url.startswith("http"):
        raise argparse.ArgumentTypeError(f"want ROLE=URL, got {text!r}")
    return role, url


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--target", action="append", type=parse_target, default=[], help="ROLE=METRICS_URL")
    ap.add_argument(
        "--sidecar",
        action="append",
        default=[],
        help="sidecar base URL, [NAME=]http://host:port (repeatable; a named one records to "
        "signals-NAME.jsonl and sidecar-NAME/)",
    )
    ap.add_argument("--interval", type=float, default=1.0)
    args = ap.parse_args(argv)

    stopping = threading.Event()

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    jobs: list[tuple[str, str]] = list(args.target)
    signals_out: dict[str, TextIO] = {}
    sidecar_dirs: dict[str, str] = {}
    for spec in args.sidecar:
        head, sep, tail = spec.partition("=")
        name, base = (head, tail) if sep and not head.startswith("http") else ("", spec)
        base = base.rstrip("/")
        suffix = f"-{name}" if name else ""
        jobs += [(f"__sidecar_metrics{suffix}", f"{base}/metrics"), (f"__sidecar_signals{suffix}", f"{base}/signals")]
        signals_out[f"__sidecar_signals{suffix}"] = (args.out / f"signals{suffix}.jsonl").open("a")
        sidecar_dirs[f"__sidecar_metrics{suffix}"] = f"sidecar{suffix}"
    counts = {name: 0 for name, _ in jobs}
    errors = (args.out / "recorder-errors.log").open("a")
    next_tick = time.monotonic()
    while not stopping.is_set():
        results: dict[str, tuple[float, bytes | None, str]] = {}

        def run(name: str, url: str, results: dict[str, tuple[float, bytes | None, str]] = results) -> None:
            results[name] = scrape(url, timeout_s=max(0.5, args.interval * 0.9))

        threads = [threading.Thread(target=run, args=job) for job in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for name, (when, body, err) in results.items():
            if body is None:
                errors.write(f"{when:.3f} {name} {err}\n")
                errors.flush()
                continue
            if name in signals_out:
                try:
                    payload = json.loads(body)
                except json.JSONDecodeError as exc:
                    errors.write(f"{when:.3f} {name} bad JSON: {exc}\n")
                    continue
                signals_out[name].write(json.dumps({"t": when, "signals": payload}) + "\n")
                signals_out[name].flush()
            else:
                folder = args.out / sidecar_dirs.get(name, f"scrapes/{name}")
                write_scrape(folder, counts[name], when, body)
            counts[name] += 1
        next_tick += args.interval
        stopping.wait(max(0.0, next_tick - time.monotonic()))
    print(f"recorder: {counts}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
