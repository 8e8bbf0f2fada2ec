"""The server's side of :class:`workstation.domain.state.DeskState`: the same
questions the replica answers, asked of the authoritative store inside the
transaction that applies the operation."""

from __future__ import annotations

from sqlalchemy import and_, exists, func, select
from sqlalchemy.engine import Connection

from workstation.domain.cards import CardStatus
from workstation.domain.numbers import Series
from workstation.domain.rows import CardRow, PatientRow
from workstation.domain.state import Policy

from .db import cards, number_blocks, patient_aliases, patients, transfers


class ServerState:
    def __init__(self, conn: Connection, policy: Policy) -> None:
        self.conn = conn
        self._policy = policy

    def resolve_patient_id(self, patient_id: str) -> str:
        alias = self.conn.execute(
            select(patient_aliases.c.patient_id).where(patient_aliases.c.alias_id == patient_id)
        ).scalar()
        return alias or patient_id

    def get_patient(self, patient_id: str) -> PatientRow | None:
        row = (
            self.conn.execute(
                select(patients).where(patients.c.patient_id == self.resolve_patient_id(patient_id))
            )
            .mappings()
            .first()
        )
        return PatientRow.model_construct(**row) if row is not None else None

    def find_patient_by_document(self, doc_type: str, doc_no: str) -> PatientRow | None:
        row = (
            self.conn.execute(
                select(patients).where(
                    and_(patients.c.doc_type == doc_type, patients.c.doc_no == doc_no)
                )
            )
            .mappings()
            .first()
        )
        return PatientRow.model_construct(**row) if row is not None else None

    def patient_id_in_use(self, patient_id: str) -> bool:
        return bool(
            self.conn.execute(
                select(
                    exists().where(patients.c.patient_id == patient_id)
                    | exists().where(patient_aliases.c.alias_id == patient_id)
                )
            ).scalar()
        )

    def get_card(self, card_no: str) -> CardRow | None:
        row = self.conn.execute(select(cards).where(cards.c.card_no == card_no)).mappings().first()
        return CardRow.model_construct(**row) if row is not None else None

    def active_card_of(self, patient_id: str) -> CardRow | None:
        row = (
            self.conn.execute(
                select(cards)
                .where(
                    and_(
                        cards.c.patient_id == patient_id, cards.c.status == CardStatus.ACTIVE.value
                    )
                )
                .limit(1)
            )
            .mappings()
            .first()
        )
        return CardRow.model_construct(**row) if row is not None else None

    def transfer_exists(self, transfer_id: str) -> bool:
        return bool(
            self.conn.execute(
                select(exists().where(transfers.c.transfer_id == transfer_id))
            ).scalar()
        )

    def receipt_no_used(self, receipt_no: str) -> bool:
        return bool(
            self.conn.execute(select(exists().where(transfers.c.receipt_no == receipt_no))).scalar()
        )

    def number_leased(self, series: Series, sequence: int, device_id: str) -> bool:
        return bool(
            self.conn.execute(
                select(
                    exists().where(
                        and_(
                            number_blocks.c.series == series.value,
                            number_blocks.c.device_id == device_id,
                            number_blocks.c.first <= sequence,
                            number_blocks.c.last >= sequence,
                        )
                    )
                )
            ).scalar()
        )

    def account_balance(self, account: str) -> int:
        credit = self.conn.execute(
            select(func.coalesce(func.sum(transfers.c.amount_fen), 0)).where(
                transfers.c.credit_account == account
            )
        ).scalar()
        debit = self.conn.execute(
            select(func.coalesce(func.sum(transfers.c.amount_fen), 0)).where(
                transfers.c.debit_account == account
            )
        ).scalar()
        return int(credit or 0) - int(debit or 0)

    def policy(self) -> Policy:
        return self._policy
