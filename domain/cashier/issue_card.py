"""Issue a hospital card (发卡), optionally with the first prepayment."""

from __future__ import annotations

from typing import Any, ClassVar

from ..cards import CardRow, CardStatus, active_card_of
from ..commands import Arguments, Command, Decision, Fact
from ..errors import DomainError
from ..leases import number_leased
from ..ledger import TransferKind, money_in
from ..money import check_amount, format_yuan
from ..numbers import NumberText, Series, card_sequence, is_card_no
from ..patients import get_patient
from ..rows import Row
from ..state import DeskState, OpContext
from .facts import amount_fact, card_fact, receipt_fact


class Prepayment(Arguments):
    transfer_id: str
    amount_fen: int
    method: str
    receipt_no: NumberText
    shift_id: str | None = None  # None: made by a workstation of release 0.1


class IssueCard(Command):
    """Issue a hospital card (就诊卡) from this workstation's leased block,
    optionally with the first prepayment, which must then be at least the
    policy minimum (the registration fee). A patient holds one active card;
    a lost card goes through loss report and replacement instead."""

    kind: ClassVar[str] = "issue_card"
    roles: ClassVar[frozenset[str]] = frozenset({"cashier", "supervisor"})
    names: ClassVar[tuple[str, str]] = ("发卡", "issue card")
    numbers: ClassVar[frozenset[str]] = frozenset({Series.CARD, Series.RECEIPT})

    card_no: NumberText
    patient_id: str
    prepayment: Prepayment | None = None

    def decide(self, state: DeskState, ctx: OpContext) -> Decision:
        if not is_card_no(self.card_no):
            raise DomainError("card_format", card_no=self.card_no[:40])
        if state.get(CardRow, self.card_no) is not None:
            raise DomainError("card_already_issued", card_no=self.card_no)
        sequence = card_sequence(self.card_no)
        if not number_leased(state, Series.CARD, sequence, ctx.actor.device_id, ctx.at):
            raise DomainError("card_number_not_leased", card_no=self.card_no)
        patient = get_patient(state, self.patient_id)
        if patient is None:
            raise DomainError("patient_unknown")
        active = active_card_of(state, patient.patient_id)
        if active is not None:
            raise DomainError("patient_has_active_card", card_no=active.card_no)
        card = CardRow(
            card_no=self.card_no,
            patient_id=patient.patient_id,
            status=CardStatus.ACTIVE.value,
            issued_at=ctx.at,
            issued_by=ctx.actor.clerk_id,
            issued_device=ctx.actor.device_id,
            status_changed_at=ctx.at,
        )
        rows: list[Row] = [card]
        result: dict[str, Any] = {"card_no": card.card_no, "patient_id": patient.patient_id}
        if self.prepayment is not None:
            minimum = state.policy().min_first_prepayment_fen
            if self.prepayment.amount_fen < minimum:
                check_amount(self.prepayment.amount_fen)  # zero/negative get their own message
                raise DomainError("amount_below_minimum", minimum=format_yuan(minimum))
            transfer = money_in(
                state,
                ctx,
                kind=TransferKind.FIRST_PREPAYMENT,
                transfer_id=self.prepayment.transfer_id,
                amount_fen=self.prepayment.amount_fen,
                method=self.prepayment.method,
                receipt_no=self.prepayment.receipt_no,
                patient_id=patient.patient_id,
                card_no=card.card_no,
                shift_id=self.prepayment.shift_id,
            )
            rows.append(transfer)
            result["receipt_no"] = transfer.receipt_no
        return Decision(rows=rows, result=result)

    def summary(self) -> list[Fact]:
        facts = [card_fact(self.card_no)]
        if self.prepayment is not None:
            facts.append(amount_fact(self.prepayment.amount_fen, self.prepayment.method))
            facts.append(receipt_fact(self.prepayment.receipt_no))
        return facts
