"""The double-entry ledger: accounts and how money moves between them.

A transfer debits one account and credits another by a positive number of fen.
A patient's prepaid deposit is a liability of the hospital: its balance is
credits minus debits. Drawers and clearing accounts are assets: debits minus
credits. Balances are always derived from transfers; a correction is a new
transfer, never an edit.
"""

from __future__ import annotations

from enum import StrEnum

from .money import PaymentMethod


class TransferKind(StrEnum):
    FIRST_PREPAYMENT = "first_prepayment"  # 首次预存 (with a new card)
    TOP_UP = "top_up"  # 预存充值


def deposit_account(patient_id: str) -> str:
    """The patient's prepaid deposit (预缴金) account."""
    return f"deposit:{patient_id}"


def intake_account(method: PaymentMethod | str, device_id: str) -> str:
    """Where money taken at a window lands: the window's cash drawer, or the
    clearing account of the bank card / WeChat / Alipay channel."""
    method = PaymentMethod(method)
    if method is PaymentMethod.CASH:
        return f"drawer:{device_id}:cash"
    return f"clearing:{method.value}"
