"""Failed logins are counted per username and workstation.

``login_failures`` holds, for each (username, device) pair, the failed
attempts and the lockout's end: wrong guesses at one workstation lock that
clerk out there only, so one enrolled workstation cannot lock every clerk of
the hospital out. Usernames nobody holds are counted the same way, so a
lockout does not tell who exists. The counter is moved by one statement
(``INSERT ... ON CONFLICT ... DO UPDATE ... RETURNING``), atomic on
PostgreSQL too. ``clerks.failed_attempts`` and ``clerks.locked_until`` are
no longer used (kept: a server of the previous release may still run during
an upgrade).

Frozen: written out here, never generated from ``server.db``.

Revision ID: 0005_lockout_by_device
Revises: 0004_change_nonce
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_lockout_by_device"
down_revision = "0004_change_nonce"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(40), nullable=False),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.String(40), nullable=True),
        sa.PrimaryKeyConstraint("username", "device_id"),
    )
