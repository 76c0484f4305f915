"""sensing tables

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zhizhi.adapters.orm import BigId, UtcDateTime

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sensing_devices",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("scene", sa.String(64), nullable=False),
        sa.Column("place_code", sa.String(32), nullable=True),
        sa.Column("district_code", sa.String(32), nullable=True),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("department_code", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("last_seen", UtcDateTime(), nullable=True),
        sa.Column("registered_at", UtcDateTime(), nullable=False),
        sa.Column("rule_overrides", sa.JSON(), nullable=False),
        sa.Column("properties", sa.JSON(), nullable=False),
        sa.UniqueConstraint("code"),
    )
    op.create_index("ix_sensing_devices_type", "sensing_devices", ["type"])
    op.create_index("ix_sensing_devices_scene", "sensing_devices", ["scene"])
    op.create_index("ix_sensing_devices_place_code", "sensing_devices", ["place_code"])
    op.create_table(
        "sensing_datastreams",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("device_id", BigId, sa.ForeignKey("sensing_devices.id", ondelete="CASCADE"), nullable=False),
        sa.Column("quantity", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("unit", sa.String(32), nullable=False),
        sa.Column("properties", sa.JSON(), nullable=False),
        sa.UniqueConstraint("device_id", "quantity", name="uq_sensing_datastreams"),
    )
    op.create_index("ix_sensing_datastreams_device_id", "sensing_datastreams", ["device_id"])
    op.create_table(
        "sensing_observations",
        sa.Column("datastream_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("phenomenon_time", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("result", sa.Float(), nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "sensing_alarms",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.BigInteger(), nullable=False),
        sa.Column("device_code", sa.String(64), nullable=False),
        sa.Column("rule_code", sa.String(64), nullable=False),
        sa.Column("scene", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("raised_at", UtcDateTime(), nullable=False),
        sa.Column("reading_at", UtcDateTime(), nullable=True),
        sa.Column("last_at", UtcDateTime(), nullable=True),
        sa.Column("acknowledged_at", UtcDateTime(), nullable=True),
        sa.Column("acknowledged_by", sa.String(100), nullable=True),
        sa.Column("cleared_at", UtcDateTime(), nullable=True),
        sa.Column("grid_code", sa.String(32), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("case_id", sa.BigInteger(), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
    )
    op.create_index("ix_sensing_alarms_active", "sensing_alarms", ["device_id", "rule_code", "state"])
    op.create_index("ix_sensing_alarms_raised_at", "sensing_alarms", ["raised_at"])
    op.create_index("ix_sensing_alarms_device_id", "sensing_alarms", ["device_id"])
    op.create_index("ix_sensing_alarms_scene", "sensing_alarms", ["scene"])
    op.create_index("ix_sensing_alarms_state", "sensing_alarms", ["state"])
    op.create_index("ix_sensing_alarms_grid_code", "sensing_alarms", ["grid_code"])
    op.create_index("ix_sensing_alarms_case_id", "sensing_alarms", ["case_id"])
    op.create_table(
        "sensing_alarm_steps",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("alarm_id", BigId, sa.ForeignKey("sensing_alarms.id", ondelete="CASCADE"), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("by", sa.String(100), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
    )
    op.create_index("ix_sensing_alarm_steps_alarm_id", "sensing_alarm_steps", ["alarm_id"])


def downgrade() -> None:
    op.drop_table("sensing_alarm_steps")
    op.drop_table("sensing_alarms")
    op.drop_table("sensing_observations")
    op.drop_table("sensing_datastreams")
    op.drop_table("sensing_devices")
