"""Each change-log entry gets a random nonce.

``change_log.nonce`` is drawn when the entry is written. A workstation sends
back the nonce of the entry at its cursor with each pull and push: a server
restored from a backup either has no entry there or (written anew since) an
entry with another nonce, and says so instead of serving or applying. A
restored log is a prefix of the log the workstation pulled from, so an equal
nonce at the cursor means an equal history up to it. Entries written before
this revision keep NULL (their content is fingerprinted instead).

Frozen: written out here, never generated from ``server.db``.

Revision ID: 0004_change_nonce
Revises: 0003_one_active_card
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_change_nonce"
down_revision = "0003_one_active_card"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("change_log", sa.Column("nonce", sa.BigInteger(), nullable=True))
