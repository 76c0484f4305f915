"""Indicator use cases for the entry points: read the tree's values for an area, export them, chart summaries.

Every call takes the `Principal`: an area outside the principal's places answers "not found" (the same
answer as a code that does not exist, so scope does not leak which areas exist). This is the one place the
access capability's scope applies to indicators.

The snapshot is refreshed from the store at most every `refresh_interval_s` seconds (and on demand), and the
facts of a period are cached per snapshot version, so repeated reads cost a lookup.
"""

from __future__ import annotations

import csv
import io
import logging
import threading
import tomllib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import duckdb
from sqlalchemy import Engine

from zhizhi.analytics import rollup
from zhizhi.analytics.cube import Cube
from zhizhi.analytics.snapshot import RefreshStats, Snapshot, naive_utc
from zhizhi.domain.access import Principal, Scope, scope_of
from zhizhi.domain.errors import NotFound, ValidationFailed
from zhizhi.domain.indicators import Grain, IndicatorTree, Period, parse_tree, period_of
from zhizhi.domain.places import Level

if TYPE_CHECKING:
    from zhizhi.service.bootstrap import Zhizhi

log = logging.getLogger(__name__)


def load_tree(path: Path | str | None = None) -> IndicatorTree:
    """The tree from a TOML file, or the packaged default (eight sectors and the loop's measures)."""
    if path is None:
        text = resources.files("zhizhi.data").joinpath("indicators/tree.toml").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValidationFailed(f"指标树文件格式错误 / the tree file is not valid TOML: {exc}") from None
    return parse_tree(data)


@dataclass(frozen=True, slots=True)
class Area:
    code: str
    name: str
    level: Level
    population: int | None


@dataclass(frozen=True, slots=True)
class Reading:
    """Values of the tree for some areas: one row per (area, indicator), in tree order per area."""

    area: Area
    level: Level
    periods: dict[Grain, Period]
    rows: list[dict[str, Any]]
    total_areas: int  # areas at `level` inside `area` (rows hold those of the requested page)


class IndicatorService:
    def __init__(self, engine: Engine, *, tree: IndicatorTree, snapshot: Snapshot,
                 clock: Callable[[], datetime], tz: str = "Asia/Shanghai", refresh_interval_s: float = 30.0,
                 category_names: dict[str, str] | None = None) -> None:
        self.engine = engine
        self.tree = tree
        self.snapshot = snapshot
        self.clock = clock
        self.tz = ZoneInfo(tz)
        self.refresh_interval_s = refresh_interval_s
        self.category_names = category_names or {}
        self.reveal: Callable[[str | None], str | None] | None = None  # decrypts personal fields (set by for_app)
        self._refreshed_at: datetime | None = None
        self.cube = Cube(snapshot, tree)
        self._cache: OrderedDict[tuple[int, datetime, datetime, tuple[str, ...]], rollup.FactsTable] = OrderedDict()
        self._lock = threading.RLock()

    @classmethod
    def for_app(cls, zz: Zhizhi, *, tree_file: Path | None = None, in_memory: bool = False) -> IndicatorService:
        """Wire the service for an application: the snapshot file lives in the data dir.

        If another process holds the file (DuckDB allows one writer), the service falls back to a private
        in-memory snapshot rather than fail: it is rebuilt from the store, only slower the first time.
        """
        snapshot: Snapshot | None = None
        if not in_memory:
            try:
                snapshot = Snapshot(zz.settings.data_dir / "analytics" / "snapshot.duckdb", tz=zz.settings.timezone)
            except duckdb.IOException as exc:
                log.warning("indicator snapshot file busy (%s); using an in-memory snapshot", exc)
        names = {c.code: c.name_zh for c in zz.catalogue.categories()}
        snapshot = snapshot or Snapshot(None, tz=zz.settings.timezone)
        service = cls(zz.engine, tree=load_tree(tree_file), snapshot=snapshot, clock=zz.clock.now,
                      tz=zz.settings.timezone, category_names=names)
        cipher = zz.sessions.kw.get("info", {}).get("cipher")
        service.reveal = cipher.decrypt if cipher is not None else None
        return service

    # ----- freshness ---------------------------------------------------------------------------
    def refresh(self, force: bool = False) -> RefreshStats | None:
        """Pull what changed in the store, unless the last pull is recent (and not forced)."""
        with self._lock:
            now = datetime.now(UTC)
            if (not force and self._refreshed_at is not None
                    and (now - self._refreshed_at).total_seconds() < self.refresh_interval_s):
                return None
            stats = self.snapshot.refresh(self.engine, self.reveal, now=self.clock())
            self.cube.sync()  # the changed buckets are recomputed here, so reads do not pay for them
            self._refreshed_at = now
            return stats

    def facts(self, period: Period, departments: Sequence[str] = ()) -> rollup.FactsTable:
        """The facts of a period (over the cases of `departments` only, when given), computed once per
        snapshot version."""
        with self._lock:
            key = (self.snapshot.version, period.start, period.end, tuple(sorted(departments)))
            table = self._cache.get(key)
            if table is None:
                table = rollup.compute_facts(self.snapshot, self.tree, period, cube=self.cube,
                                             departments=key[3])
                self._cache[key] = table
                while len(self._cache) > 4:
                    _, old = self._cache.popitem(last=False)
                    rollup.drop_facts(self.snapshot, old)
            return table

    # ----- areas and scope ---------------------------------------------------------------------
    @staticmethod
    def scope(principal: Principal) -> Scope:
        """The principal's case scope (`scope_of`): indicators count only the cases it may see.

        A principal that sees no case (a handler without a department …) gets "not found" for every area,
        as it does for every case; a department handler's values count its departments' cases only.
        """
        return scope_of(principal)

    def area(self, principal: Principal, code: str | None) -> Area:
        """The area asked for (default: the principal's first place, else the city), within scope."""
        if self.scope(principal).nothing:
            raise NotFound(f"找不到区域 / no area {code!r}", area=code)
        con = self.snapshot.con
        with self.snapshot.lock:
            if code is None:
                code = principal.places[0] if principal.places else None
            if code is None:
                row = con.execute("SELECT code, name, level, population, c0, c1, c2, c3, c4 FROM places "
                                  "WHERE level = 0 ORDER BY code LIMIT 1").fetchall()
            else:
                row = con.execute("SELECT code, name, level, population, c0, c1, c2, c3, c4 FROM places "
                                  "WHERE code = ?", [code]).fetchall()
        row = row[0] if row else None
        if row is None:
            raise NotFound(f"找不到区域 / no area {code!r}" if code else "没有加载区划 / no places are loaded",
                           area=code)
        if principal.places and not set(principal.places).intersection(c for c in row[4:] if c):
            raise NotFound(f"找不到区域 / no area {code!r}", area=code)  # outside scope: same answer as unknown
        return Area(row[0], row[1], Level(row[2]), row[3])

    def periods(self, grain: Grain | None, at: datetime | None, codes: Sequence[str]) -> dict[Grain, Period]:
        at = self.aware(at) or self.clock()
        grains = {grain} if grain else {self.tree.get(c).grain for c in codes}
        return {g: period_of(g, at, self.tz) for g in sorted(grains, key=list(Grain).index)}

    def aware(self, at: datetime | None) -> datetime | None:
        """A time without a zone is read in the city's time zone."""
        return at.replace(tzinfo=self.tz) if at is not None and at.tzinfo is None else at

    # ----- reading -----------------------------------------------------------------------------
    def read(self, principal: Principal, *, area: str | None = None, level: Level | str | int | None = None,
             grain: Grain | str | None = None, at: datetime | None = None,
             indicators: Sequence[str] | None = None, limit: int | None = None, offset: int = 0) -> Reading:
        """Values of the tree's indicators for `area`, or for every area at `level` inside it."""
        self.refresh()
        the_area = self.area(principal, area)
        lv = the_area.level if level is None else _level(level)
        if lv < the_area.level:
            raise ValidationFailed(f"层级 {lv.name.lower()} 高于区域 {the_area.code} / level is above the area",
                                   area=the_area.code, level=lv.name.lower())
        codes = list(indicators) if indicators else [i.code for i in self.tree.indicators()]
        for c in codes:
            self.tree.get(c)
        g = Grain.parse(grain) if grain else None
        periods = self.periods(g, at, codes)
        where = f"a.c{int(the_area.level)} = $area AND a.level = $level"
        params: dict[str, Any] = {"area": the_area.code, "level": int(lv)}
        if limit is not None:
            where += (f" AND a.code IN (SELECT code FROM places WHERE c{int(the_area.level)} = $area AND level = $level"
                      " ORDER BY code LIMIT $limit OFFSET $offset)")
            params.update(limit=int(limit), offset=int(offset))
        with self.snapshot.lock:
            total = int(self.snapshot.con.execute(
                f"SELECT count(*) FROM places WHERE c{int(the_area.level)} = $area AND level = $level",
                {"area": the_area.code, "level": int(lv)}).fetchall()[0][0])
        order = {c: i for i, c in enumerate(codes)}
        rows: list[dict[str, Any]] = []
        departments = self.scope(principal).departments
        for gr, period in periods.items():
            group = [c for c in codes if (g or self.tree.get(c).grain) == gr]
            table = self.facts(period, departments)
            for r in rollup.values(self.snapshot, self.tree, table, group, where, params):
                rows.append({**dict(zip(rollup.VALUE_COLUMNS, r, strict=True)), "grain": gr.value,
                             "period": period.label})
        rows.sort(key=lambda r: (r["area"], order[r["indicator"]]))
        return Reading(the_area, lv, periods, rows, total)

    def csv_lines(self, principal: Principal, **kwargs: Any) -> Iterator[str]:
        """The reading as CSV (UTF-8 with BOM so spreadsheet programs show the Chinese names)."""
        reading = self.read(principal, **kwargs)
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["area_code", "area_name", "level", "indicator", "name_zh", "unit", "grain", "period",
                    "period_start", "period_end", "value", "status", "numerator", "denominator"])
        yield "\ufeff" + buf.getvalue()
        for r in reading.rows:
            buf.seek(0)
            buf.truncate()
            ind = self.tree.get(r["indicator"])
            p = reading.periods[Grain(r["grain"])]
            w.writerow([r["area"], r["area_name"], Level(r["level"]).name.lower(), ind.code, ind.name_zh, ind.unit,
                        r["grain"], p.label, p.start.isoformat(), p.end.isoformat(), _num(r["value"]), r["status"],
                        _num(r["numerator"]), _num(r["denominator"])])
            yield buf.getvalue()

    # ----- chart summaries for the console -----------------------------------------------------
    def summary(self, principal: Principal, *, area: str | None = None, days: int = 30,
                at: datetime | None = None, overdue_limit: int = 10) -> dict[str, Any]:
        """What the console's charts need for one area over the `days` local days ending with `at`'s day."""
        if not 1 <= days <= 366:
            raise ValidationFailed("days 必须在 1 到 366 之间 / days must be 1–366", days=days)
        self.refresh()
        the_area = self.area(principal, area)
        at = self.aware(at) or self.clock()
        last_day = at.astimezone(self.tz).date()
        first_day = last_day - timedelta(days=days - 1)
        start = datetime(first_day.year, first_day.month, first_day.day, tzinfo=self.tz)
        end = datetime(last_day.year, last_day.month, last_day.day, tzinfo=self.tz) + timedelta(days=1)
        p = {"area": the_area.code, "s": naive_utc(start), "e": naive_utc(end), "tz": str(self.tz)}
        scope = f"place_id IN (SELECT place_id FROM places WHERE c{int(the_area.level)} = $area)"
        departments = self.scope(principal).departments
        if departments:  # a department handler's charts count its departments' cases (and devices) only
            scope += " AND list_contains($deps, department)"
            p["deps"] = list(departments)
        q = {k: v for k, v in p.items() if k != "tz"}
        con = self.snapshot.con
        with self.snapshot.lock:
            by_cat = con.execute(f"""SELECT left(category, 3) AS major, count(*) FROM cases
                WHERE {scope} AND reported_at >= $s AND reported_at < $e GROUP BY major ORDER BY 2 DESC, 1""",
                q).fetchall()
            by_level = con.execute(f"""SELECT level, count(*), count_if(is_open) FROM cases
                WHERE {scope} AND reported_at >= $s AND reported_at < $e GROUP BY level ORDER BY level""",
                q).fetchall()
            by_state = con.execute(f"""SELECT state, count(*) FROM cases WHERE {scope}
                AND reported_at >= $s AND reported_at < $e GROUP BY state ORDER BY 2 DESC""",
                q).fetchall()
            trend = con.execute(f"""
                WITH d AS (SELECT CAST(generate_series AS DATE) AS day FROM generate_series(
                        CAST($first AS DATE), CAST($last AS DATE), INTERVAL 1 DAY)),
                r AS (SELECT CAST(timezone($tz, timezone('UTC', reported_at)) AS DATE) AS day, count(*) AS n
                      FROM cases WHERE {scope} AND reported_at >= $s AND reported_at < $e GROUP BY 1),
                c AS (SELECT CAST(timezone($tz, timezone('UTC', closed_at)) AS DATE) AS day, count(*) AS n
                      FROM cases WHERE {scope} AND closed_at >= $s AND closed_at < $e GROUP BY 1)
                SELECT d.day, coalesce(r.n, 0), coalesce(c.n, 0) FROM d LEFT JOIN r USING (day)
                LEFT JOIN c USING (day) ORDER BY d.day""",
                {**p, "first": first_day, "last": last_day}).fetchall()
            loop = con.execute(f"""SELECT count_if(ci), count_if(ci AND NOT ever_overdue),
                    count_if(ri AND state <> 'rejected'), count_if(ri AND state IN ('closed', 'evaluated')),
                    count_if(ci AND satisfaction IS NOT NULL), sum(satisfaction) FILTER (WHERE ci),
                    count_if(ci AND satisfaction >= 4), count_if(is_open), count_if(overdue_now)
                FROM (SELECT *, reported_at >= $s AND reported_at < $e AS ri,
                             coalesce(closed_at >= $s AND closed_at < $e, false) AS ci FROM cases WHERE {scope})""",
                q).fetchall()[0]
            overdue = con.execute(f"""SELECT c.id, c.category, c.state, c.department, c.due_at, c.place_code,
                    pl.name FROM cases c LEFT JOIN places pl ON pl.place_id = c.place_id
                WHERE c.{scope} AND c.overdue_now ORDER BY c.due_at NULLS LAST, c.id LIMIT $n""",
                {**{k: v for k, v in q.items() if k not in ("s", "e")}, "n": overdue_limit}).fetchall()
            alarms = None
            if self.snapshot.has_alarms:
                alarms = con.execute(f"""SELECT scene, count(*), count_if(state <> 'cleared') FROM alarms
                    WHERE {scope} AND raised_at >= $s AND raised_at < $e GROUP BY scene ORDER BY 2 DESC, 1""",
                    q).fetchall()
        closed, on_time, registered, closed_of_reported, evaluated, sat_sum, satisfied, open_now, overdue_now = (
            int(v or 0) for v in loop)
        return {
            "area": {"code": the_area.code, "name": the_area.name, "level": the_area.level.name.lower()},
            "window": {"days": days, "start": start.astimezone(UTC).isoformat(), "end": end.astimezone(UTC).isoformat(),
                       "first_day": first_day.isoformat(), "last_day": last_day.isoformat()},
            "by_category": [{"code": c or None, "name_zh": self.category_names.get(c, c if c else "未分类"),
                             "count": n} for c, n in by_cat],
            "by_level": [{"level": None if lv is None else Level(lv).name.lower(),
                          "label_zh": "未派遣" if lv is None else Level(lv).label_zh, "count": n, "open": o}
                         for lv, n, o in by_level],
            "by_state": [{"state": s, "count": n} for s, n in by_state],
            "trend": [{"day": d.isoformat(), "reported": r, "closed": c} for d, r, c in trend],
            "on_time": {"closed": closed, "on_time": on_time, "rate": _pct(on_time, closed)},
            "closure": {"registered": registered, "closed": closed_of_reported,
                        "rate": _pct(closed_of_reported, registered)},
            "satisfaction": {"evaluated": evaluated, "satisfied": satisfied, "rate": _pct(satisfied, evaluated),
                             "mean": None if not evaluated else round(sat_sum / evaluated, 3)},
            "open": open_now,
            "overdue": {"count": overdue_now, "cases": [
                {"id": i, "category_code": cat or None, "state": st, "department_code": dep,
                 "due_at": None if due is None else due.replace(tzinfo=UTC).isoformat(), "place_code": pc,
                 "place_name": pn} for i, cat, st, dep, due, pc, pn in overdue]},
            "alarms_by_scene": None if alarms is None else [{"scene": s, "count": n, "active": a}
                                                            for s, n, a in alarms],
        }


def _level(value: Level | str | int) -> Level:
    try:
        return Level.parse(value)
    except ValueError as exc:
        raise ValidationFailed(str(exc)) from None


def _pct(num: int, den: int) -> float | None:
    return None if not den else round(100.0 * num / den, 2)


def _num(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)
