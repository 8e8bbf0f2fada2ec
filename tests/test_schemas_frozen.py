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
from server.migrate import MIGRATIONS, revisions

# name -> SHA-256 of the SQL text (local_db/schema.py), in the order they run
REPLICA_MIGRATIONS = {
    "m001_replica": "4062f643e3ce6e9f5ea4748bfbc022b7249a4cb5287a44a73d9c3cb7e68c5432",  # 0.1.0
    "m002_general_leases": "e6ee60db8025767ea136cc947d54f5af1e069be525967aba2463e3b6976809ab",
    "m003_shifts": "36a31ae3068f24faccf0ee2f6bd860c37794c2a4ebffda816b5f807a23a3c267",
    "m004_withdrawn_ops": "cf3ddbe86329808a4a148e9517f0827fa1d9b249f6c9e09c670b68fa2ec4a37b",
    "m005_signed_ops": "3b17ee369215a5693f55843bd0f95bb54c730d70c600289661f2b41d446858d6",
}

# file in server/migrations/versions -> SHA-256 of its bytes, oldest first; a
# revision's id is its file name without ".py"
CENTRAL_REVISIONS = {
    "0001_baseline.py": "1ba21be58eec22357663d8178affdbc0f149d81dd0bed8c54235b669b0636583",  # 0.1.0
    "0002_leases_and_shifts.py": "95f555ccbb8376c22f15a7e4a9f8f03f1e4573fee802e8cff2c1022078b83721",
    "0003_one_active_card.py": "5158f9658ae176fb23980f6ce8359a33fd985b43bc8301f3a7c6200557475c5e",
    "0004_change_nonce.py": "b86f64e115e07f55406b93cdb2d83ff4f313cb3162ae17400e3a8cfdda73e173",
    "0005_lockout_by_device.py": "78eb3d97052841eb5cee076ddaf33bc0d95e41ae5060bb36655fa867c48aef4c",
    "0006_audit_chain.py": "f365e35ffd6465ed489c4dc8a8a009c0bf269e476e1929595de5e1b7f0236a85",
    "0008_lease_limits.py": "3f0602a1cb8999b805389851cffc13a4ef5a210816bbeaac3429b57528b8dcd2",
    "0009_clerk_keys.py": "9b1d688ec35eb3c4687c6cb277a9c235540bf547a5844b8408bf0e5416f83530",
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


def test_released_central_revisions_are_unchanged() -> None:
    found = {
        path.name: _sha256(path.read_bytes().replace(b"\r\n", b"\n"))
        for path in sorted((MIGRATIONS / "versions").glob("*.py"))
    }
    assert found == CENTRAL_REVISIONS, (
        "a central revision changed, or a new one is not pinned yet: "
        f"{ {n: h for n, h in found.items() if CENTRAL_REVISIONS.get(n) != h} }"
    )
    assert revisions() == [name.removesuffix(".py") for name in CENTRAL_REVISIONS]
