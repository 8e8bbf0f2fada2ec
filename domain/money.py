"""Money is an integer number of fen (分). Never a float.

Amounts typed by a clerk are parsed strictly: "12.345" is an error, not a
rounding; so are zero, negatives and anything above the single-transaction
ceiling.
"""

from __future__ import annotations

import re
import unicodedata
from enum import StrEnum

from .errors import DomainError
from .numbers import canonical_number

FEN_PER_YUAN = 100
MAX_AMOUNT_FEN = 1_000_000 * FEN_PER_YUAN  # one million yuan per transaction

_AMOUNT = re.compile(r"([0-9]+)(?:\.([0-9]+))?")


class PaymentMethod(StrEnum):
    CASH = "cash"
    BANK_CARD = "bank_card"
    WECHAT = "wechat"
    ALIPAY = "alipay"


PAYMENT_METHOD_NAMES: dict[PaymentMethod, tuple[str, str]] = {
    PaymentMethod.CASH: ("现金", "Cash"),
    PaymentMethod.BANK_CARD: ("银行卡", "Bank card"),
    PaymentMethod.WECHAT: ("微信", "WeChat"),
    PaymentMethod.ALIPAY: ("支付宝", "Alipay"),
}


def parse_amount(text: str, *, limit_fen: int = MAX_AMOUNT_FEN) -> int:
    """Parse a yuan amount typed by a clerk into fen, or raise DomainError."""
    cleaned = unicodedata.normalize("NFKC", text).strip().removeprefix("¥").strip()
    if any(ch.isspace() for ch in cleaned):  # "1 000": a typo, not a thousands separator
        raise DomainError("amount_format")
    cleaned = canonical_number(cleaned)
    if not cleaned:
        raise DomainError("amount_empty")
    if cleaned.startswith("-"):
        raise DomainError("amount_not_positive")
    match = _AMOUNT.fullmatch(cleaned)
    if match is None:
        raise DomainError("amount_format")
    whole, decimals = match.group(1), match.group(2) or ""
    if len(decimals) > 2:
        raise DomainError("amount_too_many_decimals", text=cleaned)
    if len(whole) > 12:
        raise DomainError("amount_too_large", limit=format_yuan(limit_fen))
    fen = int(whole) * FEN_PER_YUAN + int(decimals.ljust(2, "0"))
    check_amount(fen, limit_fen=limit_fen)
    return fen


def check_amount(fen: int, *, limit_fen: int = MAX_AMOUNT_FEN) -> None:
    """The rule for any single amount: a positive integer no larger than the limit."""
    if isinstance(fen, bool) or not isinstance(fen, int):
        raise DomainError("amount_format")
    if fen <= 0:
        raise DomainError("amount_not_positive")
    if fen > limit_fen:
        raise DomainError("amount_too_large", limit=format_yuan(limit_fen))


def format_yuan(fen: int) -> str:
    """12345 -> '123.45'; negative amounts keep their sign."""
    sign = "-" if fen < 0 else ""
    whole, part = divmod(abs(fen), FEN_PER_YUAN)
    return f"{sign}{whole:,}.{part:02d}"


def parse_payment_method(value: str) -> PaymentMethod:
    try:
        return PaymentMethod(value)
    except ValueError:
        raise DomainError("payment_method_unknown", method=value) from None
