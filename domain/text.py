"""Text every side can store: what PostgreSQL and UTF-8 refuse is refused at
the boundary, before it reaches a database, with a 4xx or a rejection that
says why, never a 500 or a "database unavailable" that makes a workstation
retry for ever."""

from __future__ import annotations

import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def unstorable(text: str) -> bool:
    """NUL (PostgreSQL refuses it in text) or a lone surrogate (no UTF-8
    form). ASCII text, the common case, costs two scans in C."""
    return "\x00" in text or (not text.isascii() and _SURROGATE.search(text) is not None)


def check_storable(value: Any) -> Any:
    """``value`` as it is if no text in it (lists and dicts included) holds
    NUL or a lone surrogate; else ValueError (a pydantic validation error
    when called from a validator)."""
    if isinstance(value, str):
        if unstorable(value):
            raise ValueError("text holds NUL or a lone surrogate, which cannot be stored")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_storable(key)
            check_storable(item)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            check_storable(item)
    return value
