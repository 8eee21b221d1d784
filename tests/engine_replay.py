"""A real HTTP engine double for subprocess tests: serves recorded vLLM scrapes in a thread.

The bodies are the real captures in tests/fixtures/vllm-0.32.0-cpu-aggregated (one per request,
the last repeated); `required_auth`, when set, is the `Authorization` value it demands (401
otherwise); every `Authorization` value it saw is kept in `seen_auth`.
"""

from __future__ import annotations

import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CAPTURE = Path(__file__).parent / "fixtures" / "vllm-0.32.0-cpu-aggregated" / "scrapes.tar.gz"


def recorded_bodies(count: int = 40) -> list[bytes]:
    with tarfile.open(CAPTURE) as archive:
        members = sorted((m for m in archive.getmembers() if m.name.endswith(".prom")), key=lambda m: m.name)
        bodies = []
        for member in members[:count]:
            handle = archive.extractfile(member)
            assert handle is not None
            bodies.append(handle.read())
    return bodies


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ReplayEngine:
    def __init__(self, required_auth: str | None = None, port: int = 0) -> None:
        self.bodies = recorded_bodies()
        self.required_auth = required_auth
        self.seen_auth: list[str | None] = []
        self.paths: list[str] = []
        self.index = 0
        engine = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                engine.seen_auth.append(self.headers.get("Authorization"))
                engine.paths.append(self.path)
                if engine.required_auth is not None and self.headers.get("Authorization") != engine.required_auth:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = engine.bodies[min(engine.index, len(engine.bodies) - 1)]
                engine.index += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @classmethod
    def on_port(cls, port: int) -> ReplayEngine:
        return cls(port=port)

    def __enter__(self) -> ReplayEngine:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
