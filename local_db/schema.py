"""The workstation replica's schema, as versioned migrations.

Replicated tables are generated from the domain's row models (one definition
for server, change log and replica) with one local column, ``pending_op``: the
operation that wrote the row while it is not yet confirmed by the server (NULL
for rows pulled from the server).

A migration is never edited once released; a change is a new migration.
``tests/test_local_replica.py`` migrates from empty and checks that reopening
applies no migration twice.
"""

from __future__ import annotations

import sqlite3

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from domain.areas import ROW_TYPES
from domain.rows import Row, columns_of

from .pinyin import name_terms

migrations = Migrations("workstation_replica")

# Keep the search index in step with patients, whoever writes them (the
# clerk's command, a pull, the rebase). name_terms() is a Python function
# registered on every connection (register_functions).
SEARCH_TRIGGERS = (
    """CREATE TRIGGER patients_search_insert AFTER INSERT ON patients BEGIN
        INSERT INTO patient_search (rowid, terms) VALUES (new.rowid, name_terms(new.name));
    END""",
    """CREATE TRIGGER patients_search_delete AFTER DELETE ON patients BEGIN
        DELETE FROM patient_search WHERE rowid = old.rowid;
    END""",
    """CREATE TRIGGER patients_search_update AFTER UPDATE OF name ON patients BEGIN
        UPDATE patient_search SET terms = name_terms(new.name) WHERE rowid = new.rowid;
    END""",
)


def replicated_table_sql(row_type: type[Row]) -> list[str]:
    cols = []
    for name, py_type in columns_of(row_type):
        sql_type = "INTEGER" if py_type is int else "TEXT"
        suffix = " PRIMARY KEY NOT NULL" if name == row_type.key else ""
        cols.append(f"{name} {sql_type}{suffix}")
    cols.append("pending_op TEXT")
    statements = [f"CREATE TABLE {row_type.table} ({', '.join(cols)})"]
    for index_name, index_cols, unique in row_type.indexes + row_type.replica_indexes:
        # Uniqueness is the server's to enforce: a replica mid-rebase may hold a
        # pending row beside the pulled row that will replace it.
        del unique
        statements.append(
            f"CREATE INDEX {index_name} ON {row_type.table} ({', '.join(index_cols)})"
        )
    return statements


@migrations()
def m001_replica(db: Database) -> None:
    for row_type in ROW_TYPES:
        for statement in replicated_table_sql(row_type):
            db.execute(statement)
    run_script(
        db,
        """
        CREATE INDEX patients_doc_no ON patients (doc_no);
        CREATE INDEX transfers_op ON transfers (op_id);

        -- Name and pinyin search; rowid follows patients.rowid.
        CREATE VIRTUAL TABLE patient_search USING fts5(
            terms, tokenize = 'unicode61', prefix = '1 2 3'
        );
        -- Every clerk action, in the order made here; resent verbatim until answered.
        CREATE TABLE outbox (
            client_seq INTEGER PRIMARY KEY,
            op_id TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            payload TEXT NOT NULL,
            args_hash TEXT NOT NULL,
            clerk_id TEXT NOT NULL,
            clerk_roles TEXT NOT NULL,
            at TEXT NOT NULL,
            hlc TEXT NOT NULL,
            created_mono REAL,
            state TEXT NOT NULL DEFAULT 'pending',
            local_outcome TEXT NOT NULL,
            local_result TEXT,
            server_result TEXT,
            server_seq INTEGER,
            attempts INTEGER NOT NULL DEFAULT 0,
            last_attempt_at TEXT
        );
        CREATE INDEX outbox_state ON outbox (state, client_seq);

        -- Before-images of rows written by pending operations, for the rebase.
        CREATE TABLE pending_effects (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            op_id TEXT NOT NULL,
            tbl TEXT NOT NULL,
            row_key TEXT NOT NULL,
            before TEXT
        );

        -- Number blocks and other leases granted by the server.
        CREATE TABLE leases (
            lease_id TEXT PRIMARY KEY,
            series TEXT NOT NULL,
            first INTEGER NOT NULL,
            last INTEGER NOT NULL,
            next INTEGER NOT NULL,
            granted_at TEXT NOT NULL
        );
        CREATE INDEX leases_series ON leases (series, first);

        CREATE TABLE sync_state (key TEXT PRIMARY KEY, value TEXT);

        -- Operations the server did not take as the clerk saw them.
        CREATE TABLE sync_issues (
            issue_id INTEGER PRIMARY KEY AUTOINCREMENT,
            op_id TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'open',
            code TEXT NOT NULL,
            params TEXT NOT NULL DEFAULT '{}',
            summary TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            resolved_by TEXT,
            resolved_at TEXT,
            resolution TEXT
        );
        CREATE INDEX sync_issues_status ON sync_issues (status, issue_id);

        -- Clerks who logged in here online: what offline login checks against.
        CREATE TABLE clerk_cache (
            username TEXT PRIMARY KEY,
            clerk_id TEXT NOT NULL,
            name TEXT NOT NULL,
            roles TEXT NOT NULL,
            verifier TEXT NOT NULL,
            last_online_login TEXT NOT NULL,
            failed_attempts INTEGER NOT NULL DEFAULT 0,
            locked_until TEXT
        );
        """,
    )
    for statement in SEARCH_TRIGGERS:
        db.execute(statement)


def run_script(db: Database, script: str) -> None:
    """Run statements one by one: sqlite3's executescript would commit the
    migration's transaction half way."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip():
                db.execute(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement: {pending[:80]}")


def register_functions(conn: sqlite3.Connection) -> None:
    """SQL functions the triggers call; every connection to a replica needs them."""
    conn.create_function("name_terms", 1, name_terms, deterministic=True)


def migrate(db: Database) -> None:
    migrations.apply(db)


def schema_version(db: Database) -> list[str]:
    return [m.name for m in migrations.applied(db)]
