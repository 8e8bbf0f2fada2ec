"""Leases: what the server lets one workstation use on its own, so that work
done offline on different machines cannot collide.

A lease has a kind, a resource, and one of: a range of numbers (a number
block: card numbers 100000000-100000199), a set of ids (a pool of beds), or a
quantity (a slot quota, a refund budget in fen); it is granted at a time, may
expire, and may be returned. The server grants leases (each kind by its own
policy, :data:`LEASE_KINDS`) and checks, for every operation, that what the
operation used was leased to the device that made it, at the time it was
made. Number blocks are the first kind; bed pools, slot quotas and refund
budgets are kinds the window issues add, each one entry in ``LEASE_KINDS``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .numbers import Series
from .state import DeskState, Lease

__all__ = ["Lease"]  # defined with the reads that return it (domain.state)

NUMBER_BLOCK = "number_block"  # resource: a number Series; a range [first, last]

Shape = Literal["range", "set", "quantity"]


@dataclass(frozen=True)
class LeaseKind:
    """What may be leased of one kind, and how much at once."""

    kind: str
    names: tuple[str, str]  # (简体中文, English)
    shape: Shape
    resources: frozenset[str]  # what may be asked for
    most_at_once: int  # numbers, ids or units in one grant


LEASE_KINDS: dict[str, LeaseKind] = {
    NUMBER_BLOCK: LeaseKind(
        NUMBER_BLOCK,
        ("号段", "number block"),
        "range",
        frozenset(s.value for s in Series),
        10_000,
    ),
}


def leased(
    state: DeskState,
    kind: str,
    resource: str,
    value: int | str,
    device_id: str,
    at: str | None = None,
) -> bool:
    """Whether ``value`` of ``resource`` lies in a lease of ``kind`` held by
    ``device_id`` at ``at`` (an operation's time)."""
    return any(
        lease.covers(value) and lease.in_force_at(at)
        for lease in state.leases(kind, resource, device_id)
    )


def leased_quantity(
    state: DeskState, kind: str, resource: str, device_id: str, at: str | None = None
) -> int:
    """The quantity of ``resource`` leased to ``device_id`` and in force at ``at``."""
    return sum(
        lease.quantity or 0
        for lease in state.leases(kind, resource, device_id)
        if lease.in_force_at(at)
    )


def number_leased(
    state: DeskState, series: Series, sequence: int, device_id: str, at: str | None = None
) -> bool:
    """Whether ``sequence`` of ``series`` lies in a block leased to ``device_id``."""
    return leased(state, NUMBER_BLOCK, series.value, sequence, device_id, at)


# The columns both stores keep for a lease, in this order (ids as JSON text).
LEASE_COLUMNS = (
    "lease_id",
    "kind",
    "resource",
    "device_id",
    "granted_at",
    "first",
    "last",
    "ids",
    "quantity",
    "expires_at",
    "returned_at",
)
_QUOTED = ", ".join('"' + column + '"' for column in LEASE_COLUMNS)
LEASES_SQL = f"SELECT {_QUOTED} FROM leases WHERE kind = ? AND resource = ? AND device_id = ?"


def lease_of(values: Sequence[Any]) -> Lease:
    """A lease from a row of ``LEASES_SQL``."""
    (
        lease_id,
        kind,
        resource,
        device_id,
        granted_at,
        first,
        last,
        ids,
        quantity,
        expires,
        returned,
    ) = values
    return Lease(
        lease_id=str(lease_id),
        kind=str(kind),
        resource=str(resource),
        device_id=str(device_id),
        granted_at=str(granted_at),
        first=int(first) if first is not None else None,
        last=int(last) if last is not None else None,
        ids=frozenset(json.loads(str(ids))) if ids is not None else None,
        quantity=int(quantity) if quantity is not None else None,
        expires_at=str(expires) if expires is not None else None,
        returned_at=str(returned) if returned is not None else None,
    )


def number_block(
    lease_id: str, series: str, first: int, last: int, device_id: str, granted_at: str
) -> Lease:
    """A lease of numbers ``first``..``last`` of ``series``."""
    return Lease(
        lease_id=lease_id,
        kind=NUMBER_BLOCK,
        resource=series,
        device_id=device_id,
        granted_at=granted_at,
        first=first,
        last=last,
    )
