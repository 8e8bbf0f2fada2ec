"""A replica image: a complete, ready-to-open replica SQLite file.

The server builds one from its authoritative tables (``server/snapshots.py``)
with this module, i.e. with the workstation's own schema code, so a new
workstation bootstraps by downloading a file instead of re-inserting millions
of rows and building the search index itself. ``SCHEMA_ID`` names the schema an
image was made with; a workstation only takes an image of its own schema.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from domain.rows import ROWS_BY_TABLE, Row, columns_of

from .pinyin import name_terms
from .schema import migrate, schema_hash

# sync_state keys an image carries; everything else in sync_state is the workstation's own.
IMAGE_KEYS = ("cursor", "epoch", "schema_id")

# What a build holds in memory is bounded by these two, not by the register's
# size (measured on the 1,000,000-patient image: docs/ARCHITECTURE.md).
# Search terms of recent names: a register repeats many names (617,560
# distinct in 1,000,000), but a cache of every one of them held ~230 MB for a
# few seconds' gain.
NAME_TERMS_CACHE = 1 << 16
# The page cache, which also sizes SQLite's in-memory sorts (an index build
# that outgrows it merges sorted runs from a temporary file).
CACHE_KIB = 64 * 1024


# The replica schema's name: a hash of every replica migration's name and SQL
# text, in order (``schema.schema_hash``). Released migrations never change
# (tests/test_schemas_frozen.py), so a new migration, and nothing else, makes a
# new id; two programs with equal ids make byte-identical replica schemas. It
# changed from release 0.1.0 (which hashed the migrations' names) when the
# migrations became literal SQL: a server then serves images only to
# workstations of its own release, and older ones take the row snapshot.
SCHEMA_ID = schema_hash()[:16]


def build_image(
    path: str | Path,
    batches: Iterable[tuple[str, Sequence[Sequence[Any]]]],
    *,
    cursor: int,
    epoch: str,
) -> int:
    """Write a new replica file at ``path`` holding ``batches`` of rows
    ``(table, [row tuple in the row model's column order, ...])``, as of
    ``cursor`` in ``epoch``. Returns the number of rows.

    Nobody else sees the file while it is built, so it is written without a
    journal or fsyncs; it is fsynced once when complete and left as a single
    file (rollback journal), ready to be copied."""
    path = str(path)
    if os.path.exists(path):
        raise FileExistsError(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # The same search-term function the replica registers, cached: a
        # register repeats many names, and pinyin lookup is the slow part.
        conn.create_function("name_terms", 1, lru_cache(maxsize=NAME_TERMS_CACHE)(name_terms))
        migrate(conn)
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        # Rows go in without triggers or secondary indexes; both are made again
        # from their own SQL afterwards, indexes by one sort each and the search
        # index by one statement.
        deferred = conn.execute(
            "SELECT type, name, sql FROM sqlite_master "
            "WHERE type IN ('index', 'trigger') AND sql IS NOT NULL ORDER BY type"
        ).fetchall()
        conn.execute("BEGIN")
        for kind, name, _sql in deferred:
            conn.execute(f"DROP {kind} {name}")
        inserts = {table: _insert_sql(row_type) for table, row_type in ROWS_BY_TABLE.items()}
        count = 0
        for table, rows in batches:
            conn.executemany(inserts[table], rows)
            count += len(rows)
        conn.execute(
            "INSERT INTO patient_search (rowid, terms) SELECT rowid, name_terms(name) FROM patients"
        )
        for _kind, _name, sql in deferred:
            conn.execute(sql)
        conn.executemany(
            "INSERT INTO sync_state (key, value) VALUES (?, ?)",
            zip(IMAGE_KEYS, (str(cursor), epoch, SCHEMA_ID), strict=True),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
    return count


def _insert_sql(row_type: type[Row]) -> str:
    cols = [name for name, _ in columns_of(row_type)]
    return f"INSERT INTO {row_type.table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"


def image_info(path: str | Path) -> dict[str, str]:
    """What an image says about itself: cursor, epoch and schema id."""
    conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        rows = conn.execute(
            f"SELECT key, value FROM sync_state WHERE key IN ({', '.join('?' * len(IMAGE_KEYS))})",
            IMAGE_KEYS,
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"not a replica image: {exc}") from None
    finally:
        conn.close()
    return dict(rows)


def fsync_directory(path: str | Path) -> None:
    """Make a rename in the directory ``path`` durable."""
    if os.name != "posix":
        return  # a directory cannot be opened on Windows; NTFS journals renames itself
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
