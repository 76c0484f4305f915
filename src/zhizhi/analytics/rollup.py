"""The roll-up: every fact of every slice of the tree, for every area at every level, in set-based SQL.

Three steps, all inside DuckDB:

1. one scan of the cases groups them by (finest place, category) and sums every fact at once
   (`count_if` / `FILTER` over the period's flags) — the only step that touches every case;
2. a small bridge table maps each category to the slices whose prefixes cover it (a category may sit in
   several slices: a sector, its runway, the loop), so slices overlap at no extra scan;
3. `GROUPING SETS` over the place ancestry (city, district, street, community, grid) rolls the sums up to
   every level in one statement.

Because every fact is a sum, a district's facts are exactly the sums of its cases, and the formulas are
applied afterwards (`values`), again in SQL, with the thresholds that colour them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from zhizhi.analytics.snapshot import CLOSED_STATES, Snapshot, naive_utc
from zhizhi.domain.indicators import FACTS, IndicatorTree, Period, Slice, Source

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
SUMMED_FACTS = (*CASE_AGGREGATES, *ALARM_AGGREGATES)
assert set(SUMMED_FACTS) | {"population"} == set(FACTS), "every fact of the domain must be computed here"

_LEVEL_COLS = ("c0", "c1", "c2", "c3", "c4")
_counter = itertools.count()


@dataclass(frozen=True, slots=True)
class FactsTable:
    """A computed period: the DuckDB table holding (level, area, slice_id, facts…) and the slice ids."""

    name: str
    period: Period
    slices: dict[Slice, int]
    has_alarms: bool


def _bridge(snapshot: Snapshot, slices: dict[Slice, int], by_source: bool) -> None:
    cats = [r[0] for r in snapshot.con.execute("SELECT DISTINCT category FROM _s1").fetchall()]
    srcs = [r[0] for r in snapshot.con.execute("SELECT DISTINCT source FROM _s1").fetchall()] if by_source else [None]
    rows = [(sid, cat, src) for sl, sid in slices.items() if sl.source is Source.CASES
            for cat in cats if sl.matches_category(cat or None) for src in srcs
            if not by_source or sl.matches_source(src)]
    snapshot.con.register("_bridge_in", {
        "slice_id": np.array([r[0] for r in rows], dtype=np.int32),
        "category": np.array([r[1] for r in rows], dtype=object),
        "source": np.array([r[2] for r in rows], dtype=object)})
    snapshot.con.execute("CREATE OR REPLACE TEMP TABLE _bridge AS SELECT * FROM _bridge_in")
    snapshot.con.unregister("_bridge_in")


def _alarm_bridge(snapshot: Snapshot, slices: dict[Slice, int]) -> None:
    keys = snapshot.con.execute("SELECT DISTINCT scene, severity FROM _a1").fetchall()
    rows = [(sid, sc, sv) for sl, sid in slices.items() if sl.source is Source.ALARMS
            for sc, sv in keys if sl.matches_alarm(sc, sv)]
    snapshot.con.register("_abridge_in", {
        "slice_id": np.array([r[0] for r in rows], dtype=np.int32),
        "scene": np.array([r[1] for r in rows], dtype=object),
        "severity": np.array([r[2] for r in rows], dtype=object)})
    snapshot.con.execute("CREATE OR REPLACE TEMP TABLE _abridge AS SELECT * FROM _abridge_in")
    snapshot.con.unregister("_abridge_in")


def _rollup_sql(stage: str, facts: Sequence[str]) -> str:
    sums = ", ".join(f"sum({f}) AS {f}" for f in facts)
    sets = ", ".join(f"(s.slice_id, p.{c})" for c in _LEVEL_COLS)
    area = "coalesce(" + ", ".join(f"p.{c}" for c in reversed(_LEVEL_COLS)) + ")"
    level = "CASE " + " ".join(f"WHEN p.{c} IS NOT NULL THEN {i}" for i, c in reversed(list(enumerate(_LEVEL_COLS))))
    return f"""SELECT * FROM (
        SELECT CAST({level} END AS TINYINT) AS level, {area} AS area, s.slice_id, {sums}
        FROM {stage} s JOIN places p USING (place_id)
        GROUP BY GROUPING SETS ({sets})) WHERE area IS NOT NULL"""


def compute_facts(snapshot: Snapshot, tree: IndicatorTree, period: Period) -> FactsTable:
    """Compute every fact of every slice of `tree` over `period`, for every area at every level."""
    slices = {sl: i for i, sl in enumerate(tree.slices())}
    start, end = naive_utc(period.start), naive_utc(period.end)
    by_source = any(sl.sources for sl in slices if sl.source is Source.CASES)
    name = f"facts_{next(_counter)}"
    con = snapshot.con
    with snapshot.lock:
        group = "place_id, category" + (", source" if by_source else "")
        aggs = ", ".join(f"{expr} AS {f}" for f, expr in CASE_AGGREGATES.items())
        con.execute(f"""CREATE OR REPLACE TEMP TABLE _s1 AS
            SELECT {group}, {aggs} FROM (
                SELECT *, reported_at >= $s AND reported_at < $e AS ri,
                       coalesce(closed_at >= $s AND closed_at < $e, false) AS ci FROM cases)
            GROUP BY {group}""", {"s": start, "e": end})
        _bridge(snapshot, slices, by_source)
        join = "b.category = s1.category" + (" AND b.source = s1.source" if by_source else "")
        case_sums = ", ".join(f"sum(s1.{f}) AS {f}" for f in CASE_AGGREGATES)
        con.execute(f"""CREATE OR REPLACE TEMP TABLE _s2 AS
            SELECT s1.place_id, b.slice_id, {case_sums} FROM _s1 s1 JOIN _bridge b ON {join}
            GROUP BY s1.place_id, b.slice_id""")
        case_cols = ", ".join(CASE_AGGREGATES)
        null_alarms = ", ".join(f"NULL::HUGEINT AS {f}" for f in ALARM_AGGREGATES)
        con.execute(f"CREATE TEMP TABLE {name} AS SELECT level, area, slice_id, {case_cols}, {null_alarms} "
                    f"FROM ({_rollup_sql('_s2', list(CASE_AGGREGATES))})")
        has_alarms = snapshot.has_alarms
        if has_alarms and any(sl.source is Source.ALARMS for sl in slices):
            aggs = ", ".join(f"{expr} AS {f}" for f, expr in ALARM_AGGREGATES.items())
            con.execute(f"""CREATE OR REPLACE TEMP TABLE _a1 AS
                SELECT place_id, scene, severity, {aggs} FROM (
                    SELECT *, raised_at >= $s AND raised_at < $e AS ri FROM alarms)
                GROUP BY place_id, scene, severity""", {"s": start, "e": end})
            _alarm_bridge(snapshot, slices)
            alarm_sums = ", ".join(f"sum(a1.{f}) AS {f}" for f in ALARM_AGGREGATES)
            con.execute(f"""CREATE OR REPLACE TEMP TABLE _a2 AS
                SELECT a1.place_id, b.slice_id, {alarm_sums} FROM _a1 a1
                JOIN _abridge b ON b.scene = a1.scene AND b.severity = a1.severity
                GROUP BY a1.place_id, b.slice_id""")
            null_cases = ", ".join(f"NULL::HUGEINT AS {f}" for f in CASE_AGGREGATES)
            alarm_cols = ", ".join(ALARM_AGGREGATES)
            con.execute(f"INSERT INTO {name} SELECT level, area, slice_id, {null_cases}, {alarm_cols} "
                        f"FROM ({_rollup_sql('_a2', list(ALARM_AGGREGATES))})")
        con.execute("DROP TABLE IF EXISTS _s1; DROP TABLE IF EXISTS _s2; DROP TABLE IF EXISTS _a1; "
                    "DROP TABLE IF EXISTS _a2")
    return FactsTable(name, period, slices, has_alarms)


def drop_facts(snapshot: Snapshot, table: FactsTable) -> None:
    with snapshot.lock:
        snapshot.con.execute(f"DROP TABLE IF EXISTS {table.name}")


def _indicator_table(snapshot: Snapshot, tree: IndicatorTree, table: FactsTable, codes: Sequence[str]) -> None:
    inds = [tree.get(c) for c in codes]
    th = [i.thresholds for i in inds]
    snapshot.con.register("_ind_in", {
        "ord": np.arange(len(inds), dtype=np.int32),
        "code": np.array([i.code for i in inds], dtype=object),
        "slice_id": np.array([table.slices[i.slice] for i in inds], dtype=np.int32),
        "num": np.array([i.formula.numerator for i in inds], dtype=object),
        "den": np.array([i.formula.denominator for i in inds], dtype=object),
        "scale": np.array([i.formula.scale for i in inds], dtype=np.float64),
        "dir": np.array([t.direction.value if t else None for t in th], dtype=object),
        "yellow": np.array([t.yellow if t else np.nan for t in th], dtype=np.float64),
        "red": np.array([t.red if t else np.nan for t in th], dtype=np.float64),
    })
    snapshot.con.execute("CREATE OR REPLACE TEMP TABLE _ind AS SELECT * FROM _ind_in")
    snapshot.con.unregister("_ind_in")


def _fact_expr(column: str, has_alarms: bool) -> str:
    """The value of fact named in `column` ('num'/'den') for one (area, indicator) row."""
    whens = []
    for f in CASE_AGGREGATES:
        whens.append(f"WHEN '{f}' THEN CAST(coalesce(f.{f}, 0) AS DOUBLE)")
    for f in ALARM_AGGREGATES:
        val = f"CAST(coalesce(f.{f}, 0) AS DOUBLE)" if has_alarms else "NULL"
        whens.append(f"WHEN '{f}' THEN {val}")
    whens.append("WHEN 'population' THEN CAST(a.population AS DOUBLE)")
    return f"(CASE i.{column} " + " ".join(whens) + " END)"


VALUE_COLUMNS = ("area", "area_name", "level", "indicator", "value", "status", "numerator", "denominator")


def values(snapshot: Snapshot, tree: IndicatorTree, table: FactsTable, codes: Sequence[str],
           area_where: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Indicator values for the areas chosen by `area_where` (SQL over places `a`), ordered by area then tree.

    An area with no case in a slice gets 0 for its counts (the cases exist and none matched); alarm facts are
    NULL ("no data") when the store has no alarms table; a ratio over 0 is NULL too.
    """
    with snapshot.lock:
        _indicator_table(snapshot, tree, table, codes)
        num, den = _fact_expr("num", table.has_alarms), _fact_expr("den", table.has_alarms)
        sql = f"""
            WITH a AS (SELECT code, name, level, population, place_id FROM places a WHERE {area_where}),
            x AS (SELECT a.code AS area, a.name AS area_name, a.level, a.place_id, i.ord, i.code AS indicator,
                         {num} AS n, CASE WHEN i.den IS NULL THEN NULL ELSE {den} END AS d,
                         i.den IS NULL AS no_den, i.scale, i.dir, i.yellow, i.red
                  FROM a CROSS JOIN _ind i LEFT JOIN {table.name} f ON f.area = a.code AND f.slice_id = i.slice_id),
            v AS (SELECT *, CASE WHEN n IS NULL THEN NULL WHEN no_den THEN n * scale
                                 WHEN d IS NULL OR d = 0 THEN NULL ELSE n * scale / d END AS value FROM x)
            SELECT area, area_name, level, indicator, value,
                   CASE WHEN value IS NULL THEN 'no_data' WHEN dir IS NULL THEN 'none'
                        WHEN dir = 'lower_is_better' THEN
                            CASE WHEN value >= red THEN 'red' WHEN value >= yellow THEN 'yellow' ELSE 'green' END
                        ELSE CASE WHEN value <= red THEN 'red' WHEN value <= yellow THEN 'yellow' ELSE 'green' END
                   END AS status, n AS numerator, d AS denominator
            FROM v ORDER BY place_id, ord"""
        return snapshot.con.execute(sql, params).fetchall()
