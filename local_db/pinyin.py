"""Search terms for a patient's name: the name itself, the given name, and every
pinyin reading of it, full and as initials.

Clerks type the initials most of all (张三丰 -> ``zsf``). Many characters have
several readings (单 shan/dan/chan, 曾 zeng/ceng), so every combination is
indexed, up to a cap that no real name reaches.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache, lru_cache
from itertools import product
from typing import Any

MAX_COMBINATIONS = 64
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


@lru_cache(maxsize=65_536)
def readings(char: str) -> tuple[str, ...]:
    """Every toneless reading of one character; a non-Han character reads as itself."""
    if not _HAN.match(char):
        return (char.lower(),)
    found = _pinyin()(char, heteronym=True, errors="ignore")
    options = (
        tuple(dict.fromkeys(r for r in found[0] if r.isascii() and r.isalpha())) if found else ()
    )
    return options or (char,)


@cache
def _pinyin() -> Callable[..., Any]:
    """pypinyin, imported on first use: its dictionaries take ~0.25 s to load,
    which a workstation's start (to the login screen) does not wait for."""
    from functools import partial

    from pypinyin import Style, pinyin

    return partial(pinyin, style=Style.NORMAL)


def warm_up() -> None:
    """Load the dictionaries now (off the screen's thread), so the first
    registration does not wait for them."""
    readings("张")


def name_terms(name: str) -> str:
    """Space-separated search tokens for ``name``, for the full-text index."""
    compact = "".join(ch for ch in name if not ch.isspace() and ch not in "·-'")
    if not compact:
        return ""
    terms: dict[str, None] = {compact.lower(): None}
    if len(compact) > 1:
        terms[compact[1:].lower()] = None  # the given name, for 三丰
    per_char = [readings(ch) for ch in compact]
    fulls: dict[str, None] = {}
    initials: dict[str, None] = {}
    for count, combo in enumerate(product(*per_char)):
        if count >= MAX_COMBINATIONS:
            break
        fulls["".join(combo)] = None
        initials["".join(part[0] for part in combo if part)] = None
    terms.update(fulls)
    terms.update(initials)
    return " ".join(t for t in terms if t)
