"""The server's side of :class:`domain.state.DeskState`: the same questions
the replica answers, asked of the authoritative store inside the transaction
that applies the operation (plain SQL: this is the push hot path). The server
holds no pending rows: every row is confirmed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from domain.leases import Lease
from domain.reads import SqlReads
from domain.state import Policy

from .raw import RawSql


class ServerState(SqlReads):
    pending_rows = False

    def __init__(self, sql: RawSql, policy: Policy) -> None:
        self.sql = sql
        self._policy = policy
        self._leases: dict[tuple[str, str, str], list[Lease]] = {}

    def one(self, sql: str, params: Sequence[Any]) -> Sequence[Any] | None:
        return self.sql.one(sql, params)

    def all(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        self.sql.execute(sql, params)
        return list(self.sql.cursor.fetchall())

    def leases(self, kind: str, resource: str, device_id: str) -> list[Lease]:
        # a device holds a handful of leases: read them once per batch (the
        # push transaction), not once per operation; a lease granted during the
        # batch is for operations of later batches
        key = (kind, resource, device_id)
        found = self._leases.get(key)
        if found is None:
            found = self._leases[key] = super().leases(kind, resource, device_id)
        return found

    def policy(self) -> Policy:
        return self._policy
