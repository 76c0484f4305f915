"""Bulk storage of observations: one transaction per batch, executemany on SQLite, binary COPY on PostgreSQL.

The table's primary key is the (datastream, time) index, so the batch is written
into a single B-tree and a repeated reading is a key conflict. On PostgreSQL the
batch is encoded as COPY BINARY with numpy in one buffer (no Python object per
row); if a racing writer stored one of the same readings the COPY fails as a whole
and the batch is written again with ON CONFLICT DO NOTHING, so nothing
acknowledged is lost and nothing is stored twice.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import Engine

_PG_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_PG_ROW = np.dtype([("n", ">i2"), ("l1", ">i4"), ("ds", ">i8"), ("l2", ">i4"), ("t", ">i8"),
                    ("l3", ">i4"), ("v", ">f8")])


def pg_copy_buffer(ds: np.ndarray, t: np.ndarray, v: np.ndarray) -> bytes:
    rows = np.empty(ds.size, dtype=_PG_ROW)
    rows["n"] = 3
    rows["l1"] = 8
    rows["ds"] = ds
    rows["l2"] = 8
    rows["t"] = t
    rows["l3"] = 8
    rows["v"] = v
    return _PG_HEADER + rows.tobytes() + b"\xff\xff"


class ObservationStore:
    """Writes and reads `sensing_observations` beneath the ORM, for speed."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    def insert(self, ds: np.ndarray, t: np.ndarray, v: np.ndarray) -> None:
        """Store a batch durably (committed when this returns)."""
        if ds.size == 0:
            return
        raw = self.engine.raw_connection()
        try:
            if self.dialect == "postgresql":
                self._pg_insert(raw, ds, t, v)
            else:
                cur = raw.cursor()
                # A larger page cache for this connection: a batch touches many datastreams' pages.
                cur.execute("PRAGMA cache_size=-131072")
                cur.executemany(
                    "INSERT INTO sensing_observations (datastream_id, phenomenon_time, result) VALUES (?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    zip(ds.tolist(), t.tolist(), v.tolist(), strict=True),
                )
                raw.commit()
        except Exception:
            raw.rollback()
            raise
        finally:
            raw.close()

    def _pg_insert(self, raw: Any, ds: np.ndarray, t: np.ndarray, v: np.ndarray) -> None:
        import psycopg

        conn = raw.driver_connection
        buf = pg_copy_buffer(ds, t, v)
        try:
            with conn.cursor() as cur, cur.copy("COPY sensing_observations (datastream_id, phenomenon_time, "
                                                "result) FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(buf)
            conn.commit()
        except psycopg.errors.UniqueViolation:
            conn.rollback()
            with conn.cursor() as cur:
                cur.execute("CREATE TEMP TABLE IF NOT EXISTS obs_in (datastream_id int8, phenomenon_time int8, "
                            "result float8) ON COMMIT DELETE ROWS")
                with cur.copy("COPY obs_in FROM STDIN (FORMAT BINARY)") as cp:
                    cp.write(buf)
                cur.execute("INSERT INTO sensing_observations SELECT * FROM obs_in ON CONFLICT DO NOTHING")
            conn.commit()

    def existing(self, ds: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Which (datastream, time) pairs are stored already (checked only for readings not newer
        than the latest value held, so the common, in-order stream never pays for it)."""
        found = np.zeros(ds.size, dtype=np.bool_)
        if ds.size == 0:
            return found
        stored: set[tuple[int, int]] = set()
        pairs = list(zip(ds.tolist(), t.tolist(), strict=True))
        with self.engine.connect() as conn:
            for i in range(0, len(pairs), 400):
                chunk = pairs[i:i + 400]
                ph = "?" if self.dialect == "sqlite" else "%s"
                values = ", ".join(f"({ph}, {ph})" for _ in chunk)
                sql = (f"SELECT datastream_id, phenomenon_time FROM sensing_observations "
                       f"WHERE (datastream_id, phenomenon_time) IN (VALUES {values})")
                flat = tuple(x for p in chunk for x in p)
                stored.update((int(a), int(b)) for a, b in conn.exec_driver_sql(sql, flat).fetchall())
        for i, p in enumerate(pairs):
            found[i] = p in stored
        return found

    def purge_before(self, cutoff_ms: int) -> int:
        """The retention policy: delete observations older than the cutoff."""
        with self.engine.begin() as conn:
            ph = "?" if self.dialect == "sqlite" else "%s"
            result = conn.exec_driver_sql(f"DELETE FROM sensing_observations WHERE phenomenon_time < {ph}",
                                          (int(cutoff_ms),))
            return int(result.rowcount or 0)

    def series(self, datastream_id: int, start_ms: int | None = None, end_ms: int | None = None,
               limit: int = 1000, newest_first: bool = True) -> list[tuple[int, float]]:
        ph = "?" if self.dialect == "sqlite" else "%s"
        sql = f"SELECT phenomenon_time, result FROM sensing_observations WHERE datastream_id = {ph}"
        args: list[int] = [int(datastream_id)]
        if start_ms is not None:
            sql += f" AND phenomenon_time >= {ph}"
            args.append(int(start_ms))
        if end_ms is not None:
            sql += f" AND phenomenon_time <= {ph}"
            args.append(int(end_ms))
        sql += f" ORDER BY phenomenon_time {'DESC' if newest_first else 'ASC'} LIMIT {int(limit)}"
        with self.engine.connect() as conn:
            return [(int(a), float(b)) for a, b in conn.exec_driver_sql(sql, tuple(args)).fetchall()]

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM sensing_observations").scalar() or 0)
