"""The double-entry ledger: accounts and how money moves between them.

A transfer debits one account and credits another by a positive number of fen.
A patient's prepaid deposit is a liability of the hospital: its balance is
credits minus debits. Drawers and clearing accounts are assets: debits minus
credits. Balances are always derived from transfers; a correction is a new
transfer, never an edit.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from .commands import require_text_id
from .errors import DomainError
from .leases import number_leased
from .money import PaymentMethod, check_amount, parse_payment_method
from .numbers import Series, receipt_sequence
from .rows import IndexSpec, Row
from .shifts import check_shift, drawer_account
from .state import DeskState, OpContext


class TransferKind(StrEnum):
    FIRST_PREPAYMENT = "first_prepayment"  # 首次预存 (with a new card)
    TOP_UP = "top_up"  # 预存充值

    @property
    def names(self) -> tuple[str, str]:
        return _KIND_NAMES[self]


_KIND_NAMES: dict[TransferKind, tuple[str, str]] = {
    TransferKind.FIRST_PREPAYMENT: ("首次预存", "first prepayment"),
    TransferKind.TOP_UP: ("充值", "top-up"),
}


class TransferRow(Row):
    """One immutable double-entry transfer; balances are derived from these."""

    table: ClassVar[str] = "transfers"
    key: ClassVar[str] = "transfer_id"
    indexes: ClassVar[tuple[IndexSpec, ...]] = (
        ("transfers_debit", ("debit_account",), False),
        ("transfers_credit", ("credit_account",), False),
        ("transfers_receipt", ("receipt_no",), True),
    )
    # a patient's receipts at the window; the server finds a patient's money by
    # account (``deposit:<patient_id>``)
    replica_indexes: ClassVar[tuple[IndexSpec, ...]] = (
        ("transfers_patient", ("patient_id",), False),
    )

    transfer_id: str
    debit_account: str
    credit_account: str
    amount_fen: int
    kind: str  # TransferKind
    method: str  # PaymentMethod
    patient_id: str
    card_no: str | None
    receipt_no: str | None  # None for transfers that print nothing (internal moves)
    clerk_id: str
    device_id: str
    at: str
    op_id: str


def deposit_account(patient_id: str) -> str:
    """The patient's prepaid deposit (预缴金) account."""
    return f"deposit:{patient_id}"


def intake_account(method: PaymentMethod | str, device_id: str) -> str:
    """Where money taken at a window landed in release 0.1, before shifts: the
    window's cash drawer, or the clearing account of the bank card / WeChat /
    Alipay channel. Operations of that release still pushed book here; new
    ones book to their shift's drawer (``domain.shifts.drawer_account``)."""
    method = PaymentMethod(method)
    if method is PaymentMethod.CASH:
        return f"drawer:{device_id}:cash"
    return f"clearing:{method.value}"


@dataclass(frozen=True)
class Balance:
    """An account's balance (credits minus debits, in fen) as the clerk sees it,
    split into what the server has confirmed and what pending operations add
    or take (always zero on the server)."""

    confirmed_fen: int
    pending_in_fen: int = 0
    pending_out_fen: int = 0

    @property
    def fen(self) -> int:
        """What the clerk sees: confirmed plus pending."""
        return self.confirmed_fen + self.pending_in_fen - self.pending_out_fen

    @property
    def spendable_fen(self) -> int:
        """The most that may leave: confirmed minus pending debits (pending
        credits may still be refused)."""
        return self.confirmed_fen - self.pending_out_fen


def balance(state: DeskState, account: str) -> Balance:
    def total(pending: bool, **where: str) -> int:
        return state.sum(TransferRow, "amount_fen", pending=pending, **where)

    return Balance(
        confirmed_fen=total(False, credit_account=account) - total(False, debit_account=account),
        pending_in_fen=total(True, credit_account=account),
        pending_out_fen=total(True, debit_account=account),
    )


def check_receipt(state: DeskState, receipt_no: str, ctx: OpContext) -> None:
    """A receipt number from a block leased to this workstation, not used before."""
    sequence = receipt_sequence(receipt_no)
    device = ctx.actor.device_id
    if sequence is None or not number_leased(state, Series.RECEIPT, sequence, device, ctx.at):
        raise DomainError("receipt_number_not_leased", receipt_no=receipt_no[:20])
    if state.exists(TransferRow, receipt_no=receipt_no):
        raise DomainError("receipt_number_used", receipt_no=receipt_no)


def money_in(
    state: DeskState,
    ctx: OpContext,
    *,
    kind: TransferKind,
    transfer_id: str,
    amount_fen: int,
    method: str,
    receipt_no: str,
    patient_id: str,
    card_no: str,
    shift_id: str | None,
) -> TransferRow:
    """Money handed over at the window, in the clerk's shift, into the
    patient's deposit."""
    check_amount(amount_fen, limit_fen=state.policy().max_amount_fen)
    payment = parse_payment_method(method)
    require_text_id(transfer_id, "transfer_id")
    if state.get(TransferRow, transfer_id) is not None:
        raise DomainError("transfer_exists")
    if shift_id is not None:
        intake = drawer_account(check_shift(state, shift_id, ctx).shift_id, payment)
    else:  # an operation of release 0.1, made before shifts
        intake = intake_account(payment, ctx.actor.device_id)
    check_receipt(state, receipt_no, ctx)
    return TransferRow(
        transfer_id=transfer_id,
        debit_account=intake,
        credit_account=deposit_account(patient_id),
        amount_fen=amount_fen,
        kind=kind.value,
        method=payment.value,
        patient_id=patient_id,
        card_no=card_no,
        receipt_no=receipt_no,
        clerk_id=ctx.actor.clerk_id,
        device_id=ctx.actor.device_id,
        at=ctx.at,
        op_id=ctx.op_id,
    )
