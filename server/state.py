"""The server's side of :class:`domain.state.DeskState`: the same
questions the replica answers, asked of the authoritative store inside the
transaction that applies the operation (plain SQL: this is the push hot path)."""

from __future__ import annotations

from domain.cards import CardStatus
from domain.numbers import Series
from domain.rows import CardRow, PatientRow, columns_of
from domain.state import Policy

from .raw import RawSql

_PATIENT_COLS = tuple(name for name, _ in columns_of(PatientRow))
_CARD_COLS = tuple(name for name, _ in columns_of(CardRow))
_PATIENT_SELECT = f"SELECT {', '.join(_PATIENT_COLS)} FROM patients"
_CARD_SELECT = f"SELECT {', '.join(_CARD_COLS)} FROM cards"


class ServerState:
    def __init__(self, sql: RawSql, policy: Policy) -> None:
        self.sql = sql
        self._policy = policy
        self._blocks: dict[tuple[str, str], list[tuple[int, int]]] = {}

    def resolve_patient_id(self, patient_id: str) -> str:
        alias = self.sql.scalar(
            "SELECT patient_id FROM patient_aliases WHERE alias_id = ?", (patient_id,)
        )
        return str(alias) if alias is not None else patient_id

    def _patient(self, where: str, params: tuple[str, ...]) -> PatientRow | None:
        row = self.sql.one(f"{_PATIENT_SELECT} WHERE {where}", params)
        return (
            PatientRow.model_validate(dict(zip(_PATIENT_COLS, row, strict=True))) if row else None
        )

    def _card(self, where: str, params: tuple[str, ...]) -> CardRow | None:
        row = self.sql.one(f"{_CARD_SELECT} WHERE {where}", params)
        return CardRow.model_validate(dict(zip(_CARD_COLS, row, strict=True))) if row else None

    def get_patient(self, patient_id: str) -> PatientRow | None:
        # the alias, if any, and the patient in one statement
        return self._patient(
            "patient_id = COALESCE((SELECT a.patient_id FROM patient_aliases a WHERE a.alias_id = ?), ?)",
            (patient_id, patient_id),
        )

    def find_patient_by_document(self, doc_type: str, doc_no: str) -> PatientRow | None:
        return self._patient("doc_type = ? AND doc_no = ?", (doc_type, doc_no))

    def patient_id_in_use(self, patient_id: str) -> bool:
        return (
            self.sql.one("SELECT 1 FROM patients WHERE patient_id = ?", (patient_id,)) is not None
            or self.sql.one("SELECT 1 FROM patient_aliases WHERE alias_id = ?", (patient_id,))
            is not None
        )

    def get_card(self, card_no: str) -> CardRow | None:
        return self._card("card_no = ?", (card_no,))

    def active_card_of(self, patient_id: str) -> CardRow | None:
        return self._card(
            "patient_id = ? AND status = ? LIMIT 1", (patient_id, CardStatus.ACTIVE.value)
        )

    def transfer_exists(self, transfer_id: str) -> bool:
        return (
            self.sql.one("SELECT 1 FROM transfers WHERE transfer_id = ?", (transfer_id,))
            is not None
        )

    def receipt_no_used(self, receipt_no: str) -> bool:
        return (
            self.sql.one("SELECT 1 FROM transfers WHERE receipt_no = ?", (receipt_no,)) is not None
        )

    def number_leased(self, series: Series, sequence: int, device_id: str) -> bool:
        # a device holds a handful of blocks: read them once per batch (the push
        # transaction), not once per operation
        key = (series.value, device_id)
        if any(first <= sequence <= last for first, last in self._blocks.get(key, ())):
            return True
        self.sql.execute(
            'SELECT "first", "last" FROM number_blocks WHERE series = ? AND device_id = ?', key
        )
        blocks = self._blocks[key] = [(int(f), int(last)) for f, last in self.sql.cursor.fetchall()]
        return any(first <= sequence <= last for first, last in blocks)

    def account_balance(self, account: str) -> int:
        credit = self.sql.scalar(
            "SELECT COALESCE(SUM(amount_fen), 0) FROM transfers WHERE credit_account = ?",
            (account,),
        )
        debit = self.sql.scalar(
            "SELECT COALESCE(SUM(amount_fen), 0) FROM transfers WHERE debit_account = ?", (account,)
        )
        return int(credit or 0) - int(debit or 0)

    def policy(self) -> Policy:
        return self._policy
