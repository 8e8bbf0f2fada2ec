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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, time, timedelta
from math import ceil
from pathlib import Path

from sqlalchemy import Connection, Engine, and_, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from ulid import ULID

from domain.commands import roles_for_numbers
from domain.leases import LEASE_KINDS, NUMBER_BLOCK, Lease
from domain.numbers import SERIES_END, SERIES_NAMES, SERIES_START, Series
from domain.roles import ROLE_NAMES

from .chain import append_audit
from .db import counters, lease_tallies, leases, load_policy, utc_now, writer


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
    """The request cannot be granted; ``status`` is the HTTP status to answer,
    ``retry_after`` the seconds until asking again can succeed (429)."""

    def __init__(
        self, status: int, code: str, zh: str, en: str, retry_after: int | None = None
    ) -> None:
        super().__init__(en)
        self.status, self.code, self.zh, self.en = status, code, zh, en
        self.retry_after = retry_after


def grant_lease(
    engine: Engine,
    device_id: str,
    kind: str,
    resource: str,
    count: int,
    clerk_id: str | None,
    high_water: HighWater | None = None,
    *,
    roles: Iterable[str],
    session: str | None = None,
) -> Lease:
    """Grant ``count`` of ``resource`` of lease ``kind`` to ``device_id``, for
    a clerk of ``roles``: number blocks only to a role whose commands take
    numbers of that series, within the policy's limits per device (grants a
    minute, numbers a UTC day); audited, with the requesting ``session``."""
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
    series = Series(resource)
    check_roles(series, roles)
    return grant_number_block(
        engine,
        series,
        count,
        device_id,
        clerk_id,
        high_water,
        charge=lambda conn: charge_limits(conn, device_id, grants=1, numbers=count),
        session=session,
    )


def check_roles(series: Series, roles: Iterable[str]) -> None:
    """Refuse a clerk none of whose roles runs a command taking numbers of
    ``series`` (``domain.commands.roles_for_numbers``): a registrar has no
    use for card or receipt numbers, nor an administrator."""
    allowed = roles_for_numbers(series)
    if allowed & set(roles):
        return
    zh, en = SERIES_NAMES[series]
    who_zh = "、".join(ROLE_NAMES[r][0] for r in sorted(allowed))
    who_en = ", ".join(ROLE_NAMES[r][1] for r in sorted(allowed))
    raise LeaseRefused(
        403,
        "lease_role_forbidden",
        f"当前操作员的角色不使用{zh}，不能领用{zh}号段（限{who_zh}）。",
        f"The clerk's roles use no {en}s, so no {en} block is granted ({who_en} only).",
    )


def charge_limits(conn: Connection, device_id: str, *, grants: int, numbers: int) -> None:
    """Count ``grants`` grants this UTC minute and ``numbers`` numbers this UTC
    day against ``device_id``, in the caller's transaction; refuse (429, with
    the seconds until the count starts again) past the policy's limits, and
    the transaction's rollback takes the counts back. Each count is added to
    and read in one statement, which the database makes atomic: requests
    reaching several server processes at once are counted one after another."""
    policy = load_policy(conn)
    now = datetime.now(UTC)
    if grants:
        made = _add(conn, device_id, "minute:" + now.strftime("%Y-%m-%dT%H:%M"), grants)
        if made > policy.lease_grants_per_minute:
            raise LeaseRefused(
                429,
                "lease_rate_limited",
                f"本工作站领用号段过于频繁（每分钟最多 {policy.lease_grants_per_minute} 次），"
                "请稍后再试。",
                f"This workstation asks for number blocks too often (at most "
                f"{policy.lease_grants_per_minute} a minute); try again shortly.",
                retry_after=60 - now.second,
            )
    if numbers:
        total = _add(conn, device_id, "day:" + now.date().isoformat(), numbers)
        if total > policy.lease_numbers_per_day:
            midnight = datetime.combine(now.date() + timedelta(days=1), time(), UTC)
            raise LeaseRefused(
                429,
                "lease_daily_ceiling",
                f"本工作站今日（UTC）领用的号码已达上限 {policy.lease_numbers_per_day} 个；"
                "请用完手头的号码，或联系信息科。",
                f"This workstation has reached today's (UTC) ceiling of "
                f"{policy.lease_numbers_per_day} numbers; use the numbers it holds, or call IT.",
                retry_after=max(1, ceil((midnight - now).total_seconds())),
            )


def _add(conn: Connection, device_id: str, period: str, amount: int) -> int:
    """Add ``amount`` to the device's count of ``period``; the new count.
    Counts of earlier periods are dropped as the first of a new one is made."""
    insert_ = sqlite_insert if conn.dialect.name == "sqlite" else postgresql_insert
    statement = (
        insert_(lease_tallies)
        .values(device_id=device_id, period=period, count=amount)
        .on_conflict_do_update(
            index_elements=[lease_tallies.c.device_id, lease_tallies.c.period],
            set_={"count": lease_tallies.c.count + amount},
        )
        .returning(lease_tallies.c.count)
    )
    count = int(conn.execute(statement).scalar_one())
    if count == amount:  # a new period: the device's older counts of its kind are done
        kind = period.partition(":")[0]
        conn.execute(
            delete(lease_tallies).where(
                lease_tallies.c.device_id == device_id,
                lease_tallies.c.period.like(kind + ":%"),
                lease_tallies.c.period < period,
            )
        )
    return count


def grant_number_block(
    engine: Engine,
    series: Series,
    count: int,
    device_id: str,
    clerk_id: str | None,
    high_water: HighWater | None = None,
    charge: Callable[[Connection], None] | None = None,
    *,
    session: str | None = None,
) -> Lease:
    """A block of ``count`` numbers of ``series`` for ``device_id``; ``charge``
    counts it against the device's limits in the same transaction (without
    it, no limit: the demo's and the benchmark's seeding use it directly).
    Audited in the transaction that grants it."""
    name = f"series:{series.value}"
    with (high_water or HighWater(None)).held() as marks, writer(engine) as conn, conn.begin():
        if charge is not None:
            charge(conn)
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
    the server does not know is recorded again, unless it overlaps a block
    the server holds (granted again since the restore: a true collision,
    which the workstation stops using) or lies beyond what the series'
    counter and high-water mark show was ever handed out (no restore forgot
    it: nobody was granted it). The call counts as a grant against the
    device's limits, and what it records again as numbers granted today, so
    it is no way around them. Returns (kept, refused) lease ids; audited
    (``leases_held``) in the same transaction."""
    kept: list[str] = []
    refused: list[str] = []
    recorded = 0
    with (high_water or HighWater(None)).held() as marks, writer(engine) as conn, conn.begin():
        charge_limits(conn, device_id, grants=1, numbers=0)
        for lease in held:
            if (
                lease.kind != NUMBER_BLOCK
                or lease.device_id != device_id
                or lease.resource not in {s.value for s in Series}
                or lease.first is None
                or lease.last is None
                or not SERIES_START[Series(lease.resource)]
                <= lease.first
                <= lease.last
                <= SERIES_END[Series(lease.resource)]
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
            name = f"series:{lease.resource}"
            query = select(counters.c.value).where(counters.c.name == name)
            if conn.dialect.name != "sqlite":
                query = query.with_for_update()
            counter = int(conn.execute(query).scalar_one())
            if lease.last >= max(counter, marks.get(name, 0)):
                refused.append(lease.lease_id)  # never handed out: not the workstation's to claim
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
            if counter <= lease.last:  # behind the high-water mark (a restored database)
                conn.execute(
                    update(counters).where(counters.c.name == name).values(value=lease.last + 1)
                )
            recorded += lease.last - lease.first + 1
            kept.append(lease.lease_id)
        if recorded:
            charge_limits(conn, device_id, grants=0, numbers=recorded)
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
