"""Bounds on the sidecar's HTTP connections, so idle or stalled clients cannot lock out `/healthz`.

aiohttp (before 3.14) never times out a connection that has not sent a complete request, and
no aiohttp version caps how many connections it holds: 300 idle sockets under a 256-file limit
left no descriptor for the kubelet's probe. `ConnectionGuard` watches the server's connections
through `web.Server`'s `connection_made` / `connection_lost` hooks and a middleware:

- header timeout: a connection that has not finished sending a request within
  `header_timeout` seconds of opening (or of its previous response) is closed; this also ends
  "slowloris" clients that trickle a header a byte at a time;
- keep-alive timeout: a connection idle for `keepalive_timeout` after a response is closed;
- cap: above `max_connections`, the connections idle longest are closed to make room for the
  new one (a connection inside a handler is never closed). The default cap leaves headroom
  under the process's open-file limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from phaselens.logs import get_logger, log_event

_log = get_logger("http")
FD_HEADROOM = 64  # descriptors kept free for scrapes, state and log files, NIXL rings


def default_max_connections(limit: int = 1024) -> int:
    """`limit`, or fewer when the open-file limit would not leave FD_HEADROOM descriptors."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return limit
    return max(8, min(limit, soft - FD_HEADROOM))


@dataclass(slots=True)
class _Conn:
    transport: asyncio.Transport
    since: float  # when it opened, or when its last response finished
    active: int = 0  # requests inside a handler now
    served: int = 0  # requests answered on it


class ConnectionGuard:
    def __init__(
        self,
        header_timeout: float,
        keepalive_timeout: float,
        max_connections: int,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.header_timeout = header_timeout
        self.keepalive_timeout = keepalive_timeout
        self.max_connections = max_connections
        self._clock = clock
        self._conns: dict[Any, _Conn] = {}
        self._task: asyncio.Task[None] | None = None
        self.closed_idle = 0
        self.closed_for_room = 0
        self._warned = False

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    # ------------------------------------------------------------------ wiring

    def install(self, server: web.Server) -> None:
        """Hook the server's per-connection callbacks (public methods the request handler calls)."""
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            made(handler, transport)
            self._conns[handler] = _Conn(transport, self._now())
            if len(self._conns) > self.max_connections:
                self._make_room(handler)

        def connection_lost(handler: Any, exc: BaseException | None) -> None:
            self._conns.pop(handler, None)
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign,assignment]

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        conn = self._conns.get(request.protocol)
        if conn is not None:
            conn.active += 1
        try:
            return await handler(request)
        finally:
            if conn is not None:
                conn.active -= 1
                conn.served += 1
                conn.since = self._now()

    def start(self) -> None:
        self._task = asyncio.create_task(self._sweep_forever(), name="http-guard")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # ------------------------------------------------------------------ policy

    def sweep(self) -> int:
        """Close the connections past their timeout; the number closed."""
        now = self._now()
        expired = [
            handler
            for handler, conn in self._conns.items()
            if not conn.active and now - conn.since > (self.keepalive_timeout if conn.served else self.header_timeout)
        ]
        for handler in expired:
            self._close(handler)
        self.closed_idle += len(expired)
        return len(expired)

    def _make_room(self, newest: Any) -> None:
        idle = sorted(
            (h for h, c in self._conns.items() if not c.active and h is not newest), key=lambda h: self._conns[h].since
        )
        excess = len(self._conns) - self.max_connections
        victims = idle[:excess] if len(idle) >= excess else [*idle, newest]
        for handler in victims:
            self._close(handler)
        self.closed_for_room += len(victims)
        if not self._warned:
            self._warned = True  # once: a flood of connections must not become a flood of lines
            log_event(
                _log,
                "http_connections_capped",
                logging.WARNING,
                max_connections=self.max_connections,
                action="closing the connections idle longest",
            )

    def _close(self, handler: Any) -> None:
        conn = self._conns.pop(handler, None)
        if conn is not None:
            conn.transport.abort()  # frees the descriptor now, unlike a graceful close

    async def _sweep_forever(self) -> None:
        period = max(0.1, min(self.header_timeout, self.keepalive_timeout) / 4)
        while True:
            await asyncio.sleep(period)
            self.sweep()
