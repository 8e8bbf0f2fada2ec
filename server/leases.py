"""Leases granted to workstations (``domain.leases``).

Each kind is granted by its own policy (``LEASE_KINDS``). Number blocks: card
and receipt numbers are handed out in blocks per device from a counter that
only moves forward, so numbers made offline on different machines never
collide and a block never restarts.
"""

from __future__ import annotations

from sqlalchemy import Engine, insert, select, update
from ulid import ULID

from domain.leases import LEASE_KINDS, NUMBER_BLOCK, Lease
from domain.numbers import SERIES_END, Series

from .db import counters, leases, utc_now, writer


class LeaseRefused(Exception):
    """The request cannot be granted; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, code: str, zh: str, en: str) -> None:
        super().__init__(en)
        self.status, self.code, self.zh, self.en = status, code, zh, en


def grant_lease(
    engine: Engine, device_id: str, kind: str, resource: str, count: int, clerk_id: str | None
) -> Lease:
    """Grant ``count`` of ``resource`` of lease ``kind`` to ``device_id``."""
    lease_kind = LEASE_KINDS.get(kind)
    if lease_kind is None:
        raise LeaseRefused(
            422, "lease_kind_unknown", f"不认识的领用类别：{kind}。", f"Unknown lease kind: {kind}."
        )
    if resource not in lease_kind.resources:
        raise LeaseRefused(
            422,
            "lease_resource_unknown",
            f"“{lease_kind.names[0]}”没有“{resource}”可领用。",
            f"There is no {resource!r} to lease as a {lease_kind.names[1]}.",
        )
    if not 1 <= count <= lease_kind.most_at_once:
        raise LeaseRefused(
            422,
            "lease_count",
            f"一次最多领用 {lease_kind.most_at_once}。",
            f"At most {lease_kind.most_at_once} at a time.",
        )
    if kind != NUMBER_BLOCK:  # a kind the window issues add: its policy is theirs to write
        raise LeaseRefused(
            501,
            "lease_kind_not_granted",
            "该类别暂不发放。",
            "Leases of this kind are not granted yet.",
        )
    return grant_number_block(engine, Series(resource), count, device_id, clerk_id)


def grant_number_block(
    engine: Engine, series: Series, count: int, device_id: str, clerk_id: str | None
) -> Lease:
    """A block of ``count`` numbers of ``series`` for ``device_id`` (no limit
    per request: the demo's and the benchmark's seeding use it directly)."""
    name = f"series:{series.value}"
    with writer(engine) as conn, conn.begin():
        query = select(counters.c.value).where(counters.c.name == name)
        if conn.dialect.name != "sqlite":
            query = query.with_for_update()
        first = int(conn.execute(query).scalar_one())
        last = first + count - 1
        if last > SERIES_END[series]:
            raise LeaseRefused(
                409,
                "numbers_exhausted",
                "号段已用尽，请联系信息科。",
                "This number series is exhausted; call IT.",
            )
        conn.execute(update(counters).where(counters.c.name == name).values(value=last + 1))
        lease = Lease(
            lease_id=str(ULID()),
            kind=NUMBER_BLOCK,
            resource=series.value,
            device_id=device_id,
            granted_at=utc_now(),
            first=first,
            last=last,
        )
        conn.execute(
            insert(leases).values(
                lease_id=lease.lease_id,
                kind=lease.kind,
                resource=lease.resource,
                device_id=device_id,
                first=first,
                last=last,
                granted_at=lease.granted_at,
                granted_by=clerk_id,
            )
        )
    return lease
