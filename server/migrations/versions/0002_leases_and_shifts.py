"""General leases, and clerks' shifts.

``leases`` replaces ``number_blocks``: a lease has a kind and a resource and
either a range of numbers, a set of ids or a quantity, a grant time, perhaps
an expiry, perhaps a return. Every number block becomes a lease of kind
``number_block`` on its series, with the same id, range, device and time.
``shifts`` is a replicated table (``domain.shifts.ShiftRow``): the shift a
clerk's money belongs to.

Frozen: written out here, never generated from ``server.db``.

Revision ID: 0002_leases_and_shifts
Revises: 0001_baseline
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_leases_and_shifts"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("lease_id", sa.String(40), primary_key=True),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("resource", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(40), nullable=False),
        sa.Column("first", sa.BigInteger()),
        sa.Column("last", sa.BigInteger()),
        sa.Column("ids", sa.Text()),
        sa.Column("quantity", sa.BigInteger()),
        sa.Column("granted_at", sa.String(40), nullable=False),
        sa.Column("granted_by", sa.String(40)),
        sa.Column("expires_at", sa.String(40)),
        sa.Column("returned_at", sa.String(40)),
    )
    op.create_index("leases_device", "leases", ["kind", "resource", "device_id"])
    op.execute(
        'INSERT INTO leases (lease_id, kind, resource, device_id, "first", "last", granted_at) '
        'SELECT block_id, \'number_block\', series, device_id, "first", "last", granted_at '
        "FROM number_blocks"
    )
    op.drop_index("number_blocks_lookup", table_name="number_blocks")
    op.drop_table("number_blocks")

    op.create_table(
        "shifts",
        sa.Column("shift_id", sa.String(64), primary_key=True),
        sa.Column("clerk_id", sa.Text()),
        sa.Column("device_id", sa.Text()),
        sa.Column("status", sa.Text()),
        sa.Column("opened_at", sa.Text()),
        sa.Column("closed_at", sa.Text()),
    )
    op.create_index("shifts_clerk", "shifts", ["clerk_id", "device_id", "status"])
