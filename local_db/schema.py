"""The workstation replica's schema, as versioned migrations of literal SQL.

Every replica records the migrations it has run (sqlite-utils, migration set
``workstation_replica``) and runs the missing ones, in order, when it is
opened (``LocalStore``) or built (``local_db.image``). A released migration is
frozen: thousands of replicas have run it and will never run it again, so its
SQL must never change, and it never reads the domain's row models (a new field
would otherwise change what an old migration makes).

Replicated tables hold the domain's row models (``domain.rows``), one column
per field (TEXT, or INTEGER for ints), plus one local column, ``pending_op``:
the operation that wrote the row while the server has not confirmed it (NULL
for rows pulled from the server).

To change the schema (a new row type, a new field, an index):

1. Append a migration at the end of this file, named by the next number::

       M002_CARD_NOTES = '''
       ALTER TABLE cards ADD COLUMN note TEXT;
       '''
       sql_migration("m002_card_notes", M002_CARD_NOTES)

   Literal SQL only, one statement after another (triggers allowed); it runs
   in one transaction with the record that it ran.
2. Add its SHA-256 to ``REPLICA_MIGRATIONS`` in ``tests/test_schemas_frozen.py``
   (the test prints it): from then on, and once released for ever, the test
   fails if the migration's text changes.
3. ``tests/test_replica_schema.py`` checks the migrated replica against the row
   models (tables, columns, indexes): it fails until the migration is there.
4. ``local_db.image.SCHEMA_ID`` changes by itself (it hashes this SQL), so
   servers of the new release serve images only to workstations of it; older
   workstations fall back to the row snapshot.
"""

from __future__ import annotations

import hashlib
import sqlite3
from functools import cache
from typing import TYPE_CHECKING, Any

from .pinyin import name_terms

if TYPE_CHECKING:
    from sqlite_utils.migrations import Migrations

MIGRATION_SET = "workstation_replica"

# Every migration's SQL, by name, in the order they run.
MIGRATION_SQL: dict[str, str] = {}


def sql_migration(name: str, script: str) -> None:
    """Register the migration ``name``, which runs ``script``."""
    if MIGRATION_SQL and name <= list(MIGRATION_SQL)[-1]:
        raise ValueError(f"migration {name} must sort after {list(MIGRATION_SQL)[-1]}")
    MIGRATION_SQL[name] = script


@cache
def replica_migrations() -> Migrations:
    """The migrations as sqlite-utils runs them (imported only when some are
    to run: a replica that is up to date opens without it)."""
    from sqlite_utils.migrations import Migrations

    migrations = Migrations(MIGRATION_SET)
    for name, script in MIGRATION_SQL.items():

        def apply(db: Any, script: str = script) -> None:
            run_script(db, script)

        apply.__name__ = name
        migrations(name=name)(apply)
    return migrations


def run_script(db: Any, script: str) -> None:
    """Run statements one by one: sqlite3's executescript would commit the
    migration's transaction half way. ``db``: a connection or an sqlite-utils
    Database."""
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


def migrate(conn: sqlite3.Connection) -> None:
    """Run the migrations this replica has not run, each in one transaction
    with its record (sqlite-utils, migration set ``workstation_replica``)."""
    if schema_version(conn) == list(MIGRATION_SQL):
        return  # the common case: nothing to run
    from sqlite_utils import Database

    replica_migrations().apply(Database(conn, execute_plugins=False))


def schema_version(conn: sqlite3.Connection) -> list[str]:
    """The migrations this replica has run, in order."""
    try:
        rows = conn.execute(
            "SELECT name FROM _sqlite_migrations WHERE migration_set = ? ORDER BY id",
            (MIGRATION_SET,),
        ).fetchall()
    except sqlite3.OperationalError:  # no such table: a new replica
        return []
    return [row[0] for row in rows]


def schema_hash() -> str:
    """A hash of every migration's name and SQL, in order: equal hashes, equal
    schemas (``local_db.image.SCHEMA_ID``)."""
    digest = hashlib.sha256(MIGRATION_SET.encode())
    for name, script in MIGRATION_SQL.items():
        digest.update(b"\0" + name.encode() + b"\0" + script.encode())
    return digest.hexdigest()


# Keep the search index in step with patients, whoever writes them (the
# clerk's command, a pull, the rebase). name_terms() is a Python function
# registered on every connection (register_functions). The triggers as the
# latest migration made them: a snapshot load drops and makes them again.
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


# ---------------------------------------------------------------------------
# The migrations. Released ones are frozen; add new ones at the end.
# ---------------------------------------------------------------------------

# Release 0.1.0. Written as literal SQL after that release, byte for byte what
# its code (which generated the replicated tables from the row models) left in
# sqlite_master, odd indentation included.
M001_REPLICA = """\
-- Replicated tables: the row models' fields, then pending_op.
CREATE TABLE patients (patient_id TEXT PRIMARY KEY NOT NULL, name TEXT, sex TEXT, birth_date TEXT, doc_type TEXT, doc_no TEXT, phone TEXT, address TEXT, registered_at TEXT, registered_by TEXT, registered_device TEXT, pending_op TEXT);
-- Uniqueness is the server's to enforce: a replica mid-rebase may hold a
-- pending row beside the pulled row that will replace it.
CREATE INDEX patients_document ON patients (doc_type, doc_no);
CREATE INDEX patients_phone ON patients (phone);
CREATE INDEX patients_name ON patients (name);
CREATE TABLE patient_aliases (alias_id TEXT PRIMARY KEY NOT NULL, patient_id TEXT, mapped_at TEXT, pending_op TEXT);
CREATE INDEX patient_aliases_patient ON patient_aliases (patient_id);
CREATE TABLE cards (card_no TEXT PRIMARY KEY NOT NULL, patient_id TEXT, status TEXT, issued_at TEXT, issued_by TEXT, issued_device TEXT, status_changed_at TEXT, pending_op TEXT);
CREATE INDEX cards_patient ON cards (patient_id);
CREATE TABLE transfers (transfer_id TEXT PRIMARY KEY NOT NULL, debit_account TEXT, credit_account TEXT, amount_fen INTEGER, kind TEXT, method TEXT, patient_id TEXT, card_no TEXT, receipt_no TEXT, clerk_id TEXT, device_id TEXT, at TEXT, op_id TEXT, pending_op TEXT);
CREATE INDEX transfers_debit ON transfers (debit_account);
CREATE INDEX transfers_credit ON transfers (credit_account);
CREATE INDEX transfers_receipt ON transfers (receipt_no);
-- Only the replicas keep this one: a patient's receipts at the window.
CREATE INDEX transfers_patient ON transfers (patient_id);
-- The windows' own look-ups.
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
-- The search index follows patients (name_terms: register_functions).
CREATE TRIGGER patients_search_insert AFTER INSERT ON patients BEGIN
        INSERT INTO patient_search (rowid, terms) VALUES (new.rowid, name_terms(new.name));
    END;
CREATE TRIGGER patients_search_delete AFTER DELETE ON patients BEGIN
        DELETE FROM patient_search WHERE rowid = old.rowid;
    END;
CREATE TRIGGER patients_search_update AFTER UPDATE OF name ON patients BEGIN
        UPDATE patient_search SET terms = name_terms(new.name) WHERE rowid = new.rowid;
    END;
"""
sql_migration("m001_replica", M001_REPLICA)

# General leases: a kind and a resource, and a range (with the next number
# not yet used here), a set of ids or a quantity (with how much is used
# here); expiry and return. Each number block of 0.1.0 becomes a lease of
# kind number_block on its series, granted to this workstation.
M002_GENERAL_LEASES = """\
CREATE TABLE leases_general (
    lease_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    resource TEXT NOT NULL,
    device_id TEXT NOT NULL,
    granted_at TEXT NOT NULL,
    first INTEGER,
    last INTEGER,
    ids TEXT,
    quantity INTEGER,
    expires_at TEXT,
    returned_at TEXT,
    next INTEGER,
    used INTEGER NOT NULL DEFAULT 0
);
INSERT INTO leases_general (lease_id, kind, resource, device_id, granted_at, first, last, next)
    SELECT lease_id, 'number_block', series,
        COALESCE((SELECT value FROM sync_state WHERE key = 'device_id'), ''),
        granted_at, first, last, next
    FROM leases;
DROP TABLE leases;
ALTER TABLE leases_general RENAME TO leases;
CREATE INDEX leases_kind ON leases (kind, resource, first);
"""
sql_migration("m002_general_leases", M002_GENERAL_LEASES)

# A clerk's shift, which the money taken belongs to (domain.shifts.ShiftRow).
M003_SHIFTS = """\
CREATE TABLE shifts (shift_id TEXT PRIMARY KEY NOT NULL, clerk_id TEXT, device_id TEXT, status TEXT, opened_at TEXT, closed_at TEXT, pending_op TEXT);
CREATE INDEX shifts_clerk ON shifts (clerk_id, device_id, status);
"""
sql_migration("m003_shifts", M003_SHIFTS)

# An operation the server refused before a restore lost that answer is sent
# again withdrawn: recorded as refused, never applied (the clerk was told).
M004_WITHDRAWN_OPS = """\
ALTER TABLE outbox ADD COLUMN withdrawn INTEGER NOT NULL DEFAULT 0;
"""
sql_migration("m004_withdrawn_ops", M004_WITHDRAWN_OPS)

# Each op is signed by the clerk who made it (domain.signing), and carries the
# server's certificate of the clerk's key (so that a server restored from a
# backup that lost the key's registration takes it again); each clerk's
# signing key on this workstation is kept sealed under their password
# (local_db.keys), with that certificate. Ops made before (release 0.1) stay
# unsigned.
M005_SIGNED_OPS = """\
ALTER TABLE outbox ADD COLUMN key_id TEXT;
ALTER TABLE outbox ADD COLUMN signature TEXT;
ALTER TABLE outbox ADD COLUMN key_cert TEXT;
CREATE TABLE clerk_keys (
            clerk_id TEXT PRIMARY KEY,
            key_id TEXT NOT NULL,
            public_key BLOB NOT NULL,
            salt BLOB NOT NULL,
            nonce BLOB NOT NULL,
            sealed BLOB NOT NULL,
            created_at TEXT NOT NULL,
            certificate TEXT
        );
"""
sql_migration("m005_signed_ops", M005_SIGNED_OPS)
