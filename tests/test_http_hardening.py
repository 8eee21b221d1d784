"""Our HTTP server against hostile clients: malformed requests, idle and half-sent connections.

Each test runs a real `phaselens run` in a child process (scraping a closed port: no engine is
needed for these endpoints) and talks to it over raw sockets.
"""

from __future__ import annotations

import json
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from engine_replay import free_port

BAD_REQUESTS = [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello on the plain port
    b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /metrics HTTP/1.1\r\nBad Header Without Colon\r\n\r\n",
]


@contextmanager
def sidecar(*extra: str, nofile: int | None = None) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    port = free_port()

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "phaselens",
            "run",
            "--target",
            f"http://127.0.0.1:{free_port()}/metrics",
            "--listen",
            f"127.0.0.1:{port}",
            "--no-gpu-telemetry",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield port, child
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
        child.communicate(timeout=30)


def exchange(port: int, payload: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and b"Connection: close" not in b"".join(chunks):
                    break
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(10) == b""
    except ConnectionResetError:  # the guard aborts: a reset is a close too
        return True


def healthz(port: int, timeout: float = 5.0) -> bytes:
    return exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout)


def test_bad_requests_leave_only_rate_limited_json_lines_on_stderr() -> None:
    with sidecar() as (port, child):
        for _ in range(50):
            for payload in BAD_REQUESTS:
                reply = exchange(port, payload)
                assert b" 400 " in reply.split(b"\r\n", 1)[0], reply[:200]
        assert healthz(port).startswith(b"HTTP/1.1 200")
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=30)
    lines = stderr.splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    bad = [r for r in records if r["event"] == "http_bad_request"]
    assert bad, "the bad requests were not logged at all"
    assert all("traceback" not in r for r in bad)
    # 300 bad requests, a handful of kinds: at most 10 lines per kind and minute
    assert len(bad) <= 10 * len(BAD_REQUESTS), len(bad)
    assert len(lines) < 80


def test_no_version_revealing_server_header() -> None:
    with sidecar() as (port, _):
        for reply in (healthz(port), exchange(port, BAD_REQUESTS[1])):
            head = reply.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
            assert "aiohttp" not in head and "python" not in head, head
            assert "server: phaselens\r" in head + "\r"


def test_idle_and_half_sent_sockets_under_a_low_file_limit_leave_healthz_reachable() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1024:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    held: list[socket.socket] = []
    with sidecar(nofile=256) as (port, child):
        try:
            for i in range(350):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                if i % 7 == 0:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
                held.append(sock)
            started = time.monotonic()
            reply = healthz(port, timeout=5)
            assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
            assert time.monotonic() - started < 5
            assert child.poll() is None
        finally:
            for sock in held:
                sock.close()


def test_silent_connection_is_closed_after_the_header_timeout() -> None:
    with (
        sidecar("--http-header-timeout", "1") as (port, _),
        socket.create_connection(("127.0.0.1", port), timeout=10) as idle,
        socket.create_connection(("127.0.0.1", port), timeout=10) as trickle,
    ):
        started = time.monotonic()
        trickle.sendall(b"GET /healthz HTTP/1.1\r\n")
        for _ in range(3):
            time.sleep(0.5)
            try:
                trickle.sendall(b"X")  # slowloris: a byte now and then, never a whole header
            except OSError:
                break
        assert closed_by_peer(idle) and closed_by_peer(trickle)
        assert time.monotonic() - started < 6
