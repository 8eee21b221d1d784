"""Starting, waiting for and stopping the live processes of an end-to-end run.

Every process is started in its own session (process group) so that stopping it also stops the
workers it spawned (vLLM forks an engine core and CPU workers), and only those: the group id is
the pid we started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, n: int = 30) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


def start(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    stdout_path: Path | None = None,
) -> Proc:
    """Start argv in a new process group; stderr (and stdout unless stdout_path) to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    log = log_path.open("ab")
    out = stdout_path.open("ab") if stdout_path is not None else log
    popen = subprocess.Popen(
        list(argv), stdout=out, stderr=log, env=full_env, start_new_session=True, stdin=subprocess.DEVNULL
    )
    return Proc(name, popen, log_path)


def stop(proc: Proc, grace_s: float = 15.0) -> None:
    """SIGINT the process group, then SIGKILL it if it has not exited after grace_s."""
    if not proc.alive:
        return
    pgid = proc.popen.pid  # start_new_session: the group id is the child's pid
    for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        try:
            proc.popen.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    # the group may outlive its leader (orphaned workers): make sure none is left
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_http(url: str, timeout_s: float, procs: Sequence[Proc] = ()) -> float:
    """Poll url until it answers 200; returns seconds waited. Fails fast if a process died."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if http_ok(url):
            return time.monotonic() - t0
        for p in procs:
            if not p.alive:
                raise RuntimeError(f"{p.name} exited with {p.popen.returncode}:\n{p.log_tail()}")
        time.sleep(0.5)
    tails = "\n".join(f"--- {p.name}\n{p.log_tail()}" for p in procs)
    raise TimeoutError(f"{url} not ready after {timeout_s:.0f} s\n{tails}")


def fetch(url: str, timeout_s: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return bytes(resp.read())


def raise_own_priority(niceness: int = -10) -> int:
    """Run the calling process (the load client, a recorder) ahead of the engine's CPU-bound workers.

    On two cores the engine's worker threads keep both cores busy; a load client at the same
    priority then wakes late (measured: its event loop 0.1-1.3 s late at the p99), and every TTFT
    and finish it stamps is late by as much: the instrument, not the system, sets the tail. The
    client needs little CPU, so running it first barely slows the engine. Needs root (or
    CAP_SYS_NICE); without it the niceness stays and the loop lag in the report shows the cost.
    Returns the niceness in effect.
    """
    with contextlib.suppress(PermissionError, OSError):
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
    return os.getpriority(os.PRIO_PROCESS, 0)


def pin_group(proc: Proc, cpus: set[int]) -> int:
    """Set the CPU affinity of every thread of every process in proc's group; returns threads pinned.

    Launching under `taskset` is not enough for vLLM's CPU build: its worker re-binds its main
    (compute) thread from VLLM_CPU_OMP_THREADS_BIND, and in a P/D run both engines' compute threads
    were seen on the same core, which starved one engine for ~30 s at a time. Run once the server is
    up, when every thread exists.
    """
    pgid = proc.popen.pid
    pinned = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            tids = [int(t.name) for t in (entry / "task").iterdir()]
        except (ProcessLookupError, PermissionError, FileNotFoundError, OSError):
            continue
        for tid in tids:
            with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
                os.sched_setaffinity(tid, cpus)
                pinned += 1
    return pinned
