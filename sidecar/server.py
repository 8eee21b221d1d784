"""The live sidecar: scrape loops, the tick loop and the HTTP endpoints, wired with cleanup_ctx.

Endpoints: `/metrics` (our own registry, text 0.0.4 or OpenMetrics by Accept), `/healthz`
(pipeline heartbeat age), `/readyz` (ready after the first good scrape), `/signals` (JSON for
KEDA's metrics-api scaler; shape in `signals_document`). SIGTERM/SIGINT stop it gracefully
within `settings.shutdown_timeout_seconds`. Ticks run in one long-lived daemon worker thread, so a long
tick never holds up the endpoints or the shutdown; the endpoints read the published TickResult.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import signal
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import aiohttp
from aiohttp import web, web_response
from phaselens.assembly import build_pipeline
from phaselens.clock import Clock, SystemClock
from phaselens.exporters.prometheus import CachedRenderer
from phaselens.exporters.recommendations import RecommendationSink
from phaselens.exporters.specs import SPECS_BY_NAME
from phaselens.http_guard import ConnectionGuard, default_max_connections
from phaselens.logs import get_logger, log_event
from phaselens.model import TickResult
from phaselens.pipeline import Pipeline
from phaselens.settings import Settings
from phaselens.sources.auth_file import AuthFile
from phaselens.sources.scraper import ScrapeLoop, ScrapeResult, backoff_cap, raise_if_cancelling

_log = get_logger("server")
_T = TypeVar("_T")


def in_daemon_thread(func: Callable[[], _T]) -> asyncio.Future[_T]:
    """Run `func` in a new daemon thread; the future resolves on the loop.

    Not the default executor: its threads are joined at exit, so a long tick would hold the
    process past `--shutdown-timeout`; a daemon thread is abandoned when the process ends.
    Cancelling the future does not stop `func` (Python threads cannot be stopped).
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()
    threading.Thread(target=_run_job, args=(loop, future, func), name="phaselens-worker", daemon=True).start()
    return future


def _run_job(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], func: Callable[[], Any]) -> None:
    """Run `func` in this thread and settle `future` with its outcome on `loop`."""
    try:
        outcome, error = func(), None
    except BaseException as exc:  # handed to the awaiting task
        outcome, error = None, exc
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody is waiting
        loop.call_soon_threadsafe(_settle, future, outcome, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class TickWorker:
    """One long-lived daemon thread that runs the ticks, one after another, off the event loop.

    A new thread per tick (`in_daemon_thread`) cost a thread start 4 times a second at
    `--interval 0.25`, and `Thread.start` blocks the event loop until the new thread is
    scheduled, which on a busy machine delays the scrapes too (bench_sidecar_cpu.py,
    py-spy). Daemon for the same reason as `in_daemon_thread`: a tick still running at exit
    is abandoned, never joined.
    """

    def __init__(self, name: str = "phaselens-tick") -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] | None = None  # the running thread's own queue

    def submit(self, func: Callable[[], _T]) -> asyncio.Future[_T]:
        """Run `func` in the worker thread (started on first use); the future resolves on the calling loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            threading.Thread(target=_serve, args=(self._jobs,), name=self._name, daemon=True).start()
        self._jobs.put((loop, future, func))
        return future

    def stop(self) -> None:
        """The thread ends after the jobs already submitted; it is not waited for."""
        if self._jobs is not None:
            self._jobs.put(None)
            self._jobs = None


_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]]


def _serve(jobs: queue.SimpleQueue[_Job | None]) -> None:
    while (job := jobs.get()) is not None:
        _run_job(*job)


SIDECAR_KEY: web.AppKey[Sidecar] = web.AppKey("sidecar")
GUARD_KEY: web.AppKey[ConnectionGuard] = web.AppKey("connection_guard")
# aiohttp names itself and Python, with versions, in a `Server` header on every response,
# including the 400s it writes for malformed requests before any of our code runs. The header
# is filled from this module global at response time; no API covers those error responses.
SERVER_HEADER = "phaselens"
web_response.SERVER_SOFTWARE = SERVER_HEADER


def _nest(tree: dict[str, Any], keys: list[str], value: float) -> None:
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    last = keys[-1]
    previous = node.get(last)
    # Several (model_name, engine) groups of one target collide here: keep the largest,
    # the conservative choice for scaling. Every series is also listed under "series".
    node[last] = value if not isinstance(previous, float | int) else max(previous, value)


def signals_document(tick: TickResult | None) -> dict[str, Any]:
    """`{"ts", "signals": {name: {target: value | {extra label values...: value}}}, "series": [...]}`.

    Path to a value: the signal name, then the `target` (or `role` for pool signals), then the
    values of the signal's extra labels in spec order (percentile, slo, bound, ...). Examples, in
    GJSON syntax as KEDA's `valueLocation` takes it:
    `signals.phaselens_prefill_backlog_seconds.prefill`,
    `signals.phaselens_ttft_seconds.aggregated.90` (the 0.9 quantile; a dot inside a key, as in
    a percentile of "99.9", is escaped: `99\\.9`).
    A signal without labels (`phaselens_tick_duration_seconds`) is the value itself.
    `warnings` lists the engine metrics a reader would likely misread, as seen in this tick
    (`{"target", "code", "metric", "message", "value", "first_seen"}`; codes in
    parsers/engines/semantics.py and analyzers/kv_pressure.py).
    """
    if tick is None:
        return {"ts": None, "signals": {}, "series": [], "warnings": []}
    nested: dict[str, Any] = {}
    series = []
    for sig in tick.signals:
        labels = dict(sig.labels)
        series.append({"name": sig.name, "labels": labels, "value": sig.value})
        spec = SPECS_BY_NAME[sig.name]
        owner = labels.get("target") or labels.get("role")
        keys = ([owner] if owner else []) + [labels.get(label, "") for label in spec.extra_labels]
        if keys:
            nested.setdefault(sig.name, {})
            _nest(nested[sig.name], keys, sig.value)
        else:
            nested[sig.name] = sig.value
    warnings = [
        {
            "target": w.target,
            "code": w.suspect.code,
            "metric": w.suspect.metric,
            "message": w.suspect.message,
            "value": w.suspect.value,
            "first_seen": w.first_seen,
        }
        for w in tick.warnings
    ]
    return {"ts": tick.time, "signals": nested, "series": series, "warnings": warnings}


class Sidecar:
    """Owns the pipeline, the scrape loops, the tick loop and (optionally) the OTLP exporter."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        pipeline: Pipeline | None = None,
        sink: RecommendationSink | None = None,
        on_tick: Callable[[TickResult], None] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.pipeline = pipeline or build_pipeline(settings, self.clock)
        self.sink = sink or RecommendationSink(settings.recommendation_min_interval_seconds)
        self.renderer = CachedRenderer(lambda: self.pipeline.latest)
        self.registry = self.renderer.registry
        self.on_tick = on_tick
        self.started_monotonic = self.clock.monotonic()
        self.tasks: list[asyncio.Task[None]] = []
        self._fresh_data = asyncio.Event()
        self._delivered: set[str] = set()  # targets with a result since the last tick started
        self._tick_lock = threading.Lock()
        self._worker = TickWorker()
        self._signals_body: tuple[TickResult | None, bytes] | None = None

    # ------------------------------------------------------------------ background work

    def run_tick(self) -> TickResult:
        """One tick, then its recommendations printed (synchronous: tests and tools)."""
        return self._publish(self._locked_tick())

    def _locked_tick(self) -> TickResult:
        with self._tick_lock:
            return self.pipeline.tick()

    def _publish(self, result: TickResult) -> TickResult:
        self.sink.emit(result.recommendations, result.time)
        if self.on_tick is not None:
            self.on_tick(result)
        return result

    def _close_pipeline(self) -> None:
        """Save state once no tick is running; a tick still running after the shutdown timeout (a
        huge scrape) is left to die with the process rather than raced by the state file."""
        if not self._tick_lock.acquire(timeout=self.settings.shutdown_timeout_seconds / 2):
            log_event(_log, "shutdown_tick_running", logging.WARNING, action="state not saved")
            return
        try:
            self.pipeline.close()
        finally:
            self._tick_lock.release()

    def _deliver(self, result: ScrapeResult) -> None:
        self.pipeline.submit(result)
        self._delivered.add(result.target)
        self._fresh_data.set()

    async def _coalesce(self, seconds: float) -> None:
        """Wait up to `seconds` for the other targets' results, so one tick takes them all; no
        wait once every target has delivered (one target: never; the wait was most of the tick
        delay at 0.25 s)."""
        loop = asyncio.get_running_loop()  # its clock times the waits (the injected one may be manual)
        deadline = loop.time() + seconds
        targets = len(self.settings.targets)
        while len(self._delivered) < targets:
            left = deadline - loop.time()
            if left <= 0:
                return
            self._fresh_data.clear()
            try:
                await asyncio.wait_for(self._fresh_data.wait(), timeout=left)
            except TimeoutError:
                raise_if_cancelling()
                return

    async def _tick_loop(self) -> None:
        """Tick as soon as new scrapes arrive (so /metrics lags the engine by one scrape, not a scrape
        plus a tick interval), coalescing results that land within a few ms unless every target
        has already delivered, and at least once per
        interval without any (so a dead target turns stale on time)."""
        interval = self.settings.interval_seconds
        coalesce = min(0.05, interval / 10)
        while True:
            try:
                await asyncio.wait_for(self._fresh_data.wait(), timeout=interval)
                await self._coalesce(coalesce)
            except TimeoutError:
                raise_if_cancelling()
            self._fresh_data.clear()
            self._delivered.clear()
            try:
                # Off the event loop: a tick over a huge scrape must never stall /healthz,
                # /metrics or SIGTERM. The pipeline publishes by swapping one reference.
                self._publish(await self._worker.submit(self._locked_tick))
            except Exception:  # the pipeline guards its stages; this is the last line of defence
                log_event(_log, "analyzer_failed", logging.ERROR, stage="tick", exc_info=True)

    async def _background(self, app: web.Application) -> AsyncIterator[None]:
        settings = self.settings
        connector = aiohttp.TCPConnector(limit_per_host=2, enable_cleanup_closed=True)
        session = aiohttp.ClientSession(connector=connector, auto_decompress=True)
        auth = AuthFile(settings.target_auth_file) if settings.target_auth_file else None
        for target in settings.targets:
            loop = ScrapeLoop(
                target,
                session,
                self.clock,
                self._deliver,
                settings.interval_seconds,
                settings.scrape_timeout_seconds,
                settings.jitter_ratio,
                settings.max_response_bytes,
                backoff_cap(settings.interval_seconds, settings.stale_after_seconds),
                auth=auth,
            )
            self.tasks.append(asyncio.create_task(loop.run(), name=f"scrape:{target.name}"))
        self.tasks.append(asyncio.create_task(self._tick_loop(), name="tick"))
        try:
            yield
        finally:
            await _cancel_all(self.tasks)
            self.tasks.clear()
            self._worker.stop()
            await session.close()
            await in_daemon_thread(self._close_pipeline)

    async def _otlp(self, app: web.Application) -> AsyncIterator[None]:
        if not self.settings.otlp_enabled:
            yield
            return
        from phaselens.exporters.otel import OtelExporter

        exporter = OtelExporter(
            lambda: self.pipeline.latest,
            temporality=self.settings.otlp_temporality,
            interval_seconds=self.settings.otlp_interval_seconds,
        )
        log_event(
            _log,
            "otlp_enabled",
            temporality=self.settings.otlp_temporality,
            interval_seconds=self.settings.otlp_interval_seconds,
        )
        try:
            yield
        finally:
            await exporter.shutdown(self.settings.shutdown_timeout_seconds)

    # ------------------------------------------------------------------ HTTP

    async def handle_metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.renderer.render(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    def heartbeat_age(self) -> float:
        last = self.pipeline.heartbeat_monotonic
        return self.clock.monotonic() - (last if last is not None else self.started_monotonic)

    async def handle_healthz(self, request: web.Request) -> web.Response:
        age = self.heartbeat_age()
        limit = max(5.0, 5 * self.settings.interval_seconds)
        status = 200 if age <= limit else 503
        return web.json_response(
            {"status": "ok" if status == 200 else "stalled", "heartbeat_age_seconds": round(age, 3)},
            status=status,
        )

    async def handle_readyz(self, request: web.Request) -> web.Response:
        ready = self.pipeline.ever_scraped_ok
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def handle_signals(self, request: web.Request) -> web.Response:
        return web.Response(body=self.signals_body(), content_type="application/json", charset="utf-8")

    def signals_body(self) -> bytes:
        """The /signals JSON of the published tick, built once per tick: pollers (KEDA, dashboards,
        bench_freshness.py at 20 Hz) read it far more often than a tick publishes at 0.25 s."""
        tick = self.pipeline.latest
        held = self._signals_body
        if held is None or held[0] is not tick:
            held = self._signals_body = (tick, json.dumps(signals_document(tick)).encode())
        return held[1]

    def build_app(self, background: bool = True) -> web.Application:
        settings = self.settings
        guard = ConnectionGuard(
            settings.http_header_timeout_seconds,
            settings.http_keepalive_timeout_seconds,
            settings.http_max_connections or default_max_connections(),
        )
        app = web.Application(middlewares=[guard.middleware])
        app[SIDECAR_KEY] = self
        app[GUARD_KEY] = guard
        app.router.add_get("/metrics", self.handle_metrics)
        app.router.add_get("/healthz", self.handle_healthz)
        app.router.add_get("/readyz", self.handle_readyz)
        app.router.add_get("/signals", self.handle_signals)
        if background:
            app.cleanup_ctx.append(self._background)
        app.cleanup_ctx.append(self._otlp)
        return app


async def serve(
    app: web.Application, host: str, port: int, shutdown_timeout: float, stop: asyncio.Event | None = None
) -> None:
    """Serve until SIGTERM/SIGINT (or `stop` is set), then shut down within `shutdown_timeout`."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    guard = app.get(GUARD_KEY)
    extra: dict[str, Any] = {"keepalive_timeout": guard.keepalive_timeout} if guard is not None else {}
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=shutdown_timeout, **extra)
    await runner.setup()
    if guard is not None and runner.server is not None:
        guard.install(runner.server)
        guard.start()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        addresses = [f"{a[0]}:{a[1]}" for a in runner.addresses if isinstance(a, tuple)]
        log_event(_log, "server_started", listen=addresses)
        await stop.wait()
        log_event(_log, "shutdown", reason="signal")
    finally:
        if guard is not None:
            await guard.stop()
        try:
            await asyncio.wait_for(runner.cleanup(), timeout=shutdown_timeout)
        except TimeoutError:
            log_event(_log, "shutdown", logging.WARNING, reason="timeout", timeout_seconds=shutdown_timeout)
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


async def _cancel_all(tasks: list[asyncio.Task[None]], rounds: int = 5, wait_seconds: float = 1.0) -> None:
    """Cancel the background tasks and wait for them, bounded: a shutdown must never hang.

    A cancellation can be swallowed (a request timer firing in the same instant turns it into a
    timeout), so a task still running after a wait is cancelled again; after `rounds` tries the
    rest are left behind with a warning instead of blocking the exit.
    """
    pending = {t for t in tasks if not t.done()}
    for _ in range(rounds):
        if not pending:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=wait_seconds)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log_event(_log, "background_task_failed", logging.ERROR, task=task.get_name(), err=repr(task.exception()))
    if pending:
        log_event(_log, "shutdown_tasks_stuck", logging.WARNING, tasks=sorted(t.get_name() for t in pending))
