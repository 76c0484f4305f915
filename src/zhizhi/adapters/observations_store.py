"""Storage of observations as a small time-series engine on SQLite or PostgreSQL: a log, then blocks.

Why not one row per reading: a city's sensing is hundreds of thousands of readings a second, and
a B-tree entry per reading costs about a microsecond of the database's CPU — half of what a whole
reading may cost. So storage has two tables, as column stores do (a write-ahead log of parts, then
parts merged into sorted granules under a sparse primary index, as in ClickHouse's MergeTree):

- `sensing_observation_log`: every accepted batch is **one row** (its datastreams, times and values
  as three little-endian arrays), committed before the batch is acknowledged. Appending it is one
  write whatever the batch size, so an acknowledged reading is durable at once.
- `sensing_observation_blocks`: compaction sorts the log by (datastream, time) and cuts it into
  blocks of the readings of one **stream group** (`GROUP_BITS`: datastream id >> 6, so 64 datastreams),
  at most `BLOCK_MAX` readings each. The primary key (stream group, start time, seq) and the index on the
  end time are the sparse (datastream, time) index: a series is found by its group and time range,
  then read out of a few blocks with numpy. One block row stands for hundreds of readings, so the
  index costs the database a few hundred bytes per compaction and group, not a B-tree entry per reading.

Arrays are stored narrow (`encode_datastreams`, `encode_times`): ids as runs or int32, times as int32
offsets from the row's start, values as float64 — about 14 bytes a reading in a block instead of 24. A
blob's length tells its encoding, so rows written wide before stay readable (`decode`).

Compaction runs when the log holds `COMPACT_AT` readings (`SensingService` starts it in a background
thread after the batch that crossed the mark) and in the periodic job. Several processes compact at
once: each **claims** a chunk of log rows (`sensing_observation_claims`, one short transaction), sorts
and cuts it with no lock held, then swaps the rows for their blocks in one transaction that first
checks its claim — so a crash leaves either the log rows or their blocks, never neither, and a claim
that outlives `CLAIM_LEASE_MS` (a dead compactor's) is taken over. On SQLite the store's write
transactions queue on an flock (`WriteLock`) rather than on SQLite's sleeping busy handler. Readers read
both tables, the log first, so a reading is visible as soon as it is acknowledged. If two writers ever
stored the same reading (a race that the ingest's partitions prevent), readers keep one.

Slow devices and small compactions leave many small blocks per stream group; `merge_small` (run by the
periodic tick) merges a group's small blocks into full ones, once each, in one transaction per chunk of
groups (SQLite: under the write lock; PostgreSQL: only the rows it could lock `FOR UPDATE SKIP LOCKED`).
Readers that page (`recent`) read one snapshot, so a merge between two pages hides nothing; the others
read each stream group's blocks in one statement. `recent` stops reading the log and the blocks once no
unread row can hold a newer reading; `existing` and `series` decode only the log rows that hold the
datastreams asked for.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows: SQLite's own polling is used there
    fcntl = None  # type: ignore[assignment]

#: Readings in the log that start a compaction.
COMPACT_AT = 1_000_000
#: Readings per compaction: processes that compact at the same time claim different chunks and sort
#: them in parallel (only the final swap of log rows for blocks takes SQLite's write lock); a chunk of a
#: city's round-robin readings still makes blocks of hundreds of readings.
COMPACT_CHUNK = 524_288
#: A compactor's claim on log rows that it has neither finished nor given up after this long is taken
#: to be a dead process's, and the rows may be claimed again.
CLAIM_LEASE_MS = 10 * 60_000
#: Most readings in one block.
BLOCK_MAX = 8192
#: A block holds datastreams whose ids agree but for the low GROUP_BITS bits. Part of the stored
#: format: changing it needs a migration that rewrites the blocks.
GROUP_BITS = 6
#: Rows per SQLite INSERT of blocks (8 parameters each, under SQLite's 32,766-parameter limit).
SQLITE_ROWS = 400

_I8 = np.dtype("<i8")
_I4 = np.dtype("<i4")
_F8 = np.dtype("<f8")
#: What readers select of a log row and of a block: (n, base time, three blobs), for `decode`.
_LOG_READ = "n, min_time, datastreams, times, results"
_BLOCK_READ = "n, start_time, datastreams, times, results"
_BLOCK_COLS = "(stream_group, start_time, seq, end_time, n, datastreams, times, results)"
_PG_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_EMPTY = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64))


def encode_datastreams(ds: np.ndarray) -> bytes:
    """Datastream ids in the narrowest of three encodings, told apart by the blob's length for n readings:
    int64 (8n bytes), int32 (4n bytes), or runs — b"R", the distinct ids (int64), then their counts (int32):
    1 + 12k bytes, an odd length, used when the ids come sorted in few runs (a block of 64 datastreams)."""
    n = int(ds.size)
    if n == 0:
        return b""
    starts = np.flatnonzero(np.r_[True, ds[1:] != ds[:-1]])
    if 1 + 12 * starts.size < 4 * n:
        counts = np.diff(np.r_[starts, n]).astype(_I4)
        return b"R" + ds[starts].astype(_I8, copy=False).tobytes() + counts.tobytes()
    if int(ds.min()) >= 0 and int(ds.max()) < 1 << 31:
        return ds.astype(_I4).tobytes()
    return ds.astype(_I8, copy=False).tobytes()


def encode_times(t: np.ndarray, base: int) -> bytes:
    """Epoch milliseconds as int32 offsets from `base` (4n bytes) when they span under 24 days, else as
    int64 (8n bytes)."""
    off = t - base
    if t.size and (int(off.min()) < 0 or int(off.max()) >= 1 << 31):
        return t.astype(_I8, copy=False).tobytes()
    return off.astype(_I4).tobytes()


def decode(n: int, base: int, ds: bytes, t: bytes, v: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A row's three arrays (`base`: the row's min_time or start_time), whichever encoding each blob has."""
    n = int(n)
    if len(ds) == 8 * n:
        d = np.frombuffer(ds, dtype=_I8)
    elif len(ds) == 4 * n:
        d = np.frombuffer(ds, dtype=_I4).astype(np.int64)
    else:
        k = (len(ds) - 1) // 12
        d = np.repeat(np.frombuffer(ds, dtype=_I8, count=k, offset=1),
                      np.frombuffer(ds, dtype=_I4, count=k, offset=1 + 8 * k))
    tt = np.frombuffer(t, dtype=_I8) if len(t) == 8 * n else np.frombuffer(t, dtype=_I4) + np.int64(base)
    return d, tt, np.frombuffer(v, dtype=_F8)


def _stream_ids(n: int, ds: bytes) -> np.ndarray:
    """The datastream ids a row's datastreams blob holds, cheaply: for runs only the distinct ids (not
    repeated per reading), so a reader can tell whether a row concerns it before decoding the rest."""
    n = int(n)
    if len(ds) == 8 * n:
        return np.frombuffer(ds, dtype=_I8)
    if len(ds) == 4 * n:
        return np.frombuffer(ds, dtype=_I4)
    return np.frombuffer(ds, dtype=_I8, count=(len(ds) - 1) // 12, offset=1)


def _joined(rows: Sequence[Sequence[Any]], at: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three arrays of many rows, whose columns at, at+1, … at+4 are (n, base, datastreams, times,
    results), decoded and joined."""
    if not rows:
        return _EMPTY
    parts = [decode(*r[at:at + 5]) for r in rows]
    if len(parts) == 1:
        return parts[0]
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]


def sort_unique(ds: np.ndarray, t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted by (datastream, time); of two readings with the same key the first one given is kept."""
    order = np.lexsort((t, ds))
    ds, t, v = ds[order], t[order], v[order]
    if ds.size > 1:
        keep = np.ones(ds.size, dtype=np.bool_)
        keep[1:] = (ds[1:] != ds[:-1]) | (t[1:] != t[:-1])
        if not keep.all():
            ds, t, v = ds[keep], t[keep], v[keep]
    return ds, t, v


def merge_runs(ds: np.ndarray, t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`sort_unique` for what compaction reads: log rows that are each sorted already (ingest stores its
    batches in key order). One int64 key (datastream << 31 | time offset) sorted by timsort, which finds
    those runs and merges them — several times faster than a two-key lexsort; the general sort when the
    times span too long or the ids are too big for one key."""
    if ds.size < 2:
        return ds, t, v
    lo = int(t.min())
    if int(t.max()) - lo >= 1 << 31 or int(ds.max()) >= 1 << 32 or int(ds.min()) < 0:
        return sort_unique(ds, t, v)
    key = (ds << 31) | (t - lo)
    order = np.argsort(key, kind="stable")  # stable: of two readings with one key, the first given is kept
    key = key[order]
    keep = np.empty(key.size, dtype=np.bool_)
    keep[0] = True
    np.not_equal(key[1:], key[:-1], out=keep[1:])
    if not keep.all():
        order = order[keep]
    return ds[order], t[order], v[order]


def block_rows(ds: np.ndarray, t: np.ndarray, v: np.ndarray, seq0: int) -> list[tuple[Any, ...]]:
    """Readings sorted by (datastream, time) cut into block rows:
    (stream group, start, seq, end, n, datastreams, times, results); block k gets seq0 + k."""
    n = int(ds.size)
    if n == 0:
        return []
    group = ds >> GROUP_BITS
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    ends = np.r_[starts[1:], n]
    long = np.flatnonzero(ends - starts > BLOCK_MAX)
    if long.size:  # cut big groups into blocks of BLOCK_MAX
        cuts = [np.arange(starts[i], ends[i], BLOCK_MAX) for i in long.tolist()]
        starts = np.unique(np.concatenate([starts, *cuts]))
        ends = np.r_[starts[1:], n]
    lo = np.minimum.reduceat(t, starts)
    hi = np.maximum.reduceat(t, starts)
    sizes = ends - starts
    vb = v.astype(_F8, copy=False).tobytes()
    # times: int32 offsets from each block's start, in one pass; a block spanning 24 days or more keeps int64
    off = t - np.repeat(lo, sizes)
    wide = np.flatnonzero(hi - lo >= 1 << 31)
    tb = off.astype(_I4).tobytes()
    t_blobs = [tb[a * 4:e * 4] for a, e in zip(starts.tolist(), ends.tolist(), strict=True)]
    for i in wide.tolist():
        t_blobs[i] = t[starts[i]:ends[i]].astype(_I8).tobytes()
    # datastreams: the runs of each block (a block's 64 datastreams are a few runs of many readings)
    mark = np.empty(n, dtype=np.bool_)
    mark[0] = True
    np.not_equal(ds[1:], ds[:-1], out=mark[1:])
    mark[starts] = True  # a cut inside one datastream's run starts a new run
    run_starts = np.flatnonzero(mark)
    counts = np.diff(np.r_[run_starts, n]).astype(_I4).tobytes()
    ids = ds[run_starts].astype(_I8).tobytes()
    first_run = np.searchsorted(run_starts, starts).tolist()
    end_run = [*first_run[1:], run_starts.size]
    d_blobs = []
    for i, (r0, r1) in enumerate(zip(first_run, end_run, strict=True)):
        if 1 + 12 * (r1 - r0) < 8 * int(sizes[i]):
            d_blobs.append(b"R" + ids[r0 * 8:r1 * 8] + counts[r0 * 4:r1 * 4])
        else:  # runs of one reading each: plain ids are smaller
            d_blobs.append(encode_datastreams(ds[starts[i]:ends[i]]))
    return list(zip(group[starts].tolist(), lo.tolist(), range(seq0, seq0 + len(t_blobs)), hi.tolist(),
                    sizes.tolist(), d_blobs, t_blobs,
                    [vb[a * 8:e * 8] for a, e in zip(starts.tolist(), ends.tolist(), strict=True)], strict=True))


def _pg_blocks_copy(rows: Sequence[tuple[Any, ...]]) -> bytes:
    """COPY BINARY of block rows (int8, int8, int8, int8, int4, bytea, bytea, bytea)."""
    import struct

    head = struct.Struct(">hiqiqiqiqiii")
    parts = [_PG_HEADER]
    for grp, start, seq, end, n, dsb, tb, vb in rows:
        parts.append(head.pack(8, 8, grp, 8, start, 8, seq, 8, end, 4, n, len(dsb)))
        parts.append(dsb)
        parts.append(len(tb).to_bytes(4, "big"))
        parts.append(tb)
        parts.append(len(vb).to_bytes(4, "big"))
        parts.append(vb)
    parts.append(b"\xff\xff")
    return b"".join(parts)


class WriteLock:
    """A mutex across processes (and threads) around the store's SQLite write transactions.

    SQLite has one writer; a connection that finds the write lock taken polls for it, sleeping 1, 2, 5, 10,
    … 100 ms between tries, so a process that waits for another's commit oversleeps it by up to a third of
    the wait, its core idle. Two ingest processes on one file lost 10–20 % of their time so. An `flock` on
    a file beside the database queues the waiters in the kernel instead, which wakes the next one the
    moment the holder lets go. PostgreSQL has row locks and needs none (`for_engine` gives a no-op).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._thread = threading.Lock()  # flock is per open file: threads of one process need their own lock
        self._fd: int | None = None
        self._pid = 0

    @classmethod
    def for_engine(cls, engine: Engine) -> Any:
        db = engine.url.database
        if engine.dialect.name != "sqlite" or not db or db == ":memory:" or db.startswith("file:") or fcntl is None:
            return contextlib.nullcontext()
        return cls(f"{db}-write.lock")

    def __enter__(self) -> None:
        self._thread.acquire()
        try:
            if self._fd is None or self._pid != os.getpid():  # a forked child opens its own
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                self._pid = os.getpid()
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread.release()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread.release()


class ObservationStore:
    """Writes and reads observations beneath the ORM, for speed (see the module's docstring)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.ph = "%s" if self.dialect == "postgresql" else "?"
        #: Readings this process appended to the log since its last compaction (a hint, not a count).
        self.pending = 0
        self._compacting = threading.Lock()
        #: Held around each write transaction of this store: see `WriteLock`.
        self.writing: Any = WriteLock.for_engine(engine)
        #: This store's name on the log rows it claims for compaction.
        self.token = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    # ------------------------------------------------------------------ writing
    def insert(self, ds: np.ndarray, t: np.ndarray, v: np.ndarray) -> None:
        """Store a batch durably (committed when this returns) as one log row: all of it, or none of it.
        The log keeps the order it is given; compaction sorts."""
        if ds.size == 0:
            return
        lo = int(t.min())
        row = (int(ds.size), lo, int(t.max()), encode_datastreams(ds), encode_times(t, lo),
               v.astype(_F8, copy=False).tobytes())
        sql = (f"INSERT INTO sensing_observation_log (n, min_time, max_time, datastreams, times, results) "
               f"VALUES ({', '.join([self.ph] * 6)})")
        with self._write_transaction() as (raw, cur):
            cur.execute(sql, row)
            raw.commit()
        self.pending += int(ds.size)

    def compact(self, max_readings: int | None = None, wait: bool = False) -> int:
        """Move log rows into blocks, oldest first: all of them, or (with `max_readings`) one compaction of
        at least one row and up to that many readings. Returns the readings moved. A compaction already
        running in this process is waited for with `wait` (then this one runs too), else 0 is returned.

        Rows that another process has claimed are left to it (until its claim's lease runs out), so after
        this returns the log may still hold readings that a concurrent compaction is moving."""
        if not self._compacting.acquire(blocking=wait):
            return 0
        try:
            moved = 0
            while True:
                n = self._compact_once(max_readings or COMPACT_CHUNK)
                moved += n
                if n == 0 or max_readings is not None:
                    break
            self.pending = 0
            if moved:
                self.checkpoint()
            return moved
        finally:
            self._compacting.release()

    @contextlib.contextmanager
    def _write_transaction(self) -> Iterator[tuple[Any, Any]]:
        """A raw connection and its cursor for one write transaction of the store, under `writing`: rolled
        back if the body raises, given back to the pool after. The body commits (or rolls back) itself."""
        raw = self.engine.raw_connection()
        try:
            with self.writing:
                yield raw, raw.cursor()
        except Exception:
            raw.rollback()
            raise
        finally:
            raw.close()

    def checkpoint(self) -> None:
        """SQLite: copy the WAL into the database file now, as far as readers allow, without waiting for
        them (PASSIVE). After a compaction, so the cost of moving its pages is paid (and measured) with it
        rather than by whichever commit next crosses the automatic checkpoint's mark."""
        if self.dialect != "sqlite":
            return
        raw = self.engine.raw_connection()
        try:
            raw.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            raw.close()

    def _compact_once(self, limit: int) -> int:
        """Claim a chunk of the log, sort it and cut it into blocks with no lock held, then swap the rows for
        their blocks in one transaction — if the claim is still this compactor's; else nothing is written."""
        claimed = self._claim(limit)
        if not claimed:
            return 0
        ids = [rid for rid, _ in claimed]
        total = sum(n for _, n in claimed)
        id_list = ", ".join(map(str, ids))
        with self.engine.connect() as conn:
            got = self._rows(conn, f"SELECT {_LOG_READ} FROM sensing_observation_log "
                                   f"WHERE id IN ({id_list}) ORDER BY id")
        ds, t, v = merge_runs(*_joined(got, 0))
        # seq: unique per block for ever — the first log row's id, then the block's place in this compaction
        rows = block_rows(ds, t, v, seq0=ids[0] << 24)
        with self._write_transaction() as (raw, cur):
            if self.dialect != "postgresql":
                cur.execute("BEGIN IMMEDIATE")
            cur.execute(f"DELETE FROM sensing_observation_claims WHERE log_id IN ({id_list}) "
                        f"AND claimed_by = {self.ph}", (self.token,))
            if cur.rowcount != len(ids):  # the lease ran out and another compactor took some of them
                raw.rollback()
                return 0
            cur.execute(f"DELETE FROM sensing_observation_log WHERE id IN ({id_list})")
            self._write_blocks(cur, rows)
            raw.commit()
        return total

    def _claim(self, limit: int) -> list[tuple[int, int]]:
        """Claim the oldest unclaimed log rows (or rows whose claim outlived the lease), at least one and up
        to `limit` readings: one short transaction. Returns (id, readings) of each row claimed."""
        now = int(time.time() * 1000)
        ph = self.ph
        with self._write_transaction() as (raw, cur):
            # free: unclaimed, claimed by this store before (a compaction of its own that failed; this
            # store runs one at a time), or claimed by a compactor that outlived the lease
            sql = (f"SELECT l.id, l.n FROM sensing_observation_log l LEFT JOIN sensing_observation_claims c "
                   f"ON c.log_id = l.id WHERE c.log_id IS NULL OR c.claimed_by = {ph} OR c.claimed_at < {ph} "
                   f"ORDER BY l.id LIMIT 1024")
            args = (self.token, now - CLAIM_LEASE_MS)
            if self.dialect == "postgresql":
                cur.execute(sql + " FOR UPDATE OF l SKIP LOCKED", args)
            else:
                cur.execute("BEGIN IMMEDIATE")
                cur.execute(sql, args)
            out: list[tuple[int, int]] = []
            total = 0
            for rid, n in cur.fetchall():
                if total >= limit:
                    break
                out.append((int(rid), int(n)))
                total += int(n)
            if out:
                id_list = ", ".join(str(i) for i, _ in out)
                cur.execute(f"DELETE FROM sensing_observation_claims WHERE log_id IN ({id_list})")
                cur.executemany(f"INSERT INTO sensing_observation_claims (log_id, claimed_by, claimed_at) "
                                f"VALUES ({ph}, {ph}, {ph})", [(i, self.token, now) for i, _ in out])
            raw.commit()
            return out

    def _write_blocks(self, cur: Any, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert block rows in the caller's transaction: COPY BINARY on PostgreSQL, multi-row INSERTs on SQLite."""
        if self.dialect == "postgresql":
            with cur.copy(f"COPY sensing_observation_blocks {_BLOCK_COLS} FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(_pg_blocks_copy(rows))
        else:
            self._sqlite_blocks(cur, rows)

    def _sqlite_blocks(self, cur: Any, rows: Sequence[tuple[Any, ...]]) -> None:
        one = f"({', '.join([self.ph] * 8)})"
        for i in range(0, len(rows), SQLITE_ROWS):
            chunk = rows[i:i + SQLITE_ROWS]
            cur.execute(f"INSERT INTO sensing_observation_blocks {_BLOCK_COLS} VALUES "
                        f"{', '.join([one] * len(chunk))}", [x for r in chunk for x in r])

    # ------------------------------------------------------------------ merging small blocks
    def merge_small(self, max_groups: int = 64) -> int:
        """Second-level compaction: merge each stream group's small blocks into few full ones. Returns the
        readings rewritten.

        Why: devices that report slowly (a reading an hour), or compactions of a small log, leave many blocks
        of a few readings per group, and nothing else ever joins them, so a series read touches a row per
        compaction. Candidates are blocks under `BLOCK_MAX // 4` readings; a group is merged only when its
        candidates hold `BLOCK_MAX // 2` readings in all, and the merged readings are cut into equal blocks
        (each of about `BLOCK_MAX // 2` or more), so a merged reading is not a candidate again (unless keys
        stored twice shrank its block below a quarter): a reading is merged once, and the work is bounded by
        what compaction wrote. At most `max_groups` groups per
        call (the periodic tick calls it with a bound), one transaction per chunk of groups."""
        small, enough = BLOCK_MAX // 4, BLOCK_MAX // 2
        with self.engine.connect() as conn:
            found = conn.exec_driver_sql(
                f"SELECT stream_group, sum(n) FROM sensing_observation_blocks WHERE n < {small} "
                f"GROUP BY stream_group HAVING sum(n) >= {enough} AND count(*) > 1 "
                f"ORDER BY count(*) DESC, stream_group LIMIT {max(int(max_groups), 0)}").fetchall()
        merged = 0
        chunk: list[int] = []
        size = 0
        for grp, n in found:
            chunk.append(int(grp))
            size += int(n)
            if size >= COMPACT_CHUNK or len(chunk) >= 500:
                merged += self._merge_groups(chunk)
                chunk, size = [], 0
        if chunk:
            merged += self._merge_groups(chunk)
        if merged:
            self.checkpoint()
        return merged

    def _merge_groups(self, groups: Sequence[int]) -> int:
        """One transaction: read these groups' small blocks, merge them, delete them by primary key and
        insert the merged blocks. SQLite holds the write lock throughout (`BEGIN IMMEDIATE`), so two mergers
        take turns. PostgreSQL locks the candidates `FOR UPDATE SKIP LOCKED` and merges only what it locked:
        a concurrent merger (or a `_rewrite`, which locks what it reads) gets other rows or none, so no
        reading is ever committed in two blocks, and readers see each group before or after, never between."""
        small, enough = BLOCK_MAX // 4, BLOCK_MAX // 2
        pg = self.dialect == "postgresql"
        ph = self.ph
        with self._write_transaction() as (raw, cur):
            if not pg:
                cur.execute("BEGIN IMMEDIATE")
            cur.execute("SELECT stream_group, start_time, seq, n, start_time, datastreams, times, results "
                        f"FROM sensing_observation_blocks WHERE stream_group IN ({', '.join(map(str, groups))}) "
                        f"AND n < {small} ORDER BY stream_group, seq" + (" FOR UPDATE SKIP LOCKED" if pg else ""))
            by_group: dict[int, list[Any]] = {}
            for r in cur.fetchall():
                by_group.setdefault(int(r[0]), []).append(r)
            todo = [rs for rs in by_group.values() if len(rs) > 1 and sum(int(r[3]) for r in rs) >= enough]
            if not todo:
                raw.rollback()
                return 0
            # seq: unique for ever, as compaction's — an id of the log's own sequence, never a log row's
            base = self._take_log_id(cur) << 24
            new: list[tuple[Any, ...]] = []
            merged = 0
            for rs in todo:
                # each block is sorted; merge_runs merges them and keeps the first stored of equal keys
                ds, t, v = merge_runs(*_joined(rs, 3))
                k = -(-int(ds.size) // BLOCK_MAX)
                cuts = (np.arange(k + 1) * int(ds.size)) // k  # k equal blocks, not full ones and a stub
                for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True):
                    new.extend(block_rows(ds[a:b], t[a:b], v[a:b], base + len(new)))
                merged += sum(int(r[3]) for r in rs)
            cur.executemany(f"DELETE FROM sensing_observation_blocks WHERE stream_group = {ph} "
                            f"AND start_time = {ph} AND seq = {ph}",
                            [(int(r[0]), int(r[1]), int(r[2])) for rs in todo for r in rs])
            self._write_blocks(cur, new)
            raw.commit()
            return merged

    def _take_log_id(self, cur: Any) -> int:
        """Take the next id of the log's id sequence inside the caller's write transaction, so that no log
        row (whose id compaction turns into its blocks' seq) ever gets it."""
        if self.dialect == "postgresql":
            cur.execute("SELECT nextval(pg_get_serial_sequence('sensing_observation_log', 'id'))")
            return int(cur.fetchone()[0])
        cur.execute("SELECT seq FROM sqlite_sequence WHERE name = 'sensing_observation_log'")
        got = cur.fetchone()
        if got is None:  # no log row was ever written
            cur.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('sensing_observation_log', 1)")
            return 1
        cur.execute("UPDATE sqlite_sequence SET seq = seq + 1 WHERE name = 'sensing_observation_log'")
        return int(got[0]) + 1

    # ------------------------------------------------------------------ reading
    def _where(self, groups: Sequence[int] | None, lo: int | None, hi: int | None,
               t_lo: str, t_hi: str, grp: str | None) -> tuple[str, list[int]]:
        cond: list[str] = []
        args: list[int] = []
        if grp is not None and groups is not None:
            cond.append(f"{grp} IN ({', '.join([self.ph] * len(groups))})")
            args.extend(groups)
        if lo is not None:
            cond.append(f"{t_hi} >= {self.ph}")
            args.append(int(lo))
        if hi is not None:
            cond.append(f"{t_lo} <= {self.ph}")
            args.append(int(hi))
        return (" WHERE " + " AND ".join(cond)) if cond else "", args

    def _gather(self, ds_ids: Iterable[int] | None, lo: int | None, hi: int | None,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every stored reading of these datastreams (None: all) with lo ≤ time ≤ hi, sorted by
        (datastream, time), one per key."""
        wanted = None if ds_ids is None else np.unique(np.fromiter((int(x) for x in ds_ids), dtype=np.int64))
        if wanted is not None and wanted.size == 0:
            return _EMPTY
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        with self.engine.connect() as conn:
            # The log first, then the blocks: a compaction that commits in between moves readings from the
            # log into blocks, so they are read twice (and kept once), never missed.
            where, args = self._where(None, lo, hi, "min_time", "max_time", None)
            if wanted is None:
                rows = self._rows(conn, f"SELECT {_LOG_READ} FROM sensing_observation_log"
                                  + where + " ORDER BY id", tuple(args))
            else:
                rows = self._log_rows_of(conn, wanted, where, tuple(args))
            parts.append(_joined(rows, 0))
            groups = None if wanted is None else np.unique(wanted >> GROUP_BITS).tolist()
            chunks: list[list[int] | None] = [None] if groups is None else [
                groups[i:i + 500] for i in range(0, len(groups), 500)]
            for chunk in chunks:
                where, args = self._where(chunk, lo, hi, "start_time", "end_time", "stream_group")
                rows = self._rows(conn, f"SELECT {_BLOCK_READ} FROM sensing_observation_blocks" + where,
                                  tuple(args))
                parts.append(_joined(rows, 0))
        ds = np.concatenate([p[0] for p in parts])
        t = np.concatenate([p[1] for p in parts])
        v = np.concatenate([p[2] for p in parts])
        m = np.ones(ds.size, dtype=np.bool_) if wanted is None else np.isin(ds, wanted)
        if lo is not None:
            m &= t >= lo
        if hi is not None:
            m &= t <= hi
        return sort_unique(ds[m], t[m], v[m])

    def _log_rows_of(self, conn: Connection, wanted: np.ndarray, where: str, args: tuple[Any, ...]) -> list[Any]:
        """The log rows (as `_LOG_READ`) that `where` selects and that hold any of the `wanted` datastreams.

        Why: the duplicate check of late readings (`existing`) and `series` ask for a few datastreams, and
        reading and decoding every log row in the window cost tens of MB a call. This reads each row's
        datastreams blob only (a quarter of its bytes; for runs, the distinct ids alone are looked at), then
        the whole of the rows that hold a wanted datastream. A compaction that deletes some of them in
        between has put their readings in blocks, which the caller reads afterwards."""
        heads = self._rows(conn, f"SELECT id, n, datastreams FROM sensing_observation_log{where}", args)
        hit = sorted(int(rid) for rid, n, dsb in heads if np.isin(_stream_ids(n, dsb), wanted).any())
        rows: list[Any] = []
        for i in range(0, len(hit), 1000):
            rows.extend(self._rows(
                conn, f"SELECT {_LOG_READ} FROM sensing_observation_log "
                f"WHERE id IN ({', '.join(map(str, hit[i:i + 1000]))}) ORDER BY id"))
        return rows

    def _rows(self, conn: Connection, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """A query's rows on `conn`. On PostgreSQL they come in binary format: the arrays arrive as the bytes
        they are stored as, where the text format sends them hex-encoded (twice the bytes, encoded by the
        server and decoded by the client) — measured on 16 MB of arrays, 70–98 ms of the client's CPU in text
        against 13–29 ms in binary."""
        if self.dialect != "postgresql":
            return list(conn.exec_driver_sql(sql, tuple(args)).fetchall())
        with conn.connection.driver_connection.cursor(binary=True) as cur:
            cur.execute(sql, tuple(args) or None)
            return cur.fetchall()

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        """A connection whose reads all see one committed state of the database (SQLite: one read
        transaction; PostgreSQL: REPEATABLE READ). Paged reads need it: a `merge_small` that commits between
        two pages could move a reading from an unread block into a block already passed."""
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ")
            elif self.dialect == "sqlite":
                conn.exec_driver_sql("BEGIN")  # ended by the rollback when the connection is given back
            yield conn

    def readings(self, since_ms: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All readings with time ≥ since_ms (all of them when None) as (datastream, time, value) arrays,
        sorted by (datastream, time): what the indicators copy forward."""
        return self._gather(None, since_ms, None)

    def existing(self, ds: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Which (datastream, time) pairs are stored already (asked only for readings not newer than the
        latest value held, so the common, in-order stream never pays for it)."""
        if ds.size == 0:
            return np.zeros(0, dtype=np.bool_)
        sd, st, _ = self._gather(np.unique(ds).tolist(), int(t.min()), int(t.max()))
        # Each (datastream, time) pair as one complex number (both parts are exact in float64: ids and epoch
        # milliseconds are far below 2^53), so membership is one vectorised, sort-based test.
        return np.isin(ds.astype(np.float64) + 1j * t.astype(np.float64),
                       sd.astype(np.float64) + 1j * st.astype(np.float64))

    def series(self, datastream_id: int, start_ms: int | None = None, end_ms: int | None = None,
               limit: int = 1000, newest_first: bool = True) -> list[tuple[int, float]]:
        _, t, v = self._gather([int(datastream_id)], start_ms, end_ms)
        if newest_first:
            t, v = t[::-1], v[::-1]
        k = max(int(limit), 0)
        return list(zip(t[:k].tolist(), v[:k].tolist(), strict=True))

    def recent(self, limit: int, datastreams: Iterable[int] | None = None) -> list[tuple[int, int, float]]:
        """The newest `limit` readings (of these datastreams, or of all): (datastream, time, value), newest
        first.

        The log is read newest `max_time` first, then the blocks newest `end_time` first, each in pages, and
        each stops as soon as no unread row can hold a reading newer than the `limit`-th newest found so far:
        the SensorThings collection then reads a page or two of the log (up to a million readings) instead
        of all of it. All in one snapshot (`_snapshot`), the log before the blocks as everywhere."""
        k = max(int(limit), 0)
        wanted = None if datastreams is None else np.unique(np.fromiter((int(x) for x in datastreams),
                                                                        dtype=np.int64))
        if k == 0 or (wanted is not None and wanted.size == 0):
            return []
        groups = None if wanted is None else np.unique(wanted >> GROUP_BITS).tolist()
        if groups is not None and len(groups) > 500:
            groups = None  # read all blocks; the datastream filter below still applies
        best = _EMPTY

        def take(arrays: tuple[np.ndarray, np.ndarray, np.ndarray]) -> int | None:
            """Keep the newest readings found so far, one per key (the first read wins), dropping those older
            than the k-th newest; returns that k-th newest time (None while fewer than k are known)."""
            nonlocal best
            d, t, v = arrays
            if wanted is not None:
                m = np.isin(d, wanted)
                d, t, v = d[m], t[m], v[m]
            d, t, v = sort_unique(*(np.concatenate([best[i], x]) for i, x in enumerate((d, t, v))))
            if d.size < k:
                best = (d, t, v)
                return None
            kth = int(np.partition(t, d.size - k)[d.size - k])
            m = t >= kth
            best = (d[m], t[m], v[m])
            return kth

        ph = self.ph
        with self._snapshot() as conn:
            after: tuple[int, int] | None = None
            page = 16
            heads: list[tuple[int, int]] = []
            if wanted is not None:
                # a few datastreams: the (max_time, id) of the rows that hold them, from their datastreams
                # blobs alone, newest first; then those rows in pages
                heads = [(int(mt), int(rid)) for mt, rid, n, dsb in self._rows(
                    conn, "SELECT max_time, id, n, datastreams FROM sensing_observation_log")
                    if np.isin(_stream_ids(n, dsb), wanted).any()]
                heads.sort(reverse=True)
            while True:
                if wanted is not None:
                    ids = ", ".join(str(rid) for _, rid in heads[:page]) or "NULL"
                    heads = heads[page:]
                    rows = self._rows(
                        conn, f"SELECT max_time, id, {_LOG_READ} FROM sensing_observation_log WHERE id IN ({ids}) "
                        f"ORDER BY max_time DESC, id DESC")
                else:
                    where, args = "", ()
                    if after is not None:  # the next page by (max_time, id) descending
                        where = f" WHERE max_time < {ph} OR (max_time = {ph} AND id < {ph})"
                        args = (after[0], *after)
                    rows = self._rows(
                        conn, f"SELECT max_time, id, {_LOG_READ} FROM sensing_observation_log{where} "
                        f"ORDER BY max_time DESC, id DESC LIMIT {page}", args)
                kth = take(_joined(rows, 2))
                # every unread log row's readings are no newer than the last row's max_time
                if len(rows) < page or (kth is not None and kth > int(rows[-1][0])):
                    break
                after = (int(rows[-1][0]), int(rows[-1][1]))
                page = min(page * 4, 4096)
            offset, page = 0, 64
            where, bargs = self._where(groups, None, None, "start_time", "end_time", "stream_group")
            while True:
                rows = self._rows(
                    conn, f"SELECT end_time, {_BLOCK_READ} FROM sensing_observation_blocks{where} "
                    f"ORDER BY end_time DESC LIMIT {page} OFFSET {offset}", tuple(bargs))
                kth = take(_joined(rows, 1))
                offset += page
                # every unread block ends no later than the last one read
                if len(rows) < page or (kth is not None and kth > int(rows[-1][0])):
                    break
                page = min(page * 4, 4096)
        ds, t, v = best
        order = np.lexsort((-ds, -t))[:k]
        return list(zip(ds[order].tolist(), t[order].tolist(), v[order].tolist(), strict=True))

    def count(self) -> int:
        """Readings stored (during a compaction it may count some twice, never fewer)."""
        with self.engine.connect() as conn:  # the log first (see `_gather`): a racing compaction counts twice
            b = conn.exec_driver_sql("SELECT coalesce(sum(n), 0) FROM sensing_observation_log").scalar()
            a = conn.exec_driver_sql("SELECT coalesce(sum(n), 0) FROM sensing_observation_blocks").scalar()
        return int(a or 0) + int(b or 0)

    # ------------------------------------------------------------------ changing what is stored
    def _rewrite(self, where: str, args: tuple[Any, ...],
                 change: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]) -> int:
        """Compact, then rewrite the blocks that `where` selects: `change(ds, t, v)` answers which readings
        to drop (a mask) and may change values in place. One transaction; returns the readings dropped."""
        self.compact(wait=True)  # what is to change must be in blocks
        ph = self.ph
        with self._write_transaction() as (raw, cur):
            if self.dialect != "postgresql":
                cur.execute("BEGIN IMMEDIATE")
            # PostgreSQL: lock what is rewritten, so a concurrent `merge_small` skips it (else both could
            # write its readings anew)
            cur.execute("SELECT stream_group, start_time, seq, n, datastreams, times, results "
                        "FROM sensing_observation_blocks" + where
                        + (" FOR UPDATE" if self.dialect == "postgresql" else ""), args)
            dropped = 0
            for grp, start, seq, n, dsb, tb, vb in cur.fetchall():
                d, t, v = (a.copy() for a in decode(n, start, dsb, tb, vb))
                before = v.copy()
                drop = change(d, t, v)
                if not drop.any() and np.array_equal(before, v, equal_nan=True):
                    continue
                dropped += int(drop.sum())
                cur.execute(f"DELETE FROM sensing_observation_blocks WHERE stream_group = {ph} "
                            f"AND start_time = {ph} AND seq = {ph}", (int(grp), int(start), int(seq)))
                keep = ~drop
                if keep.any():
                    new = block_rows(d[keep], t[keep], v[keep], int(seq))
                    cur.executemany(f"INSERT INTO sensing_observation_blocks {_BLOCK_COLS} VALUES "
                                    f"({', '.join([ph] * 8)})", new)
            raw.commit()
            return dropped

    def purge_before(self, cutoff_ms: int) -> int:
        """The retention policy: delete observations older than the cutoff (whole blocks at once; a block
        that straddles the cutoff is cut)."""
        self.compact(wait=True)
        ph = self.ph
        cutoff = int(cutoff_ms)
        with self.writing, self.engine.begin() as conn:
            gone = conn.exec_driver_sql(f"SELECT coalesce(sum(n), 0) FROM sensing_observation_blocks "
                                        f"WHERE end_time < {ph}", (cutoff,)).scalar()
            conn.exec_driver_sql(f"DELETE FROM sensing_observation_blocks WHERE end_time < {ph}", (cutoff,))
        return int(gone or 0) + self._rewrite(f" WHERE start_time < {ph}", (cutoff,),
                                              lambda d, t, v: t < cutoff)

    def _one(self, ds: int, t: int, value: float | None) -> bool:
        """Change (value) or delete (None) the reading at (datastream, time); False when there is none."""
        hit = [False]

        def change(d: np.ndarray, tt: np.ndarray, v: np.ndarray) -> np.ndarray:
            at = (d == ds) & (tt == t)
            hit[0] = hit[0] or bool(at.any())
            if value is None:
                return at
            v[at] = value
            return np.zeros(d.size, dtype=np.bool_)

        ph = self.ph
        where = f" WHERE stream_group = {ph} AND start_time <= {ph} AND end_time >= {ph}"
        for _ in range(50):
            self._rewrite(where, (int(ds) >> GROUP_BITS, int(t), int(t)), change)
            if hit[0] or not self.existing(np.array([ds]), np.array([t]))[0]:
                return hit[0]
            # still in a log row that another process is compacting (PostgreSQL skips locked rows): once it
            # commits, the reading is in a block
            time.sleep(0.1)
        raise TimeoutError(f"reading ({ds}, {t}) stayed in a compaction for 5 s")

    def update_result(self, ds: int, t: int, v: float) -> bool:
        """Set the result of one stored reading; False when there is none at (datastream, time)."""
        return self._one(int(ds), int(t), float(v))

    def delete_one(self, ds: int, t: int) -> bool:
        """Delete one stored reading; False when there is none at (datastream, time)."""
        return self._one(int(ds), int(t), None)
