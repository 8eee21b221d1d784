"""JSON logging: one object per line on stderr, with a stable `event` name.

stdout is reserved for the recommendation stream (and `replay --jsonl`), so operational logs go
to stderr. Event names are a contract for log queries: `settings`, `scrape_failed`,
`target_recovered`, `parse_failed`, `analyzer_failed`, `signal_dropped`, `server_started`,
`shutdown`, `otlp_enabled`, `record_written`; for a Dynamo deployment (sidecar/dynamo_stage.py)
`dynamo_frontend_no_workers`, `dynamo_worker_unjoined`, `dynamo_worker_unknown_to_frontend`,
`dynamo_worker_id_missing`, `dynamo_worker_gone`, `dynamo_frontend_gone`, `dynamo_issue_cleared`.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

LOGGER_NAME = "phaselens"
_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "event", ...fields}`; the exception, if any, as `error` and `traceback`."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", None) or record.getMessage(),
            "logger": record.name,
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and key not in payload and not key.startswith("_"):
                payload[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            payload["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
            payload["traceback"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, separators=(",", ":"))


def setup_logging(level: str = "info", stream: TextIO | None = None) -> logging.Logger:
    """Configure the `phaselens` logger (idempotent): JSON lines to `stream` (stderr by default)."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    return logger


def get_logger(component: str) -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{component}")


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log a structured event: `event` is the stable name, `fields` the keys next to it."""
    if logger.isEnabledFor(level):
        exc_info = fields.pop("exc_info", None)
        logger.log(level, event, extra={"event": event, **fields}, exc_info=exc_info)
