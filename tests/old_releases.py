"""Databases of earlier releases (``tests/fixtures/release_*``) and ways to
compare central schemas and contents."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, inspect, text

RELEASE_0_1_0 = Path(__file__).resolve().parent / "fixtures" / "release_0_1_0"
INFO_0_1_0: dict[str, Any] = json.loads((RELEASE_0_1_0 / "fixture.json").read_text())


def load_pg_dump(url: str, dump: Path) -> None:
    """Load a plain-SQL pg_dump (its data as COPY ... FROM stdin) with psql."""
    psql = shutil.which("psql")
    if psql is None:
        pytest.fail("the PostgreSQL upgrade tests need the psql client on PATH")
    done = subprocess.run(
        [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", str(dump)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def reflect_schema(engine: Engine) -> dict[str, Any]:
    """Every table but Alembic's own: columns (name, type, nullable, default),
    primary key, unique constraints and indexes, with their names; and the
    sequences."""
    insp = inspect(engine)
    tables: dict[str, Any] = {}
    for table in sorted(insp.get_table_names()):
        if table == "alembic_version":
            continue
        pk = insp.get_pk_constraint(table)
        tables[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], c.get("default"), c.get("autoincrement"))
                for c in insp.get_columns(table)
            ],
            "primary_key": (pk.get("name"), tuple(pk["constrained_columns"])),
            "unique": sorted(
                (u["name"] or "", tuple(u["column_names"]))
                for u in insp.get_unique_constraints(table)
            ),
            "indexes": sorted(
                (i["name"] or "", tuple(str(c) for c in i["column_names"]), i["unique"])
                for i in insp.get_indexes(table)
            ),
        }
    sequences = sorted(insp.get_sequence_names()) if engine.dialect.name != "sqlite" else []
    return {"tables": tables, "sequences": sequences}


def table_contents(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table but Alembic's own, in a stable order."""
    contents: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in sorted(inspect(conn).get_table_names()):
            if table == "alembic_version":
                continue
            rows = conn.execute(text(f'SELECT * FROM "{table}"')).all()
            contents[table] = sorted((tuple(r) for r in rows), key=repr)
    return contents


def blocks_as_leases(blocks: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The rows revision 0002 makes in ``leases`` of 0.1.0's ``number_blocks``
    rows (block_id, series, first, last, device_id, granted_at), in the order
    ``table_contents`` gives them."""
    leases = [
        (block_id, "number_block", series, device_id, first, last, None, None, granted_at)
        + (None, None, None)
        for block_id, series, first, last, device_id, granted_at in blocks
    ]
    return sorted(leases, key=repr)
