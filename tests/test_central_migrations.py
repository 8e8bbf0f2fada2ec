"""The central database's Alembic migrations (server/migrate.py): what they
make equals the code's tables and, for the baseline, what release 0.1.0 made;
the server refuses a database that is not at the newest revision, and
``workstation admin ... migrate`` brings it there."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from alembic import command as alembic_command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, insert, inspect, select

from domain.numbers import SERIES_START, Series
from server import migrate as server_migrate
from server.app import create_app
from server.db import cards, counters, make_engine, meta, metadata
from server.migrate import (
    BASELINE,
    Migrated,
    SchemaError,
    SchemaNotCurrent,
    head_revision,
    migrate,
    migrate_command,
    revisions,
)
from tests.old_releases import (
    RELEASE_0_1_0,
    blocks_as_leases,
    load_pg_dump,
    reflect_schema,
    table_contents,
)
from workstation.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def engine(db_url: str):
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def test_the_migrated_schema_is_the_code_s_tables(engine: Engine) -> None:
    migrate(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        assert compare_metadata(context, metadata) == []


def test_an_empty_database_gets_the_schema_the_counters_and_an_epoch(engine: Engine) -> None:
    assert migrate(engine) == Migrated(before=None, after=head_revision(), state="empty")
    with engine.connect() as conn:
        found = dict(conn.execute(select(counters.c.name, counters.c.value)).all())
        epoch = conn.execute(select(meta.c.value).where(meta.c.key == "epoch")).scalar_one()
    # the frozen baseline seeds what the code's number series start at
    assert found == {"change_seq": 0, **{f"series:{s.value}": SERIES_START[s] for s in Series}}
    assert re.fullmatch(r"\d{14}-[0-9a-f]{8}", epoch)
    again = migrate(engine)
    assert again == Migrated(before=head_revision(), after=head_revision(), state="versioned")
    assert again.describe() == f"already at revision {head_revision()}; nothing to do"


def test_the_baseline_is_what_release_0_1_0_made_on_sqlite(tmp_path: Path) -> None:
    """Down to the CREATE statements SQLite keeps."""
    engine = make_engine(f"sqlite:///{tmp_path / 'central.db'}")
    try:
        migrate(engine, BASELINE)
        shutil.copy(RELEASE_0_1_0 / "central.db", tmp_path / "released.db")
        released = make_engine(f"sqlite:///{tmp_path / 'released.db'}")
        try:
            assert reflect_schema(engine) == reflect_schema(released)
        finally:
            released.dispose()
    finally:
        engine.dispose()
    query = (
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE tbl_name != 'alembic_version'"
    )
    with closing(sqlite3.connect(tmp_path / "central.db")) as made:
        ours = set(made.execute(query))
    with closing(sqlite3.connect(f"file:{RELEASE_0_1_0 / 'central.db'}?mode=ro", uri=True)) as old:
        theirs = set(old.execute(query))
    assert ours == theirs


@pytest.mark.postgres
def test_the_baseline_is_what_release_0_1_0_made_on_postgresql(
    new_pg_database: Callable[[str], str],
) -> None:
    released_url = new_pg_database("release_0_1_0")
    load_pg_dump(released_url, RELEASE_0_1_0 / "central-pg.sql")
    engine, released = make_engine(new_pg_database("baseline")), make_engine(released_url)
    try:
        migrate(engine, BASELINE)
        assert reflect_schema(engine) == reflect_schema(released)
    finally:
        engine.dispose()
        released.dispose()


def test_two_migrations_at_once_apply_it_once(db_url: str) -> None:
    if db_url.startswith("sqlite"):
        # the file exists, in WAL mode, as a site's does (two connections that
        # switch a brand-new file to WAL at the same instant can find it locked)
        first = make_engine(db_url)
        first.connect().close()
        first.dispose()
    engines = [make_engine(db_url) for _ in range(2)]
    results: list[Migrated] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def run(engine: Engine) -> None:
        start.wait()
        try:
            results.append(migrate(engine))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for e in engines:
        e.dispose()
    assert errors == []
    assert sorted(r.state for r in results) == ["empty", "versioned"]


LATER_REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "9999_card_note"
down_revision = "{head}"


def upgrade() -> None:
    with op.batch_alter_table("cards") as batch:  # SQLite: copies the table
        batch.add_column(sa.Column("note", sa.Text()))
        batch.alter_column("status", existing_type=sa.Text(), nullable=False)
"""


@pytest.fixture
def with_a_later_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """This release's revisions and one more, as the next release will have."""
    later = tmp_path / "migrations"
    shutil.copytree(server_migrate.MIGRATIONS, later)
    head = server_migrate.head_revision()
    (later / "versions" / "9999_card_note.py").write_text(LATER_REVISION.format(head=head))
    monkeypatch.setattr(server_migrate, "MIGRATIONS", later)
    server_migrate._scripts.cache_clear()
    yield "9999_card_note"
    server_migrate._scripts.cache_clear()


def test_a_later_revision_upgrades_a_database_at_the_baseline(
    engine: Engine, with_a_later_revision: str
) -> None:
    migrate(engine, BASELINE)
    with engine.begin() as conn:
        conn.execute(insert(cards).values(card_no="1000000008", patient_id="p1", status="active"))
    with pytest.raises(SchemaNotCurrent, match=f"is at schema revision {BASELINE}; this release"):
        create_app(engine)
    done = migrate(engine)
    assert done.describe() == f"upgraded {BASELINE} -> {with_a_later_revision}"
    columns = {c["name"]: c for c in inspect(engine).get_columns("cards")}
    assert "note" in columns and columns["status"]["nullable"] is False
    with engine.connect() as conn:
        assert conn.execute(select(cards.c.card_no, cards.c.status)).all() == [
            ("1000000008", "active")
        ]
    assert {i["name"] for i in inspect(engine).get_indexes("cards")} == {
        "cards_patient",
        "cards_one_active",
    }
    if engine.dialect.name == "sqlite":  # the copy keeps the index partial
        with engine.connect() as conn:
            made = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'cards_one_active'"
            ).scalar_one()
        assert made.endswith("WHERE status = 'active'")
    create_app(engine)  # at the head


def test_a_database_of_0_1_0_is_stamped_then_upgraded(
    tmp_path: Path, with_a_later_revision: str
) -> None:
    shutil.copy(RELEASE_0_1_0 / "central.db", tmp_path / "central.db")
    engine = make_engine(f"sqlite:///{tmp_path / 'central.db'}")
    try:
        before = table_contents(engine)
        assert migrate(engine).describe() == (
            f"database of release 0.1.0: stamped at {BASELINE}, "
            f"upgraded {BASELINE} -> {with_a_later_revision}"
        )
        after = table_contents(engine)
        assert after.keys() == (before.keys() - {"number_blocks"}) | {
            "leases",
            "shifts",
            "clerk_keys",
            "lease_tallies",
            "chain_heads",
            "login_failures",
        }
        assert blocks_as_leases(before["number_blocks"]) == after["leases"] != []
        assert (
            after["shifts"]
            == after["lease_tallies"]
            == after["clerk_keys"]
            == after["login_failures"]
            == []
        )
        # the audit and the op log gained their chain's columns (and the audit
        # the records of the chain's start and of this migration)
        for table in ("audit", "ops"):
            width = len(before[table][0])
            kept = {row[0] for row in before[table]}
            assert sorted(row[:width] for row in after[table] if row[0] in kept) == sorted(
                before[table]
            ), table
            hashed = -3 if table == "ops" else -1  # ops gained key_id and signature (0009) after
            assert all(row[hashed] for row in after[table]), table  # each one chained
            after[table] = before[table]
        # cards gained a column, empty so far; the change log its nonce, which
        # entries written after the upgrade get; devices how far their unsigned
        # ops go, which they say at their first login with a signing key
        for table, rows in before.items():
            if table in ("number_blocks", "login_failures"):
                continue
            extra = (None,) if table in ("cards", "change_log", "devices") else ()
            assert after[table] == [(*row, *extra) for row in rows], table
    finally:
        engine.dispose()


def test_a_migration_that_fails_leaves_the_database_as_it_was(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrade = alembic_command.upgrade

    def upgrade_then_fail(config: Config, revision: str) -> None:
        upgrade(config, revision)
        raise RuntimeError("power cut")

    monkeypatch.setattr(alembic_command, "upgrade", upgrade_then_fail)
    with pytest.raises(RuntimeError, match="power cut"):
        migrate(engine)
    assert not _tables(engine)  # no table, not even Alembic's own
    monkeypatch.undo()
    assert migrate(engine).state == "empty"


def test_a_database_with_only_some_of_the_tables_is_not_touched(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE patients (patient_id TEXT)")
    with pytest.raises(SchemaError, match="some of the central server's tables but not all"):
        migrate(engine)
    with pytest.raises(SchemaError, match="some of the central server's tables but not all"):
        create_app(engine)
    assert _tables(engine) == {"patients"}


def test_a_database_a_newer_release_migrated_is_refused(engine: Engine) -> None:
    migrate(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999_future'")
    for attempt in (migrate, create_app):
        with pytest.raises(SchemaError, match="9999_future, which this release does not know"):
            attempt(engine)


def test_the_server_refuses_an_empty_database_and_names_the_command(db_url: str) -> None:
    with pytest.raises(SchemaNotCurrent) as refused:
        create_app(db_url)
    message = str(refused.value)
    assert "is empty" in message
    assert f"workstation admin --db {db_url} migrate" in message
    engine = make_engine(db_url)
    try:
        assert not _tables(engine) & set(metadata.tables)  # nothing was made
        app = create_app(engine, migrate=True)  # the demo's and the tests' way
        assert app.state.engine is engine
        create_app(engine)  # now at the head
    finally:
        engine.dispose()


def test_the_revisions_form_one_line_from_the_baseline() -> None:
    assert revisions()[0] == BASELINE
    assert revisions()[-1] == head_revision()


def test_admin_migrate_says_what_it_did(sqlite_url: str, capsys: pytest.CaptureFixture) -> None:
    main(["admin", "--db", sqlite_url, "migrate"])
    assert capsys.readouterr().out == (
        f"{sqlite_url}: empty database: created the schema, from nothing to revision {head_revision()}\n"
    )
    main(["admin", "--db", sqlite_url, "migrate"])
    assert "nothing to do" in capsys.readouterr().out


def test_admin_commands_refuse_a_database_not_migrated(sqlite_url: str) -> None:
    for command in (["list-clerks"], ["enroll-code", "--device-name", "w1"], ["new-epoch"]):
        with pytest.raises(SystemExit) as refused:
            main(["admin", "--db", sqlite_url, *command])
        assert f"run: {migrate_command(sqlite_url)}" in str(refused.value.code)
    engine = make_engine(sqlite_url)
    try:
        assert not _tables(engine)
    finally:
        engine.dispose()


def test_seed_demo_migrates_the_empty_database_it_fills(
    sqlite_url: str, capsys: pytest.CaptureFixture
) -> None:
    main(["admin", "--db", sqlite_url, "seed-demo", "--patients", "3"])
    assert "seeded 3 patients" in capsys.readouterr().out
    main(["admin", "--db", sqlite_url, "list-clerks"])
    assert "cashier" in capsys.readouterr().out


def test_workstation_server_on_an_old_database_exits_with_the_command(sqlite_url: str) -> None:
    """The message, not a traceback, and a failing exit status."""
    done = subprocess.run(
        [sys.executable, "-m", "workstation.cli", "server", "--db", sqlite_url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("error: The central database")
    assert f"run: {migrate_command(sqlite_url)}" in done.stderr
