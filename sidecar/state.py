"""A small on-disk JSON state file that survives restarts (daily profile, model weights, ...).

Writes are atomic: the JSON goes to a temporary file in the same folder, is flushed and fsynced,
then `os.replace`d over the old file, so a crash mid-write leaves the previous state intact.
A missing file is a fresh start; an unreadable or corrupt one is logged as one `state_corrupt`
warning and also a fresh start (the sidecar must come up even if its state is damaged). A broken
regular file is kept beside it as `<name>.corrupt` for inspection, and overwritten by the next
save; anything else at the path (a folder, a FIFO, a device) is left alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from phaselens.logs import get_logger, log_event

_log = get_logger("state")
MAX_STATE_BYTES = 16 * 1024 * 1024
MAX_STATE_DEPTH = 32  # what we write nests 5 deep; anything far deeper is not ours


class StateFile:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, Any]:
        """The saved dict, or {} when missing / unusable (one `state_corrupt` warning).

        Only a regular file is read, and at most MAX_STATE_BYTES of it: a FIFO, a device or a
        folder at that path must neither hang nor exhaust memory at start-up, and is left where it
        is. A corrupt regular file is moved aside as `<name>.corrupt`.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return {}
        except OSError as exc:  # a folder, no permission, a loop of links ...
            self._corrupt(exc.strerror or str(exc), move_aside=False)
            return {}
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                self._corrupt(f"not a regular file ({_kind(mode)})", move_aside=False)
                return {}
            raw = _read_at_most(fd, MAX_STATE_BYTES + 1)
        except OSError as exc:
            self._corrupt(exc.strerror or str(exc), move_aside=False)
            return {}
        finally:
            os.close(fd)
        try:
            if len(raw) > MAX_STATE_BYTES:
                raise ValueError(f"state file is over the {MAX_STATE_BYTES} byte limit")
            data = json.loads(raw.decode("utf-8"))
            if not isinstance(data, dict):
                raise ValueError("state file does not hold a JSON object")
            _check_depth(data, MAX_STATE_DEPTH)
            return data
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            self._corrupt(str(exc) or type(exc).__name__, move_aside=True)
            return {}

    def _corrupt(self, error: str, move_aside: bool) -> None:
        """One warning, and a fresh start; only a regular file of ours is moved aside."""
        log_event(
            _log,
            "state_corrupt",
            logging.WARNING,
            path=str(self.path),
            error=error[:500],
            action="starting with fresh state" + (f", file kept as {self.path.name}.corrupt" if move_aside else ""),
        )
        if move_aside:
            with contextlib.suppress(OSError):
                os.replace(self.path, self.path.with_name(self.path.name + ".corrupt"))

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


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, min(1 << 20, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a file"


def _check_depth(value: Any, limit: int) -> None:
    """Raise ValueError when containers nest deeper than `limit` (iterative: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise ValueError(f"state file nests deeper than {limit} levels")
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values() if isinstance(child, dict | list))
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node if isinstance(child, dict | list))
