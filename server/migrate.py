"""The central database's schema, brought up to date by Alembic revisions.

The revisions are ``server/migrations/versions/*.py``: the baseline
(``0001_baseline``) makes the schema of release 0.1.0, each later one changes
it. ``migrate()`` (``workstation admin --db URL migrate``) upgrades a database
to the newest revision (the head); the server refuses to start on one that is
not at the head (``check_schema``), so a release never runs on tables it does
not know.

A database made by release 0.1.0 recorded no revision: it is recognised by
its tables and stamped at the baseline, then upgraded. An empty database is
upgraded from nothing. A database holding only some of the tables, or stamped
at a revision this release does not know (a newer release migrated it), is
refused.

The whole migration runs in one transaction, after taking a lock (PostgreSQL:
an advisory lock; SQLite: the write lock), so two ``migrate`` runs at once
apply it once and a failed one leaves the database as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import Connection

from .db import is_sqlite, writer

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BASELINE = "0001_baseline"
# What release 0.1.0 made, which recorded no revision (frozen).
RELEASE_0_1_0_TABLES = frozenset(
    {
        "audit",
        "cards",
        "change_log",
        "clerks",
        "counters",
        "devices",
        "enrollment_codes",
        "meta",
        "number_blocks",
        "ops",
        "patient_aliases",
        "patients",
        "sessions",
        "transfers",
    }
)
# An index servers before release 0.1.0 kept and 0.1.0 dropped at every start;
# dropped when such a database is stamped at the baseline.
RETIRED_BEFORE_0_1_0 = ("transfers_patient",)
VERSION_TABLE = "alembic_version"
# the key of the PostgreSQL advisory lock migrations take: "workmigr" in ASCII
_PG_LOCK = 0x776F726B6D696772


def migrate_command(url: str) -> str:
    return f"workstation admin --db {url} migrate"


class SchemaError(RuntimeError):
    """The database's schema is not one this release can serve."""


class SchemaNotCurrent(SchemaError):
    """The database must be migrated before the server can use it."""

    def __init__(self, url: str, current: str | None, state: str, head: str) -> None:
        self.url, self.current, self.state, self.head = url, current, state, head
        found = {
            "empty": "is empty (no tables)",
            "release-0.1.0": "was made by release 0.1.0 (no schema revision recorded)",
        }.get(state, f"is at schema revision {current}")
        super().__init__(
            f"The central database {url} {found}; this release needs revision {head}. "
            f"Back it up, then run: {migrate_command(url)}"
        )


@dataclass(frozen=True)
class Migrated:
    """What ``migrate`` did."""

    before: str | None  # the revision found; None for an empty database
    after: str
    state: str  # "empty", "release-0.1.0" (stamped at the baseline first) or "versioned"

    def describe(self) -> str:
        if self.state == "empty":
            return f"empty database: created the schema, from nothing to revision {self.after}"
        if self.state == "release-0.1.0":
            start = f"database of release 0.1.0: stamped at {BASELINE}"
            if self.after == BASELINE:
                return start + "; nothing else to do"
            return f"{start}, upgraded {BASELINE} -> {self.after}"
        if self.before == self.after:
            return f"already at revision {self.after}; nothing to do"
        return f"upgraded {self.before} -> {self.after}"


def display_url(engine: Engine | Connection) -> str:
    """The database URL as a user gives it to ``--db``, password hidden."""
    url = engine.engine.url.render_as_string(hide_password=True)
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, in code (no alembic.ini): the revisions in
    this package, run over ``connection`` (``server/migrations/env.py``)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@lru_cache(maxsize=1)
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = _scripts().get_current_head()
    if head is None:
        raise SchemaError(f"no migrations in {MIGRATIONS}")
    return head


def revisions() -> list[str]:
    """Every revision of this release, oldest first."""
    return [s.revision for s in reversed(list(_scripts().walk_revisions()))]


def schema_state(conn: Connection) -> tuple[str | None, str]:
    """``(revision, state)``: state is "versioned" (a revision is recorded),
    "release-0.1.0" (the tables of that release, no revision), "empty" (none
    of our tables) or "partial" (some of them, no revision: not ours to touch)."""
    tables = set(inspect(conn).get_table_names())
    if VERSION_TABLE in tables:
        recorded = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
        if len(recorded) > 1:
            raise SchemaError(
                f"The central database {display_url(conn)} records several schema revisions "
                f"({', '.join(recorded)}): it was not migrated by this program."
            )
        if recorded:
            return recorded[0], "versioned"
    ours = RELEASE_0_1_0_TABLES & tables
    if not ours:
        return None, "empty"
    if ours == RELEASE_0_1_0_TABLES:
        return None, "release-0.1.0"
    return None, "partial"


def _refuse_unknown(url: str, current: str | None, state: str) -> None:
    if state == "partial":
        raise SchemaError(
            f"The database {url} holds some of the central server's tables but not all, and "
            "no schema revision: it was not made by this program. Nothing was changed."
        )
    if current is not None and current not in revisions():
        raise SchemaError(
            f"The central database {url} is at schema revision {current}, which this "
            f"release does not know (its newest is {head_revision()}): a newer release "
            "migrated it. Run that release, or restore the backup taken before migrating."
        )


def migrate(engine: Engine, revision: str = "head") -> Migrated:
    """Bring the database to ``revision`` (default: the newest), in one transaction."""
    url = display_url(engine)
    with writer(engine) as conn, conn.begin():
        if not is_sqlite(conn):
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK})")
        before, state = schema_state(conn)
        _refuse_unknown(url, before, state)
        config = alembic_config(conn)
        if state == "release-0.1.0":
            for name in RETIRED_BEFORE_0_1_0:
                conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")
            command.stamp(config, BASELINE)
        target = head_revision() if revision == "head" else revision
        changed = before != target or state != "versioned"
        if changed:
            command.upgrade(config, revision)
        after, _ = schema_state(conn)
        if changed and after == head_revision():  # the audit trail is this revision's
            from .chain import append_audit

            append_audit(
                conn,
                clerk_id=None,
                device_id=None,
                action="migrate",
                target=f"{before or state} -> {after}",
                outcome="ok",
            )
    assert after is not None
    return Migrated(before=before, after=after, state=state)


def check_schema(engine: Engine) -> str:
    """The database's revision, if it is the head; else raise ``SchemaNotCurrent``
    (or ``SchemaError`` for a database this release cannot migrate)."""
    url = display_url(engine)
    with engine.connect() as conn:
        current, state = schema_state(conn)
    _refuse_unknown(url, current, state)
    head = head_revision()
    if current != head:
        raise SchemaNotCurrent(url, current, state, head)
    return head
