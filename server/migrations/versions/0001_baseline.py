"""Baseline: the central database as release 0.1.0 made it.

Frozen: written out table by table (never generated from ``server.db`` at run
time), so that later changes to the code's tables cannot change what this
revision makes. A database made by release 0.1.0, which recorded no revision,
is stamped at this revision instead of running it (``server.migrate``).

Revision ID: 0001_baseline
Revises: (none)
"""

import secrets
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit",
        sa.Column("audit_id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("clerk_id", sa.String(40)),
        sa.Column("device_id", sa.String(40)),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("target", sa.Text()),
        sa.Column("outcome", sa.String(40), nullable=False),
        sa.Column("detail", sa.Text()),
    )
    op.create_table(
        "cards",
        sa.Column("card_no", sa.String(64), primary_key=True),
        sa.Column("patient_id", sa.Text()),
        sa.Column("status", sa.Text()),
        sa.Column("issued_at", sa.Text()),
        sa.Column("issued_by", sa.Text()),
        sa.Column("issued_device", sa.Text()),
        sa.Column("status_changed_at", sa.Text()),
    )
    op.create_index("cards_patient", "cards", ["patient_id"])
    op.create_table(
        "change_log",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("table_name", sa.String(40), nullable=False),
        sa.Column("row_key", sa.String(64), nullable=False),
        sa.Column("row", sa.Text()),
        sa.Column("op_id", sa.String(40)),
    )
    op.create_table(
        "clerks",
        sa.Column("clerk_id", sa.String(40), primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("roles", sa.Text(), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("active", sa.Integer(), nullable=False),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.String(40)),
        sa.Column("created_at", sa.String(40), nullable=False),
    )
    counters = op.create_table(
        "counters",
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(40), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("enrolled_at", sa.String(40), nullable=False),
        sa.Column("last_seen_at", sa.String(40)),
        sa.Column("active", sa.Integer(), nullable=False),
    )
    op.create_table(
        "enrollment_codes",
        sa.Column("code_hash", sa.String(64), primary_key=True),
        sa.Column("device_name", sa.Text(), nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("expires_at", sa.String(40), nullable=False),
        sa.Column("used_at", sa.String(40)),
        sa.Column("device_id", sa.String(40)),
    )
    meta = op.create_table(
        "meta",
        sa.Column("key", sa.String(40), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    op.create_table(
        "number_blocks",
        sa.Column("block_id", sa.String(40), primary_key=True),
        sa.Column("series", sa.String(20), nullable=False),
        sa.Column("first", sa.BigInteger(), nullable=False),
        sa.Column("last", sa.BigInteger(), nullable=False),
        sa.Column("device_id", sa.String(40), nullable=False),
        sa.Column("granted_at", sa.String(40), nullable=False),
    )
    op.create_index("number_blocks_lookup", "number_blocks", ["series", "device_id", "first"])
    op.create_table(
        "ops",
        sa.Column("op_id", sa.String(40), primary_key=True),
        sa.Column("device_id", sa.String(40), nullable=False),
        sa.Column("client_seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("args_hash", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("clerk_id", sa.String(40), nullable=False),
        sa.Column("client_at", sa.String(40), nullable=False),
        sa.Column("hlc", sa.String(40), nullable=False),
        sa.Column("applied_at", sa.String(40), nullable=False),
        sa.Column("pushed_by", sa.String(40), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("code", sa.String(60)),
        sa.Column("params", sa.Text()),
        sa.Column("result", sa.Text()),
        sa.Column("change_seq", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("device_id", "client_seq", name="ops_device_seq"),
    )
    op.create_index("ops_device_change", "ops", ["device_id", "change_seq"])
    op.create_table(
        "patient_aliases",
        sa.Column("alias_id", sa.String(64), primary_key=True),
        sa.Column("patient_id", sa.Text()),
        sa.Column("mapped_at", sa.Text()),
    )
    op.create_index("patient_aliases_patient", "patient_aliases", ["patient_id"])
    op.create_table(
        "patients",
        sa.Column("patient_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.Text()),
        sa.Column("sex", sa.Text()),
        sa.Column("birth_date", sa.Text()),
        sa.Column("doc_type", sa.Text()),
        sa.Column("doc_no", sa.Text()),
        sa.Column("phone", sa.Text()),
        sa.Column("address", sa.Text()),
        sa.Column("registered_at", sa.Text()),
        sa.Column("registered_by", sa.Text()),
        sa.Column("registered_device", sa.Text()),
    )
    op.create_index("patients_document", "patients", ["doc_type", "doc_no"], unique=True)
    op.create_index("patients_phone", "patients", ["phone"])
    op.create_index("patients_name", "patients", ["name"])
    op.create_table(
        "sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("clerk_id", sa.String(40), nullable=False),
        sa.Column("device_id", sa.String(40), nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("expires_at", sa.String(40), nullable=False),
        sa.Column("revoked", sa.Integer(), nullable=False),
    )
    op.create_table(
        "transfers",
        sa.Column("transfer_id", sa.String(64), primary_key=True),
        sa.Column("debit_account", sa.Text()),
        sa.Column("credit_account", sa.Text()),
        sa.Column("amount_fen", sa.BigInteger()),
        sa.Column("kind", sa.Text()),
        sa.Column("method", sa.Text()),
        sa.Column("patient_id", sa.Text()),
        sa.Column("card_no", sa.Text()),
        sa.Column("receipt_no", sa.Text()),
        sa.Column("clerk_id", sa.Text()),
        sa.Column("device_id", sa.Text()),
        sa.Column("at", sa.Text()),
        sa.Column("op_id", sa.Text()),
    )
    op.create_index("transfers_debit", "transfers", ["debit_account"])
    op.create_index("transfers_credit", "transfers", ["credit_account"])
    op.create_index("transfers_receipt", "transfers", ["receipt_no"], unique=True)

    # The change-log head, and the first number of each series (card numbers
    # 100000000-, receipt numbers 1-).
    op.bulk_insert(
        counters,
        [
            {"name": "change_seq", "value": 0},
            {"name": "series:card", "value": 100_000_000},
            {"name": "series:receipt", "value": 1},
        ],
    )
    # The server's epoch: a new one marks a restore from backup.
    epoch = datetime.now(UTC).strftime("%Y%m%d%H%M%S") + "-" + secrets.token_hex(4)
    op.bulk_insert(meta, [{"key": "epoch", "value": epoch}])


def downgrade() -> None:
    raise NotImplementedError(
        "the central database is not migrated backwards: restore the backup taken before "
        "`workstation admin migrate`"
    )
