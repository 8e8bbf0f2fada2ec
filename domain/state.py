"""What a rule may read, and the context a command runs in.

Two storage adapters implement :class:`DeskState`: the workstation replica
(``local_db``) and the central store (``server``). ``decide()`` sees nothing
else, so it gives the same answer on both sides for the same state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from .numbers import Series
from .rows import CardRow, PatientRow


@dataclass(frozen=True)
class Policy:
    """Limits set by the hospital and handed down by the server."""

    min_first_prepayment_fen: int = 1_000  # 10 yuan: at least the registration fee
    max_amount_fen: int = 100_000_000  # one million yuan per transaction
    offline_login_days: int = 7  # a clerk may log in offline this long after an online login
    login_attempts: int = 5  # failed attempts before lockout
    lockout_minutes: int = 15

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, int]) -> Policy:
        known = {k: int(v) for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class Actor:
    clerk_id: str
    roles: frozenset[str]
    device_id: str


@dataclass(frozen=True)
class OpContext:
    """Who did it, where, and when the clerk did it (the operation's own time)."""

    actor: Actor
    at: str  # ISO 8601 with offset, the moment the clerk acted
    op_id: str
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def day(self) -> str:
        return self.at[:10]


class DeskState(Protocol):
    def resolve_patient_id(self, patient_id: str) -> str:
        """The id of the record a patient id stands for: the patient an alias
        was mapped to, else the id itself."""

    def get_patient(self, patient_id: str) -> PatientRow | None:
        """The patient, following an alias to the record it was mapped to."""

    def find_patient_by_document(self, doc_type: str, doc_no: str) -> PatientRow | None: ...

    def patient_id_in_use(self, patient_id: str) -> bool:
        """True if the id is a patient or an alias."""

    def get_card(self, card_no: str) -> CardRow | None: ...

    def active_card_of(self, patient_id: str) -> CardRow | None: ...

    def transfer_exists(self, transfer_id: str) -> bool: ...

    def receipt_no_used(self, receipt_no: str) -> bool: ...

    def number_leased(self, series: Series, sequence: int, device_id: str) -> bool:
        """True if ``sequence`` of ``series`` lies in a block leased to ``device_id``."""

    def account_balance(self, account: str) -> int:
        """Credits minus debits, in fen."""

    def policy(self) -> Policy: ...
