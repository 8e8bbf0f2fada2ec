"""The server's side of :class:`domain.state.DeskState`: the same questions
the replica answers, asked of the authoritative store inside the transaction
that applies the operation (plain SQL: this is the push hot path). The server
holds no pending rows: every row is confirmed."""

from __future__ import annotations

from typing import Any, cast

from domain.leases import LEASES_SQL, Lease, lease_of
from domain.reads import exists_sql, row_of, select_sql, sum_sql, where_of
from domain.rows import Row
from domain.state import Policy, R, Value

from .raw import RawSql


class ServerState:
    def __init__(self, sql: RawSql, policy: Policy) -> None:
        self.sql = sql
        self._policy = policy
        self._leases: dict[tuple[str, str, str], list[Lease]] = {}

    def _first(self, row_type: type[R], names: tuple[str, ...], values: list[Any]) -> R | None:
        row = self.sql.one(select_sql(row_type, names, False), values)
        return cast(R, row_of(row_type, row)) if row is not None else None

    def get(self, row_type: type[R], key: str) -> R | None:
        return self._first(row_type, (row_type.key,), [key])

    def find(self, row_type: type[R], **where: Value) -> R | None:
        names, values = where_of(row_type, where)
        return self._first(row_type, names, values)

    def exists(self, row_type: type[Row], **where: Value) -> bool:
        names, values = where_of(row_type, where)
        return self.sql.one(exists_sql(row_type, names), values) is not None

    def sum(
        self, row_type: type[Row], column: str, *, pending: bool | None = None, **where: Value
    ) -> int:
        names, values = where_of(row_type, where)
        if pending is True:
            return 0
        return int(self.sql.scalar(sum_sql(row_type, column, names, None), values) or 0)

    def leases(self, kind: str, resource: str, device_id: str) -> list[Lease]:
        # a device holds a handful of leases: read them once per batch (the
        # push transaction), not once per operation; a lease granted during the
        # batch is for operations of later batches
        key = (kind, resource, device_id)
        found = self._leases.get(key)
        if found is None:
            self.sql.execute(LEASES_SQL, key)
            found = self._leases[key] = [lease_of(row) for row in self.sql.cursor.fetchall()]
        return found

    def policy(self) -> Policy:
        return self._policy
