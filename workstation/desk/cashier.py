"""The cashier window's desk (收费窗口): register a patient, issue a card
with the first prepayment, top up, cancel a card; receipts.

What the clerk typed becomes a typed draft, parsed once (a mistake raises
DomainError with the clerk's message); :meth:`CashierDesk.check` runs the
rule against the replica without writing, so a form shows a refusal before
the clerk confirms; the window then commits the draft once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ulid import ULID

from domain.cashier.cancel_card import CancelCard
from domain.cashier.issue_card import IssueCard, Prepayment
from domain.cashier.top_up import TopUp
from domain.commands import Command
from domain.errors import DomainError, Rejection
from domain.identity import DocumentType, parse_national_id
from domain.money import parse_amount, parse_payment_method
from domain.numbers import Series, parse_card_no
from domain.patients.register import RegisterPatient
from local_db.store import LocalStore, PatientView

from .core import Desk
from .receipts import Receipt

CASHIER_ROLES = frozenset({"cashier", "supervisor"})  # who opens the cashier desk


@dataclass(frozen=True)
class RegistrationDraft:
    """A new patient as typed at the window (the rule cleans and checks it)."""

    name: str
    sex: str
    birth_date: str
    doc_type: str
    doc_no: str
    phone: str
    address: str = ""


@dataclass(frozen=True)
class IssueCardDraft:
    patient_id: str
    patient_name: str
    prepay_fen: int | None  # None: no first prepayment
    method: str


@dataclass(frozen=True)
class TopUpDraft:
    patient_id: str
    patient_name: str
    card_no: str
    amount_fen: int
    method: str


@dataclass(frozen=True)
class CancelCardDraft:
    card_no: str
    reason: str


CashierDraft = RegistrationDraft | IssueCardDraft | TopUpDraft | CancelCardDraft


@dataclass(frozen=True)
class Done:
    """A committed clerk action and what to show for it."""

    kind: str
    op_id: str
    patient_id: str
    confirmed: bool  # the server has applied it already
    mapped: bool = False  # registration matched an existing patient
    card_no: str | None = None
    receipt: Receipt | None = None
    receipt_path: Path | None = None
    rejection: Rejection | None = None  # the server refused it at once (online)


def derive_from_national_id(doc_no: str) -> tuple[str, str] | None:
    """(birth date ISO, sex) from a valid resident ID number, for the form."""
    try:
        nid = parse_national_id(doc_no)
    except DomainError:
        return None
    return nid.birth_date.isoformat(), nid.sex


class CashierDesk:
    def __init__(self, core: Desk) -> None:
        self.core = core
        self.store = core.store

    # -- drafts: what the clerk typed, parsed once ------------------------------

    def registration(
        self,
        *,
        name: str,
        sex: str,
        birth_date: str,
        doc_type: str,
        doc_no: str,
        phone: str,
        address: str = "",
    ) -> RegistrationDraft:
        """Birth date and sex left blank are read from a resident ID number."""
        birth_date, sex = birth_date.strip(), sex.strip()
        if doc_type == DocumentType.RESIDENT_ID and (not birth_date or not sex):
            derived = derive_from_national_id(doc_no)
            if derived is not None:
                birth_date = birth_date or derived[0]
                sex = sex or derived[1]
        return RegistrationDraft(name, sex or "U", birth_date, doc_type, doc_no, phone, address)

    def issue_card_draft(self, view: PatientView, amount_text: str, method: str) -> IssueCardDraft:
        """An empty amount issues the card without a first prepayment."""
        fen = self.parse_amount(amount_text) if amount_text.strip() else None
        return IssueCardDraft(
            view.patient.patient_id, view.patient.name, fen, parse_payment_method(method).value
        )

    def top_up_draft(
        self, view: PatientView, card_text: str, amount_text: str, method: str
    ) -> TopUpDraft:
        return TopUpDraft(
            view.patient.patient_id,
            view.patient.name,
            parse_card_no(card_text),
            self.parse_amount(amount_text),
            parse_payment_method(method).value,
        )

    def cancel_card_draft(self, card_text: str, reason: str) -> CancelCardDraft:
        return CancelCardDraft(parse_card_no(card_text), reason)

    def parse_amount(self, text: str) -> int:
        """Fen from a typed yuan amount, or DomainError with the reason."""
        return parse_amount(text, limit_fen=self.core.policy.max_amount_fen)

    # -- the commands a draft makes ------------------------------------------------

    async def _builder(self, draft: CashierDraft) -> Callable[[LocalStore], Command]:
        # the money taken belongs to the clerk's shift
        shift_id = await self.core.current_shift()
        takes_money = isinstance(draft, TopUpDraft) or (
            isinstance(draft, IssueCardDraft) and draft.prepay_fen is not None
        )
        if takes_money and shift_id is None:
            raise DomainError("shift_missing")
        if isinstance(draft, RegistrationDraft):
            command = RegisterPatient(
                patient_id=str(ULID()),
                name=draft.name,
                sex=draft.sex,
                birth_date=draft.birth_date,
                doc_type=draft.doc_type,
                doc_no=draft.doc_no,
                phone=draft.phone,
                address=draft.address,
            )
            return lambda _store: command
        if isinstance(draft, IssueCardDraft):

            def issue(store: LocalStore) -> IssueCard:
                prepayment = None
                if draft.prepay_fen is not None:
                    prepayment = Prepayment(
                        transfer_id=str(ULID()),
                        amount_fen=draft.prepay_fen,
                        method=draft.method,
                        receipt_no=store.take_number(Series.RECEIPT),
                        shift_id=shift_id,
                    )
                return IssueCard(
                    card_no=store.take_number(Series.CARD),
                    patient_id=draft.patient_id,
                    prepayment=prepayment,
                )

            return issue
        if isinstance(draft, TopUpDraft):

            def top_up(store: LocalStore) -> TopUp:
                return TopUp(
                    transfer_id=str(ULID()),
                    card_no=draft.card_no,
                    amount_fen=draft.amount_fen,
                    method=draft.method,
                    receipt_no=store.take_number(Series.RECEIPT),
                    shift_id=shift_id,
                )

            return top_up
        cancel = CancelCard(card_no=draft.card_no, reason=draft.reason)
        return lambda _store: cancel

    async def check(self, draft: CashierDraft) -> None:
        """The rule's refusal now, before the clerk confirms (CommandRejected);
        nothing is written."""
        await self.core.check(await self._builder(draft))

    async def commit(self, draft: CashierDraft) -> Done:
        """Commit the draft once; raises CommandRejected if the rules say no."""
        committed = await self.core.commit(await self._builder(draft))
        kind = committed.executed.command.kind
        result = committed.result
        receipt, path = None, None
        if result.get("receipt_no") and committed.rejection is None:
            receipt, path = await asyncio.to_thread(
                self._receipt, result["receipt_no"], committed.confirmed
            )
        patient_id = result.get("patient_id") or ""
        if isinstance(draft, CancelCardDraft):
            card = await asyncio.to_thread(self.store.card, draft.card_no)
            patient_id = card.patient_id if card else ""
        return Done(
            kind=kind,
            op_id=committed.op_id,
            patient_id=patient_id,
            confirmed=committed.confirmed,
            mapped=bool(result.get("mapped")),
            card_no=result.get("card_no"),
            receipt=receipt,
            receipt_path=path,
            rejection=committed.rejection,
        )

    # -- numbers and receipts --------------------------------------------------------

    def numbers_left(self) -> tuple[int, int]:
        """(card numbers, receipt numbers) left in this workstation's leased blocks."""
        return self.store.numbers_left(Series.CARD), self.store.numbers_left(Series.RECEIPT)

    def next_card_no(self) -> str | None:
        """The card number the next issue will take from this workstation's block."""
        return self.store.peek_number(Series.CARD)

    def _receipt(self, receipt_no: str, confirmed: bool) -> tuple[Receipt, Path]:
        transfer = self.store.transfer_by_receipt(receipt_no)
        if transfer is None:
            raise DomainError("transfer_exists")
        view = self.store.patient_view(transfer.patient_id)
        clerk = self.core.clerk
        settings = self.core.settings
        receipt = Receipt(
            receipt_no=receipt_no,
            kind=transfer.kind,
            at=transfer.at,
            hospital=settings.hospital_name,
            window=settings.window_name,
            clerk_name=clerk.name if clerk else transfer.clerk_id,
            patient_name=view.patient.name if view else "",
            card_no=transfer.card_no or "",
            amount_fen=transfer.amount_fen,
            method=transfer.method,
            balance_after_fen=view.balance_fen if view else 0,
            provisional=not confirmed,
        )
        path = receipt.write(settings.receipts_dir, "zh")
        return receipt, path
