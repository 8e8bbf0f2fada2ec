"""The desk: everything a window's clerk can do, as the screens call it.

The screens import nothing but this package (and Textual): a small core
shared by every window (:class:`Desk`: session, status, Sync issues, look-ups,
the one commit path), a desk per window (:class:`CashierDesk`; the admission
and exam desks later), the clerk's two languages (:mod:`.i18n`), receipts and
the card/ID reader's bursts. The store, the HTTP client and the rules stay
behind it.
"""

from domain.cards import CardStatus
from domain.errors import DomainError, Rejection
from domain.identity import DocumentType
from domain.money import PaymentMethod, format_yuan
from domain.patients.fields import SEXES
from local_db.search import PatientHit
from local_db.store import CommandRejected, PatientView
from local_db.store import RowsChanged as StoreChanges

from .cashier import (
    CASHIER_ROLES,
    CancelCardDraft,
    CashierDesk,
    CashierDraft,
    Done,
    IssueCardDraft,
    RegistrationDraft,
    TopUpDraft,
)
from .core import ClerkSession, Desk, DeskSettings, DeskStatus, LoginFailed, NotAllowed
from .i18n import I18n
from .receipts import Receipt

# What the screens offer to choose from, in order.
PAYMENT_METHODS: tuple[str, ...] = tuple(m.value for m in PaymentMethod)
DOCUMENT_TYPES: tuple[str, ...] = tuple(d.value for d in DocumentType)
RESIDENT_ID = DocumentType.RESIDENT_ID.value
CASH = PaymentMethod.CASH.value

__all__ = [
    "CASH",
    "CASHIER_ROLES",
    "DOCUMENT_TYPES",
    "PAYMENT_METHODS",
    "RESIDENT_ID",
    "SEXES",
    "CancelCardDraft",
    "CardStatus",
    "CashierDesk",
    "CashierDraft",
    "ClerkSession",
    "CommandRejected",
    "Desk",
    "DeskSettings",
    "DeskStatus",
    "Done",
    "DomainError",
    "I18n",
    "IssueCardDraft",
    "LoginFailed",
    "NotAllowed",
    "PatientHit",
    "PatientView",
    "Receipt",
    "Rejection",
    "StoreChanges",
    "RegistrationDraft",
    "TopUpDraft",
    "format_yuan",
]
