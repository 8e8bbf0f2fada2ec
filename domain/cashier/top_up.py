"""Top up a patient's prepaid deposit (预存充值)."""

from __future__ import annotations

from typing import ClassVar

from ..cards import usable_card
from ..commands import Command, Decision, Fact
from ..ledger import TransferKind, money_in
from ..numbers import NumberText, Series
from ..patients import resolve_patient_id
from ..state import DeskState, OpContext
from .facts import amount_fact, card_fact, receipt_fact


class TopUp(Command):
    """Top up a patient's prepaid deposit through their card. Always allowed
    offline; the card must be issued and active (not lost)."""

    kind: ClassVar[str] = "top_up"
    roles: ClassVar[frozenset[str]] = frozenset({"cashier", "admission", "supervisor"})
    names: ClassVar[tuple[str, str]] = ("预存充值", "top up")
    numbers: ClassVar[frozenset[str]] = frozenset({Series.RECEIPT})

    transfer_id: str
    card_no: NumberText
    amount_fen: int
    method: str
    receipt_no: NumberText
    shift_id: str | None = None  # None: made by a workstation of release 0.1

    def decide(self, state: DeskState, ctx: OpContext) -> Decision:
        card = usable_card(state, self.card_no)
        # a card issued offline to a patient the server then mapped to an existing record
        patient_id = resolve_patient_id(state, card.patient_id)
        transfer = money_in(
            state,
            ctx,
            kind=TransferKind.TOP_UP,
            transfer_id=self.transfer_id,
            amount_fen=self.amount_fen,
            method=self.method,
            receipt_no=self.receipt_no,
            patient_id=patient_id,
            card_no=card.card_no,
            shift_id=self.shift_id,
        )
        return Decision(
            rows=[transfer],
            result={
                "receipt_no": transfer.receipt_no,
                "patient_id": patient_id,
                "card_no": card.card_no,
            },
        )

    def summary(self) -> list[Fact]:
        return [
            card_fact(self.card_no),
            amount_fact(self.amount_fen, self.method),
            receipt_fact(self.receipt_no),
        ]
