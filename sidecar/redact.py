"""The one redaction of credentials, applied to every log line, error message and endpoint.

Target URLs may carry credentials (`http://user:password@host/metrics`,
`...?token=...&api_key=...`), and error messages from the HTTP client or the configuration may
quote them. `redact` replaces, anywhere in a text:
- the userinfo of a URL (`scheme://user:password@`) with `***@`;
- a bare `user:password@host` (a URL without a scheme, as a user might mistype it) the same way;
- the value of a `name=value` pair whose name looks sensitive (contains token, key, secret,
  passw, pwd, auth, credential, session, cookie, signature, sig, jwt, bearer) with `***`.
It over-redacts rather than under-redacts: `monkey=1` loses its value too.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
SENSITIVE_NAME = r"[\w.~%-]*(?:token|key|secret|passw|pwd|auth|credential|session|cookie|sig|jwt|bearer)[\w.~%-]*"
# Character classes stop at quotes and backslashes, so masking inside quoted or JSON-escaped
# text never eats a closing quote.
_PAIR = re.compile(rf"(?i)(?<![\w.~%-])({SENSITIVE_NAME})=([^&#\s\"'\\,;<>)\]}}]*)")
_USERINFO = re.compile(r"(?i)([a-z][a-z0-9+.-]*://)[^/?#\s\"'\\<>@]*@")
_BARE_USERINFO = re.compile(r"(?<![\w.~%/:@-])[\w.~%!$&*+,;=-]+:[^/?#\s\"'\\<>@]*@(?=[\w\[])")


def redact(text: str) -> str:
    """`text` with every credential it quotes masked (see the module docstring)."""
    if "=" not in text and "@" not in text:
        return text  # the common case, kept cheap: nothing that could be a credential
    text = _USERINFO.sub(rf"\1{MASK}@", text)
    text = _BARE_USERINFO.sub(f"{MASK}@", text)
    return _PAIR.sub(rf"\1={MASK}", text)


def redact_value(value: Any) -> Any:
    """`redact` applied to every string inside JSON-like data (dicts, lists, tuples)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    return value
