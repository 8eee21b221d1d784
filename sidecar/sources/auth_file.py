"""Target credentials from a file (`--target-auth-file`), the Kubernetes way: a mounted Secret.

Format (surrounding whitespace and a trailing newline are ignored):
- `Bearer <token>`        -> `Authorization: Bearer <token>`
- `Basic <user>:<password>` or `<user>:<password>` -> HTTP basic auth
- anything else, on one line -> a bearer token
A token holding a colon must be written with the `Bearer ` prefix.

The file is checked before every scrape with one `stat`, and read again only when its inode,
size or modification time changed, so a rotated Secret is picked up by the next scrape. Its
content is never logged; errors name the path and the reason only.
"""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

MAX_AUTH_FILE_BYTES = 64 * 1024


class AuthFileError(Exception):
    """The credentials file cannot be used; the message names the path, never the content."""


def authorization_header(content: str) -> str:
    """The `Authorization` header value for the file's content (format in the module docstring)."""
    text = content.strip()
    if not text:
        raise ValueError("is empty")
    if "\n" in text or "\r" in text:
        raise ValueError("holds more than one line")
    scheme, _, rest = text.partition(" ")
    if scheme.lower() == "bearer" and rest.strip():
        return "Bearer " + rest.strip()
    if scheme.lower() == "basic" and rest.strip():
        text = rest.strip()
    elif " " in text:
        raise ValueError("is neither 'Bearer <token>', '[Basic ]user:password' nor a bare token")
    user, colon, password = text.partition(":")
    if colon:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return "Bearer " + text


class AuthFile:
    """The current `Authorization` header from a credentials file, re-read when the file changes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._key: tuple[int, int, int, int] | None = None
        self._header: str | None = None

    def header(self) -> str:
        """The header value; AuthFileError when the file is missing, unreadable or malformed."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise AuthFileError(f"target auth file {self.path}: {exc.strerror or exc}") from None
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if key == self._key and self._header is not None:
            return self._header
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_AUTH_FILE_BYTES:
            raise AuthFileError(
                f"target auth file {self.path}: not a regular file of at most {MAX_AUTH_FILE_BYTES} bytes"
            )
        try:
            content = self.path.read_text(encoding="utf-8")
            self._header = authorization_header(content)
        except OSError as exc:
            raise AuthFileError(f"target auth file {self.path}: {exc.strerror or exc}") from None
        except ValueError as exc:  # also a file that is not UTF-8; the reason never quotes the content
            reason = "is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
            raise AuthFileError(f"target auth file {self.path}: {reason}") from None
        self._key = key
        return self._header
