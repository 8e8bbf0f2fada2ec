"""Operations are signed by the clerk who made them (``domain.signing``).

``clerk_keys``: each clerk's public signing keys, one a workstation, recorded
at an online login (where the password proves whose key it is). A pushed op
is applied as the clerk it names only if its signature matches one of them.

``devices.unsigned_through``: the last op a workstation made before it signed
ops (release 0.1), which it says once, at the first login that registers a
key; its unsigned ops up to there are taken as before. NULL for the devices
enrolled before this revision until then (their unsigned ops are taken, and
named in the audit, while they run release 0.1); 0 for devices enrolled after.

``ops.key_id``, ``ops.signature``: each op's signature, kept in the op log
(and in its hash when present) so that ``verify-audit`` can check who made it.

Frozen: written out here, never generated from ``server.db``.

Revision ID: 0009_clerk_keys
Revises: 0008_lease_limits
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_clerk_keys"
down_revision = "0008_lease_limits"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clerk_keys",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("clerk_id", sa.String(40), nullable=False),
        sa.Column("device_id", sa.String(40), nullable=False),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("registered_at", sa.String(40), nullable=False),
    )
    op.create_index("clerk_keys_clerk_device", "clerk_keys", ["clerk_id", "device_id"])
    op.add_column("devices", sa.Column("unsigned_through", sa.BigInteger(), nullable=True))
    op.add_column("ops", sa.Column("key_id", sa.String(32), nullable=True))
    op.add_column("ops", sa.Column("signature", sa.String(128), nullable=True))
