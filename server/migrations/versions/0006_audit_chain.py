"""The audit trail and the op log become hash chains.

``audit`` gets the session (a prefix of its token's hash) and the operator of
admin commands; ``ops`` the pushing session and the hash of what the op wrote
(its change-log entries). Both get ``prev_hash`` and ``hash`` (``ops`` also
its place, ``chain_seq``), and ``chain_heads`` keeps each chain's head.

The records made before this revision are chained here, from the genesis
hash (64 zeros): the audit in ``audit_id`` order, the ops in the order their
batches entered the change log. The chain proves nothing about what happened
to them before today; from today on an edit, a removal or an insertion is
found by ``workstation admin verify-audit``. A last audit record
(``chain_start``) says how many records were chained and fingerprints the
change-log entries no op wrote (rows bulk-loaded: the demo hospital, data
migrated from a previous system), which the ledger check accepts in place of
an op.

Frozen: written out here, never generated from ``server.db``; the hashing is
a copy of ``server.chain``'s (it must stay the same: records chained here
are verified with it).

Revision ID: 0006_audit_chain
Revises: 0005_lockout_by_device
"""

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006_audit_chain"
down_revision = "0005_lockout_by_device"
branch_labels = None
depends_on = None

GENESIS = "0" * 64
BATCH = 2_000
AUDIT_COLUMNS = (
    "audit_id, at, clerk_id, session, device_id, operator, action, target, outcome, detail"
)
OPS_COLUMNS = (
    "op_id, device_id, client_seq, kind, args_hash, payload, clerk_id, client_at, hlc, "
    "applied_at, pushed_by, session, status, code, params, result"
)


def _hash(prev_hash: str, values: Any) -> str:
    text = json.dumps([prev_hash, *values], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _entries_hash(entries: list[list[Any]]) -> str | None:
    if not entries:
        return None
    text = json.dumps(entries, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def upgrade() -> None:
    columns: tuple[tuple[str, Any], ...] = (
        ("session", sa.String(40)),
        ("operator", sa.Text()),
        ("prev_hash", sa.String(64)),
        ("hash", sa.String(64)),
    )
    for name, kind in columns:
        op.add_column("audit", sa.Column(name, kind, nullable=True))
    columns = (
        ("session", sa.String(40)),
        ("effects", sa.String(64)),
        ("chain_seq", sa.BigInteger()),
        ("prev_hash", sa.String(64)),
        ("hash", sa.String(64)),
    )
    for name, kind in columns:
        op.add_column("ops", sa.Column(name, kind, nullable=True))
    op.create_index("ops_chain_seq", "ops", ["chain_seq"], unique=True)
    op.create_table(
        "chain_heads",
        sa.Column("chain", sa.String(20), primary_key=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    conn = op.get_bind()

    # what each op wrote, by op
    effects: dict[str, str | None] = {}
    current: str | None = None
    entries: list[list[Any]] = []
    for op_id, table, key, row in conn.execute(
        sa.text(
            "SELECT op_id, table_name, row_key, row FROM change_log "
            "WHERE op_id IS NOT NULL ORDER BY op_id, seq"
        )
    ):
        if op_id != current:
            if current is not None:
                effects[current] = _entries_hash(entries)
            current, entries = op_id, []
        entries.append([table, key, row])
    if current is not None:
        effects[current] = _entries_hash(entries)

    prev, count = GENESIS, 0
    chained: list[dict[str, Any]] = []
    for row in conn.execute(
        sa.text(
            f"SELECT {OPS_COLUMNS}, change_seq FROM ops ORDER BY change_seq, device_id, client_seq"
        )
    ).all():
        count += 1
        values = (count, *row[:-1], effects.get(row[0]), row[-1])
        digest = _hash(prev, values)
        chained.append({"k": row[0], "e": values[-2], "n": count, "p": prev, "h": digest})
        prev = digest
    for start in range(0, len(chained), BATCH):
        conn.execute(
            sa.text(
                "UPDATE ops SET effects = :e, chain_seq = :n, prev_hash = :p, hash = :h "
                "WHERE op_id = :k"
            ),
            chained[start : start + BATCH],
        )
    conn.execute(
        sa.text("INSERT INTO chain_heads (chain, seq, hash) VALUES ('ops', :n, :h)"),
        {"n": count, "h": prev},
    )
    ops_chained = count

    prev, count, last_id = GENESIS, 0, 0
    chained = []
    for row in conn.execute(sa.text(f"SELECT {AUDIT_COLUMNS} FROM audit ORDER BY audit_id")).all():
        count += 1
        digest = _hash(prev, tuple(row))
        chained.append({"k": row[0], "p": prev, "h": digest})
        prev, last_id = digest, int(row[0])
    for start in range(0, len(chained), BATCH):
        conn.execute(
            sa.text("UPDATE audit SET prev_hash = :p, hash = :h WHERE audit_id = :k"),
            chained[start : start + BATCH],
        )

    # the genesis record: what was chained, and the entries no op wrote
    head = int(
        conn.execute(sa.text("SELECT value FROM counters WHERE name = 'change_seq'")).scalar_one()
    )
    loaded = [
        list(r)
        for r in conn.execute(
            sa.text(
                "SELECT table_name, row_key, row FROM change_log "
                "WHERE op_id IS NULL AND seq <= :head ORDER BY seq"
            ),
            {"head": head},
        )
    ]
    detail = json.dumps(
        {
            "audit_records": count,
            "ops": ops_chained,
            "first_seq": 1,
            "last_seq": head,
            "entries": len(loaded),
            "sha256": _entries_hash(loaded),
        },
        separators=(",", ":"),
    )
    values = (
        last_id + 1,
        datetime.now(UTC).isoformat(timespec="seconds"),
        None,
        None,
        None,
        None,
        "chain_start",
        revision,
        "ok",
        detail,
    )
    digest = _hash(prev, values)
    conn.execute(
        sa.text(
            f"INSERT INTO audit ({AUDIT_COLUMNS}, prev_hash, hash) VALUES (:audit_id, :at, "
            ":clerk_id, :session, :device_id, :operator, :action, :target, :outcome, :detail, "
            ":prev_hash, :hash)"
        ),
        dict(
            zip(
                AUDIT_COLUMNS.split(", ") + ["prev_hash", "hash"],
                (*values, prev, digest),
                strict=True,
            )
        ),
    )
    conn.execute(
        sa.text("INSERT INTO chain_heads (chain, seq, hash) VALUES ('audit', :n, :h)"),
        {"n": last_id + 1, "h": digest},
    )
