"""observation arrays compressed with LZ4 on PostgreSQL (where the server has it)

Since 0007 the arrays were stored uncompressed (STORAGE EXTERNAL): wide int64 arrays gained little from
pglz, which cost the server more CPU than the rest of the ingest. The narrow arrays of 0010 (int32 offsets,
runs of ids) compress well, and LZ4 is fast: measured on 1 M readings in 20 log rows, inserting took
90–97 ns a reading uncompressed (16.7 MB), 129–158 with pglz (8.5 MB) and 48–50 with LZ4 (4.4 MB) — less to
write to the table and to the WAL than the compression costs. LZ4 also decompresses several times faster than
pglz, and blocks are read back more often than they are written. Rows stored before stay as they are:
PostgreSQL reads both.

A server built without LZ4 (`--with-lz4`) keeps the arrays uncompressed. SQLite does not compress.

Revision ID: 0011
Revises: 0010
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

_COLUMNS = [(table, column) for table in ("sensing_observation_log", "sensing_observation_blocks")
            for column in ("datastreams", "times", "results")]


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or not bind.execute(sa.text(
            "SELECT count(*) FROM pg_settings WHERE name = 'default_toast_compression' "
            "AND 'lz4' = ANY(enumvals)")).scalar():
        return
    for table, column in _COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE EXTENDED, "
                   f"ALTER COLUMN {column} SET COMPRESSION lz4")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in _COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE EXTERNAL, "
                   f"ALTER COLUMN {column} SET COMPRESSION default")
