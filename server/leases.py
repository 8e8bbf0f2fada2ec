"""Number blocks leased to workstations.

Card and receipt numbers are handed out in blocks per device from a counter
that only moves forward, so numbers made offline on different machines never
collide and a block never restarts.
"""

from __future__ import annotations

from sqlalchemy import Engine, insert, select, update
from ulid import ULID

from domain.numbers import SERIES_END, Series

from .db import counters, number_blocks, utc_now, writer


class NumbersExhausted(Exception):
    pass


def grant_block(
    engine: Engine, device_id: str, series: Series, count: int
) -> tuple[str, int, int, str]:
    """Reserve ``count`` numbers of ``series`` for ``device_id``: (block_id, first, last, granted_at)."""
    name = f"series:{series.value}"
    with writer(engine) as conn, conn.begin():
        query = select(counters.c.value).where(counters.c.name == name)
        if conn.dialect.name != "sqlite":
            query = query.with_for_update()
        first = int(conn.execute(query).scalar_one())
        last = first + count - 1
        if last > SERIES_END[series]:
            raise NumbersExhausted(series.value)
        conn.execute(update(counters).where(counters.c.name == name).values(value=last + 1))
        block_id = str(ULID())
        granted_at = utc_now()
        conn.execute(
            insert(number_blocks).values(
                block_id=block_id,
                series=series.value,
                first=first,
                last=last,
                device_id=device_id,
                granted_at=granted_at,
            )
        )
    return block_id, first, last, granted_at
