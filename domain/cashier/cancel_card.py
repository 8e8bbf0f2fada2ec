"""Cancel a card for good (注销卡)."""

from __future__ import annotations

from typing import ClassVar

from ..cards import CardStatus, issued_card
from ..commands import Command, Decision, Fact
from ..errors import DomainError
from ..numbers import NumberText
from ..patients.fields import clean_address
from ..state import DeskState, OpContext
from .facts import card_fact


class CancelCard(Command):
    """Withdraw a card for good (damaged, retained, fraud). The balance stays
    in the patient's deposit account; the patient can be issued a new card.
    A supervisor's decision."""

    kind: ClassVar[str] = "cancel_card"
    roles: ClassVar[frozenset[str]] = frozenset({"supervisor"})
    names: ClassVar[tuple[str, str]] = ("注销卡", "cancel card")

    card_no: NumberText
    reason: str

    def decide(self, state: DeskState, ctx: OpContext) -> Decision:
        card = issued_card(state, self.card_no)
        if card.status == CardStatus.CANCELLED:
            zh, en = CardStatus.CANCELLED.names
            raise DomainError("card_not_active", card_no=self.card_no, status_zh=zh, status_en=en)
        reason = clean_address(self.reason)  # free text: same rules as an address line
        cancelled = card.model_copy(
            update={"status": CardStatus.CANCELLED.value, "status_changed_at": ctx.at}
        )
        return Decision(rows=[cancelled], result={"card_no": card.card_no, "reason": reason})

    def summary(self) -> list[Fact]:
        return [card_fact(self.card_no), Fact(("原因", "reason"), self.reason)]
