"""JSON logging: one object per line on stderr, with a stable `event` name.

stdout is reserved for the recommendation stream (and `replay --jsonl`), so operational logs go
to stderr. Event names are a contract for log queries: `settings`, `scrape_failed`,
`target_recovered`, `parse_failed`, `analyzer_failed`, `signal_dropped`, `engine_metric_suspect`, `server_started`,
`shutdown`, `otlp_enabled`, `record_written`; for a Dynamo deployment (sidecar/dynamo_stage.py)
`dynamo_frontend_no_workers`, `dynamo_worker_unjoined`, `dynamo_worker_unknown_to_frontend`,
`dynamo_worker_id_missing`, `dynamo_worker_gone`, `dynamo_frontend_gone`, `dynamo_issue_cleared`.

Libraries log too (aiohttp's server on a bad request, asyncio, warnings): their records go
through the same JSON formatter via a root handler, rate-limited per message so a flood of bad
requests cannot flood the log, as `http_bad_request` (a client's malformed request: no
traceback), `http_error` (an error inside the HTTP server) or `library_log`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from phaselens.redact import redact, redact_value

LOGGER_NAME = "phaselens"
_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "event", ...fields}`; the exception, if any, as `error` and `traceback`.

    Every string in the line passes through `redact` (credentials in URLs and query strings),
    so no caller can leak one by logging a URL or an error message that quotes it.
    """

    def format(self, record: logging.LogRecord) -> str:
        ours = record.name == LOGGER_NAME or record.name.startswith(LOGGER_NAME + ".")
        exc = record.exc_info[1] if record.exc_info else None
        client_error = not ours and _is_client_error(exc)
        payload: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": "warning" if client_error else record.levelname.lower(),
            "event": getattr(record, "event", None) or (record.getMessage() if ours else _foreign_event(record, exc)),
            "logger": record.name,
        }
        if not ours:
            payload["message"] = record.getMessage()[:_MAX_MESSAGE]
        for key, value in vars(record).items():
            if key not in _RESERVED and key not in payload and not key.startswith("_"):
                payload[key] = value
        if record.exc_info and exc is not None:
            payload["error"] = f"{type(exc).__name__}: {exc}"[:_MAX_MESSAGE]
            if not client_error:  # a malformed request is the client's problem: no traceback
                payload["traceback"] = self.formatException(record.exc_info)
        return json.dumps(redact_value(payload), default=lambda o: redact(str(o)), separators=(",", ":"))


_MAX_MESSAGE = 1000


def _is_client_error(exc: BaseException | None) -> bool:
    """aiohttp's parse errors (400 Bad Request, 413, 431 ...): the peer sent something malformed."""
    if exc is None or not type(exc).__module__.startswith("aiohttp"):
        return False
    code = getattr(exc, "code", None)
    return isinstance(code, int) and 400 <= code < 500


def _foreign_event(record: logging.LogRecord, exc: BaseException | None) -> str:
    if record.name.startswith("aiohttp"):
        return "http_bad_request" if _is_client_error(exc) else "http_error"
    return "library_log"


class RateLimit(logging.Filter):
    """At most `burst` records per (logger, message template) per `period` seconds.

    What is dropped is counted; the next record let through for that key carries
    `suppressed=<count>`, so the log says how much it left out.
    """

    def __init__(self, burst: int = 10, period: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst = burst
        self.period = period
        self._clock = clock
        self._windows: dict[tuple[str, str], list[float]] = {}  # key -> [window start, sent, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg)[:200])
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now - window[0] >= self.period:
            if len(self._windows) > 1000:  # bounded: forget every key at once, rarely
                self._windows.clear()
            dropped = int(window[2]) if window is not None else 0
            self._windows[key] = [now, 1, 0]
            if dropped:
                record.suppressed = dropped
            return True
        if window[1] < self.burst:
            window[1] += 1
            return True
        window[2] += 1
        return False


_ROOT_HANDLER_MARK = "_phaselens_root_handler"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time of each record (it may be swapped later)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def _handler(stream: TextIO | None) -> logging.Handler:
    return logging.StreamHandler(stream) if stream is not None else _StderrHandler()


def setup_logging(level: str = "info", stream: TextIO | None = None) -> logging.Logger:
    """Configure the `phaselens` logger (idempotent): JSON lines to `stream` (stderr by default).

    Other libraries' records (warnings and above, through the root logger) are written as JSON
    lines to the same stream, rate-limited, so stderr holds nothing but JSON lines.
    """
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = _handler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _ROOT_HANDLER_MARK, False)]:
        root.removeHandler(old)
    foreign = _handler(stream)
    foreign.setFormatter(JsonFormatter())
    foreign.addFilter(RateLimit())
    foreign.setLevel(logging.WARNING)
    setattr(foreign, _ROOT_HANDLER_MARK, True)
    root.addHandler(foreign)
    logging.captureWarnings(True)
    return logger


def get_logger(component: str) -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{component}")


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log a structured event: `event` is the stable name, `fields` the keys next to it."""
    if logger.isEnabledFor(level):
        exc_info = fields.pop("exc_info", None)
        logger.log(level, event, extra={"event": event, **fields}, exc_info=exc_info)
