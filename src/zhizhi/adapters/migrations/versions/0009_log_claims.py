"""observation log claims: compactors claim log rows (who, when) so that several processes compact at once

A compactor claims a chunk of the log in a short transaction, sorts it and cuts it into blocks with no
lock held, then swaps the rows for their blocks in one transaction that checks the claim is still its own.
A claim older than the lease (a compactor that died) may be taken over. Claims live in a table of their
own: a column on the log row would make SQLite rewrite the row's megabyte of arrays to set it.

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
    op.create_table(
        "sensing_observation_claims",
        sa.Column("log_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("claimed_by", sa.String(64), nullable=False),
        sa.Column("claimed_at", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sensing_observation_claims")
