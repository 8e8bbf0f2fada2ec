"""The clerk's commands and the one place their rules are written.

``decide(state, command, ctx)`` is pure: it reads through :class:`DeskState`
and returns either a :class:`Decision` (the rows to write) or a
:class:`Rejection`. The workstation runs it against its replica, the server
runs the very same function against the authoritative store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from .cards import CardStatus
from .errors import DomainError, Rejection
from .identity import validate_document
from .ledger import TransferKind, deposit_account, intake_account
from .money import check_amount, format_yuan, parse_payment_method
from .numbers import Series, card_sequence, is_card_no, receipt_sequence
from .patients import (
    check_document,
    check_sex,
    clean_address,
    clean_name,
    clean_phone,
    parse_birth_date,
)
from .rows import CardRow, PatientAliasRow, PatientRow, Row, TransferRow
from .state import DeskState, OpContext

Role = Literal["cashier", "admission", "registrar", "supervisor", "admin"]
ROLES: tuple[str, ...] = ("cashier", "admission", "registrar", "supervisor", "admin")
ROLE_NAMES: dict[str, tuple[str, str]] = {
    "cashier": ("收费员", "cashier"),
    "admission": ("入院登记员", "admission clerk"),
    "registrar": ("医技登记员", "exam registrar"),
    "supervisor": ("主管", "supervisor"),
    "admin": ("系统管理员", "administrator"),
}


class Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ClassVar[str]
    # who may perform it; checked by decide() on both sides
    roles: ClassVar[frozenset[str]]
    names: ClassVar[tuple[str, str]]  # (简体中文, English)


class RegisterPatient(Command):
    """Register a new patient. The id is made at the workstation (a ULID), so
    a patient registered offline is usable at once, provisionally. If a
    patient with the same document number already exists, the new id becomes
    an alias of that patient (``applied_modified``), never a second record."""

    kind: ClassVar[str] = "register_patient"
    roles: ClassVar[frozenset[str]] = frozenset({"cashier", "admission", "registrar", "supervisor"})
    names: ClassVar[tuple[str, str]] = ("登记新患者", "register patient")

    patient_id: str
    name: str
    sex: str
    birth_date: str
    doc_type: str
    doc_no: str
    phone: str
    address: str = ""


class Prepayment(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    transfer_id: str
    amount_fen: int
    method: str
    receipt_no: str


class IssueCard(Command):
    """Issue a hospital card (就诊卡) from this workstation's leased block,
    optionally with the first prepayment, which must then be at least the
    policy minimum (the registration fee). A patient holds one active card;
    a lost card goes through loss report and replacement instead."""

    kind: ClassVar[str] = "issue_card"
    roles: ClassVar[frozenset[str]] = frozenset({"cashier", "supervisor"})
    names: ClassVar[tuple[str, str]] = ("发卡", "issue card")

    card_no: str
    patient_id: str
    prepayment: Prepayment | None = None


class TopUp(Command):
    """Top up a patient's prepaid deposit through their card. Always allowed
    offline; the card must be issued and active (not lost)."""

    kind: ClassVar[str] = "top_up"
    roles: ClassVar[frozenset[str]] = frozenset({"cashier", "admission", "supervisor"})
    names: ClassVar[tuple[str, str]] = ("预存充值", "top up")

    transfer_id: str
    card_no: str
    amount_fen: int
    method: str
    receipt_no: str


class CancelCard(Command):
    """Withdraw a card for good (damaged, retained, fraud). The balance stays
    in the patient's deposit account; the patient can be issued a new card.
    A supervisor's decision."""

    kind: ClassVar[str] = "cancel_card"
    roles: ClassVar[frozenset[str]] = frozenset({"supervisor", "admin"})
    names: ClassVar[tuple[str, str]] = ("注销卡", "cancel card")

    card_no: str
    reason: str


COMMANDS: dict[str, type[Command]] = {
    c.kind: c for c in (RegisterPatient, IssueCard, TopUp, CancelCard)
}


@dataclass(frozen=True)
class Decision:
    """What a command does when accepted: rows to write and what to tell the clerk."""

    rows: list[Row]
    outcome: Literal["applied", "applied_modified"] = "applied"
    notice: Rejection | None = None  # for applied_modified: what changed and why
    result: dict[str, Any] = field(default_factory=dict)


Outcome = Decision | Rejection


def parse_command(kind: str, payload: dict[str, Any]) -> Command:
    """Build a command from its wire form; raise DomainError if it is malformed."""
    command_type = COMMANDS.get(kind)
    if command_type is None:
        raise DomainError("command_unknown", command=kind)
    try:
        return command_type.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise DomainError("command_malformed", detail=f"{where}: {first.get('msg', '')}") from None


def decide(state: DeskState, command: Command, ctx: OpContext) -> Outcome:
    """Run the command's rule. Never raises for a business reason: it returns a Rejection."""
    try:
        authorise(command, ctx)
        return _DECIDERS[command.kind](state, command, ctx)
    except DomainError as exc:
        return exc.rejection


def authorise(command: Command, ctx: OpContext) -> None:
    if not (command.roles & ctx.actor.roles):
        raise DomainError(
            "role_forbidden",
            roles=",".join(sorted(ctx.actor.roles)) or "-",
            command_zh=command.names[0],
            command_en=command.names[1],
        )


def _today(ctx: OpContext) -> date:
    return date.fromisoformat(ctx.day)


def _decide_register(state: DeskState, cmd: RegisterPatient, ctx: OpContext) -> Outcome:
    today = _today(ctx)
    name = clean_name(cmd.name)
    sex = check_sex(cmd.sex)
    # the document first: a mistyped ID number explains a missing birth date too
    validate_document(cmd.doc_type, cmd.doc_no, today)
    born = parse_birth_date(cmd.birth_date, today)
    doc_no = check_document(cmd.doc_type, cmd.doc_no, sex, born, today)
    phone = clean_phone(cmd.phone)
    address = clean_address(cmd.address)
    if not cmd.patient_id or len(cmd.patient_id) > 40:
        raise DomainError("command_malformed", detail="patient_id")
    if state.patient_id_in_use(cmd.patient_id):
        raise DomainError("patient_id_taken")
    existing = state.find_patient_by_document(cmd.doc_type, doc_no)
    if existing is not None:
        alias = PatientAliasRow(
            alias_id=cmd.patient_id, patient_id=existing.patient_id, mapped_at=ctx.at
        )
        return Decision(
            rows=[alias],
            outcome="applied_modified",
            notice=Rejection(code="patient_mapped", params={"name": existing.name}),
            result={"patient_id": existing.patient_id, "mapped": True},
        )
    patient = PatientRow(
        patient_id=cmd.patient_id,
        name=name,
        sex=sex,
        birth_date=born.isoformat(),
        doc_type=cmd.doc_type,
        doc_no=doc_no,
        phone=phone,
        address=address,
        registered_at=ctx.at,
        registered_by=ctx.actor.clerk_id,
        registered_device=ctx.actor.device_id,
    )
    return Decision(rows=[patient], result={"patient_id": patient.patient_id, "mapped": False})


def _check_receipt(state: DeskState, receipt_no: str, ctx: OpContext) -> None:
    sequence = receipt_sequence(receipt_no)
    if sequence is None or not state.number_leased(Series.RECEIPT, sequence, ctx.actor.device_id):
        raise DomainError("receipt_number_not_leased", receipt_no=receipt_no[:20])
    if state.receipt_no_used(receipt_no):
        raise DomainError("receipt_number_used", receipt_no=receipt_no)


def _money_in(
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
) -> TransferRow:
    """Money handed over at the window into the patient's deposit."""
    check_amount(amount_fen, limit_fen=state.policy().max_amount_fen)
    payment = parse_payment_method(method)
    if not transfer_id or len(transfer_id) > 40:
        raise DomainError("command_malformed", detail="transfer_id")
    if state.transfer_exists(transfer_id):
        raise DomainError("transfer_exists")
    _check_receipt(state, receipt_no, ctx)
    return TransferRow(
        transfer_id=transfer_id,
        debit_account=intake_account(payment, ctx.actor.device_id),
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


def _decide_issue_card(state: DeskState, cmd: IssueCard, ctx: OpContext) -> Outcome:
    if not is_card_no(cmd.card_no):
        raise DomainError("card_format", card_no=cmd.card_no[:40])
    if state.get_card(cmd.card_no) is not None:
        raise DomainError("card_already_issued", card_no=cmd.card_no)
    if not state.number_leased(Series.CARD, card_sequence(cmd.card_no), ctx.actor.device_id):
        raise DomainError("card_number_not_leased", card_no=cmd.card_no)
    patient = state.get_patient(cmd.patient_id)
    if patient is None:
        raise DomainError("patient_unknown")
    active = state.active_card_of(patient.patient_id)
    if active is not None:
        raise DomainError("patient_has_active_card", card_no=active.card_no)
    card = CardRow(
        card_no=cmd.card_no,
        patient_id=patient.patient_id,
        status=CardStatus.ACTIVE.value,
        issued_at=ctx.at,
        issued_by=ctx.actor.clerk_id,
        issued_device=ctx.actor.device_id,
        status_changed_at=ctx.at,
    )
    rows: list[Row] = [card]
    result: dict[str, Any] = {"card_no": card.card_no, "patient_id": patient.patient_id}
    if cmd.prepayment is not None:
        minimum = state.policy().min_first_prepayment_fen
        if cmd.prepayment.amount_fen < minimum:
            check_amount(cmd.prepayment.amount_fen)  # zero/negative get their own message
            raise DomainError("amount_below_minimum", minimum=format_yuan(minimum))
        transfer = _money_in(
            state,
            ctx,
            kind=TransferKind.FIRST_PREPAYMENT,
            transfer_id=cmd.prepayment.transfer_id,
            amount_fen=cmd.prepayment.amount_fen,
            method=cmd.prepayment.method,
            receipt_no=cmd.prepayment.receipt_no,
            patient_id=patient.patient_id,
            card_no=card.card_no,
        )
        rows.append(transfer)
        result["receipt_no"] = transfer.receipt_no
    return Decision(rows=rows, result=result)


def usable_card(state: DeskState, card_no: str) -> CardRow:
    """The card a payment is taken against: issued, and neither lost nor dead."""
    card = state.get_card(card_no)
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


def _decide_top_up(state: DeskState, cmd: TopUp, ctx: OpContext) -> Outcome:
    card = usable_card(state, cmd.card_no)
    # a card issued offline to a patient the server then mapped to an existing record
    patient_id = state.resolve_patient_id(card.patient_id)
    transfer = _money_in(
        state,
        ctx,
        kind=TransferKind.TOP_UP,
        transfer_id=cmd.transfer_id,
        amount_fen=cmd.amount_fen,
        method=cmd.method,
        receipt_no=cmd.receipt_no,
        patient_id=patient_id,
        card_no=card.card_no,
    )
    return Decision(
        rows=[transfer],
        result={
            "receipt_no": transfer.receipt_no,
            "patient_id": patient_id,
            "card_no": card.card_no,
        },
    )


def _decide_cancel_card(state: DeskState, cmd: CancelCard, ctx: OpContext) -> Outcome:
    if not is_card_no(cmd.card_no):
        raise DomainError("card_format", card_no=cmd.card_no[:40])
    card = state.get_card(cmd.card_no)
    if card is None:
        raise DomainError("card_unknown", card_no=cmd.card_no)
    if card.status == CardStatus.CANCELLED:
        zh, en = CardStatus.CANCELLED.names
        raise DomainError("card_not_active", card_no=cmd.card_no, status_zh=zh, status_en=en)
    reason = clean_address(cmd.reason)  # free text: same rules as an address line
    cancelled = card.model_copy(
        update={"status": CardStatus.CANCELLED.value, "status_changed_at": ctx.at}
    )
    return Decision(rows=[cancelled], result={"card_no": card.card_no, "reason": reason})


_DECIDERS: dict[str, Callable[[DeskState, Any, OpContext], Outcome]] = {
    CancelCard.kind: _decide_cancel_card,
    RegisterPatient.kind: _decide_register,
    IssueCard.kind: _decide_issue_card,
    TopUp.kind: _decide_top_up,
}
