"""The replica's side of :class:`domain.state.DeskState`: what the rules
read, answered from the local SQLite view (confirmed + pending)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, cast

from domain.leases import LEASES_SQL, Lease, lease_of
from domain.reads import exists_sql, row_of, select_sql, sum_sql, where_of
from domain.rows import Row
from domain.state import Policy, R, Value


class ReplicaState:
    def __init__(self, conn: sqlite3.Connection, policy: Callable[[], Policy]) -> None:
        self.conn = conn
        self._policy = policy

    def _first(self, row_type: type[R], names: tuple[str, ...], values: list[Any]) -> R | None:
        row = self.conn.execute(select_sql(row_type, names, True), values).fetchone()
        return cast(R, row_of(row_type, row)) if row is not None else None

    def get(self, row_type: type[R], key: str) -> R | None:
        return self._first(row_type, (row_type.key,), [key])

    def find(self, row_type: type[R], **where: Value) -> R | None:
        names, values = where_of(row_type, where)
        return self._first(row_type, names, values)

    def exists(self, row_type: type[Row], **where: Value) -> bool:
        names, values = where_of(row_type, where)
        return self.conn.execute(exists_sql(row_type, names), values).fetchone() is not None

    def sum(
        self, row_type: type[Row], column: str, *, pending: bool | None = None, **where: Value
    ) -> int:
        names, values = where_of(row_type, where)
        return int(
            self.conn.execute(sum_sql(row_type, column, names, pending), values).fetchone()[0]
        )

    def leases(self, kind: str, resource: str, device_id: str) -> list[Lease]:
        rows = self.conn.execute(LEASES_SQL, (kind, resource, device_id)).fetchall()
        return [lease_of(tuple(row)) for row in rows]

    def policy(self) -> Policy:
        return self._policy()
