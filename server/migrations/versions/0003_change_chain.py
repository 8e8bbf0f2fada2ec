"""The change log's entries are chained.

``change_log.chain`` holds a hash of the entry before and of this one
(``sync.protocol.next_chain``), so that a workstation can tell a server
restored from a backup (and written anew since) from the one it pulled from.
Entries written before this revision keep NULL; the chain starts at the
first entry written after it.

Frozen: written out here, never generated from ``server.db``.

Revision ID: 0003_change_chain
Revises: 0002_leases_and_shifts
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_change_chain"
down_revision = "0002_leases_and_shifts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("change_log", sa.Column("chain", sa.BigInteger(), nullable=True))
