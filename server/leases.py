"""Leases granted to workstations (``domain.leases``).

Each kind is granted by its own policy (``LEASE_KINDS``). Number blocks: card
and receipt numbers are handed out in blocks per device from a counter that
only moves forward, so numbers made offline on different machines never
collide and a block never restarts.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, and_, insert, select, update
from ulid import ULID

from domain.leases import LEASE_KINDS, NUMBER_BLOCK, Lease
from domain.numbers import SERIES_END, Series

from .chain import append_audit
from .db import counters, leases, utc_now, writer


class HighWater:
    """Where each number series' counter has been, kept in a small file
    outside the database (beside the replica images): a database restored
    from a backup has counters behind numbers already handed out, and the
    blocks granted from them would collide with blocks the workstations
    hold. A grant starts at the higher of the two and moves both; a file
    lock keeps several server processes in step. ``path=None``: no file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    @contextmanager
    def held(self) -> Iterator[dict[str, int]]:
        """The marks, locked; what the block leaves in the dict is written."""
        if self.path is None:
            yield {}
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                marks = json.loads(self.path.read_text()) if self.path.exists() else {}
            except (OSError, ValueError):
                marks = {}  # unreadable: the database's counters alone, as before
            before = dict(marks)
            yield marks
            if marks != before:
                fresh = self.path.with_suffix(".tmp")
                with open(fresh, "w") as out:
                    json.dump(marks, out)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(fresh, self.path)


class LeaseRefused(Exception):
    """The request cannot be granted; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, code: str, zh: str, en: str) -> None:
        super().__init__(en)
        self.status, self.code, self.zh, self.en = status, code, zh, en


def grant_lease(
    engine: Engine,
    device_id: str,
    kind: str,
    resource: str,
    count: int,
    clerk_id: str | None,
    high_water: HighWater | None = None,
    *,
    session: str | None = None,
) -> Lease:
    """Grant ``count`` of ``resource`` of lease ``kind`` to ``device_id``
    (audited, with the requesting ``session``)."""
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
    return grant_number_block(
        engine, Series(resource), count, device_id, clerk_id, high_water, session=session
    )


def grant_number_block(
    engine: Engine,
    series: Series,
    count: int,
    device_id: str,
    clerk_id: str | None,
    high_water: HighWater | None = None,
    *,
    session: str | None = None,
) -> Lease:
    """A block of ``count`` numbers of ``series`` for ``device_id`` (no limit
    per request: the demo's and the benchmark's seeding use it directly),
    audited in the transaction that grants it."""
    name = f"series:{series.value}"
    with (high_water or HighWater(None)).held() as marks, writer(engine) as conn, conn.begin():
        query = select(counters.c.value).where(counters.c.name == name)
        if conn.dialect.name != "sqlite":
            query = query.with_for_update()
        first = max(int(conn.execute(query).scalar_one()), marks.get(name, 0))
        last = first + count - 1
        if last > SERIES_END[series]:
            raise LeaseRefused(
                409,
                "numbers_exhausted",
                "号段已用尽，请联系信息科。",
                "This number series is exhausted; call IT.",
            )
        conn.execute(update(counters).where(counters.c.name == name).values(value=last + 1))
        marks[name] = last + 1
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
        append_audit(
            conn,
            clerk_id=clerk_id,
            device_id=device_id,
            action="lease",
            target=f"{NUMBER_BLOCK}:{series.value}:{first}-{last}",
            outcome="ok",
            detail=lease.lease_id,
            session=session,
        )
    return lease


def reassert_leases(
    engine: Engine,
    device_id: str,
    held: list[Lease],
    high_water: HighWater | None = None,
    *,
    clerk_id: str | None = None,
    session: str | None = None,
) -> tuple[list[str], list[str]]:
    """A workstation's number blocks, told again after the server was restored
    from a backup (which may have forgotten blocks it granted since). Each one
    the server does not know is recorded again, and its series' counter moved
    past it, unless it overlaps a block the server holds (granted again since
    the restore: a true collision, which the workstation stops using). Returns
    (kept, refused) lease ids; audited (``leases_held``) in the same transaction."""
    kept: list[str] = []
    refused: list[str] = []
    with (high_water or HighWater(None)).held() as marks, writer(engine) as conn, conn.begin():
        for lease in held:
            if (
                lease.kind != NUMBER_BLOCK
                or lease.device_id != device_id
                or lease.resource not in {s.value for s in Series}
                or lease.first is None
                or lease.last is None
                or not 0 < lease.first <= lease.last <= SERIES_END[Series(lease.resource)]
                or lease.last - lease.first >= LEASE_KINDS[NUMBER_BLOCK].most_at_once
            ):
                refused.append(lease.lease_id)
                continue
            known = conn.execute(
                select(leases.c.device_id, leases.c.first, leases.c.last).where(
                    leases.c.lease_id == lease.lease_id
                )
            ).first()
            if known is not None:
                same = tuple(known) == (device_id, lease.first, lease.last)
                (kept if same else refused).append(lease.lease_id)
                continue
            overlap = conn.execute(
                select(leases.c.lease_id)
                .where(
                    and_(
                        leases.c.kind == NUMBER_BLOCK,
                        leases.c.resource == lease.resource,
                        leases.c.first <= lease.last,
                        leases.c.last >= lease.first,
                    )
                )
                .limit(1)
            ).first()
            if overlap is not None:
                refused.append(lease.lease_id)
                continue
            conn.execute(
                insert(leases).values(
                    lease_id=lease.lease_id,
                    kind=NUMBER_BLOCK,
                    resource=lease.resource,
                    device_id=device_id,
                    first=lease.first,
                    last=lease.last,
                    granted_at=lease.granted_at,
                    granted_by=None,
                )
            )
            name = f"series:{lease.resource}"
            query = select(counters.c.value).where(counters.c.name == name)
            if conn.dialect.name != "sqlite":
                query = query.with_for_update()
            if int(conn.execute(query).scalar_one()) <= lease.last:
                conn.execute(
                    update(counters).where(counters.c.name == name).values(value=lease.last + 1)
                )
            marks[name] = max(marks.get(name, 0), lease.last + 1)
            kept.append(lease.lease_id)
        append_audit(
            conn,
            clerk_id=clerk_id,
            device_id=device_id,
            action="leases_held",
            target=f"{len(kept)} kept, {len(refused)} refused",
            outcome="refused" if refused else "ok",
            detail=",".join(refused)[:2000] or None,
            session=session,
        )
    return kept, refused
