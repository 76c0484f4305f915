"""Bulk storage of observations: one transaction per batch, multi-row INSERTs on SQLite, binary COPY on PostgreSQL.

The table's primary key is the (datastream, time) index, so the batch is written
into a single B-tree and a repeated reading is a key conflict. The batch is written in
key order (the service sorts it; `insert` sorts when asked), so consecutive rows land on
the same or the next B-tree page. On SQLite the rows go as INSERTs of `SQLITE_ROWS` rows
each — one statement step per 500 rows instead of one per row, which is what
`executemany` costs — with one flat parameter list built by slice assignment. On PostgreSQL the
batch is encoded as COPY BINARY with numpy in one buffer (no Python object per
row); if a racing writer stored one of the same readings the COPY fails as a whole
and the batch is written again with ON CONFLICT DO NOTHING, so nothing
acknowledged is lost and nothing is stored twice.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import Engine

#: Rows per SQLite INSERT statement (3 parameters each, well under SQLite's 32,766-parameter limit).
SQLITE_ROWS = 500
_SQLITE_INSERT = ("INSERT INTO sensing_observations (datastream_id, phenomenon_time, result) VALUES {} "
                  "ON CONFLICT DO NOTHING")
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

    def insert(self, ds: np.ndarray, t: np.ndarray, v: np.ndarray, presorted: bool = False) -> None:
        """Store a batch durably (committed when this returns): all of it, or — on an error — none of it.

        `presorted`: the caller guarantees (datastream, time) order; otherwise the batch is sorted here.
        """
        if ds.size == 0:
            return
        if not presorted:
            order = np.lexsort((t, ds))
            ds, t, v = ds[order], t[order], v[order]
        raw = self.engine.raw_connection()
        try:
            if self.dialect == "postgresql":
                self._pg_insert(raw, ds, t, v)
            else:
                self._sqlite_insert(raw, ds, t, v)
        except Exception:
            raw.rollback()
            raise
        finally:
            raw.close()

    @staticmethod
    def _sqlite_insert(raw: Any, ds: np.ndarray, t: np.ndarray, v: np.ndarray) -> None:
        cur = raw.cursor()
        # A larger page cache for this connection: a batch touches many datastreams' pages.
        cur.execute("PRAGMA cache_size=-131072")
        n = int(ds.size)
        flat: list[Any] = [None] * (3 * n)
        flat[0::3] = ds.tolist()
        flat[1::3] = t.tolist()
        flat[2::3] = v.tolist()
        full = n - n % SQLITE_ROWS
        if full:
            sql = _SQLITE_INSERT.format(", ".join(["(?, ?, ?)"] * SQLITE_ROWS))
            step = 3 * SQLITE_ROWS
            for i in range(0, 3 * full, step):
                cur.execute(sql, flat[i:i + step])
        if full < n:
            cur.execute(_SQLITE_INSERT.format(", ".join(["(?, ?, ?)"] * (n - full))), flat[3 * full:])
        raw.commit()

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

    def update_result(self, ds: int, t: int, v: float) -> bool:
        """Set the result of one stored reading; False when there is none at (datastream, time)."""
        ph = "?" if self.dialect == "sqlite" else "%s"
        with self.engine.begin() as conn:
            result = conn.exec_driver_sql(f"UPDATE sensing_observations SET result = {ph} "
                                          f"WHERE datastream_id = {ph} AND phenomenon_time = {ph}",
                                          (float(v), int(ds), int(t)))
            return bool(result.rowcount)

    def delete_one(self, ds: int, t: int) -> bool:
        """Delete one stored reading; False when there is none at (datastream, time)."""
        ph = "?" if self.dialect == "sqlite" else "%s"
        with self.engine.begin() as conn:
            result = conn.exec_driver_sql(f"DELETE FROM sensing_observations "
                                          f"WHERE datastream_id = {ph} AND phenomenon_time = {ph}",
                                          (int(ds), int(t)))
            return bool(result.rowcount)
