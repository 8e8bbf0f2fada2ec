"""The replicated rows: one shape on the server, in the change log and in every
workstation's replica.

Each row model is the single definition of its table's shape. A row type
registers itself when its module is imported (every area module is imported
by ``domain``); the schemas themselves are migrations on both sides (frozen
SQL on the replica, Alembic revisions on the server), and tests hold those to
the models. Text is stored as TEXT, integers (money in fen included) as 64-bit
integers.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

IndexSpec = tuple[str, tuple[str, ...], bool]  # (name, columns, unique)

# table -> row type, in the order the types were defined
ROWS_BY_TABLE: dict[str, type[Row]] = {}


class Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    table: ClassVar[str]
    key: ClassVar[str]
    # the indexes both sides keep
    indexes: ClassVar[tuple[IndexSpec, ...]] = ()
    # indexes only the replicas keep: for the windows' own look-ups, which the
    # server does not make (every index is one more page written per row)
    replica_indexes: ClassVar[tuple[IndexSpec, ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "table" not in cls.__dict__:
            return  # an abstract base of rows, not a table
        known = ROWS_BY_TABLE.get(cls.table)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise TypeError(f"table {cls.table!r} is defined twice ({known.__name__})")
        if cls.key not in cls.model_fields:
            raise TypeError(f"{cls.__name__}: key {cls.key!r} is not a field")
        ROWS_BY_TABLE[cls.table] = cls

    @property
    def key_value(self) -> str:
        return str(getattr(self, self.key))


def row_types() -> tuple[type[Row], ...]:
    """Every registered row type, in definition order (import ``domain`` first)."""
    return tuple(ROWS_BY_TABLE.values())


def columns_of(row_type: type[Row]) -> list[tuple[str, type]]:
    """(column name, python type) in declaration order."""
    result: list[tuple[str, type]] = []
    for name, field in row_type.model_fields.items():
        annotation = field.annotation
        result.append((name, int if annotation is int else str))
    return result


def check_columns(row_type: type[Row], where: dict[str, Any]) -> tuple[str, ...]:
    """The column names of a look-up, checked against the row model (they go
    into SQL text)."""
    for name in where:
        if name not in row_type.model_fields:
            raise ValueError(f"{row_type.__name__} has no column {name!r}")
    return tuple(where)
