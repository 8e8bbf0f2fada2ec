"""Human-facing numbers: card numbers and receipt numbers.

Each comes from a block of sequence numbers leased to one workstation by the
server (never MAX()+1), so two machines working offline cannot hand out the
same number. A block never restarts.

- Card number: 9-digit sequence + a Luhn check digit = 10 digits, so a typo or
  a misread swipe is caught at the window.
- Receipt number: "R" + 9-digit sequence.
"""

from __future__ import annotations

from enum import StrEnum

from .errors import DomainError


class Series(StrEnum):
    CARD = "card"
    RECEIPT = "receipt"


SERIES_NAMES: dict[Series, tuple[str, str]] = {
    Series.CARD: ("卡号", "card number"),
    Series.RECEIPT: ("收据号", "receipt number"),
}

# The first sequence number the server hands out for each series.
SERIES_START: dict[Series, int] = {Series.CARD: 100_000_000, Series.RECEIPT: 1}
SERIES_END: dict[Series, int] = {Series.CARD: 999_999_999, Series.RECEIPT: 999_999_999}

CARD_NO_LENGTH = 10


_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)  # 2d, minus 9 when over 9


def luhn_digit(digits: str) -> str:
    """The Luhn check digit to append to ``digits``."""
    values = [ord(c) - 48 for c in reversed(digits)]
    total = sum(_DOUBLED[v] for v in values[0::2]) + sum(values[1::2])
    return str((10 - total % 10) % 10)


def card_no_for(sequence: int) -> str:
    body = f"{sequence:09d}"
    return body + luhn_digit(body)


def is_card_no(text: str) -> bool:
    return len(text) == CARD_NO_LENGTH and text.isdigit() and luhn_digit(text[:-1]) == text[-1]


def parse_card_no(text: str) -> str:
    """Validate a typed or swiped card number; raise DomainError if it cannot be one."""
    cleaned = "".join(text.split())
    if not cleaned:
        raise DomainError("card_empty")
    if not is_card_no(cleaned):
        raise DomainError("card_format", card_no=cleaned[:40])
    return cleaned


def card_sequence(card_no: str) -> int:
    return int(card_no[:-1])


def receipt_no_for(sequence: int) -> str:
    return f"R{sequence:09d}"


def receipt_sequence(receipt_no: str) -> int | None:
    if len(receipt_no) == 10 and receipt_no[0] == "R" and receipt_no[1:].isdigit():
        return int(receipt_no[1:])
    return None


def number_for(series: Series, sequence: int) -> str:
    return card_no_for(sequence) if series is Series.CARD else receipt_no_for(sequence)
