"""Lease limits: grants a minute and numbers a day, per device.

``lease_tallies`` counts, per device and period (a UTC minute, a UTC day),
the number-block grants and the numbers granted, so that a workstation (or a
stolen device token) cannot drain a number series: ``server.leases`` adds to
the count and checks it against the policy in the grant's own transaction.

Frozen: written out here, never generated from ``server.db``.

Revision ID: 0008_lease_limits
Revises: 0006_audit_chain
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_lease_limits"
down_revision = "0006_audit_chain"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lease_tallies",
        sa.Column("device_id", sa.String(length=40), nullable=False),
        sa.Column("period", sa.String(length=40), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "period"),
    )
