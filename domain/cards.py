"""Hospital cards (就诊卡): a card identifies a patient at every window and
pays from the patient's prepaid deposit.

active -> lost (loss report) -> replaced (a new card took over the balance);
cancelled is a card withdrawn for good. Only an active card pays or takes money.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

from .errors import DomainError
from .numbers import is_card_no
from .rows import IndexSpec, Row
from .state import DeskState


class CardStatus(StrEnum):
    ACTIVE = "active"
    LOST = "lost"
    REPLACED = "replaced"
    CANCELLED = "cancelled"

    @property
    def names(self) -> tuple[str, str]:
        return _NAMES[self]


_NAMES: dict[CardStatus, tuple[str, str]] = {
    CardStatus.ACTIVE: ("在用", "active"),
    CardStatus.LOST: ("已挂失", "reported lost"),
    CardStatus.REPLACED: ("已补换", "replaced"),
    CardStatus.CANCELLED: ("已注销", "cancelled"),
}


class CardRow(Row):
    table: ClassVar[str] = "cards"
    key: ClassVar[str] = "card_no"
    indexes: ClassVar[tuple[IndexSpec, ...]] = (("cards_patient", ("patient_id",), False),)

    card_no: str
    patient_id: str
    status: str  # CardStatus
    issued_at: str
    issued_by: str
    issued_device: str
    status_changed_at: str


def active_card_of(state: DeskState, patient_id: str) -> CardRow | None:
    return state.find(CardRow, patient_id=patient_id, status=CardStatus.ACTIVE.value)


def issued_card(state: DeskState, card_no: str) -> CardRow:
    """A card that has been issued, whatever its status."""
    if not is_card_no(card_no):
        raise DomainError("card_format", card_no=card_no[:40])
    card = state.get(CardRow, card_no)
    if card is None:
        raise DomainError("card_unknown", card_no=card_no)
    return card


def usable_card(state: DeskState, card_no: str) -> CardRow:
    """The card a payment is taken against: issued, and neither lost nor dead."""
    card = state.get(CardRow, card_no)
    if card is None:  # an issued card's number is valid by construction: check only the others
        raise DomainError(
            "card_format" if not is_card_no(card_no) else "card_unknown", card_no=card_no[:40]
        )
    if card.status == CardStatus.LOST:
        raise DomainError("card_lost", card_no=card_no)
    if card.status != CardStatus.ACTIVE:
        zh, en = CardStatus(card.status).names
        raise DomainError("card_not_active", card_no=card_no, status_zh=zh, status_en=en)
    return card
