"""Vital signs at scale: the whole indicator tree, for every area at every level, over 10 million cases.

Generates N cases (default 10,000,000) straight into the DuckDB snapshot the engine reads — in the same
columns `Snapshot.refresh` writes from the case store — spread over the Chongqing demo city's grids by
population, over 2026 up to the bench's "now" (2026-11-23), with realistic shares of states, durations,
overdue marks, satisfaction scores and repeats, plus sensing alarms (one per 50 cases), devices (one per 500)
and readings (one per 5). It builds the cube (`zhizhi.analytics.cube`), then times:

* facts, year:  every fact of every slice of the tree, for all areas at all five levels, for the year 2026
  (the window holds every generated case);
* facts, month: the same for November 2026;
* values, all:  every indicator's value and light for every area at every level;
* the same facts by a full scan of the cases (the way before the cube), and a check that they are identical;
* an incremental change (`--changes` cases closed or reported, written by the refresh's write path), then
  one cube sync, and the check again.

Separately it measures the incremental copy from a real store into the snapshot (`--refresh-rows` cases
written to a fresh SQLite file, then one `Snapshot.refresh`).

The figures depend on the machine: the script prints the cores DuckDB used. Usage:
python bench/indicators.py [--cases N] [--repeat R] [--refresh-rows M] [--city demo|tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, emit, workdir

NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
YEAR_START = datetime(2025, 12, 31, 16, 0, tzinfo=UTC)  # 2026-01-01 00:00 in Chongqing
CHUNK = 1_000_000


def city_places(which: str, cache_dir: Path) -> tuple[list[tuple[str, str, int, str | None, int | None]], str]:
    """Places as (code, name, level, parent, population), without geometry (the bench needs only the tree)."""
    if which == "demo":
        from zhizhi.geo.demo_city import load_or_build_demo_city

        path = load_or_build_demo_city(cache_dir)
        feats = json.loads(path.read_text(encoding="utf-8"))["features"]
        label = f"demo city ({path.name})"
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from conftest import tiny_city_features

        feats, label = tiny_city_features(), "tiny test city"
    levels = {"city": 0, "district": 1, "street": 2, "community": 3, "grid": 4}
    rows = [(f["properties"]["code"], f["properties"]["name"], levels[f["properties"]["level"]],
             f["properties"].get("parent_code"), f["properties"].get("population")) for f in feats]
    return rows, label


def generate(snapshot: Any, n: int, seed: int, categories: list[str]) -> None:
    """Write n synthetic cases (in report-time order) and a fiftieth as many alarms into the snapshot."""
    con = snapshot.con
    grids = con.execute("SELECT place_id, coalesce(population, 1) FROM places WHERE level = 4 "
                        "ORDER BY place_id").fetchnumpy()
    if len(grids["place_id"]) == 0:
        grids = con.execute("SELECT place_id, coalesce(population, 1) FROM places "
                            "WHERE level = (SELECT max(level) FROM places) ORDER BY place_id").fetchnumpy()
    gid = grids["place_id"].astype(np.int32)
    gw = np.maximum(np.asarray(list(grids.values())[1], dtype=np.float64), 1.0)
    gw /= gw.sum()
    rng = np.random.default_rng(seed)
    cw = 1.0 / np.arange(1, len(categories) + 1) ** 0.9  # Zipf-like: a few categories dominate
    cw = rng.permutation(cw)
    cw /= cw.sum()
    con.register("_cats", {"k": np.arange(len(categories), dtype=np.int32), "code": np.array(categories, dtype=object)})
    snapshot.add_categories("SELECT code FROM _cats")
    con.execute("CREATE OR REPLACE TEMP TABLE cats AS SELECT c.k, c.code, d.cat_id FROM _cats c "
                "JOIN categories d USING (code)")
    t0, t1 = YEAR_START.timestamp(), NOW.timestamp()
    span = (t1 - t0) / n
    closed_ts = "make_timestamp(g.rep_us + g.closing::BIGINT * 1000000)"
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        ids = np.arange(start + 1, start + m + 1, dtype=np.int64)
        rep = t0 + (ids - 1) * span + rng.random(m) * span  # sorted by report time
        age_days = (t1 - rep) / 86400
        u = rng.random(m)
        p_open = np.where(age_days < 3, 0.6, 0.03)
        # 0 rejected, 1 closed, 2 evaluated, 3 reported, 4 registered, 5 dispatched, 6 handling, 7 feedback
        state = np.where(u < 0.03, 0, np.where(u < 0.03 + p_open, rng.integers(3, 8, m),
                                               np.where(rng.random(m) < 0.4, 2, 1)))
        closed = (state == 1) | (state == 2)
        open_ = state >= 3
        dispatched = (state != 0) & (state != 3) & (state != 4)
        resp = np.where(dispatched, np.minimum(rng.lognormal(np.log(1200), 1.0, m), 7 * 86400), -1)
        closing = np.minimum(rng.lognormal(np.log(30 * 3600), 0.9, m), np.maximum(t1 - rep, 60))
        closing = np.where(closed, np.maximum(closing, resp + 60), -1)
        sat = np.where(state == 2, rng.choice(5, m, p=[0.03, 0.04, 0.08, 0.35, 0.50]) + 1, 0)
        batch = {
            "id": ids,
            "place_id": rng.choice(gid, m, p=gw),
            "cat": rng.choice(len(categories), m, p=cw).astype(np.int32),
            "src": rng.choice(4, m, p=[0.45, 0.35, 0.15, 0.05]).astype(np.int8),
            "state": state.astype(np.int8),
            "level": rng.integers(1, 5, m).astype(np.int8),
            "rep_us": (rep * 1e6).astype(np.int64),
            "resp": resp.astype(np.int32),
            "closing": closing.astype(np.int32),
            "sat": sat.astype(np.int8),
            "ever_overdue": (rng.random(m) < 0.07) & ~open_ | (open_ & (rng.random(m) < 0.25)),
            "open": open_,
            "repeat": rng.random(m) < 0.06,
            "key": rng.integers(0, 2**62, m, dtype=np.int64),
        }
        batch["overdue_now"] = batch["open"] & batch["ever_overdue"]
        con.register("_g", batch)
        con.execute(f"""
            INSERT INTO cases SELECT g.id, p.code, g.place_id, c.code, c.cat_id,
                ['citizen', 'hotline', 'grid_worker', 'sensor'][g.src + 1],
                ['rejected', 'closed', 'evaluated', 'reported', 'registered', 'dispatched', 'handling',
                 'feedback'][g.state + 1],
                g.level, 'chengguan', make_timestamp(g.rep_us),
                CASE WHEN g.resp >= 0 THEN make_timestamp(g.rep_us + g.resp::BIGINT * 1000000) END,
                CASE WHEN g.closing >= 0 THEN make_timestamp(g.rep_us + g.closing::BIGINT * 1000000) END,
                NULL, nullif(g.resp, -1), nullif(g.closing, -1), nullif(g.sat, 0), g.ever_overdue,
                g.overdue_now, g.open, g.key::UBIGINT, g.repeat, make_timestamp(g.rep_us),
                {snapshot.month_sql('make_timestamp(g.rep_us)')},
                CASE WHEN g.closing >= 0 THEN {snapshot.month_sql(closed_ts)} END
            FROM _g g JOIN places p USING (place_id) JOIN cats c ON c.k = g.cat""")
        con.unregister("_g")
    na = max(n // 50, 10)
    scenes = np.array(["septic_tank", "forest_fire", "waterlogging", "elderly", "high_throw", "kitchen_waste"],
                      dtype=object)
    raised = np.sort(t0 + rng.random(na) * (t1 - t0))
    ack = np.where(rng.random(na) < 0.9, rng.lognormal(np.log(300), 0.8, na), -1)
    con.register("_al", {
        "id": np.arange(1, na + 1, dtype=np.int64), "place_id": rng.choice(gid, na, p=gw),
        "scene": scenes[rng.integers(0, len(scenes), na)],
        "severity": np.array(["minor", "major", "critical"], dtype=object)[rng.integers(0, 3, na)],
        "raised_us": (raised * 1e6).astype(np.int64), "ack": ack.astype(np.int32),
        "cleared": rng.random(na) < 0.95, "to_case": rng.random(na) < 0.3})
    con.execute("""INSERT INTO alarms SELECT id, place_id, scene, severity,
            CASE WHEN cleared THEN 'cleared' WHEN ack >= 0 THEN 'acknowledged' ELSE 'raised' END,
            make_timestamp(raised_us), nullif(ack, -1),
            CASE WHEN cleared THEN make_timestamp(raised_us + 3600000000) END,
            CASE WHEN to_case THEN id END, NULL FROM _al""")
    con.unregister("_al")
    snapshot.has_alarms = True
    sensing(snapshot, n, rng, gid, gw, t0, t1)


#: Scenes, their quantities and a plausible reading (scale of a gamma draw) for each.
SENSING = {"septic_tank": {"methane": 4.0, "temperature": 20.0}, "waterlogging": {"water_level": 3.0},
           "forest_fire": {"temperature": 18.0, "humidity": 60.0, "wind_speed": 3.0, "smoke": 0.05},
           "elderly": {"heart_rate": 75.0}, "high_throw": {"throw_event": 0.01}, "kitchen_waste": {"fill_level": 50.0}}


def sensing(snapshot: Any, n: int, rng: Any, gid: np.ndarray, gw: np.ndarray, t0: float, t1: float) -> None:
    """A device for every 500 cases, their datastreams, and a reading for every 5 cases over the year."""
    con = snapshot.con
    nd = max(n // 500, 10)
    scene_names = list(SENSING)
    scene = rng.integers(0, len(scene_names), nd)
    seen_ago = rng.exponential(20 * 60, nd) * np.where(rng.random(nd) < 0.05, 20, 1)  # a few silent for hours
    con.register("_dev", {"id": np.arange(1, nd + 1, dtype=np.int64), "place_id": rng.choice(gid, nd, p=gw),
                          "scene": np.array(scene_names, dtype=object)[scene], "active": rng.random(nd) < 0.97,
                          "seen_us": ((t1 - seen_ago) * 1e6).astype(np.int64)})
    con.execute("INSERT INTO devices SELECT id, place_id, scene, scene, NULL, active, make_timestamp(seen_us) "
                "FROM _dev")
    con.unregister("_dev")
    streams = [(d + 1, q, scale) for d, sc in enumerate(scene) for q, scale in SENSING[scene_names[sc]].items()]
    ds_id = np.arange(1, len(streams) + 1, dtype=np.int64)
    con.register("_ds", {"id": ds_id, "device_id": np.array([s[0] for s in streams], dtype=np.int64),
                         "quantity": np.array([s[1] for s in streams], dtype=object)})
    con.execute("INSERT INTO datastreams SELECT * FROM _ds")
    con.unregister("_ds")
    nr = max(n // 5, 10)
    pick = rng.integers(0, len(streams), nr)
    scale = np.array([s[2] for s in streams])[pick]
    con.register("_r", {"ds": ds_id[pick], "t_us": ((t0 + rng.random(nr) * (t1 - t0)) * 1e6).astype(np.int64),
                        "v": rng.gamma(2.0, scale / 2.0)})
    con.execute("INSERT INTO readings SELECT ds, make_timestamp(t_us), v FROM _r")
    con.unregister("_r")
    snapshot.set_meta("taken_at", datetime.fromtimestamp(t1, UTC).replace(tzinfo=None).isoformat())
    snapshot.has_devices = True



def time_it(fn: Any, repeat: int) -> tuple[float, float, Any]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times), out


def refresh_bench(rows: int, places: list[Any], work: Path) -> None:
    """Cases written to a fresh SQLite store (bulk SQL), then one incremental copy into a snapshot."""
    from sqlalchemy import insert

    from zhizhi.adapters import db
    from zhizhi.adapters.orm import CaseRow
    from zhizhi.analytics.snapshot import Snapshot

    engine = db.make_engine(f"sqlite:///{work / 'refresh.db'}")
    db.upgrade(engine)
    grids = [p for p in places if p[2] == max(q[2] for q in places)]
    rng = np.random.default_rng(7)
    base = NOW - timedelta(days=30)
    batch = []
    with engine.begin() as conn:
        for i in range(rows):
            g = grids[int(rng.integers(len(grids)))][0]
            t = base + timedelta(seconds=int(i * 30 * 86400 / rows))
            batch.append({"source": "citizen", "source_id": f"b{i}", "title": "t", "description": "",
                          "state": "dispatched", "category_code": "C0101", "level": 2, "grid_code": g,
                          "community_code": g[:12], "reported_at": t, "dispatched_at": t + timedelta(minutes=20),
                          "updated_at": t, "location_method": "point", "location_confidence": 1.0,
                          "location_extra": {}, "photos": [], "supervise_count": 0, "return_count": 0,
                          "version": 1, "reporter_phone": f"138{i % 5000:08d}"})
            if len(batch) == 5000:
                conn.execute(insert(CaseRow), batch)
                batch = []
        if batch:
            conn.execute(insert(CaseRow), batch)
    snap = Snapshot(None)
    snap.load_places(places)
    t = time.perf_counter()
    stats = snap.refresh(engine)
    dt = time.perf_counter() - t
    emit("refresh_sqlite_cases", stats.cases_read, "cases")
    emit("refresh_sqlite_rate", stats.cases_read / dt, "cases/s")
    t = time.perf_counter()
    again = snap.refresh(engine)
    emit("refresh_sqlite_nothing_new", time.perf_counter() - t, f"s ({again.cases_read} re-read in the overlap)")
    snap.close()
    engine.dispose()


def change_cases(snap: Any, n: int, seed: int) -> list[tuple[Any, ...]]:
    """n changed cases, as a refresh would read them from the store: half of them open cases now closed
    (and evaluated), half new reports today. Rows are in the store's column order (`_CASE_COLUMNS`)."""
    from zhizhi.analytics.snapshot import naive_utc

    rng = np.random.default_rng(seed)
    now = naive_utc(NOW)
    assert now is not None
    half = n // 2
    # (a sample clause applies before WHERE: sample the open cases from a subquery)
    opened = snap.con.execute(f"""SELECT * FROM (SELECT id, source, category, department, level, place_code,
            reported_at, dispatched_at FROM cases WHERE is_open)
            USING SAMPLE reservoir({int(half)} ROWS) REPEATABLE (7)""").fetchall()
    rows: list[tuple[Any, ...]] = []
    for cid, src, cat, dep, lv, place, rep, disp in opened:
        closed = max(now - timedelta(minutes=int(rng.integers(1, 600))), rep + timedelta(minutes=1))
        rows.append((cid, src, "evaluated", cat, dep, lv, None, None, None, None, place, None, rep, disp, closed,
                     None, None, int(rng.integers(1, 6)), now))
    top = int(snap.con.execute("SELECT max(id) FROM cases").fetchall()[0][0])
    base = snap.con.execute(f"SELECT place_code, category FROM cases USING SAMPLE reservoir({int(n - half)} ROWS) "
                            "REPEATABLE (8)").fetchall()
    for i, (place, cat) in enumerate(base, 1):
        rep = now - timedelta(minutes=int(rng.integers(1, 600)))
        rows.append((top + i, "citizen", "reported", cat, None, None, None, None, None, None, place, None, rep,
                     None, None, None, None, None, now))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per figure (best and median printed)")
    ap.add_argument("--refresh-rows", type=int, default=100_000, help="0 skips the store → snapshot figure")
    ap.add_argument("--changes", type=int, default=20_000, help="changed cases for the incremental cube figure")
    ap.add_argument("--city", choices=["demo", "tiny"], default="demo")
    ap.add_argument("--threads", type=int, default=0, help="DuckDB threads (default: all cores)")
    ap.add_argument("--seed", type=int, default=20261123)
    ap.add_argument("--no-cluster", action="store_true", help="leave the cases in report-time order")
    ap.add_argument("--no-check", action="store_true", help="skip the cube = scan checks (each is one full scan)")
    ap.add_argument("--cache-dir", type=Path, default=ROOT / "var" / "cache", help="demo city cache")
    args = ap.parse_args(argv)

    from zhizhi.adapters.catalogue_files import load_catalogue
    from zhizhi.analytics import rollup
    from zhizhi.analytics.cube import Cube
    from zhizhi.analytics.service import load_tree
    from zhizhi.analytics.snapshot import Snapshot
    from zhizhi.domain.indicators import Grain, period_of

    places, label = city_places(args.city, args.cache_dir)
    tree = load_tree()
    cats = [c.code for c in load_catalogue(None).leaves()]
    with workdir() as tmp:
        work = Path(tmp)
        snap = Snapshot(work / "bench.duckdb")
        if args.threads:
            snap.con.execute(f"SET threads = {int(args.threads)}")
        threads = snap.con.execute("SELECT current_setting('threads')").fetchall()[0][0]
        snap.load_places(places)
        by_level = dict(snap.con.execute("SELECT level, count(*) FROM places GROUP BY level").fetchall())
        print(f"# city: {label}; {os.cpu_count()} CPUs on this machine, DuckDB threads {threads}; "
              f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        t = time.perf_counter()
        generate(snap, args.cases, args.seed, cats)
        if not args.no_cluster:
            snap.cluster()  # as a refresh does once a fifth of the rows are new
        snap.con.execute("CHECKPOINT")
        emit("generate_cases", args.cases, "cases")
        emit("generate_time", time.perf_counter() - t, "s")
        emit("areas", sum(by_level.values()), "areas (" + ", ".join(
            f"{n} at level {lv}" for lv, n in sorted(by_level.items())) + ")")
        emit("tree", len(tree.indicators()), f"indicators in {len(tree.sectors)} sectors, {len(tree.slices())} slices")
        emit("duckdb_threads", int(threads), "threads")
        cube = Cube(snap, tree)
        t, c = time.perf_counter(), time.process_time()
        cube.build()
        emit("cube_build", time.perf_counter() - t, f"s wall, {time.process_time() - c:.2f} s CPU (once; and "
             "whenever the tree, the places or the time zone change)")
        size = cube.size()
        emit("cube_rows", sum(size.values()), "rows (" + ", ".join(f"{k} {v}" for k, v in size.items()) + ")")
        tables: dict[Grain, Any] = {}

        def facts(grain: Grain, use_cube: bool = True) -> Any:
            table = rollup.compute_facts(snap, tree, period_of(grain, NOW), cube=cube if use_cube else None)
            tables[grain] = table
            return table

        for grain in (Grain.YEAR, Grain.MONTH):
            c = time.process_time()
            best, med, table = time_it(lambda g=grain: facts(g), args.repeat)
            cpu = (time.process_time() - c) / args.repeat
            in_window = snap.con.execute("SELECT count(*) FROM cases WHERE reported_at >= $s AND reported_at < $e",
                                         {"s": table.period.start.replace(tzinfo=None),
                                          "e": table.period.end.replace(tzinfo=None)}).fetchall()[0][0]
            emit(f"facts_{grain.value}_best", best, f"s (whole tree, every area at every level, from the cube; "
                 f"{in_window} cases reported in {table.period.label}, {table.matrix.size} sums, "
                 f"{int((table.matrix != 0).any(axis=1).sum())} areas with data)")
            emit(f"facts_{grain.value}_median", med, f"s ({cpu:.2f} s CPU per run, all threads)")
            emit(f"facts_{grain.value}_steps", " + ".join(f"{k} {v:.3f}" for k, v in table.seconds.items()), "s")

        year = tables[Grain.YEAR]
        codes = [i.code for i in tree.indicators()]

        def materialise() -> int:
            va = rollup.value_arrays(snap, tree, year, codes, "true", {})
            return int(va.value.size)

        best, med, n_values = time_it(materialise, args.repeat)
        emit("values_all_areas_best", best, f"s ({n_values} values: indicators × areas, with lights)")
        emit("values_all_areas_median", med, "s")
        emit("tree_year_total_best", min_total(args, snap, tree, year, cube), "s (facts + values, one run)")
        if not args.no_check:
            for grain in (Grain.YEAR, Grain.MONTH):
                t, c = time.perf_counter(), time.process_time()
                scan = facts(grain, use_cube=False)
                emit(f"scan_{grain.value}", time.perf_counter() - t, f"s wall, {time.process_time() - c:.2f} s CPU "
                     "(the same facts by scanning every case, as before the cube)")
                emit(f"cube_equals_scan_{grain.value}", int(_same(tables_cube := facts(grain), scan)),
                     "(1 = every sum identical)")
                del tables_cube
        # an incremental change: N changed cases written the way a refresh writes them, then one sync
        rows = change_cases(snap, args.changes, args.seed)
        t, c = time.perf_counter(), time.process_time()
        snap.upsert_rows(rows)
        emit("refresh_upsert", time.perf_counter() - t, f"s wall, {time.process_time() - c:.2f} s CPU "
             f"({len(rows)} changed cases into the {args.cases}-case snapshot)")
        dirty = int(snap.con.execute("SELECT count(*) FROM cube_dirty").fetchall()[0][0])
        t, c = time.perf_counter(), time.process_time()
        stats = cube.sync()
        emit("refresh_cube_sync", time.perf_counter() - t, f"s wall, {time.process_time() - c:.2f} s CPU "
             f"({dirty} dirty marks, {stats.buckets} buckets recomputed)")
        if not args.no_check:
            for grain in (Grain.YEAR, Grain.MONTH):
                emit(f"cube_equals_scan_after_refresh_{grain.value}",
                     int(_same(facts(grain), facts(grain, use_cube=False))), "(1 = every sum identical)")
        print(f"# load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        snap.close()
        if args.refresh_rows:
            refresh_bench(args.refresh_rows, places, work)
    return 0


def _same(a: Any, b: Any) -> bool:
    """Two computed periods hold the same sums: case and alarm facts (integers) identical, sums of readings
    equal to 1e-12 (DuckDB adds floats in a different order on each parallel run)."""
    if set(a.index) != set(b.index):
        return False
    exact = sorted(c for c in a.index if not c.endswith("reading_sum"))
    floats = sorted(c for c in a.index if c.endswith("reading_sum"))
    same = np.array_equal(a.matrix[:, [a.index[c] for c in exact]], b.matrix[:, [b.index[c] for c in exact]])
    return bool(same and np.allclose(a.matrix[:, [a.index[c] for c in floats]],
                                     b.matrix[:, [b.index[c] for c in floats]], rtol=1e-12, atol=0))


def min_total(args: Any, snap: Any, tree: Any, year: Any, cube: Any) -> float:
    """Facts then values from scratch, the way an API call after a refresh pays for them."""
    from zhizhi.analytics import rollup

    codes = [i.code for i in tree.indicators()]
    best = float("inf")
    for _ in range(args.repeat):
        t = time.perf_counter()
        table = rollup.compute_facts(snap, tree, year.period, cube=cube)
        rollup.value_arrays(snap, tree, table, codes, "true", {})
        best = min(best, time.perf_counter() - t)
    return best


if __name__ == "__main__":
    raise SystemExit(main())
