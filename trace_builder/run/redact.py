"""Credentials in URLs (`http://user:key@host/v1`) never reach a file, a log line or an error."""

from __future__ import annotations

import re
from typing import Any

# scheme://userinfo@ : everything between '//' and the last '@' before the host is userinfo.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/\s@]+@")
MASK = "***"


def redact_text(text: str) -> str:
    """`text` with the userinfo of every URL in it replaced by ***."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)


def redact(value: Any) -> Any:
    """Strings, lists and dicts (nested) with URL credentials redacted; other values as they are."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, tuple):
        return tuple(redact(v) for v in value)
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    return value
