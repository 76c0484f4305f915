"""device location history: one row per position a device has held (SensorThings Locations and
HistoricalLocations), written at registration and at every move; one row backfilled per existing device.

Revision ID: 0008
Revises: 0007
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zhizhi.adapters.orm import BigId, UtcDateTime

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sensing_device_locations",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("device_id", BigId, sa.ForeignKey("sensing_devices.id", ondelete="CASCADE"), nullable=True),
        sa.Column("time", UtcDateTime(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("place_code", sa.String(32), nullable=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
    )
    op.create_index("ix_sensing_device_locations_device_time", "sensing_device_locations", ["device_id", "time"])
    # Every device registered so far: its registration is its first (and so far only) position.
    op.execute("INSERT INTO sensing_device_locations (device_id, time, lon, lat, place_code, name, description) "
               "SELECT id, registered_at, lon, lat, place_code, '', '' FROM sensing_devices ORDER BY id")


def downgrade() -> None:
    op.drop_index("ix_sensing_device_locations_device_time", table_name="sensing_device_locations")
    op.drop_table("sensing_device_locations")
