"""The replica's schema: what its migrations make matches the row models, and
migration m001 makes exactly what release 0.1.0 made (its replicas recorded
m001 as applied and will never run it again)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlite_utils import Database

from domain.areas import ROW_TYPES
from domain.rows import columns_of
from local_db.schema import (
    MIGRATION_SQL,
    SEARCH_TRIGGERS,
    migrate,
    register_functions,
    replica_migrations,
    run_script,
    schema_version,
    sql_migration,
)

RELEASE_0_1_0 = Path(__file__).parent / "fixtures" / "release_0_1_0"


@pytest.fixture
def replica() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:")
    register_functions(conn)
    migrate(conn)
    yield conn
    conn.close()


def sqlite_schema(conn: sqlite3.Connection) -> set[tuple[str, str, str, str | None]]:
    return set(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))


def test_every_row_model_has_its_table_with_its_columns_and_indexes(
    replica: sqlite3.Connection,
) -> None:
    for row_type in ROW_TYPES:
        columns = [
            (name, type_, bool(notnull), bool(pk))
            for _cid, name, type_, notnull, _default, pk in replica.execute(
                f"PRAGMA table_info({row_type.table})"
            )
        ]
        assert columns, f"no table {row_type.table}: its migration is missing"
        expected = [
            (
                name,
                "INTEGER" if py_type is int else "TEXT",
                name == row_type.key,
                name == row_type.key,
            )
            for name, py_type in columns_of(row_type)
        ]
        assert columns == [*expected, ("pending_op", "TEXT", False, False)], row_type.table
        indexes = {
            name: bool(unique)
            for _seq, name, unique, origin, _partial in replica.execute(
                f"PRAGMA index_list({row_type.table})"
            )
            if origin == "c"  # made by CREATE INDEX, not the primary key's
        }
        for index_name, index_cols, _unique in row_type.indexes + row_type.replica_indexes:
            assert index_name in indexes, f"no index {index_name} on {row_type.table}"
            cols = [r[2] for r in replica.execute(f"PRAGMA index_info({index_name})")]
            assert cols == list(index_cols), index_name
            # uniqueness is the server's to enforce: a replica mid-rebase may
            # hold a pending row beside the pulled row that replaces it
            assert indexes[index_name] is False, index_name


def test_m001_makes_exactly_the_schema_of_release_0_1_0() -> None:
    """Every table, column, index, the search table and its triggers, down to
    the text SQLite keeps, as a 0.1.0 replica has them."""
    replica = sqlite3.connect(":memory:")
    register_functions(replica)
    replica_migrations().apply(
        Database(replica, execute_plugins=False), stop_before="m002_general_leases"
    )
    released = sqlite3.connect(
        (RELEASE_0_1_0 / "replica-sqlite.db").resolve().as_uri() + "?mode=ro", uri=True
    )
    try:
        assert sqlite_schema(replica) == sqlite_schema(released)
    finally:
        released.close()
        replica.close()


def test_the_search_triggers_a_snapshot_load_makes_are_the_migrated_ones(
    replica: sqlite3.Connection,
) -> None:
    migrated = {
        sql for (sql,) in replica.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger'")
    }
    assert migrated == set(SEARCH_TRIGGERS)


def test_migrations_run_their_sql_once_in_order(tmp_path: Path) -> None:
    pending = replica_migrations().pending(Database(memory=True))
    assert [m.name for m in pending] == list(MIGRATION_SQL)
    path = tmp_path / "replica.db"
    for _ in range(2):
        conn = sqlite3.connect(path)
        register_functions(conn)
        migrate(conn)
        assert schema_version(conn) == list(MIGRATION_SQL)
        conn.close()


def test_a_migration_must_come_after_the_last_one() -> None:
    with pytest.raises(ValueError, match="must sort after"):
        sql_migration("m000_early", "SELECT 1;")
    pending = replica_migrations().pending(Database(memory=True))
    assert list(MIGRATION_SQL) == [m.name for m in pending]


def test_a_script_runs_statement_by_statement_and_refuses_an_unfinished_one() -> None:
    db = Database(memory=True)
    run_script(
        db,
        """
        -- a comment
        CREATE TABLE t (a INTEGER);
        CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN
            INSERT INTO t (a) SELECT NULL WHERE 0;
        END;
        """,
    )
    assert db.execute("SELECT name FROM sqlite_master ORDER BY name").fetchall() == [
        ("t",),
        ("t_ins",),
    ]
    with pytest.raises(ValueError, match="incomplete SQL statement"):
        run_script(db, "CREATE TABLE u (a INTEGER)")
