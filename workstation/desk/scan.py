"""Telling a card swipe or an ID-card reader from typing.

Readers act as keyboards: a swipe arrives as one burst of characters, far
faster than anyone types. A burst that spells a valid card number or a valid
resident ID number opens that patient directly; the same text typed by hand
and confirmed with Enter does too.
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.errors import DomainError
from domain.identity import parse_national_id
from domain.numbers import is_card_no

BURST_MAX_GAP_S = 0.035  # readers send a character every few milliseconds
BURST_MIN_CHARS = 8


@dataclass(frozen=True)
class Scan:
    kind: str  # "card" | "national_id"
    value: str
    name: str = ""  # some ID readers append the holder's name


def classify(text: str) -> Scan | None:
    """A valid card number or resident ID number (optionally followed by the
    holder's name, as some ID readers send it), else None."""
    cleaned = text.strip()
    head, _, tail = cleaned.replace("\t", "|").replace(",", "|").partition("|")
    head = head.strip()
    if is_card_no(head) and not tail:
        return Scan("card", head)
    if len(head) == 18:
        try:
            nid = parse_national_id(head)
        except DomainError:
            return None
        return Scan("national_id", nid.number, tail.strip())
    return None


class BurstDetector:
    """Feed it each value of a text field with the time it changed."""

    def __init__(self) -> None:
        self._start_len = 0
        self._last_t: float | None = None
        self._fast = 0

    def feed(self, value: str, t: float) -> None:
        if (
            self._last_t is None
            or t - self._last_t > BURST_MAX_GAP_S
            or len(value) <= self._start_len
        ):
            self._start_len = max(len(value) - 1, 0)
            self._fast = 0
        else:
            self._fast += 1
        self._last_t = t

    def is_burst(self) -> bool:
        return self._fast + 1 >= BURST_MIN_CHARS

    def reset(self) -> None:
        self._start_len, self._last_t, self._fast = 0, None, 0
