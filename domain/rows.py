"""The replicated rows: one shape on the server, in the change log and in every
workstation's replica.

Each row model is the single definition of its table: the server's SQLAlchemy
tables and the workstation's SQLite tables are generated from these fields, and
a pulled change is simply ``(table, row)``. Text is stored as TEXT, integers
(money in fen included) as 64-bit integers.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    table: ClassVar[str]
    key: ClassVar[str]
    # (name, columns, unique) for the indexes both sides keep
    indexes: ClassVar[tuple[tuple[str, tuple[str, ...], bool], ...]] = ()
    # indexes only the replicas keep: for the windows' own look-ups, which the
    # server does not make (every index is one more page written per row)
    replica_indexes: ClassVar[tuple[tuple[str, tuple[str, ...], bool], ...]] = ()

    @property
    def key_value(self) -> str:
        return str(getattr(self, self.key))


class PatientRow(Row):
    table: ClassVar[str] = "patients"
    key: ClassVar[str] = "patient_id"
    indexes: ClassVar[tuple[tuple[str, tuple[str, ...], bool], ...]] = (
        ("patients_document", ("doc_type", "doc_no"), True),
        ("patients_phone", ("phone",), False),
        ("patients_name", ("name",), False),
    )

    patient_id: str
    name: str
    sex: str
    birth_date: str
    doc_type: str
    doc_no: str
    phone: str
    address: str
    registered_at: str
    registered_by: str
    registered_device: str


class PatientAliasRow(Row):
    """A provisional patient id made offline that the server mapped to an existing patient."""

    table: ClassVar[str] = "patient_aliases"
    key: ClassVar[str] = "alias_id"
    indexes: ClassVar[tuple[tuple[str, tuple[str, ...], bool], ...]] = (
        ("patient_aliases_patient", ("patient_id",), False),
    )

    alias_id: str
    patient_id: str
    mapped_at: str


class CardRow(Row):
    table: ClassVar[str] = "cards"
    key: ClassVar[str] = "card_no"
    indexes: ClassVar[tuple[tuple[str, tuple[str, ...], bool], ...]] = (
        ("cards_patient", ("patient_id",), False),
    )

    card_no: str
    patient_id: str
    status: str  # CardStatus
    issued_at: str
    issued_by: str
    issued_device: str
    status_changed_at: str


class TransferRow(Row):
    """One immutable double-entry transfer; balances are derived from these."""

    table: ClassVar[str] = "transfers"
    key: ClassVar[str] = "transfer_id"
    indexes: ClassVar[tuple[tuple[str, tuple[str, ...], bool], ...]] = (
        ("transfers_debit", ("debit_account",), False),
        ("transfers_credit", ("credit_account",), False),
        ("transfers_receipt", ("receipt_no",), True),
    )
    # a patient's receipts at the window; the server finds a patient's money by
    # account (``deposit:<patient_id>``)
    replica_indexes: ClassVar[tuple[tuple[str, tuple[str, ...], bool], ...]] = (
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


ROW_TYPES: tuple[type[Row], ...] = (PatientRow, PatientAliasRow, CardRow, TransferRow)
ROWS_BY_TABLE: dict[str, type[Row]] = {rt.table: rt for rt in ROW_TYPES}


def columns_of(row_type: type[Row]) -> list[tuple[str, type]]:
    """(column name, python type) in declaration order."""
    result: list[tuple[str, type]] = []
    for name, field in row_type.model_fields.items():
        annotation = field.annotation
        result.append((name, int if annotation is int else str))
    return result
