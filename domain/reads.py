"""The SQL behind :class:`~domain.state.DeskState`'s generic reads, written
once for both stores (the workstation's SQLite replica and the server's SQLite
or PostgreSQL): the statements use ``?`` placeholders and only what both
dialects spell the same way. The replica's tables have one more column,
``pending_op`` (the operation that wrote the row, NULL once confirmed); the
server has none (``pending_column=False``).

Column names come from the row models only (``check_columns``), never from
what a clerk typed.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any, cast

from .leases import LEASES_SQL, Lease, lease_of
from .rows import Row, check_columns, columns_of
from .state import R, Value


@lru_cache(maxsize=256)
def select_sql(row_type: type[Row], where: tuple[str, ...], pending_column: bool) -> str:
    """One row whose columns equal ``where``; on a replica a confirmed one first."""
    cols = ", ".join(name for name, _ in columns_of(row_type))
    order = (
        " ORDER BY pending_op IS NOT NULL" if pending_column and where != (row_type.key,) else ""
    )
    return f"SELECT {cols} FROM {row_type.table} WHERE {_conditions(where)}{order} LIMIT 1"


@lru_cache(maxsize=256)
def exists_sql(row_type: type[Row], where: tuple[str, ...]) -> str:
    return f"SELECT 1 FROM {row_type.table} WHERE {_conditions(where)} LIMIT 1"


@lru_cache(maxsize=256)
def sum_sql(row_type: type[Row], column: str, where: tuple[str, ...], pending: bool | None) -> str:
    check_columns(row_type, {column: 0})
    conditions = _conditions(where)
    if pending is True:
        conditions += " AND pending_op IS NOT NULL"
    elif pending is False:
        conditions += " AND pending_op IS NULL"
    return f"SELECT COALESCE(SUM({column}), 0) FROM {row_type.table} WHERE {conditions}"


def _conditions(where: tuple[str, ...]) -> str:
    if not where:
        raise ValueError("a look-up names at least one column")
    return " AND ".join(f"{name} = ?" for name in where)


def where_of(row_type: type[Row], where: dict[str, Value]) -> tuple[tuple[str, ...], list[Any]]:
    """The checked column names and their values (None is not a value to look up)."""
    names = check_columns(row_type, where)
    values = list(where.values())
    if any(v is None for v in values):
        raise ValueError(f"look-up of {row_type.__name__} by NULL: {where}")
    return names, values


def row_of(row_type: type[Row], values: Sequence[Any]) -> Row:
    return row_type.model_validate(dict(zip(row_type.model_fields, values, strict=True)))


class SqlReads:
    """The generic reads of :class:`~domain.state.DeskState` over a store that
    answers SQL: the replica and the server differ only in how a statement is
    run (:meth:`one`, :meth:`all`) and whether rows can be pending."""

    pending_rows: bool  # the store keeps rows of operations still pending (a replica)

    def one(self, sql: str, params: Sequence[Any]) -> Sequence[Any] | None:
        raise NotImplementedError

    def all(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        raise NotImplementedError

    def _first(self, row_type: type[R], names: tuple[str, ...], values: list[Any]) -> R | None:
        row = self.one(select_sql(row_type, names, self.pending_rows), values)
        return cast(R, row_of(row_type, row)) if row is not None else None

    def get(self, row_type: type[R], key: str) -> R | None:
        return self._first(row_type, (row_type.key,), [key])

    def find(self, row_type: type[R], **where: Value) -> R | None:
        names, values = where_of(row_type, where)
        return self._first(row_type, names, values)

    def exists(self, row_type: type[Row], **where: Value) -> bool:
        names, values = where_of(row_type, where)
        return self.one(exists_sql(row_type, names), values) is not None

    def sum(
        self, row_type: type[Row], column: str, *, pending: bool | None = None, **where: Value
    ) -> int:
        names, values = where_of(row_type, where)
        if not self.pending_rows:
            if pending is True:
                return 0  # nothing is pending here
            pending = None
        row = self.one(sum_sql(row_type, column, names, pending), values)
        return int(row[0] or 0) if row is not None else 0

    def leases(self, kind: str, resource: str, device_id: str) -> list[Lease]:
        return [lease_of(row) for row in self.all(LEASES_SQL, (kind, resource, device_id))]
