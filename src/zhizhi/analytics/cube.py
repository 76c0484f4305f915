"""The cube: every case fact pre-summed per (local month, finest place, slice), kept up to date at refresh.

Why: a period's facts used to be one DuckDB scan of every case, grouping 10 M rows into about 1.5 M
(grid, signature) groups on every read. That scan was most of the 6 s the whole tree took. Every fact is a
plain sum, so the sums can be kept instead of the rows:

* `cube_r`  per (month of report, place, slice): reported, registered, rejected, closed_of_reported,
  responded, response_seconds, repeats;
* `cube_c`  per (month of closure, place, slice): closed, closed_on_time, closing_seconds, evaluated,
  satisfaction_sum, satisfied;
* `cube_ry`, `cube_cy`  the same per year, summed from the months (a year reads ~1.6 M rows, not 10 M);
* `cube_n`  per (place, slice), the stocks now: open_now, overdue_now.

The key is the *slice* (not the category), so a read needs no category → slice mapping at all: a row goes
straight into its (place, slice, fact) cell. That makes the cube depend on the tree (and on the city's time
zone, which cuts the months): its fingerprint is kept in the snapshot's meta, and a different tree rebuilds it.

Incremental upkeep: the snapshot records in `cube_dirty` the (report month, closure month, place) of every
case it replaces or changes, before and after the change (`Snapshot.mark_dirty`). A sync deletes those
buckets and recomputes them from the cases, then re-sums the touched years and the touched places' stocks.
Recomputing a bucket (rather than adding deltas) keeps the cube exactly equal to a rebuild, whatever happened.

Periods that are not whole local months (days, weeks) are not in the cube; `rollup` scans the cases in
the window for them. Nothing here is a new meaning: every cube value is a sum the scan would compute.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np

from zhizhi.analytics.snapshot import CLOSED_STATES, Snapshot
from zhizhi.domain.indicators import IndicatorTree, Period, Slice, Source

#: Sums per (month of report, place, slice).
REPORTED = {
    "reported": "count(*)",
    "registered": "count_if(c.state <> 'rejected')",
    "rejected": "count_if(c.state = 'rejected')",
    "closed_of_reported": f"count_if(c.state IN {CLOSED_STATES})",
    "responded": "count(c.response_s)",
    "response_seconds": "sum(c.response_s)",
    "repeats": "count_if(c.is_repeat)",
}
#: Sums per (month of closure, place, slice).
CLOSED = {
    "closed": "count(*)",
    "closed_on_time": "count_if(NOT c.ever_overdue)",
    "closing_seconds": "sum(c.closing_s)",
    "evaluated": "count(c.satisfaction)",
    "satisfaction_sum": "sum(c.satisfaction)",
    "satisfied": "count_if(c.satisfaction >= 4)",
}
#: Stocks per (place, slice), over the open cases.
STOCKS = {"open_now": "count(*)", "overdue_now": "count_if(c.overdue_now)"}
CUBE_FACTS = (*REPORTED, *CLOSED, *STOCKS)


@dataclass(frozen=True, slots=True)
class SyncStats:
    """What a sync did: `rebuilt` (whole cube) or the buckets it recomputed, and how long it took."""

    rebuilt: bool
    buckets: int
    seconds: float


def case_slices(tree: IndicatorTree) -> dict[Slice, int]:
    """The tree's slice ids (as `rollup` numbers them), case slices only."""
    return {sl: i for i, sl in enumerate(tree.slices()) if sl.source is Source.CASES}


class Cube:
    """The cube tables of one snapshot, for one tree."""

    def __init__(self, snapshot: Snapshot, tree: IndicatorTree) -> None:
        self.snapshot = snapshot
        self.tree = tree
        self.slices = case_slices(tree)
        self.by_source = any(sl.sources for sl in self.slices)
        text = repr(sorted((i, repr(sl)) for sl, i in self.slices.items()))
        self.fingerprint = hashlib.sha256(f"{snapshot.tz}|{self.by_source}|{text}".encode()).hexdigest()[:16]

    # ----- upkeep ------------------------------------------------------------------------------
    def sync(self) -> SyncStats:
        """Bring the cube up to date: rebuild it if it was built for another tree (or never), else recompute
        the dirty buckets. Cheap when nothing changed (two small reads)."""
        snap = self.snapshot
        with snap.lock:
            t = time.perf_counter()
            if snap.meta("cube_fingerprint") != self.fingerprint:
                self.build()
                return SyncStats(True, 0, time.perf_counter() - t)
            n = self._map_new_categories()
            dirty = int(snap.con.execute("SELECT count(*) FROM cube_dirty").fetchall()[0][0])
            if not dirty and not n:
                return SyncStats(False, 0, 0.0)
            buckets = self._apply_dirty()
            return SyncStats(False, buckets, time.perf_counter() - t)

    def build(self) -> None:
        """(Re)build every cube table from the cases."""
        con = self.snapshot.con
        con.execute("CREATE OR REPLACE TABLE cube_slices (cat_id SMALLINT, source VARCHAR, slice SMALLINT)")
        self._map_new_categories()
        # sorted by key, so a read hands rows over in (place, slice) order: the scatter into the facts
        # matrix then writes memory in order (later incremental rows append unsorted: still correct)
        for kind in ("r", "c"):
            con.execute(f"CREATE OR REPLACE TABLE cube_{kind} AS {self._select(kind)} ORDER BY m, place_id, slice")
            con.execute(f"CREATE OR REPLACE TABLE cube_{kind}y AS {self._years(kind)} ORDER BY y, place_id, slice")
        con.execute(f"CREATE OR REPLACE TABLE cube_n AS {self._select('n')} ORDER BY place_id, slice")
        con.execute("DELETE FROM cube_dirty")
        self.snapshot.set_meta("cube_fingerprint", self.fingerprint)

    def _map_new_categories(self) -> int:
        """Give every category (× source, when the tree slices by source) not yet mapped its slices."""
        con = self.snapshot.con
        if self.by_source:
            todo = con.execute("""SELECT k.cat_id, k.code, s.source FROM categories k,
                                  (SELECT DISTINCT source FROM cases) s
                                  WHERE NOT EXISTS (SELECT 1 FROM cube_slices m
                                                    WHERE m.cat_id = k.cat_id AND m.source = s.source)""").fetchall()
        else:
            todo = con.execute("SELECT k.cat_id, k.code, NULL FROM categories k "
                               "WHERE k.cat_id NOT IN (SELECT cat_id FROM cube_slices)").fetchall()
        rows = [(cat, src, sid) for cat, code, src in todo for sl, sid in self.slices.items()
                if sl.matches_category(code or None) and (not self.by_source or sl.matches_source(src))]
        if todo:
            # a mapped category with no slice still gets a row (slice -1), so it is not re-examined each sync
            rows += [(cat, src, -1) for cat, _, src in todo]
            con.register("_map_in", {"cat_id": np.array([r[0] for r in rows], dtype=np.int16),
                                     "source": np.array([r[1] for r in rows], dtype=object),
                                     "slice": np.array([r[2] for r in rows], dtype=np.int16)})
            con.execute("INSERT INTO cube_slices SELECT * FROM _map_in")
            con.unregister("_map_in")
        return len(todo)

    def _select(self, kind: str, semi: str = "") -> str:
        """The sums of one cube over the cases (only those `semi`, a SEMI JOIN clause over `c`, keeps)."""
        join = "s.cat_id = c.cat_id AND s.slice >= 0" + (" AND s.source = c.source" if self.by_source else "")
        if kind == "r":
            keys, aggs, cond = "c.rmonth AS m, c.place_id", REPORTED, "c.rmonth IS NOT NULL"
        elif kind == "c":
            keys, aggs, cond = "c.cmonth AS m, c.place_id", CLOSED, "c.cmonth IS NOT NULL"
        else:
            keys, aggs, cond = "c.place_id", STOCKS, "c.is_open"
        sums = ", ".join(f"CAST(coalesce({sql}, 0) AS {'BIGINT' if f.endswith('seconds') else 'INTEGER'}) AS {f}"
                         for f, sql in aggs.items())
        return (f"SELECT {keys}, s.slice, {sums} FROM (SELECT c.* FROM cases c {semi}) c "
                f"JOIN cube_slices s ON {join} WHERE {cond} GROUP BY ALL")

    def _years(self, kind: str, semi: str = "") -> str:
        aggs = REPORTED if kind == "r" else CLOSED
        sums = ", ".join(f"CAST(sum({f}) AS {'BIGINT' if f.endswith('seconds') else 'INTEGER'}) AS {f}"
                         for f in aggs)
        return (f"SELECT CAST(x.m // 12 AS SMALLINT) AS y, x.place_id, x.slice, {sums} FROM cube_{kind} x {semi} "
                f"GROUP BY ALL")

    def _apply_dirty(self) -> int:
        """Recompute the dirty buckets from the cases (delete, then insert their sums again)."""
        con = self.snapshot.con
        con.execute("""CREATE OR REPLACE TEMP TABLE _dr AS
                       SELECT DISTINCT rmonth AS m, place_id FROM cube_dirty WHERE rmonth IS NOT NULL""")
        con.execute("""CREATE OR REPLACE TEMP TABLE _dc AS
                       SELECT DISTINCT cmonth AS m, place_id FROM cube_dirty WHERE cmonth IS NOT NULL""")
        con.execute("CREATE OR REPLACE TEMP TABLE _dp AS SELECT DISTINCT place_id FROM cube_dirty")
        n = 0
        for kind in ("r", "c"):
            d = f"_d{kind}"
            month = "rmonth" if kind == "r" else "cmonth"
            n += int(con.execute(f"SELECT count(*) FROM {d}").fetchall()[0][0])
            con.execute(f"DELETE FROM cube_{kind} x USING {d} WHERE x.m = {d}.m AND x.place_id = {d}.place_id")
            con.execute(f"INSERT INTO cube_{kind} "
                        f"{self._select(kind, f'SEMI JOIN {d} ON c.{month} = {d}.m AND c.place_id = {d}.place_id')}")
            con.execute(f"""CREATE OR REPLACE TEMP TABLE _dy AS
                            SELECT DISTINCT CAST(m // 12 AS SMALLINT) AS y, place_id FROM {d}""")
            con.execute(f"DELETE FROM cube_{kind}y x USING _dy WHERE x.y = _dy.y AND x.place_id = _dy.place_id")
            con.execute(f"INSERT INTO cube_{kind}y "
                        f"{self._years(kind, 'SEMI JOIN _dy ON x.m // 12 = _dy.y AND x.place_id = _dy.place_id')}")
        con.execute("DELETE FROM cube_n WHERE place_id IN (SELECT place_id FROM _dp)")
        con.execute(f"INSERT INTO cube_n {self._select('n', 'SEMI JOIN _dp ON c.place_id = _dp.place_id')}")
        n += int(con.execute("SELECT count(*) FROM _dp").fetchall()[0][0])
        con.execute("DELETE FROM cube_dirty")
        return n

    # ----- reading -----------------------------------------------------------------------------
    def months_of(self, period: Period) -> tuple[int, int] | None:
        """The local months [m0, m1) a period covers exactly, or None when it does not start and end on
        local month boundaries (days, weeks)."""
        zone = ZoneInfo(self.snapshot.tz)

        def month(t: datetime) -> int | None:
            local = t.astimezone(zone)
            if (local.day, local.hour, local.minute, local.second, local.microsecond) != (1, 0, 0, 0, 0):
                return None
            return local.year * 12 + local.month - 1

        m0, m1 = month(period.start), month(period.end)
        return None if m0 is None or m1 is None or m1 <= m0 else (m0, m1)

    def read(self, months: tuple[int, int]) -> dict[str, dict[str, np.ndarray]]:
        """The sums for the months [m0, m1): {"r": …, "c": …, "n": …}, each with place_id, slice and the facts.

        A whole calendar year reads the year tables; one month reads its rows as they are; other ranges sum
        their months per (place, slice).
        """
        m0, m1 = months
        con = self.snapshot.con
        out: dict[str, dict[str, np.ndarray]] = {}
        for kind, aggs in (("r", REPORTED), ("c", CLOSED)):
            cols = ", ".join(aggs)
            if m0 % 12 == 0 and m1 - m0 == 12:
                sql, p = f"SELECT place_id, slice, {cols} FROM cube_{kind}y WHERE y = $y", {"y": m0 // 12}
            elif m1 - m0 == 1:
                sql, p = f"SELECT place_id, slice, {cols} FROM cube_{kind} WHERE m = $m", {"m": m0}
            else:
                sums = ", ".join(f"CAST(sum({f}) AS {'BIGINT' if f.endswith('seconds') else 'INTEGER'}) AS {f}"
                                 for f in aggs)
                sql = f"SELECT place_id, slice, {sums} FROM cube_{kind} WHERE m >= $a AND m < $b GROUP BY ALL"
                p = {"a": m0, "b": m1}
            out[kind] = con.execute(sql, p).fetchnumpy()
        out["n"] = self.stocks()
        return out

    def stocks(self) -> dict[str, np.ndarray]:
        """The stocks now (open, overdue) per (place, slice)."""
        return self.snapshot.con.execute(f"SELECT place_id, slice, {', '.join(STOCKS)} FROM cube_n").fetchnumpy()

    def size(self) -> dict[str, int]:
        """Rows per cube table (for the benchmark and docs)."""
        con = self.snapshot.con
        return {t: int(con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0])
                for t in ("cube_r", "cube_c", "cube_ry", "cube_cy", "cube_n")}
