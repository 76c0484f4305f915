"""observations as a log of batches and blocks per datastream, instead of a row per reading.

A row per reading cost the database about a microsecond of B-tree work per reading, half of the
budget of a city's sensing (see adapters/observations_store.py). Existing readings are moved into
blocks, then the old table is dropped; the downgrade expands them back into rows.

Revision ID: 0007
Revises: 0006
"""
from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

_CHUNK = 200_000
# The store's format at this revision (adapters/observations_store.py: BLOCK_MAX, GROUP_BITS).
_BLOCK_MAX = 8192
_GROUP_BITS = 6


def upgrade() -> None:
    op.create_table(
        "sensing_observation_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("min_time", sa.BigInteger(), nullable=False),
        sa.Column("max_time", sa.BigInteger(), nullable=False),
        sa.Column("datastreams", sa.LargeBinary(), nullable=False),
        sa.Column("times", sa.LargeBinary(), nullable=False),
        sa.Column("results", sa.LargeBinary(), nullable=False),
        sqlite_autoincrement=True,  # ids never reused: compaction derives the blocks' seq from them
    )
    op.create_table(
        "sensing_observation_blocks",
        sa.Column("stream_group", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("start_time", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("end_time", sa.BigInteger(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("datastreams", sa.LargeBinary(), nullable=False),
        sa.Column("times", sa.LargeBinary(), nullable=False),
        sa.Column("results", sa.LargeBinary(), nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_sensing_observation_blocks_end", "sensing_observation_blocks", ["end_time"])
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        # The arrays are binary numbers that do not compress: PostgreSQL's default (pglz on every value
        # over 2 kB) cost its server more CPU per reading than the rest of the ingest.
        for table in ("sensing_observation_log", "sensing_observation_blocks"):
            for col in ("datastreams", "times", "results"):
                op.execute(f"ALTER TABLE {table} ALTER COLUMN {col} SET STORAGE EXTERNAL")
    blocks = sa.table("sensing_observation_blocks", *(sa.column(c) for c in (
        "stream_group", "start_time", "seq", "end_time", "n", "datastreams", "times", "results")))
    result = conn.execute(sa.text("SELECT datastream_id, phenomenon_time, result FROM sensing_observations "
                                  "ORDER BY datastream_id, phenomenon_time"))
    carry: list[tuple[int, int, float]] = []
    seq = 0
    while True:
        rows = carry + [tuple(r) for r in result.fetchmany(_CHUNK)]
        if not rows:
            break
        done = len(rows) < _CHUNK + len(carry)
        ds = np.array([r[0] for r in rows], dtype=np.int64)
        t = np.array([r[1] for r in rows], dtype=np.int64)
        v = np.array([r[2] for r in rows], dtype=np.float64)
        if not done:  # the last stream group may go on in the next chunk: carry it over whole
            last = int(np.searchsorted(ds >> _GROUP_BITS, ds[-1] >> _GROUP_BITS))
            carry = rows[last:]
            ds, t, v = ds[:last], t[:last], v[:last]
        else:
            carry = []
        out = []
        group = ds >> _GROUP_BITS
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]]) if ds.size else np.empty(0, np.int64)
        for s, e in zip(starts.tolist(), np.r_[starts[1:], ds.size].astype(int).tolist(), strict=True):
            for a0 in range(s, e, _BLOCK_MAX):
                b0 = min(a0 + _BLOCK_MAX, e)
                seq += 1
                out.append({"stream_group": int(group[a0]), "start_time": int(t[a0:b0].min()), "seq": seq,
                            "end_time": int(t[a0:b0].max()), "n": b0 - a0,
                            "datastreams": ds[a0:b0].astype("<i8").tobytes(),
                            "times": t[a0:b0].astype("<i8").tobytes(), "results": v[a0:b0].astype("<f8").tobytes()})
        if out:
            conn.execute(blocks.insert(), out)
        if done:
            break
    op.drop_table("sensing_observations")


def downgrade() -> None:
    op.create_table(
        "sensing_observations",
        sa.Column("datastream_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("phenomenon_time", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("result", sa.Float(), nullable=False),
        sqlite_with_rowid=False,
    )
    conn = op.get_bind()
    obs = sa.table("sensing_observations", sa.column("datastream_id"), sa.column("phenomenon_time"),
                   sa.column("result"))
    seen: set[tuple[int, int]] = set()
    for table in ("sensing_observation_blocks", "sensing_observation_log"):
        for db_, tb, vb in conn.execute(sa.text(f"SELECT datastreams, times, results FROM {table}")).fetchall():
            d = np.frombuffer(db_, dtype="<i8")
            t = np.frombuffer(tb, dtype="<i8")
            v = np.frombuffer(vb, dtype="<f8")
            out = []
            for a, b, c in zip(d.tolist(), t.tolist(), v.tolist(), strict=True):
                if (a, b) not in seen:
                    seen.add((a, b))
                    out.append({"datastream_id": a, "phenomenon_time": b, "result": c})
            if out:
                conn.execute(obs.insert(), out)
    op.drop_index("ix_sensing_observation_blocks_end", table_name="sensing_observation_blocks")
    op.drop_table("sensing_observation_blocks")
    op.drop_table("sensing_observation_log")
