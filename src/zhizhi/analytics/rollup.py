"""The roll-up: every fact the tree reads, for every slice, for every area at every level.

1. The case facts per (finest place, slice). For whole local months (month, quarter, year) they are read from
   the cube (`zhizhi.analytics.cube`), kept summed at refresh time, so a read never scans the cases. For
   days and weeks (and a department's scope, which the cube has no dimension for), DuckDB scans the cases
   once and sums every fact per (finest place, slice signature). A signature is the set of slices a category
   falls in (a category sits in its sector, its runway, the loop …), so overlapping slices cost no extra scan,
   and a 0/1 (signature × slice) matrix turns those sums into per-slice sums.
2. Sensing facts: alarms per (place, scene, severity), devices per place, readings per (place, scene,
   quantity), each mapped to the slices that match.
3. A sparse (area × place) ancestry matrix adds every place into itself and all its ancestors, which gives
   city, district, street, community and grid in one product.

Because every fact is a sum, a district's facts are exactly the sums of its cases (never an average of
ratios), and the formulas and thresholds are applied afterwards, vectorised, to whatever areas are asked for.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse

from zhizhi.analytics.cube import STOCKS, Cube
from zhizhi.analytics.snapshot import CLOSED_STATES, Snapshot, naive_utc
from zhizhi.domain.indicators import DEVICE_FACTS, FACTS, IndicatorTree, Period, Slice, Source

#: Stage-1 aggregate per case fact; `ri` = reported in the period, `ci` = closed in the period.
CASE_AGGREGATES: dict[str, str] = {
    "reported": "count_if(ri)",
    "registered": "count_if(ri AND state <> 'rejected')",
    "rejected": "count_if(ri AND state = 'rejected')",
    "closed_of_reported": f"count_if(ri AND state IN {CLOSED_STATES})",
    "responded": "count_if(ri AND response_s IS NOT NULL)",
    "response_seconds": "sum(response_s) FILTER (WHERE ri)",
    "repeats": "count_if(ri AND is_repeat)",
    "closed": "count_if(ci)",
    "closed_on_time": "count_if(ci AND NOT ever_overdue)",
    "closing_seconds": "sum(closing_s) FILTER (WHERE ci)",
    "evaluated": "count_if(ci AND satisfaction IS NOT NULL)",
    "satisfaction_sum": "sum(satisfaction) FILTER (WHERE ci)",
    "satisfied": "count_if(ci AND satisfaction >= 4)",
    "open_now": "count_if(is_open)",
    "overdue_now": "count_if(overdue_now)",
}
#: The same for alarms; `ri` = raised in the period.
ALARM_AGGREGATES: dict[str, str] = {
    "alarms_raised": "count_if(ri)",
    "alarms_acknowledged": "count_if(ri AND ack_s IS NOT NULL)",
    "alarm_ack_seconds": "sum(ack_s) FILTER (WHERE ri)",
    "alarms_to_case": "count_if(ri AND case_id IS NOT NULL)",
    "alarms_active_now": "count_if(state <> 'cleared')",
}
#: Facts over sensing devices and their readings (`_sensing_facts`).
OBSERVATION_FACTS = ("devices", "devices_online", "readings", "readings_over", "reading_sum")
SUMMED_FACTS = (*CASE_AGGREGATES, *ALARM_AGGREGATES, *OBSERVATION_FACTS)
assert set(SUMMED_FACTS) | {"population"} == set(FACTS), "every fact of the domain must be computed here"

_counter = itertools.count()


@dataclass(frozen=True, slots=True)
class FactsTable:
    """A computed period: one row per place (by place id, every level), one column per needed fact.

    `columns` maps (slice id, fact) to its column name and `index` the name to its column in `matrix`;
    only the pairs some indicator's formula reads are computed.
    """

    name: str
    period: Period
    slices: dict[Slice, int]
    columns: dict[tuple[int, str], str]
    has_alarms: bool
    matrix: np.ndarray = field(repr=False)
    index: dict[str, int] = field(repr=False)
    seconds: dict[str, float] = field(default_factory=dict, compare=False)  # per step, for benches


def needed_columns(tree: IndicatorTree, slices: dict[Slice, int]) -> dict[tuple[int, str], str]:
    """The (slice, fact) sums the tree's formulas read, each a column named s<slice>_<fact>."""
    out: dict[tuple[int, str], str] = {}
    for ind in tree.indicators():
        sid = slices[ind.slice]
        for f in ind.formula.facts():
            if f != "population":
                out.setdefault((sid, f), f"s{sid}_{f}")
    return out


def _signatures(snapshot: Snapshot, slices: dict[Slice, int], by_source: bool) -> dict[int, frozenset[int]]:
    """Give each category (× source) the set of case slices covering it, as a small signature id.

    Cases are summed per (place, signature): far fewer groups than (place, category), and a slice's sum is
    the sum over the signatures that contain it.
    """
    cats = snapshot.con.execute("SELECT cat_id, code FROM categories").fetchall()
    srcs = [r[0] for r in snapshot.con.execute("SELECT DISTINCT source FROM cases").fetchall()] if by_source \
        else [None]
    case_slices = [(sl, sid) for sl, sid in slices.items() if sl.source is Source.CASES]
    sig_ids: dict[frozenset[int], int] = {}
    rows = []
    for cid, code in cats:
        for src in srcs:
            members = frozenset(sid for sl, sid in case_slices
                                if sl.matches_category(code or None) and (not by_source or sl.matches_source(src)))
            rows.append((cid, src, sig_ids.setdefault(members, len(sig_ids))))
    snapshot.con.register("_sig_in", {
        "cat_id": np.array([r[0] for r in rows], dtype=np.int16),
        "source": np.array([r[1] for r in rows], dtype=object),
        "sig_id": np.array([r[2] for r in rows], dtype=np.int16)})
    snapshot.con.execute("CREATE OR REPLACE TEMP TABLE _sig AS SELECT * FROM _sig_in")
    snapshot.con.unregister("_sig_in")
    return {i: members for members, i in sig_ids.items()}


_CASE_INPUTS = ("place_id", "cat_id", "state", "reported_at", "closed_at", "response_s", "closing_s", "satisfaction",
                "ever_overdue", "overdue_now", "is_open", "is_repeat")


def _spread(place: np.ndarray, group: np.ndarray, n_places: int, n_groups: int, weights: np.ndarray) -> np.ndarray:
    """Dense (place × group) sums of `weights` (one bincount)."""
    key = place.astype(np.int64) * n_groups + group.astype(np.int64)
    return np.bincount(key, weights=weights, minlength=n_places * n_groups).reshape(n_places, n_groups)


def compute_facts(snapshot: Snapshot, tree: IndicatorTree, period: Period, *, cube: Cube | None = None,
                  departments: Sequence[str] = ()) -> FactsTable:
    """Compute every fact the tree reads, for every slice, for every area at every level, over `period`.

    1. the case facts per (finest place, slice): read from the cube (`zhizhi.analytics.cube`) when the period
       is whole local months, else one DuckDB scan of the cases summing per (place, slice signature), turned
       into per-slice sums by a 0/1 (signature × slice) matrix;
    2. alarm facts: a scan of the (few) alarms;
    3. a sparse (area × place) ancestry matrix rolls every place up to all its ancestors at once.

    `departments` (a department handler's scope) counts only the cases assigned to those departments and
    the alarms of their devices; the cube has no department, so such a read always scans.
    """
    slices = {sl: i for i, sl in enumerate(tree.slices())}
    columns = needed_columns(tree, slices)
    by_slice = {sl_id: sl for sl, sl_id in slices.items()}
    start, end = naive_utc(period.start), naive_utc(period.end)
    by_source = any(sl.sources for sl in slices if sl.source is Source.CASES)
    case_cols = {k: c for k, c in columns.items() if by_slice[k[0]].source is Source.CASES}
    alarm_cols = {k: c for k, c in columns.items()
                  if by_slice[k[0]].source is Source.ALARMS and k[1] in ALARM_AGGREGATES}
    # device and reading facts, of observation slices and of alarm slices (alarms per device)
    sensing_cols = {k: c for k, c in columns.items() if k[1] in OBSERVATION_FACTS}
    facts_used = [f for f in CASE_AGGREGATES if any(k[1] == f for k in case_cols)]
    con = snapshot.con
    p = {"s": start, "e": end}
    clock = [time.perf_counter()]
    seconds: dict[str, float] = {}

    def lap(step: str) -> None:
        now = time.perf_counter()
        seconds[step] = now - clock[0]
        clock[0] = now

    if departments:
        p["deps"] = list(departments)
    months = cube.months_of(period) if cube is not None and not departments else None
    with snapshot.lock:
        ancestry = _ancestry(snapshot)
        n = ancestry.shape[0]
        has_alarms = snapshot.has_alarms and bool(alarm_cols)
        has_devices = snapshot.has_devices and bool(sensing_cols)
        names = [*case_cols.values(), *(alarm_cols.values() if has_alarms else ()),
                 *(sensing_cols.values() if has_devices else ())]
        index = {c: j for j, c in enumerate(names)}
        own = np.zeros((n, len(names)))
        if months is not None:
            assert cube is not None
            cube.sync()
            lap("sync")
            _from_cube(cube.read(months), case_cols, index, own)
            lap("cube")
        elif cube is not None and not departments:
            # days, weeks: scan only the cases reported or closed in the window; the stocks from the cube
            cube.sync()
            flows = [f for f in facts_used if f not in STOCKS]
            _from_scan(snapshot, slices, by_source, flows, case_cols, index, own, p, departments, window=True)
            _from_cube({"n": cube.stocks()}, case_cols, index, own)
            lap("scan")
        else:
            _from_scan(snapshot, slices, by_source, facts_used, case_cols, index, own, p, departments)
            lap("scan")
        a1 = None
        if has_alarms:
            # the (scene, severity) kinds are few: group by a small integer, fetch numbers only
            kinds = con.execute("SELECT DISTINCT scene, severity FROM alarms ORDER BY ALL").fetchall()
            aggs = ", ".join(f"CAST({ALARM_AGGREGATES[f]} AS DOUBLE) AS {f}" for f in ALARM_AGGREGATES)
            only = "WHERE list_contains($deps, a.department)" if departments else ""
            con.register("_kinds", {"k": np.arange(len(kinds), dtype=np.int16),
                                    "scene": np.array([k[0] for k in kinds], dtype=object),
                                    "severity": np.array([k[1] for k in kinds], dtype=object)})
            a1 = con.execute(f"""SELECT place_id, k, {aggs}
                FROM (SELECT a.place_id, a.ack_s, a.case_id, a.state, k.k,
                             a.raised_at >= $s AND a.raised_at < $e AS ri
                      FROM alarms a JOIN _kinds k ON k.scene IS NOT DISTINCT FROM a.scene
                                                 AND k.severity IS NOT DISTINCT FROM a.severity {only})
                GROUP BY place_id, k""", p).fetchnumpy()
            con.unregister("_kinds")
        if has_devices:
            _sensing_facts(snapshot, by_slice, sensing_cols, index, own, p, departments)
    lap("sensing")
    if a1 is not None and len(a1["place_id"]):
        kind = np.asarray(a1["k"], dtype=np.int64)
        aplace = np.asarray(a1["place_id"], dtype=np.int64)
        for f in ALARM_AGGREGATES:
            wanted = [(sid, col) for (sid, ff), col in alarm_cols.items() if ff == f]
            if not wanted:
                continue
            member = np.array([[by_slice[sid].matches_alarm(sc, sv) for sid, _ in wanted] for sc, sv in kinds],
                              dtype=float)
            weights = np.ma.filled(np.ma.asarray(a1[f], dtype=float), 0.0)
            per_slice = _spread(aplace, kind, n, len(kinds), weights) @ member
            for j, (_, col) in enumerate(wanted):
                own[:, index[col]] = per_slice[:, j]
    lap("slices")
    # 3. every place adds into itself and each ancestor: one sparse product
    matrix = np.asarray(ancestry @ own)
    lap("levels")
    name = f"facts_{next(_counter)}"
    available = {**case_cols, **(alarm_cols if has_alarms else {}), **(sensing_cols if has_devices else {})}
    return FactsTable(name, period, slices, available, has_alarms, matrix, index, seconds)


def _sensing_facts(snapshot: Snapshot, by_slice: dict[int, Slice], cols: dict[tuple[int, str], str],
                   index: dict[str, int], own: np.ndarray, p: dict[str, Any], departments: Sequence[str]) -> None:
    """Device counts (active, online) and reading sums (count, over the limit, sum) per (place, slice).

    Online means heard from within the slice's `online_minutes` before the snapshot was taken (`taken_at`),
    not before the period's end: it is a stock, like open cases. Readings are selected by their own time.
    A department scope keeps the devices of those departments (and their readings).
    """
    con = snapshot.con
    only = " AND list_contains($deps, d.department)" if departments else ""
    deps = {"deps": p["deps"]} if departments else {}
    taken = snapshot.meta("taken_at")
    devices = con.execute(f"""SELECT d.place_id, d.scene, d.last_seen,
            coalesce(list(s.quantity) FILTER (WHERE s.quantity IS NOT NULL), []) AS quantities
        FROM devices d LEFT JOIN datastreams s ON s.device_id = d.id WHERE d.active {only}
        GROUP BY d.id, d.place_id, d.scene, d.last_seen""", deps).fetchall()
    n = own.shape[0]
    dplace = np.array([d[0] for d in devices], dtype=np.int64)
    seen = np.array([np.datetime64(d[2], "us") if d[2] is not None else np.datetime64("NaT") for d in devices],
                    dtype="datetime64[us]")
    at = np.datetime64(taken, "us") if taken else np.datetime64("NaT")
    kind_ids: dict[tuple[str, frozenset[str]], int] = {}  # (scene, quantities): few, so match per kind
    kind = np.array([kind_ids.setdefault((d[1], frozenset(d[3])), len(kind_ids)) for d in devices], dtype=np.int64)
    for (sid, f), col in cols.items():
        sl = by_slice[sid]
        if f in DEVICE_FACTS:
            match = np.array([sl.matches_device(sc, qs) for sc, qs in kind_ids], dtype=np.bool_)
            keep = match[kind] if len(kind) else np.zeros(0, dtype=np.bool_)
            if f == "devices_online":
                window = np.timedelta64(int(sl.online_minutes * 60_000_000), "us")
                keep &= ~np.isnat(seen) & (seen >= at - window)
            own[:, index[col]] = np.bincount(dplace[keep], minlength=n)[:n]
    wanted: dict[int, list[tuple[str, str]]] = {}
    for (sid, f), col in cols.items():
        if f not in DEVICE_FACTS:
            wanted.setdefault(sid, []).append((f, col))
    if not wanted:
        return
    # one pass over the readings in the window, per (place, scene, quantity), with a count per distinct limit
    limits = sorted({(by_slice[sid].limit_op, by_slice[sid].limit) for sid in wanted if by_slice[sid].limit_op},
                    key=repr)
    params: dict[str, Any] = {"s": p["s"], "e": p["e"], "qs": sorted({str(by_slice[sid].quantity) for sid in wanted}),
                              **deps, **{f"l{i}": lim for i, (_, lim) in enumerate(limits)}}
    overs = "".join(f", CAST(count_if(r.value {op} $l{i}) AS DOUBLE) AS o{i}" for i, (op, _) in enumerate(limits))
    got = con.execute(f"""SELECT d.place_id, d.scene, s.quantity, CAST(count(*) AS DOUBLE) AS readings,
            sum(r.value) AS reading_sum {overs}
        FROM readings r JOIN datastreams s ON s.id = r.datastream_id JOIN devices d ON d.id = s.device_id
        WHERE list_contains($qs, s.quantity) AND r.t >= $s AND r.t < $e {only}
        GROUP BY d.place_id, d.scene, s.quantity""", params).fetchnumpy()
    place = np.asarray(got["place_id"], dtype=np.int64)
    scene = np.asarray(got["scene"], dtype=object)
    quantity = np.asarray(got["quantity"], dtype=object)
    for sid, facts in wanted.items():
        sl = by_slice[sid]
        keep = quantity == sl.quantity
        if sl.scenes:
            keep &= np.isin(scene, list(sl.scenes))
        for f, col in facts:
            key = f if f != "readings_over" else f"o{limits.index((sl.limit_op, sl.limit))}"
            vals = np.asarray(got[key], dtype=float)[keep]
            own[:, index[col]] = np.bincount(place[keep], weights=vals, minlength=n)[:n]


def _ancestry(snapshot: Snapshot) -> sparse.csr_matrix:
    """The (area × place) 0/1 matrix adding every place into itself and each ancestor; kept per places load."""
    got = snapshot.derived.get("ancestry")
    if got is None:
        anc = snapshot.con.execute("SELECT place_id, a0, a1, a2, a3, a4 FROM places ORDER BY place_id").fetchnumpy()
        n = len(anc["place_id"])
        rows, cols = [], []
        for lv in range(5):
            a = np.ma.filled(np.ma.asarray(anc[f"a{lv}"], dtype=np.int64), -1)
            ok = a >= 0
            rows.append(a[ok])
            cols.append(np.flatnonzero(ok))
        r, c = np.concatenate(rows), np.concatenate(cols)
        got = sparse.csr_matrix((np.ones(len(r)), (r, c)), shape=(n, n))
        snapshot.derived["ancestry"] = got
    return got


def _from_cube(data: dict[str, dict[str, np.ndarray]], case_cols: dict[tuple[int, str], str],
               index: dict[str, int], own: np.ndarray) -> None:
    """Put the cube's (place, slice) sums into the (place × column) matrix: each row is one cell already,
    so this is one flat `put` per fact (no grouping, no mapping)."""
    n_sl = 1 + max((sid for sid, _ in case_cols), default=0)
    flat = own.reshape(-1)  # a view: own is C-contiguous
    width = own.shape[1]
    for d in data.values():
        if not len(d["place_id"]):
            continue
        base = np.asarray(d["place_id"], dtype=np.int64) * width
        sl = np.asarray(d["slice"], dtype=np.int64)
        for f in d:
            if f in ("place_id", "slice"):
                continue
            colmap = np.full(n_sl, -1, dtype=np.int64)
            for (sid, ff), col in case_cols.items():
                if ff == f:
                    colmap[sid] = index[col]
            if (colmap < 0).all():
                continue
            c = colmap[sl]
            vals = d[f]
            vals = np.ma.filled(vals, 0) if np.ma.isMaskedArray(vals) else vals
            keep = c >= 0
            if keep.all():
                flat[base + c] = vals
            else:
                flat[(base + c)[keep]] = vals[keep]


def _from_scan(snapshot: Snapshot, slices: dict[Slice, int], by_source: bool, facts_used: list[str],
               case_cols: dict[tuple[int, str], str], index: dict[str, int], own: np.ndarray,
               p: dict[str, Any], departments: Sequence[str], *, window: bool = False) -> None:
    """Sum the case facts with one scan of the cases, per (place, signature), then per slice.

    `window` reads only the cases reported or closed in the period (enough for every fact but the stocks).
    """
    if not facts_used:
        return
    sigs = _signatures(snapshot, slices, by_source)
    inputs = ", ".join(_CASE_INPUTS + (("source",) if by_source else ()))
    join = "g.cat_id = c.cat_id" + (" AND g.source = c.source" if by_source else "")
    aggs = ", ".join(f"CAST({CASE_AGGREGATES[f]} AS DOUBLE) AS {f}" for f in facts_used)
    conds = (["list_contains($deps, department)"] if departments else []) + (
        ["(reported_at >= $s AND reported_at < $e OR closed_at >= $s AND closed_at < $e)"] if window else [])
    only = ("WHERE " + " AND ".join(conds)) if conds else ""
    s1 = snapshot.con.execute(f"""
        SELECT c.place_id, g.sig_id, {aggs} FROM (
            SELECT {inputs}, reported_at >= $s AND reported_at < $e AS ri,
                   coalesce(closed_at >= $s AND closed_at < $e, false) AS ci FROM cases {only}) c
        JOIN _sig g ON {join}
        GROUP BY c.place_id, g.sig_id""", p).fetchnumpy()
    n = own.shape[0]
    n_sig = max(sigs) + 1 if sigs else 1
    place = np.asarray(s1["place_id"], dtype=np.int64)
    sig = np.asarray(s1["sig_id"], dtype=np.int64)
    for f in facts_used:
        wanted = [(sid, col) for (sid, ff), col in case_cols.items() if ff == f]
        member = np.array([[sid in sigs.get(g, ()) for sid, _ in wanted] for g in range(n_sig)], dtype=float)
        weights = np.ma.filled(np.ma.asarray(s1[f], dtype=float), 0.0)
        per_slice = _spread(place, sig, n, n_sig, weights) @ member
        for j, (_, col) in enumerate(wanted):
            own[:, index[col]] = per_slice[:, j]


def drop_facts(snapshot: Snapshot, table: FactsTable) -> None:
    """Nothing is kept in DuckDB for a period; kept for callers that release tables."""


#: Status codes of `ValueArrays.status`, in the order of their codes.
STATUS_NAMES = ("green", "yellow", "red", "none", "no_data")
GREEN, YELLOW, RED, NONE, NO_DATA = range(5)

VALUE_COLUMNS = ("area", "area_name", "level", "indicator", "value", "status", "numerator", "denominator")


@dataclass
class ValueArrays:
    """Values for n areas × the chosen indicators, as arrays (NaN = no value): cheap for whole levels."""

    areas: dict[str, np.ndarray]  # place_id, code, name, level, population
    codes: list[str]
    value: np.ndarray  # (n_indicators, n_areas)
    numerator: np.ndarray
    denominator: np.ndarray
    status: np.ndarray  # int8 codes into STATUS_NAMES (strings per cell cost more than the formulas)


def value_arrays(snapshot: Snapshot, tree: IndicatorTree, table: FactsTable, codes: Sequence[str],
                 area_where: str, params: dict[str, Any]) -> ValueArrays:
    """Apply the formulas and thresholds to the facts of the areas chosen by `area_where` (SQL over `a`).

    An area with no case in a slice gets 0 for its counts (the cases exist, none matched); alarm facts are
    NaN ("no data") when the store has no alarms table; a ratio over 0 is NaN too.
    """
    with snapshot.lock:
        res = snapshot.con.execute(f"""
            SELECT a.place_id, a.code, a.name, a.level, CAST(a.population AS DOUBLE) AS population
            FROM places a WHERE {area_where} ORDER BY a.place_id""", params).fetchnumpy()
    n = len(res["place_id"])
    ids = np.asarray(res["place_id"], dtype=np.int64)
    data = {"population": np.ma.filled(np.ma.asarray(res["population"], dtype=float), np.nan)}
    cols = np.ascontiguousarray(table.matrix[ids].T) if n else np.zeros((len(table.index), 0))
    for col, j in table.index.items():
        data[col] = cols[j]
    nan = np.full(n, np.nan)
    inds = [tree.get(c) for c in codes]
    value, num, den = (np.full((len(inds), n), np.nan) for _ in range(3))
    status = np.full((len(inds), n), NONE, dtype=np.int8)

    def fact(sid: int, f: str | None) -> np.ndarray:
        if f is None:
            return nan
        if f == "population":
            return data["population"]
        col = table.columns.get((sid, f))
        return data[col] if col is not None else nan  # an alarm fact without an alarms table

    with np.errstate(divide="ignore", invalid="ignore"):
        for k, ind in enumerate(inds):
            sid = table.slices[ind.slice]
            nu, de = fact(sid, ind.formula.numerator), fact(sid, ind.formula.denominator)
            num[k], den[k] = nu, de
            if ind.formula.denominator is None:
                v = nu * ind.formula.scale
            else:
                v = np.where((de > 0) | (de < 0), nu * ind.formula.scale / de, np.nan)
            value[k] = v
            th = ind.thresholds
            st = status[k]
            if th is not None:
                lower = th.direction.value == "lower_is_better"
                st[:] = GREEN
                st[v >= th.yellow if lower else v <= th.yellow] = YELLOW
                st[v >= th.red if lower else v <= th.red] = RED
            st[np.isnan(v)] = NO_DATA
    areas = {"place_id": res["place_id"], "code": res["code"], "name": res["name"], "level": res["level"],
             "population": data["population"]}
    return ValueArrays(areas, list(codes), value, num, den, status)


def values(snapshot: Snapshot, tree: IndicatorTree, table: FactsTable, codes: Sequence[str],
           area_where: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The same as rows (area, area_name, level, indicator, value, status, numerator, denominator), by area."""
    va = value_arrays(snapshot, tree, table, codes, area_where, params)

    def opt(x: float) -> float | None:
        return None if np.isnan(x) else float(x)

    out = []
    for j in range(len(va.areas["place_id"])):
        area, name, level = str(va.areas["code"][j]), str(va.areas["name"][j]), int(va.areas["level"][j])
        for k, code in enumerate(va.codes):
            out.append((area, name, level, code, opt(va.value[k, j]), STATUS_NAMES[va.status[k, j]],
                        opt(va.numerator[k, j]), opt(va.denominator[k, j])))
    return out
