"""What a rule may read, and the context a command runs in.

:class:`DeskState` is deliberately small and generic: rows by key, the first
row matching some columns, whether one exists, a sum over a column, a device's
leases, and the policy. Rules build everything else from these
(``domain.patients.get_patient``, ``domain.ledger.balance``,
``domain.leases.leased``...), so a new
command never needs a new storage method. Three implementations answer the
same questions the same way, held to it by one contract test: the workstation
replica (``local_db``), the central store (``server``) and the tests' fake.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TypeVar

from .rows import Row

Value = str | int | None
R = TypeVar("R", bound=Row)


@dataclass(frozen=True)
class Policy:
    """Limits set by the hospital and handed down by the server."""

    min_first_prepayment_fen: int = 1_000  # 10 yuan: at least the registration fee
    max_amount_fen: int = 100_000_000  # one million yuan per transaction
    offline_login_days: int = 7  # a clerk may log in offline this long after an online login
    login_attempts: int = 5  # failed attempts before lockout
    lockout_minutes: int = 15
    # number blocks (card and receipt numbers): grants a workstation may ask
    # for in a minute, and numbers it may be granted in a UTC day (all series)
    lease_grants_per_minute: int = 10
    lease_numbers_per_day: int = 20_000

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
    # the deciding side's own date (YYYY-MM-DD) for judging the dates a clerk
    # types, such as a birth date: on the server its clock's date in the op's
    # time zone, so an op dated 2099 by a wrong PC clock cannot register a
    # patient born in 2098, nor one dated 1970 refuse a patient born in 1980.
    # None: the op's own day (the workstation, whose clock dated the op)
    today: str | None = None

    @property
    def day(self) -> str:
        return self.at[:10]

    @property
    def judging_day(self) -> str:
        """The day against which typed dates are judged (see ``today``)."""
        return self.today or self.day


@dataclass(frozen=True)
class Lease:
    lease_id: str
    kind: str
    resource: str
    device_id: str
    granted_at: str  # ISO 8601
    first: int | None = None  # range
    last: int | None = None
    ids: frozenset[str] | None = None  # set
    quantity: int | None = None  # quantity
    expires_at: str | None = None  # ISO 8601; None: until returned
    returned_at: str | None = None

    def in_force_at(self, at: str | None) -> bool:
        """Whether the lease held at ``at`` (an operation's time; None: now).
        Not yet returned then, and not expired: what an operation made
        offline used stays valid when it is pushed later."""
        moment = _instant(at) if at else None
        for end in (self.returned_at, self.expires_at):
            if end is None:
                continue
            if moment is None or moment >= _instant(end):
                return False
        return True

    def covers(self, value: int | str) -> bool:
        if self.first is not None and self.last is not None and isinstance(value, int):
            return self.first <= value <= self.last
        if self.ids is not None:
            return str(value) in self.ids
        return False


def _instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.astimezone()


class DeskState(Protocol):
    """The reads a rule may make. ``where`` names columns of the row model.

    On a workstation the answers are the clerk's view: rows the server has
    confirmed plus the effects of operations still pending. ``pending`` narrows
    a sum to one side of that (True: only rows of pending operations, False:
    only confirmed rows); the server has no pending rows."""

    def get(self, row_type: type[R], key: str) -> R | None:
        """The row with this key, or None."""

    def find(self, row_type: type[R], **where: Value) -> R | None:
        """A row whose columns equal ``where`` (a confirmed one first), or None."""

    def exists(self, row_type: type[Row], **where: Value) -> bool:
        """Whether a row's columns equal ``where``."""

    def sum(
        self, row_type: type[Row], column: str, *, pending: bool | None = None, **where: Value
    ) -> int:
        """The sum of an integer column over the rows whose columns equal ``where``."""

    def leases(self, kind: str, resource: str, device_id: str) -> list[Lease]:
        """The leases of ``kind`` on ``resource`` granted to ``device_id``,
        returned or expired ones included (an operation made before then may
        still use them: ``domain.leases.leased`` decides)."""

    def policy(self) -> Policy: ...
