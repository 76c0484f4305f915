"""dispatch tables: dispatcher decisions, duplicate links, whistle tasks

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import zhizhi.adapters.orm

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

_id = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_ts = zhizhi.adapters.orm.UtcDateTime


def upgrade() -> None:
    op.create_table(
        'dispatch_decisions',
        sa.Column('id', _id, autoincrement=True, nullable=False),
        sa.Column('case_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('at', _ts(timezone=True), nullable=False),
        sa.Column('actor', sa.String(length=100), nullable=False),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('accepted', sa.Boolean(), nullable=False),
        sa.Column('suggested_category', sa.String(length=32), nullable=True),
        sa.Column('suggested_department', sa.String(length=64), nullable=True),
        sa.Column('suggested_level', sa.Integer(), nullable=True),
        sa.Column('confidence', sa.Float(), nullable=True),
        sa.Column('chosen_category', sa.String(length=32), nullable=False),
        sa.Column('chosen_department', sa.String(length=64), nullable=False),
        sa.Column('chosen_level', sa.Integer(), nullable=False),
        sa.Column('model_version', sa.String(length=40), nullable=True),
        sa.Column('suggestions', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['case_id'], ['cases.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_dispatch_decisions_case_id', 'dispatch_decisions', ['case_id'])
    op.create_index('ix_dispatch_decisions_chosen_category', 'dispatch_decisions', ['chosen_category'])
    op.create_table(
        'dispatch_links',
        sa.Column('id', _id, autoincrement=True, nullable=False),
        sa.Column('case_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('linked_case_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('at', _ts(timezone=True), nullable=False),
        sa.Column('by', sa.String(length=100), nullable=False),
        sa.Column('similarity', sa.Float(), nullable=False),
        sa.Column('distance_m', sa.Float(), nullable=True),
        sa.Column('notified_at', _ts(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['case_id'], ['cases.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['linked_case_id'], ['cases.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('linked_case_id', name='uq_dispatch_links_linked'),
    )
    op.create_index('ix_dispatch_links_case_id', 'dispatch_links', ['case_id'])
    op.create_table(
        'whistle_tasks',
        sa.Column('id', _id, autoincrement=True, nullable=False),
        sa.Column('case_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('round', sa.Integer(), nullable=False),
        sa.Column('department_code', sa.String(length=64), nullable=False),
        sa.Column('task', sa.Text(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('called_at', _ts(timezone=True), nullable=False),
        sa.Column('called_by', sa.String(length=100), nullable=False),
        sa.Column('report_by', _ts(timezone=True), nullable=True),
        sa.Column('due_at', _ts(timezone=True), nullable=True),
        sa.Column('reported_at', _ts(timezone=True), nullable=True),
        sa.Column('done_at', _ts(timezone=True), nullable=True),
        sa.Column('note', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['case_id'], ['cases.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('case_id', 'round', 'department_code', name='uq_whistle_tasks_dept'),
    )
    op.create_index('ix_whistle_tasks_case_id', 'whistle_tasks', ['case_id'])
    op.create_index('ix_whistle_tasks_state_due', 'whistle_tasks', ['state', 'due_at'])


def downgrade() -> None:
    op.drop_index('ix_whistle_tasks_state_due', table_name='whistle_tasks')
    op.drop_index('ix_whistle_tasks_case_id', table_name='whistle_tasks')
    op.drop_table('whistle_tasks')
    op.drop_index('ix_dispatch_links_case_id', table_name='dispatch_links')
    op.drop_table('dispatch_links')
    op.drop_index('ix_dispatch_decisions_chosen_category', table_name='dispatch_decisions')
    op.drop_index('ix_dispatch_decisions_case_id', table_name='dispatch_decisions')
    op.drop_table('dispatch_decisions')
