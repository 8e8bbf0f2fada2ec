"""Plain SQL on the driver's own connection, inside a transaction SQLAlchemy
manages: the push hot path.

Applying an operation takes about a dozen small statements. Built through
SQLAlchemy's expression layer each costs ~0.2 ms of Python; sent as prepared
text to the DB-API cursor it costs a few microseconds on SQLite, which is what
lets a workstation drain a day's outbox in seconds. The SQL is written with
``?`` placeholders and works unchanged on SQLite and PostgreSQL (``ON CONFLICT
... DO UPDATE`` is spelled the same in both); for psycopg the placeholders
become ``%s``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from operator import attrgetter
from typing import Any

from sqlalchemy.engine import Connection

from domain.rows import Row, columns_of


class RawSql:
    def __init__(self, conn: Connection) -> None:
        driver: Any = conn.connection.driver_connection
        self.cursor: Any = driver.cursor()
        self.qmark = conn.dialect.paramstyle == "qmark"
        self.sqlite = conn.dialect.name == "sqlite"
        self.IntegrityError: type[Exception] = conn.dialect.loaded_dbapi.IntegrityError

    def _sql(self, sql: str) -> str:
        return sql if self.qmark else _to_format(sql)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.cursor.execute(self._sql(sql), params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.cursor.executemany(self._sql(sql), list(rows))

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.cursor.execute(self._sql(sql), params)
        return [tuple(row) for row in self.cursor.fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        self.cursor.execute(self._sql(sql), params)
        row = self.cursor.fetchone()
        return tuple(row) if row is not None else None

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.one(sql, params)
        return row[0] if row is not None else None

    def pg_scalar(self, sql: str, params: Sequence[Any]) -> Any:
        """PostgreSQL: a statement in psycopg's placeholders (no ``?``
        rewritten), made for this once (not prepared)."""
        self.cursor.execute(sql, params, prepare=False)
        row = self.cursor.fetchone()
        return row[0] if row is not None else None

    def savepoint(self) -> None:
        self.cursor.execute("SAVEPOINT op")

    def release(self) -> None:
        self.cursor.execute("RELEASE SAVEPOINT op")

    def rollback_to_savepoint(self) -> None:
        self.cursor.execute("ROLLBACK TO SAVEPOINT op")
        self.cursor.execute("RELEASE SAVEPOINT op")


@lru_cache(maxsize=256)
def _to_format(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


@lru_cache(maxsize=32)
def upsert_sql(row_type: type[Row]) -> tuple[str, Callable[[Row], tuple[Any, ...]]]:
    """The upsert of one row model, and the function that reads a row's
    values in the statement's column order."""
    columns = tuple(name for name, _ in columns_of(row_type))
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != row_type.key)
    sql = (
        f"INSERT INTO {row_type.table} ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' for _ in columns)}) "
        f"ON CONFLICT ({row_type.key}) DO UPDATE SET {updates}"
    )
    return sql, attrgetter(*columns)
