"""The replica's side of :class:`domain.state.DeskState`: what the rules
read, answered from the local SQLite view (confirmed + pending)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from domain.reads import SqlReads
from domain.state import Policy


class ReplicaState(SqlReads):
    pending_rows = True

    def __init__(self, conn: sqlite3.Connection, policy: Callable[[], Policy]) -> None:
        self.conn = conn
        self._policy = policy

    def one(self, sql: str, params: Sequence[Any]) -> Sequence[Any] | None:
        row: Sequence[Any] | None = self.conn.execute(sql, params).fetchone()
        return row

    def all(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        return list(self.conn.execute(sql, params).fetchall())

    def policy(self) -> Policy:
        return self._policy()
