"""Shared fixtures: a real central server (SQLite file, or PostgreSQL when
WORKSTATION_TEST_PG_URL is set) reached in-process through httpx's ASGI
transport, and workstations with their own replica, client and sync engine."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import Central

PG_URL = os.environ.get("WORKSTATION_TEST_PG_URL")
PG_SKIP_REASON = (
    "PostgreSQL tests are off: set WORKSTATION_TEST_PG_URL "
    "(e.g. postgresql://postgres@127.0.0.1:5432/test; .ci/run does)"
)


def _url(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/central.db"
    if not PG_URL:
        pytest.skip(PG_SKIP_REASON)
    from server.db import make_engine

    # every table, whichever release made it: a server made by the test migrates
    # the empty database again
    engine = make_engine(PG_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA public CASCADE")
        conn.exec_driver_sql("CREATE SCHEMA public")
    engine.dispose()
    return PG_URL


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _url(request.param, tmp_path)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return _url("sqlite", tmp_path)


@pytest.fixture
def central(db_url: str):
    c = Central(db_url)
    yield c
    c.close()


@pytest.fixture
def central_sqlite(sqlite_url: str):
    c = Central(sqlite_url)
    yield c
    c.close()


@pytest.fixture
def new_pg_database() -> Iterator[Callable[[str], str]]:
    """Makes empty PostgreSQL databases of the test's own (uniquely named, on
    the server of WORKSTATION_TEST_PG_URL) and drops them afterwards: for tests
    that must not share the ``test`` database."""
    if not PG_URL:
        pytest.skip(PG_SKIP_REASON)
    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(PG_URL)
    admin_url = server.set(database="postgres").render_as_string(hide_password=False)
    made: list[str] = []

    def make(prefix: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return server.set(database=name).render_as_string(hide_password=False)

    yield make
    with psycopg.connect(admin_url, autocommit=True) as admin:
        for name in made:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
