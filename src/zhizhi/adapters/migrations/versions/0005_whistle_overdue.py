"""whistle tasks remember when their current deadline was found missed (overdue job, 督办)

Revision ID: 0005
Revises: 0004
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zhizhi.adapters.orm import UtcDateTime

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("whistle_tasks") as batch:
        batch.add_column(sa.Column("overdue_since", UtcDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("whistle_tasks") as batch:
        batch.drop_column("overdue_since")
