"""Lines of a money operation's summary, shared by the cashier's commands."""

from __future__ import annotations

from ..commands import Fact
from ..money import PAYMENT_METHOD_NAMES, PaymentMethod, format_yuan


def card_fact(card_no: str) -> Fact:
    return Fact(("卡", "card"), card_no)


def amount_fact(amount_fen: int, method: str) -> Fact:
    try:
        zh, en = PAYMENT_METHOD_NAMES[PaymentMethod(method)]
    except ValueError:
        zh = en = method
    amount = f"¥{format_yuan(amount_fen)}"
    return Fact(("金额", "amount"), (f"{amount} {zh}", f"{amount} {en}"))


def receipt_fact(receipt_no: str) -> Fact:
    return Fact(("收据", "receipt"), receipt_no)
