"""The replica's side of :class:`domain.state.DeskState`: what the
rules read, answered from the local SQLite view (confirmed + pending)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from domain.cards import CardStatus
from domain.numbers import Series
from domain.rows import CardRow, PatientRow, columns_of
from domain.state import Policy

_PATIENT_COLS = ", ".join(name for name, _ in columns_of(PatientRow))
_CARD_COLS = ", ".join(name for name, _ in columns_of(CardRow))


class ReplicaState:
    def __init__(self, conn: sqlite3.Connection, policy: Callable[[], Policy]) -> None:
        self.conn = conn
        self._policy = policy

    def _patient(self, where: str, args: tuple[str, ...]) -> PatientRow | None:
        row = self.conn.execute(
            f"SELECT {_PATIENT_COLS} FROM patients WHERE {where}", args
        ).fetchone()
        return PatientRow.model_validate(dict(row)) if row is not None else None

    def resolve_patient_id(self, patient_id: str) -> str:
        row = self.conn.execute(
            "SELECT patient_id FROM patient_aliases WHERE alias_id = ?", (patient_id,)
        ).fetchone()
        return row[0] if row is not None else patient_id

    def get_patient(self, patient_id: str) -> PatientRow | None:
        return self._patient("patient_id = ?", (self.resolve_patient_id(patient_id),))

    def find_patient_by_document(self, doc_type: str, doc_no: str) -> PatientRow | None:
        # a pending row may stand beside the pulled row that replaces it: prefer the confirmed one
        return self._patient(
            "doc_no = ? AND doc_type = ? ORDER BY pending_op IS NOT NULL LIMIT 1",
            (doc_no, doc_type),
        )

    def patient_id_in_use(self, patient_id: str) -> bool:
        return (
            self.conn.execute(
                "SELECT 1 FROM patients WHERE patient_id = ?", (patient_id,)
            ).fetchone()
            is not None
            or self.conn.execute(
                "SELECT 1 FROM patient_aliases WHERE alias_id = ?", (patient_id,)
            ).fetchone()
            is not None
        )

    def get_card(self, card_no: str) -> CardRow | None:
        row = self.conn.execute(
            f"SELECT {_CARD_COLS} FROM cards WHERE card_no = ?", (card_no,)
        ).fetchone()
        return CardRow.model_validate(dict(row)) if row is not None else None

    def active_card_of(self, patient_id: str) -> CardRow | None:
        row = self.conn.execute(
            f"SELECT {_CARD_COLS} FROM cards WHERE patient_id = ? AND status = ? LIMIT 1",
            (patient_id, CardStatus.ACTIVE.value),
        ).fetchone()
        return CardRow.model_validate(dict(row)) if row is not None else None

    def transfer_exists(self, transfer_id: str) -> bool:
        return (
            self.conn.execute(
                "SELECT 1 FROM transfers WHERE transfer_id = ?", (transfer_id,)
            ).fetchone()
            is not None
        )

    def receipt_no_used(self, receipt_no: str) -> bool:
        return (
            self.conn.execute(
                "SELECT 1 FROM transfers WHERE receipt_no = ?", (receipt_no,)
            ).fetchone()
            is not None
        )

    def number_leased(self, series: Series, sequence: int, device_id: str) -> bool:
        # every lease in this replica was granted to this workstation
        del device_id
        return (
            self.conn.execute(
                "SELECT 1 FROM leases WHERE series = ? AND first <= ? AND last >= ?",
                (series.value, sequence, sequence),
            ).fetchone()
            is not None
        )

    def account_balance(self, account: str) -> int:
        credit = self.conn.execute(
            "SELECT COALESCE(SUM(amount_fen), 0) FROM transfers WHERE credit_account = ?",
            (account,),
        ).fetchone()[0]
        debit = self.conn.execute(
            "SELECT COALESCE(SUM(amount_fen), 0) FROM transfers WHERE debit_account = ?", (account,)
        ).fetchone()[0]
        return int(credit) - int(debit)

    def policy(self) -> Policy:
        return self._policy()
