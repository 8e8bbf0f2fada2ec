"""Released migrations never change.

A replica that recorded a migration as applied never runs it again, and a
central database stamped at an Alembic revision never runs that revision
again: editing a released one would leave sites with a schema nobody made.
Each migration is pinned here by the SHA-256 of its text. A new migration is
added here when it is written (the failure message gives its hash); while it is
unreleased its pin may be updated, once released never.
"""

from __future__ import annotations

import hashlib

from local_db.schema import MIGRATION_SQL

# name -> SHA-256 of the SQL text (local_db/schema.py), in the order they run
REPLICA_MIGRATIONS = {
    "m001_replica": "4062f643e3ce6e9f5ea4748bfbc022b7249a4cb5287a44a73d9c3cb7e68c5432",  # 0.1.0
}


def _sha256(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def test_released_replica_migrations_are_unchanged() -> None:
    found = {name: _sha256(sql) for name, sql in MIGRATION_SQL.items()}
    assert found == REPLICA_MIGRATIONS, (
        "a replica migration changed, or a new one is not pinned yet: "
        f"{ {n: h for n, h in found.items() if REPLICA_MIGRATIONS.get(n) != h} }"
    )
    assert list(found) == list(REPLICA_MIGRATIONS)
