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

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from domain.rows import Row, columns_of


class RawSql:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn  # for what SQLAlchemy writes in the same transaction
        driver: Any = conn.connection.driver_connection
        self.cursor: Any = driver.cursor()
        self.qmark = conn.dialect.paramstyle == "qmark"
        self.sqlite = conn.dialect.name == "sqlite"
        dbapi = conn.dialect.loaded_dbapi
        self.IntegrityError: type[Exception] = dbapi.IntegrityError
        # the database went away or gave up (connection lost, deadlock,
        # serialisation failure, SQLite busy): says nothing about the statement
        self.Unavailable: tuple[type[Exception], ...] = (
            dbapi.OperationalError,
            dbapi.InterfaceError,
            sa_exc.OperationalError,
            sa_exc.InterfaceError,
        )
        self._pg_raw: Any = None

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

    def all_in(self, sql: str, values: Sequence[Any]) -> list[tuple[Any, ...]]:
        """``sql`` ending in ``IN`` followed by the list of ``values``."""
        if self.sqlite:
            return self.all(f"{sql} ({', '.join('?' * len(values))})", values)
        return self.pg_all(f"{sql} ({pg_placeholders(1, len(values))})", values)

    def pg_all(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """PostgreSQL: a statement of many parameters, numbered ``$1``, ``$2``
        ..., sent as it is: psycopg's own placeholders are parsed in Python on
        every call once a statement has more than 50 (a fifth of the server's
        time in 500-op pushes went there), and not prepared (its text varies
        with the number of rows)."""
        raw = self._pg_execute(sql, params)
        return [tuple(row) for row in raw.fetchall()]

    def pg_execute(self, sql: str, params: Sequence[Any]) -> None:
        """As :meth:`pg_all`, for a statement that returns no rows."""
        self._pg_execute(sql, params)

    def _pg_execute(self, sql: str, params: Sequence[Any]) -> Any:
        if self._pg_raw is None:
            import psycopg

            self._pg_raw = psycopg.RawCursor(self.cursor.connection)
        self._pg_raw.execute(sql, params, prepare=False)
        return self._pg_raw

    def savepoint(self) -> None:
        self.cursor.execute("SAVEPOINT op")

    def release(self) -> None:
        self.cursor.execute("RELEASE SAVEPOINT op")

    def rollback_to_savepoint(self) -> None:
        self.cursor.execute("ROLLBACK TO SAVEPOINT op")
        self.cursor.execute("RELEASE SAVEPOINT op")


@lru_cache(maxsize=64)
def pg_placeholders(first: int, count: int, per_row: int = 1) -> str:
    """``$first, $first+1, ...``: ``count`` of them, or ``count`` rows
    ``($n, ..., $n+per_row-1)`` of ``per_row``."""
    numbers = range(first, first + count * per_row)
    if per_row == 1:
        return ", ".join(f"${n}" for n in numbers)
    cells = [f"${n}" for n in numbers]
    return ", ".join(
        "(" + ", ".join(cells[i : i + per_row]) + ")" for i in range(0, len(cells), per_row)
    )


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
