"""observation log claims: compactors claim log rows (who, when) so that several processes compact at once

A compactor claims a chunk of the log in a short transaction, sorts it and cuts it into blocks with no
lock held, then swaps the rows for their blocks in one transaction that checks the claim is still its own.
A claim older than the lease (a compactor that died) may be taken over.

Revision ID: 0009
Revises: 0008
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sensing_observation_log", sa.Column("claimed_by", sa.String(64), nullable=True))
    op.add_column("sensing_observation_log", sa.Column("claimed_at", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sensing_observation_log") as batch:
        batch.drop_column("claimed_at")
        batch.drop_column("claimed_by")
