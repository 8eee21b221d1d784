"""A small on-disk JSON state file that survives restarts (daily profile, model weights, ...).

Writes are atomic: the JSON goes to a temporary file in the same folder, is flushed and fsynced,
then `os.replace`d over the old file, so a crash mid-write leaves the previous state intact.
A missing file is a fresh start; an unreadable or corrupt one is logged as a warning and also a
fresh start (the sidecar must come up even if its state is damaged). The broken file is kept
beside it as `<name>.corrupt` for inspection, and overwritten by the next save.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from phaselens.logs import get_logger, log_event

_log = get_logger("state")
MAX_STATE_BYTES = 16 * 1024 * 1024


class StateFile:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, Any]:
        """The saved dict, or {} when missing / corrupt (corrupt: warning, file moved aside)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log_event(_log, "state_unreadable", logging.WARNING, path=str(self.path), error=str(exc))
            return {}
        try:
            if size > MAX_STATE_BYTES:
                raise ValueError(f"state file is {size} bytes, over the {MAX_STATE_BYTES} limit")
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("state file does not hold a JSON object")
            return data
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            log_event(
                _log,
                "state_corrupt",
                logging.WARNING,
                path=str(self.path),
                error=str(exc),
                action="starting with fresh state",
            )
            with contextlib.suppress(OSError):
                os.replace(self.path, self.path.with_name(self.path.name + ".corrupt"))
            return {}

    def save(self, data: dict[str, Any]) -> None:
        """Atomically replace the file with `data` as JSON. Raises OSError if the folder is unwritable."""
        text = json.dumps(_finite(data), separators=(",", ":"), sort_keys=True)
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        try:  # make the rename itself durable
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass


def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: replace them with null rather than write a file we cannot read back."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
