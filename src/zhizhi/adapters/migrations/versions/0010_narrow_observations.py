"""observations stored narrower: datastream ids as runs or int32, times as int32 offsets (13–16 bytes a
reading instead of 24)

Nothing to do on the way up: readers tell each blob's encoding by its length, so rows written before
stay readable as they are and new rows are written narrow. On the way down every row is rewritten in
the wide int64/int64/float64 form that the code before this revision reads.

Revision ID: 0010
Revises: 0009
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from zhizhi.adapters.observations_store import decode

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

_CHUNK = 2000


def upgrade() -> None:
    pass


def downgrade() -> None:
    conn = op.get_bind()
    for table, key, base in (("sensing_observation_log", ("id",), "min_time"),
                             ("sensing_observation_blocks", ("stream_group", "start_time", "seq"), "start_time")):
        cols = ", ".join(key)
        where = " AND ".join(f"{k} = :{k}" for k in key)
        last: tuple[int, ...] | None = None
        while True:
            after = "" if last is None else f" WHERE ({cols}) > ({', '.join(f':a{i}' for i in range(len(key)))})"
            params = {} if last is None else {f"a{i}": x for i, x in enumerate(last)}
            rows = conn.execute(sa.text(f"SELECT {cols}, n, {base}, datastreams, times, results FROM {table}"
                                        f"{after} ORDER BY {cols} LIMIT {_CHUNK}"), params).fetchall()
            if not rows:
                break
            out = []
            for r in rows:
                k = len(key)
                d, t, _ = decode(*r[k:k + 5])
                out.append({**dict(zip(key, r[:k], strict=True)), "ds": d.astype("<i8").tobytes(),
                            "t": t.astype("<i8").tobytes()})
            conn.execute(sa.text(f"UPDATE {table} SET datastreams = :ds, times = :t WHERE {where}"), out)
            last = tuple(rows[-1][:len(key)])

