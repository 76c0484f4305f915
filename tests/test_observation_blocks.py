"""The observation store's log and blocks, on SQLite and PostgreSQL, checked against a plain model.

The store keeps accepted batches as log rows and compacts them into per-datastream blocks; every
reader must see the same readings whether they are still in the log, in blocks, or both, with one
reading per (datastream, time) key, and compaction, retention and the migration from the old row
table must lose nothing and invent nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sqlalchemy import text

from zhizhi.adapters import db
from zhizhi.adapters import observations_store as st
from zhizhi.adapters.observations_store import ObservationStore

T0 = 1_795_000_000_000


@pytest.fixture
def store(database_url: str) -> Any:
    engine = db.make_engine(database_url)
    db.upgrade(engine)
    yield ObservationStore(engine)
    engine.dispose()


def _batch(rng: np.random.Generator, n: int, streams: int, t_lo: int, t_hi: int) -> tuple[np.ndarray, ...]:
    ds = rng.integers(1, streams + 1, n).astype(np.int64)
    t = rng.integers(t_lo, t_hi, n).astype(np.int64)
    v = rng.normal(10, 3, n)
    return ds, t, v


def _model(batches: list[tuple[np.ndarray, ...]]) -> dict[tuple[int, int], float]:
    """What the store must hold: the first value given for each (datastream, time)."""
    want: dict[tuple[int, int], float] = {}
    for ds, t, v in batches:
        for a, b, c in zip(ds.tolist(), t.tolist(), v.tolist(), strict=True):
            want.setdefault((a, b), c)
    return want


def _all(store: ObservationStore) -> dict[tuple[int, int], float]:
    ds, t, v = store.readings()
    assert ds.size == len(set(zip(ds.tolist(), t.tolist(), strict=True))), "one reading per key"
    return {(a, b): c for a, b, c in zip(ds.tolist(), t.tolist(), v.tolist(), strict=True)}


def test_readers_see_the_same_readings_in_the_log_in_blocks_and_in_both(store: ObservationStore) -> None:
    rng = np.random.default_rng(7)
    batches = [_batch(rng, 3000, 200, T0, T0 + 3_600_000) for _ in range(4)]  # datastreams in 4 groups
    for b in batches[:2]:
        store.insert(*b)
    want_half = _model(batches[:2])
    assert _all(store) == want_half  # all in the log
    moved = store.compact()
    assert moved == sum(b[0].size for b in batches[:2])
    assert _all(store) == want_half  # all in blocks (duplicates across batches kept once)
    for b in batches[2:]:
        store.insert(*b)
    want = _model(batches)
    assert _all(store) == want  # blocks and log together
    assert store.count() >= len(want)
    # one datastream's series, a time window, newest first and oldest first
    lo, hi = T0 + 600_000, T0 + 1_800_000
    expect = sorted((t, v) for (d, t), v in want.items() if d == 5 and lo <= t <= hi)
    assert store.series(5, lo, hi, limit=10_000, newest_first=False) == expect
    assert store.series(5, lo, hi, limit=3) == expect[::-1][:3]
    # the newest readings of a few datastreams, and of all
    newest = sorted(((t, d, v) for (d, t), v in want.items() if d in (3, 4)), reverse=True)[:25]
    got = store.recent(25, [3, 4])
    assert [(t, d) for d, t, _ in got] == [(t, d) for t, d, _ in newest]
    assert [r[1] for r in store.recent(10)] == sorted((t for _, t in want), reverse=True)[:10]
    store.compact()
    assert _all(store) == want
    assert [(t, d) for d, t, _ in store.recent(25, [3, 4])] == [(t, d) for t, d, _ in newest]


def test_existing_finds_stored_pairs_in_log_and_blocks(store: ObservationStore) -> None:
    ds = np.array([1, 1, 2, 3], dtype=np.int64)
    t = np.array([T0, T0 + 60_000, T0, T0 + 5], dtype=np.int64)
    store.insert(ds[:2], t[:2], np.ones(2))
    store.compact()
    store.insert(ds[2:], t[2:], np.ones(2))
    asked_ds = np.array([1, 1, 2, 3, 3, 4], dtype=np.int64)
    asked_t = np.array([T0, T0 + 1, T0, T0 + 5, T0 + 6, T0], dtype=np.int64)
    assert store.existing(asked_ds, asked_t).tolist() == [True, False, True, True, False, False]


def test_long_series_are_cut_into_blocks_and_read_back_whole(store: ObservationStore,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(st, "BLOCK_MAX", 100)
    t = T0 + np.arange(1050, dtype=np.int64) * 1000
    store.insert(np.full(t.size, 9, dtype=np.int64), t, t.astype(np.float64))
    store.compact()
    with store.engine.connect() as conn:
        sizes = [r[0] for r in conn.execute(text(
            "SELECT n FROM sensing_observation_blocks WHERE stream_group = 0 ORDER BY start_time"))]
    assert sizes == [100] * 10 + [50]
    assert store.series(9, limit=5000, newest_first=False) == [(int(x), float(x)) for x in t]


def test_retention_drops_old_blocks_and_cuts_the_one_that_straddles(store: ObservationStore) -> None:
    t = T0 + np.arange(100, dtype=np.int64) * 60_000
    store.insert(np.full(100, 1, dtype=np.int64), t, np.arange(100, dtype=np.float64))
    store.compact()
    store.insert(np.full(100, 1, dtype=np.int64), t + 100 * 60_000, np.arange(100, 200, dtype=np.float64))
    cutoff = int(t[0] + 130 * 60_000)
    assert store.purge_before(cutoff) == 130
    left = store.series(1, limit=1000, newest_first=False)
    assert len(left) == 70 and left[0] == (cutoff, 130.0)


def test_compaction_is_atomic_a_failure_leaves_the_log(store: ObservationStore,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    b = _batch(rng, 500, 10, T0, T0 + 100_000)
    store.insert(*b)

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("disk full")

    monkeypatch.setattr(st, "block_rows", broken)
    with pytest.raises(RuntimeError):
        store.compact()
    monkeypatch.undo()
    assert _all(store) == _model([b])
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM sensing_observation_log")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM sensing_observation_blocks")).scalar() == 0
    assert store.compact() == 500  # the failed compaction's claim does not keep the rows from its own store
    assert _all(store) == _model([b])
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM sensing_observation_log")).scalar() == 0


def test_compactors_in_parallel_claim_different_rows_and_lose_nothing(database_url: str) -> None:
    """Several stores (as several processes would) compact one log at once: each claims its own chunk, and
    every reading ends in exactly one block."""
    import threading

    engine = db.make_engine(database_url)
    db.upgrade(engine)
    stores = [ObservationStore(engine) for _ in range(3)]
    rng = np.random.default_rng(11)
    # batches of distinct keys (as ingest stores them: a key already stored is refused as a duplicate)
    batches = [_batch(rng, 2000, 300, T0 + k * 3_600_000, T0 + (k + 1) * 3_600_000) for k in range(12)]
    for b in batches:
        stores[0].insert(*b)
    moved: list[int] = []
    errors: list[BaseException] = []

    def run(s: ObservationStore) -> None:
        try:
            moved.append(s.compact(max_readings=4000))
            moved.append(s.compact())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert sum(moved) == sum(b[0].size for b in batches)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM sensing_observation_log")).scalar() == 0
        stored = conn.execute(text("SELECT coalesce(sum(n), 0) FROM sensing_observation_blocks")).scalar()
    want = _model(batches)
    assert stored == len(want)  # each reading in one block (a repeat inside a batch is dropped)
    assert _all(stores[1]) == want
    engine.dispose()


def test_a_dead_compactors_claim_is_taken_over_after_the_lease(store: ObservationStore,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    b = _batch(rng, 800, 20, T0, T0 + 100_000)
    store.insert(*b)
    dead = ObservationStore(store.engine)
    assert [n for _, n in dead._claim(10_000)] == [800]  # claimed, then its process "dies"
    assert store.compact() == 0  # another process's live claim is left alone
    monkeypatch.setattr(st, "CLAIM_LEASE_MS", -1)  # the lease has run out
    assert store.compact() == 800
    monkeypatch.undo()
    # the dead compactor wakes up and tries to finish: its claim is gone, so it writes nothing
    assert dead._compact_once(10_000) == 0
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT coalesce(sum(n), 0) FROM sensing_observation_blocks")).scalar() == \
            len(_model([b]))
    assert _all(store) == _model([b])


def test_the_migration_moves_row_readings_into_blocks_and_back(database_url: str) -> None:
    """0006 → 0007 with readings in the old row table; then down again."""
    from alembic import command

    engine = db.make_engine(database_url)
    cfg = db.alembic_config(engine)
    command.upgrade(cfg, "0006")
    rng = np.random.default_rng(11)
    ds, t, v = _batch(rng, 5000, 30, T0, T0 + 10_000_000)
    want = _model([(ds, t, v)])
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO sensing_observations (datastream_id, phenomenon_time, result) "
                          "VALUES (:d, :t, :v)"), [{"d": d, "t": tt, "v": vv} for (d, tt), vv in want.items()])
    command.upgrade(cfg, "0007")
    assert _all(ObservationStore(engine)) == want
    command.downgrade(cfg, "0006")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT datastream_id, phenomenon_time, result FROM sensing_observations")).all()
    assert {(a, b): c for a, b, c in rows} == want
    engine.dispose()


def test_narrow_data_goes_back_to_the_row_table_on_downgrade(database_url: str) -> None:
    """Head → 0006 with narrow log rows and blocks: 0010 widens them, 0007 then reads them back into rows."""
    from alembic import command

    engine = db.make_engine(database_url)
    db.upgrade(engine)
    store = ObservationStore(engine)
    rng = np.random.default_rng(12)
    batches = [_batch(rng, 3000, 150, T0 + k * 10_000_000, T0 + (k + 1) * 10_000_000) for k in range(3)]
    for b in batches[:2]:
        store.insert(*b)
    store.compact()
    store.insert(*batches[2])  # one batch stays in the log
    want = _model(batches)
    assert _all(store) == want
    command.downgrade(db.alembic_config(engine), "0006")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT datastream_id, phenomenon_time, result FROM sensing_observations")).all()
    assert {(a, b): c for a, b, c in rows} == want
    engine.dispose()


def test_the_arrays_are_compressed_with_lz4_on_postgresql_and_read_back(database_url: str) -> None:
    """Migration 0011: on PostgreSQL the log's and the blocks' arrays are compressed with LZ4 where the server
    has it, and come back exactly; its downgrade stores them uncompressed again, as 0007 did.
    SQLite stores them as they are (the blob is the encoded array, byte for byte)."""
    from alembic import command

    engine = db.make_engine(database_url)
    db.upgrade(engine)
    store = ObservationStore(engine)
    rng = np.random.default_rng(21)
    ds = np.repeat(np.arange(1, 101, dtype=np.int64), 500)  # compressible, as a city's ids and times are
    t = T0 + np.tile(np.arange(500, dtype=np.int64) * 60_000, 100)
    v = np.round(rng.normal(10, 3, ds.size), 2)
    store.insert(ds, t, v)
    store.insert(ds, t + 500 * 60_000, v)
    store.compact(max_readings=ds.size)  # one row compacted into blocks, one left in the log
    want = _model([(ds, t, v), (ds, t + 500 * 60_000, v)])
    assert _all(store) == want
    if engine.dialect.name != "postgresql":
        with engine.connect() as conn:
            assert conn.execute(text("SELECT length(times) FROM sensing_observation_log")).scalar() == 4 * ds.size
        engine.dispose()
        return
    check = text("SELECT c.relname, a.attname, a.attstorage::text || a.attcompression::text "
                 "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                 "WHERE c.relname IN ('sensing_observation_log', 'sensing_observation_blocks') "
                 "AND a.attname IN ('datastreams', 'times', 'results')")
    with engine.connect() as conn:
        has_lz4 = conn.execute(text("SELECT 'lz4' = ANY(enumvals) FROM pg_settings "
                                    "WHERE name = 'default_toast_compression'")).scalar()
        got = {(r[0], r[1]): r[2] for r in conn.execute(check)}
        methods = {r[0] for r in conn.execute(text(
            "SELECT pg_column_compression(times) FROM sensing_observation_log UNION "
            "SELECT pg_column_compression(times) FROM sensing_observation_blocks"))}
    assert len(got) == 6 and set(got.values()) == ({"xl"} if has_lz4 else {"e"})  # extended + lz4, or external
    assert methods == ({"lz4"} if has_lz4 else {None})
    command.downgrade(db.alembic_config(engine), "0010")
    with engine.connect() as conn:
        assert {r[2] for r in conn.execute(check)} == {"e"}
    assert _all(store) == want  # rows compressed before stay readable
    engine.dispose()


@pytest.mark.parametrize(("ids", "size"), [
    (np.repeat(np.arange(5, 69, dtype=np.int64), 40), 1 + 12 * 64),  # few long runs: run-length
    (np.arange(1000, 5000, dtype=np.int64), 4 * 4000),               # all distinct, small: int32
    (np.arange(1000, dtype=np.int64) + (1 << 40), 8 * 1000),         # all distinct, big: int64
])
def test_every_encoding_decodes_to_what_was_encoded(ids: np.ndarray, size: int) -> None:
    t = T0 + np.arange(ids.size, dtype=np.int64) * 7
    for times, base in ((t, T0), (T0 + np.arange(ids.size, dtype=np.int64) * 86_400_000, T0)):  # 2nd: > 24 days
        d_b, t_b = st.encode_datastreams(ids), st.encode_times(times, base)
        d, tt, v = st.decode(ids.size, base, d_b, t_b, np.arange(ids.size, dtype=np.float64).tobytes())
        assert d.tolist() == ids.tolist() and tt.tolist() == times.tolist()
        assert v.tolist() == [float(i) for i in range(ids.size)]
    assert len(st.encode_datastreams(ids)) == size


def test_blocks_take_13_to_14_bytes_a_reading_and_cut_runs_correctly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A compaction of round-robin readings (every datastream once a minute): blocks of a stream group hold
    runs of datastream ids and int32 time offsets, so a reading costs about 13 bytes, not 24; a block cut
    inside one datastream's run still decodes to the readings it was given."""
    ds = np.repeat(np.arange(1, 641, dtype=np.int64), 60)  # 640 datastreams × 60 minutes
    t = T0 + np.tile(np.arange(60, dtype=np.int64) * 60_000, 640)
    v = np.arange(ds.size, dtype=np.float64)
    rows = st.block_rows(ds, t, v, seq0=1 << 24)
    size = sum(len(r[5]) + len(r[6]) + len(r[7]) for r in rows)
    assert size / ds.size < 14
    monkeypatch.setattr(st, "BLOCK_MAX", 1000)  # 1000 is no multiple of 60: cuts fall inside runs
    got = [st.decode(r[4], r[1], r[5], r[6], r[7]) for r in st.block_rows(ds, t, v, seq0=1 << 24)]
    assert np.concatenate([g[0] for g in got]).tolist() == ds.tolist()
    assert np.concatenate([g[1] for g in got]).tolist() == t.tolist()
    assert np.concatenate([g[2] for g in got]).tolist() == v.tolist()


def test_one_reading_is_corrected_or_deleted_wherever_it_is(store: ObservationStore) -> None:
    t = T0 + np.arange(10, dtype=np.int64) * 1000
    store.insert(np.full(10, 70, dtype=np.int64), t, np.arange(10, dtype=np.float64))
    store.compact()
    store.insert(np.full(3, 71, dtype=np.int64), t[:3], np.ones(3))  # still in the log
    assert store.update_result(70, int(t[4]), 44.0)
    assert store.delete_one(70, int(t[0]))  # the block's first reading: its start time moves
    assert store.delete_one(71, int(t[1]))  # compacted first, then cut
    assert not store.delete_one(70, int(t[0]))
    assert not store.update_result(70, int(t[0]) + 1, 1.0)
    got = dict(store.series(70, limit=100))
    assert len(got) == 9 and got[int(t[4])] == 44.0 and int(t[0]) not in got
    assert [x for x, _ in store.series(71, limit=100, newest_first=False)] == [int(t[0]), int(t[2])]


def test_the_write_lock_keeps_other_processes_out_while_held(tmp_path: Any) -> None:
    """SQLite writers of the store queue on an flock beside the database (see `WriteLock`)."""
    import subprocess
    import sys

    engine = db.make_engine(f"sqlite:///{tmp_path / 'obs.db'}")
    lock = ObservationStore(engine).writing
    assert isinstance(lock, st.WriteLock) and lock.path == str(tmp_path / "obs.db-write.lock")
    probe = ("import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
             "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(3)\n")
    with lock:
        assert subprocess.run([sys.executable, "-c", probe, lock.path]).returncode == 3  # held: refused
    assert subprocess.run([sys.executable, "-c", probe, lock.path]).returncode == 0  # let go: taken
    engine.dispose()


# ------------------------------------------------------------------ merging small blocks
def _slow_devices(store: ObservationStore, hours: int, streams: list[int], first_hour: int = 0,
                  ) -> list[tuple[np.ndarray, ...]]:
    """A compaction an hour of devices that report once an hour: one small block per stream group each."""
    batches = []
    for h in range(first_hour, first_hour + hours):
        ds = np.array(streams, dtype=np.int64)
        t = T0 + h * 3_600_000 + ds * 1000  # distinct keys: each (datastream, hour) once
        b = (ds, t, ds * 1000.0 + h)
        store.insert(*b)
        store.compact()
        batches.append(b)
    return batches


def _blocks(store: ObservationStore) -> dict[int, list[int]]:
    """Each stream group's block sizes."""
    out: dict[int, list[int]] = {}
    with store.engine.connect() as conn:
        for g, n in conn.execute(text("SELECT stream_group, n FROM sensing_observation_blocks "
                                      "ORDER BY stream_group, start_time, seq")):
            out.setdefault(int(g), []).append(int(n))
    return out


def _readers_match(store: ObservationStore, want: dict[tuple[int, int], float]) -> None:
    assert _all(store) == want
    for d in {d for d, _ in want}:
        expect = sorted((t, v) for (dd, t), v in want.items() if dd == d)
        assert store.series(d, limit=100_000, newest_first=False) == expect
    newest = sorted(((t, d, v) for (d, t), v in want.items()), reverse=True)
    assert store.recent(37) == [(d, t, v) for t, d, v in newest[:37]]
    some = [d for _, d, _ in newest[:3]]
    assert store.recent(11, some) == [(d, t, v) for t, d, v in newest if d in some][:11]
    keys = list(want)[::7]
    asked_ds = np.array([d for d, _ in keys] + [d for d, _ in keys], dtype=np.int64)
    asked_t = np.array([t for _, t in keys] + [t + 1 for _, t in keys], dtype=np.int64)
    assert store.existing(asked_ds, asked_t).tolist() == [True] * len(keys) + [False] * len(keys)


def test_merge_small_joins_the_small_blocks_of_slow_devices(store: ObservationStore,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(st, "BLOCK_MAX", 64)  # candidates: n < 16; a group merges from 32 readings
    # group 0: 10 devices, group 1: 3 devices (merged), group 2: 1 device (20 readings: left alone),
    # group 3: 40 devices (blocks of 40: no candidates)
    streams = [*range(1, 11), 64, 65, 66, 130, *range(192, 232)]
    batches = _slow_devices(store, 20, streams)
    want = _model(batches)
    before = _blocks(store)
    assert [len(before[g]) for g in range(4)] == [20, 20, 20, 20]
    assert store.merge_small() == 20 * 10 + 20 * 3
    after = _blocks(store)
    assert after[0] == [50, 50, 50, 50]  # equal blocks, each above the candidates' size
    assert after[1] == [60]
    assert after[2] == before[2] and after[3] == before[3]  # below the threshold / not small: untouched
    _readers_match(store, want)
    assert store.merge_small() == 0  # merged readings are not merged again
    assert _blocks(store) == after
    # more hours later: the new small blocks merge, the merged ones stay; seqs never collide with compaction's
    more = _slow_devices(store, 4, streams, first_hour=20)
    assert store.merge_small() == 4 * 10  # group 0's 40 new readings; groups 1 (12) and 2 (24) wait
    assert _blocks(store)[0] == [50, 50, 50, 50, 40]
    _readers_match(store, _model(batches + more))


def test_merge_small_is_bounded_by_max_groups(store: ObservationStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(st, "BLOCK_MAX", 64)
    batches = _slow_devices(store, 8, [1, 2, 3, 4, 64, 65, 66, 67, 128, 129, 130, 131])  # 3 groups of 32
    assert store.merge_small(max_groups=2) == 64
    assert sorted(len(b) for b in _blocks(store).values()) == [1, 1, 8]
    assert store.merge_small(max_groups=2) == 32
    assert store.merge_small() == 0
    _readers_match(store, _model(batches))


def test_mergers_in_parallel_lose_nothing_and_double_nothing(database_url: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Several stores (as several processes would) merge at once, while a reader reads: every reading ends in
    exactly one block, and a reader never misses one."""
    import threading

    monkeypatch.setattr(st, "BLOCK_MAX", 64)
    engine = db.make_engine(database_url)
    db.upgrade(engine)
    stores = [ObservationStore(engine) for _ in range(3)]
    streams = [g * 64 + i for g in range(12) for i in range(1, 9)]  # 12 groups of 8 slow devices
    batches = _slow_devices(stores[0], 6, streams)
    want = _model(batches)
    merged: list[int] = []
    errors: list[BaseException] = []
    go = threading.Barrier(len(stores) + 1)

    def merge(s: ObservationStore) -> None:
        try:
            go.wait()
            for _ in range(3):
                merged.append(s.merge_small(max_groups=4))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def read() -> None:
        try:
            go.wait()
            for _ in range(10):
                assert _all(stores[0]) == want
                newest = sorted(((t, d) for d, t in want), reverse=True)[:30]
                assert [(t, d) for d, t, _ in stores[0].recent(30)] == newest
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=merge, args=(s,)) for s in stores] + [threading.Thread(target=read)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    stores[0].merge_small()  # whatever a skipped lock left
    assert sum(merged) <= len(want)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT coalesce(sum(n), 0) FROM sensing_observation_blocks")).scalar()
    assert stored == len(want)  # no reading in two blocks
    assert all(len(b) == 1 for b in _blocks(stores[0]).values())  # each group's 48 readings in one block
    _readers_match(stores[0], want)
    engine.dispose()


# ------------------------------------------------------------------ recent() reads only the newest log rows
def test_recent_reads_only_the_newest_log_rows(store: ObservationStore, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(21)
    # 300 batches a minute apart, each over its own minute, in shuffled order; some late readings in blocks
    batches = [_batch(rng, 50, 100, T0 + k * 60_000, T0 + (k + 1) * 60_000) for k in range(300)]
    late = batches[250:260]
    for b in late:
        store.insert(*b)
    store.compact()
    for i in rng.permutation(300).tolist():
        if not 250 <= i < 260:
            store.insert(*batches[i])
    want = _model(batches)
    newest = sorted(((t, d, v) for (d, t), v in want.items()), reverse=True)
    fetched: list[int] = []
    joined = st._joined

    def counting(rows: Any, at: int) -> Any:
        if at == 2:  # recent's log pages
            fetched.append(len(rows))
        return joined(rows, at)

    monkeypatch.setattr(st, "_joined", counting)
    for k in (1, 30, 200, 5000):
        fetched.clear()
        assert store.recent(k) == [(d, t, v) for t, d, v in newest[:k]]
        if k <= 200:  # the newest batches are in the first page or two of the log
            assert sum(fetched) <= 16 + 64, (k, fetched)
    fetched.clear()
    assert store.recent(10**6) == [(d, t, v) for t, d, v in newest]  # a full scan: everything, once
    assert sum(fetched) == 290
    some = [3, 4, 99]
    assert store.recent(40, some) == [(d, t, v) for t, d, v in newest if d in some][:40]


def test_a_merge_between_two_pages_of_recent_hides_nothing(store: ObservationStore,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`recent` pages through blocks; a merge that commits after its first page turns the unread small blocks
    into merged ones that sort before the offset reached. The reader's snapshot still sees the old blocks."""
    monkeypatch.setattr(st, "BLOCK_MAX", 64)
    batches = _slow_devices(store, 100, list(range(1, 11)))  # 100 blocks of 10 readings, an hour apart
    want = _model(batches)
    newest = sorted(((t, d, v) for (d, t), v in want.items()), reverse=True)
    other = ObservationStore(store.engine)
    joined = st._joined
    merged: list[int] = []

    def merging(rows: Any, at: int) -> Any:
        if at == 1 and not merged:  # after recent's first page of blocks
            merged.append(other.merge_small())
        return joined(rows, at)

    monkeypatch.setattr(st, "_joined", merging)
    assert store.recent(700) == [(d, t, v) for t, d, v in newest[:700]]
    assert merged == [1000]
    monkeypatch.setattr(st, "_joined", joined)
    _readers_match(store, want)
