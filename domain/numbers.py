"""Human-facing numbers: card numbers and receipt numbers.

Each comes from a block of sequence numbers leased to one workstation by the
server (never MAX()+1), so two machines working offline cannot hand out the
same number. A block never restarts.

- Card number: 9-digit sequence + a Luhn check digit = 10 digits, so a typo or
  a misread swipe is caught at the window.
- Receipt number: "R" + 9-digit sequence.
"""

from __future__ import annotations

import string
import unicodedata
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator

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

_ASCII_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)


def canonical_number(text: str) -> str:
    """The one form of a number, wherever it comes from: typed by a clerk at
    the desk, swiped, or carried by an operation the server receives (card,
    receipt, ID-card and phone numbers, amounts, dates typed as digits).
    Both sides call this, so one number is always one string.

    NFKC folds the full-width forms a Chinese input method types (０-９,
    Ａ-Ｚ, ｘ) to ASCII; whitespace goes; ASCII letters are upper case.
    A digit of another script (Arabic-Indic ٣, Devanagari ३, CJK 三 ...),
    which NFKC keeps and ``int()``, ``str.isdigit()`` and ``\\d`` would
    take, is refused (``number_digits``) rather than mapped: no window's
    keyboard types one, so it is a paste or a forgery, and the clerk is asked
    to type the number again. Anything else that is not ASCII is left for
    the number's own rule to refuse with its own message."""
    folded = "".join(text.split()).translate(_ASCII_UPPER)
    for _ in range(4):  # NFKC leaves ASCII as it is
        if folded.isascii():
            break
        # again until nothing changes: a space NFKC made ("¸" is " " + U+0327)
        # and took out lets a mark compose with the letter before it ("R¸" ->
        # "Ŗ"), as can a letter made upper case
        again = "".join(unicodedata.normalize("NFKC", folded).split()).translate(_ASCII_UPPER)
        if again == folded:
            break
        folded = again
    if not folded.isascii() and any(ch.isnumeric() and not ch.isascii() for ch in folded):
        raise DomainError("number_digits")
    return folded


def is_ascii_digits(text: str) -> bool:
    """Only 0-9 (``str.isdigit`` alone takes any script's digits)."""
    return text.isascii() and text.isdigit()


# a command's number field: in canonical form once the command is built, on
# the workstation and on the server alike
NumberText = Annotated[str, AfterValidator(canonical_number)]


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
    return (
        len(text) == CARD_NO_LENGTH and is_ascii_digits(text) and luhn_digit(text[:-1]) == text[-1]
    )


def parse_card_no(text: str) -> str:
    """Validate a typed or swiped card number; raise DomainError if it cannot be one."""
    cleaned = canonical_number(text)
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
    if len(receipt_no) == 10 and receipt_no[0] == "R" and is_ascii_digits(receipt_no[1:]):
        return int(receipt_no[1:])
    return None


def number_for(series: Series, sequence: int) -> str:
    return card_no_for(sequence) if series is Series.CARD else receipt_no_for(sequence)
