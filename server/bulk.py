"""Loading many rows at once: the demo hospital and the benchmark.

Rows go in through the same change log as operations (so workstations pull or
bootstrap them like anything else), in one transaction under the change-log
lock. Only for data already valid under the domain rules (generated, or
migrated from a previous system); clerks' work always goes through commands.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from sqlalchemy import Engine, insert, select, update

from domain.rows import Row
from sync.protocol import new_nonce

from .chain import EntriesHash, append_audit
from .db import CHANGE_SEQ, REPLICATED, change_log, counters, is_sqlite, writer

BATCH = 5_000


def bulk_load(engine: Engine, rows: Iterable[Row], batch_size: int = BATCH) -> int:
    """Insert rows (any mix of tables, in order) and their change-log entries.

    No op wrote them: an audit record (``bulk_load``) fingerprints the
    entries (``server.chain.EntriesHash``), which is what vouches for them
    (and for the transfers among them) in ``verify-audit``."""
    count = 0
    digest = EntriesHash()
    with writer(engine) as conn, conn.begin():
        query = select(counters.c.value).where(counters.c.name == CHANGE_SEQ)
        if not is_sqlite(conn):
            query = query.with_for_update()
        head = int(conn.execute(query).scalar_one())
        first = head + 1
        pending: dict[str, list[dict[str, object]]] = {}
        log: list[dict[str, object]] = []

        def flush() -> None:
            for table, values in pending.items():
                if values:
                    conn.execute(insert(REPLICATED[table]), values)
            if log:
                conn.execute(insert(change_log), log)
            pending.clear()
            log.clear()

        for row in rows:
            values = row.model_dump()
            head += 1
            pending.setdefault(row.table, []).append(values)
            text = json.dumps(values, ensure_ascii=False, separators=(",", ":"))
            log.append(
                {
                    "seq": head,
                    "table_name": row.table,
                    "row_key": row.key_value,
                    "row": text,
                    "op_id": None,
                    "nonce": new_nonce(),
                }
            )
            digest.add((row.table, row.key_value, text))
            count += 1
            if len(log) >= batch_size:
                flush()
        flush()
        conn.execute(update(counters).where(counters.c.name == CHANGE_SEQ).values(value=head))
        loaded = {
            "first_seq": first,
            "last_seq": head,
            "entries": count,
            "sha256": digest.hexdigest(),
        }
        append_audit(
            conn,
            clerk_id=None,
            device_id=None,
            action="bulk_load",
            target=f"{count} rows",
            outcome="ok",
            detail=json.dumps(loaded),
        )
    return count
