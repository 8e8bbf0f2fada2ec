"""A clerk's shift (班次): money taken at a window belongs to it.

A shift is opened when a clerk who handles money first logs in on a
workstation (online or offline: opening one is an operation like any other)
and stays open across logouts until the shift close (交班/日结, the cashier
window issue). Each shift owns one drawer account per payment method,
``shift:<shift_id>:<method>``: cash in the drawer, and what came in by bank
card, WeChat and Alipay, each reconciled on its own at the close. Money taken
in a shift is debited to its drawer account and credited to the patient's
deposit; the close moves each drawer's balance on (cash to the safe, the
channels to their clearing accounts) by transfers, never by edits.

Operations made by workstations of release 0.1 carry no shift: their money
stays in the accounts of that release (``drawer:<device_id>:cash`` and
``clearing:<method>``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

from .commands import Command, Decision, Fact, require_text_id
from .errors import DomainError
from .money import PaymentMethod
from .rows import IndexSpec, Row
from .state import DeskState, OpContext

# who takes money at a window, and so works in a shift
MONEY_ROLES = frozenset({"cashier", "admission", "registrar", "supervisor"})


class ShiftStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class ShiftRow(Row):
    table: ClassVar[str] = "shifts"
    key: ClassVar[str] = "shift_id"
    indexes: ClassVar[tuple[IndexSpec, ...]] = (
        ("shifts_clerk", ("clerk_id", "device_id", "status"), False),
    )

    shift_id: str
    clerk_id: str
    device_id: str
    status: str  # ShiftStatus
    opened_at: str
    closed_at: str | None


def drawer_account(shift_id: str, method: PaymentMethod | str) -> str:
    """The shift's drawer account for one payment method."""
    return f"shift:{shift_id}:{PaymentMethod(method).value}"


def open_shift_of(state: DeskState, clerk_id: str, device_id: str) -> ShiftRow | None:
    return state.find(
        ShiftRow, clerk_id=clerk_id, device_id=device_id, status=ShiftStatus.OPEN.value
    )


def check_shift(state: DeskState, shift_id: str, ctx: OpContext) -> ShiftRow:
    """The shift money is taken in: open, the acting clerk's, on this workstation."""
    shift = state.get(ShiftRow, shift_id)
    if (
        shift is None
        or shift.clerk_id != ctx.actor.clerk_id
        or shift.device_id != ctx.actor.device_id
    ):
        raise DomainError("shift_unknown", shift_id=shift_id[:40])
    if shift.status != ShiftStatus.OPEN:
        raise DomainError("shift_closed", shift_id=shift_id[:40])
    return shift


class OpenShift(Command):
    """Open the clerk's shift on this workstation, in which the money they
    take is counted. A clerk has at most one open shift per workstation."""

    kind: ClassVar[str] = "open_shift"
    roles: ClassVar[frozenset[str]] = MONEY_ROLES
    names: ClassVar[tuple[str, str]] = ("开班", "open shift")

    shift_id: str

    def decide(self, state: DeskState, ctx: OpContext) -> Decision:
        require_text_id(self.shift_id, "shift_id")
        if state.get(ShiftRow, self.shift_id) is not None:
            raise DomainError("shift_exists")
        already = open_shift_of(state, ctx.actor.clerk_id, ctx.actor.device_id)
        if already is not None:
            raise DomainError("shift_already_open", opened_at=already.opened_at[:16])
        shift = ShiftRow(
            shift_id=self.shift_id,
            clerk_id=ctx.actor.clerk_id,
            device_id=ctx.actor.device_id,
            status=ShiftStatus.OPEN.value,
            opened_at=ctx.at,
            closed_at=None,
        )
        return Decision(rows=[shift], result={"shift_id": shift.shift_id})

    def summary(self) -> list[Fact]:
        return [Fact(("班次", "shift"), self.shift_id)]
