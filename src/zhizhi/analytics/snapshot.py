"""The columnar snapshot: cases, places and alarms copied from the system of record into DuckDB.

Refreshing is incremental, so it stays cheap on a store of millions of cases:

* cases whose `updated_at` is at or after the last watermark (less a safety overlap, because a transaction
  that started earlier may commit later) are re-read and upserted by id; re-reading a row is harmless;
* the timeline is read once, forward by event id, for the two facts the case row forgets: the *first*
  dispatch (reassigning and escalating move `dispatched_at`) and whether a step was *ever* overdue (each step
  clears `overdue_since`);
* places are reloaded only when the places table changed (count and a checksum of codes and populations);
* sensing alarms, where the sensing tables exist, are reloaded whole (they are few next to cases, and an
  alarm changes state without an `updated_at`).

The reporter's phone never enters the snapshot: only a hash of it, used to recognise repeat complaints.
Timestamps are stored as naive UTC. `closed_at` is kept only for closed and evaluated cases (the case
row also stamps it on rejection, which is not a closure).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import numpy as np
from sqlalchemy import Engine, column, func, inspect, select, table

from zhizhi.adapters.observations_store import ObservationStore
from zhizhi.adapters.orm import CaseEventRow, CaseRow, PlaceRow, UtcDateTime

#: How far back of the watermark to re-read, for transactions that committed after a later one.
OVERLAP = timedelta(minutes=5)
#: Readings are copied forward by their own time; a reading stored this much later than it was taken is still
#: caught (devices buffer when offline). One that arrives later still is missed by the snapshot.
READINGS_OVERLAP = timedelta(hours=1)
#: A report repeats an earlier one of the same category from the same reporter within this window.
REPEAT_WINDOW_DAYS = 30
BATCH = 50_000
OPEN_STATES = ("reported", "registered", "dispatched", "handling", "suspended", "feedback")
CLOSED_STATES = ("closed", "evaluated")

#: Bumped whenever the tables below change; a snapshot of another version is dropped and rebuilt.
SCHEMA_VERSION = "3"
TABLES = ("meta", "places", "categories", "cases", "first_dispatch", "overdue_ids", "alarms", "devices",
          "datastreams", "readings", "cube_dirty",
          "cube_slices", "cube_r", "cube_c", "cube_ry", "cube_cy", "cube_n")
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS places (
    place_id INTEGER, code VARCHAR, name VARCHAR, level TINYINT, parent_code VARCHAR, population BIGINT,
    c0 VARCHAR, c1 VARCHAR, c2 VARCHAR, c3 VARCHAR, c4 VARCHAR,
    a0 INTEGER, a1 INTEGER, a2 INTEGER, a3 INTEGER, a4 INTEGER);
CREATE TABLE IF NOT EXISTS categories (cat_id SMALLINT PRIMARY KEY, code VARCHAR UNIQUE);
CREATE TABLE IF NOT EXISTS cases (
    id BIGINT, place_code VARCHAR, place_id INTEGER, category VARCHAR, cat_id SMALLINT, source VARCHAR,
    state VARCHAR,
    level TINYINT, department VARCHAR, reported_at TIMESTAMP, dispatched_at TIMESTAMP, closed_at TIMESTAMP,
    due_at TIMESTAMP, response_s INTEGER, closing_s INTEGER, satisfaction TINYINT, ever_overdue BOOLEAN,
    overdue_now BOOLEAN, is_open BOOLEAN, repeat_key UBIGINT, is_repeat BOOLEAN, updated_at TIMESTAMP,
    rmonth SMALLINT, cmonth SMALLINT);
CREATE TABLE IF NOT EXISTS devices (
    id BIGINT, place_id INTEGER, scene VARCHAR, type VARCHAR, department VARCHAR, active BOOLEAN,
    last_seen TIMESTAMP);
CREATE TABLE IF NOT EXISTS datastreams (id BIGINT, device_id BIGINT, quantity VARCHAR);
CREATE TABLE IF NOT EXISTS readings (datastream_id BIGINT, t TIMESTAMP, value DOUBLE);
CREATE TABLE IF NOT EXISTS cube_dirty (rmonth SMALLINT, cmonth SMALLINT, place_id INTEGER);
CREATE TABLE IF NOT EXISTS first_dispatch (case_id BIGINT PRIMARY KEY, dispatched_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS overdue_ids (case_id BIGINT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS alarms (
    id BIGINT, place_id INTEGER, scene VARCHAR, severity VARCHAR, state VARCHAR, raised_at TIMESTAMP,
    ack_s INTEGER, cleared_at TIMESTAMP, case_id BIGINT, department VARCHAR);
"""

_CASE_COLUMNS = (
    CaseRow.id, CaseRow.source, CaseRow.state, CaseRow.category_code, CaseRow.department_code, CaseRow.level,
    CaseRow.city_code, CaseRow.district_code, CaseRow.street_code, CaseRow.community_code, CaseRow.grid_code,
    CaseRow.reporter_phone, CaseRow.reported_at, CaseRow.dispatched_at, CaseRow.closed_at, CaseRow.due_at,
    CaseRow.overdue_since, CaseRow.satisfaction, CaseRow.updated_at,
)


@dataclass(frozen=True, slots=True)
class RefreshStats:
    cases_read: int
    events_read: int
    places_reloaded: bool
    alarms: int | None  # None: the store has no sensing_alarms table
    readings: int | None = None  # None: the store has no sensing tables


def naive_utc(value: datetime | None) -> datetime | None:
    """Aware → naive UTC (DuckDB TIMESTAMP); None stays None."""
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def _ts(values: Sequence[datetime | None]) -> np.ndarray:
    return np.array([naive_utc(v) for v in values], dtype="datetime64[us]")


def _obj(values: Iterable[Any]) -> np.ndarray:
    return np.array(list(values), dtype=object)


class Snapshot:
    """One DuckDB database (a file, or memory) holding the snapshot; safe to share between threads."""

    def __init__(self, path: Path | str | None = None, tz: str = "Asia/Shanghai") -> None:
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.tz = str(ZoneInfo(tz))  # validates the zone: it is written into SQL below
        self.con = duckdb.connect(str(path) if path is not None else ":memory:")
        self.lock = threading.RLock()
        self.derived: dict[str, Any] = {}  # things computed from the places (the roll-up's ancestry), per load
        self._migrate()
        self.has_alarms = self.meta("alarms_present") == "1"
        self.has_devices = self.meta("devices_present") == "1"
        if self.meta("tz") != self.tz:
            self._restamp_months()

    def month_sql(self, col: str) -> str:
        """SQL for the local month of a naive-UTC timestamp column, as year × 12 + month − 1 (NULL stays NULL).

        The cube (`zhizhi.analytics.cube`) sums cases per local month, so the month is stamped once per case
        when it is written, not once per query.
        """
        local = f"timezone('{self.tz}', timezone('UTC', {col}))"
        return f"CAST(year({local}) * 12 + month({local}) - 1 AS SMALLINT)"

    def _restamp_months(self) -> None:
        """The city's time zone changed (or a new snapshot): re-stamp every case's months, rebuild the cube."""
        with self.lock:
            self.con.execute(f"UPDATE cases SET rmonth = {self.month_sql('reported_at')}, "
                             f"cmonth = {self.month_sql('closed_at')}")
            self.set_meta("tz", self.tz)
            self.invalidate_cube()

    def invalidate_cube(self) -> None:
        """Make the next cube sync rebuild it whole (places were remapped, months re-stamped …)."""
        self.set_meta("cube_fingerprint", "")
        self.con.execute("DELETE FROM cube_dirty")

    def mark_dirty(self, ids_sql: str) -> None:
        """Record the (month, place) buckets of the cases whose ids the query returns, as they are now.

        Called before a case row is replaced (its old buckets) and after (its new ones), and after any
        in-place change of a fact column: the cube recomputes exactly these buckets at its next sync.
        """
        self.con.execute(f"INSERT INTO cube_dirty SELECT DISTINCT rmonth, cmonth, place_id FROM cases "
                         f"WHERE id IN ({ids_sql})")

    def _migrate(self) -> None:
        """Create the tables; drop a snapshot written by another schema version (it is only a copy)."""
        tables = {r[0] for r in self.con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        if "meta" in tables:
            rows = self.con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
            if not rows or rows[0][0] != SCHEMA_VERSION:
                for t in TABLES:
                    self.con.execute(f"DROP TABLE IF EXISTS {t}")
        self.con.execute(SCHEMA)
        self.con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [SCHEMA_VERSION])

    # ----- meta --------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        rows = self.con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchall()
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        self.con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])

    @property
    def version(self) -> int:
        """Bumped by every refresh that changed something; caches key on it."""
        return int(self.meta("version") or 0)

    def close(self) -> None:
        self.con.close()

    # ----- refresh -----------------------------------------------------------------------------
    def refresh(self, engine: Engine, reveal: Callable[[str | None], str | None] | None = None,
                now: datetime | None = None) -> RefreshStats:
        """Bring the snapshot up to date with the store (incrementally).

        `now` (the application's clock) is when the snapshot is taken: devices heard from shortly before it
        count as online.

        `reveal` decrypts a stored personal field (phones are encrypted at rest); the phone is
        pseudonymised at once with a salted hash, so only that hash enters the snapshot.
        """
        self._reveal = reveal or (lambda v: v)
        with self.lock:
            salt = self.meta("phone_salt")
            if salt is None:
                salt = secrets.token_hex(16)
                self.set_meta("phone_salt", salt)
            self._salt = bytes.fromhex(salt)
            reloaded = self._refresh_places(engine)
            events = self._refresh_events(engine)
            cases = self._refresh_cases(engine, remap=reloaded)
            alarms = self._refresh_alarms(engine)
            readings = self._refresh_sensing(engine, now or datetime.now(UTC))
            self._maybe_cluster(cases)
            if reloaded or events or cases or alarms or readings is not None:
                self.set_meta("version", str(self.version + 1))
            return RefreshStats(cases, events, reloaded, alarms, readings)

    def _pseudonym(self, stored: str | None) -> str | None:
        """A salted hash of the reporter's phone: enough to recognise repeats, not to recover the number."""
        phone = self._reveal(stored) if stored else None
        if not phone:
            return None
        return hashlib.blake2b(phone.encode("utf-8"), digest_size=12, key=self._salt).hexdigest()

    def cluster(self) -> int:
        """Rewrite the cases in (place, category) order, so the roll-up's grouping finds neighbours together.

        Refreshes append in `updated_at` order; clustering is redone once a fifth of the rows are new.
        """
        with self.lock:
            self.con.execute("CREATE OR REPLACE TABLE cases_clustered AS "
                             "SELECT * FROM cases ORDER BY place_id, cat_id, reported_at")
            self.con.execute("DROP TABLE cases")
            self.con.execute("ALTER TABLE cases_clustered RENAME TO cases")
            n = int(self.con.execute("SELECT count(*) FROM cases").fetchall()[0][0])
            self.set_meta("clustered_rows", str(n))
            self.set_meta("unclustered_rows", "0")
            return n

    def _maybe_cluster(self, new_rows: int) -> None:
        if not new_rows:
            return
        pending = int(self.meta("unclustered_rows") or 0) + new_rows
        self.set_meta("unclustered_rows", str(pending))
        if pending >= 100_000 and pending * 5 >= int(self.meta("clustered_rows") or 0):
            self.cluster()

    def _refresh_places(self, engine: Engine) -> bool:
        with engine.connect() as conn:
            count, checksum = conn.execute(
                select(func.count(), func.coalesce(func.sum(func.coalesce(PlaceRow.population, 0)), 0))
            ).one()
            signature = f"{count}:{checksum}"
            if signature == self.meta("places_signature"):
                return False
            rows = conn.execute(select(PlaceRow.code, PlaceRow.name, PlaceRow.level, PlaceRow.parent_code,
                                       PlaceRow.population).order_by(PlaceRow.code)).all()
        self.load_places([(r.code, r.name, int(r.level), r.parent_code, r.population) for r in rows])
        self.set_meta("places_signature", signature)
        return True

    def load_places(self, rows: Sequence[tuple[str, str, int, str | None, int | None]]) -> None:
        """Replace the places: (code, name, level, parent_code, population), any order.

        Each place gets the codes (c0 city … c4 grid) and ids (a0 … a4) of its ancestors per level: the
        roll-up groups by the ids. Place ids follow code order, so a subtree is (nearly) contiguous.
        """
        by_code = {r[0]: r for r in rows}
        ordered = sorted(by_code)
        anc: dict[str, list[str | None]] = {}

        def chain(code: str) -> list[str | None]:
            if code in anc:
                return anc[code]
            _, _, level, parent, _ = by_code[code]
            out = list(chain(parent)) if parent in by_code else [None] * 5
            out[level] = code
            anc[code] = out
            return out

        for code in ordered:
            chain(code)
        cols: dict[str, np.ndarray] = {
            "place_id": np.arange(len(ordered), dtype=np.int32),
            "code": _obj(ordered),
            "name": _obj(by_code[c][1] for c in ordered),
            "level": np.array([by_code[c][2] for c in ordered], dtype=np.int8),
            "parent_code": _obj(by_code[c][3] for c in ordered),
            "population": np.array([by_code[c][4] if by_code[c][4] is not None else -1 for c in ordered],
                                   dtype=np.int64),
        }
        ids = {c: i for i, c in enumerate(ordered)}
        for lv in range(5):
            cols[f"c{lv}"] = _obj(anc[c][lv] for c in ordered)
            cols[f"a{lv}"] = np.array([-1 if anc[c][lv] is None else ids[anc[c][lv]]  # type: ignore[index]
                                       for c in ordered], dtype=np.int32)
        with self.lock:
            self.derived.clear()
            self.con.register("_places_in", cols)
            try:
                self.con.execute("DELETE FROM places")
                self.con.execute("INSERT INTO places SELECT place_id, code, name, level, parent_code, "
                                 "nullif(population, -1), c0, c1, c2, c3, c4, nullif(a0, -1), nullif(a1, -1), "
                                 "nullif(a2, -1), nullif(a3, -1), nullif(a4, -1) FROM _places_in")
            finally:
                self.con.unregister("_places_in")
            self._remap_cases()

    def _remap_cases(self) -> None:
        """Point every case at the current id of its finest place (after places were reloaded)."""
        self.con.execute("""
            UPDATE cases SET place_id = p.place_id FROM places p WHERE p.code = cases.place_code;
            UPDATE cases SET place_id = (SELECT min(place_id) FROM places WHERE level = 0)
             WHERE place_code IS NULL OR place_code NOT IN (SELECT code FROM places);
        """)
        self.invalidate_cube()

    def _refresh_events(self, engine: Engine) -> int:
        last = int(self.meta("event_watermark") or 0)
        with engine.connect() as conn:
            rows = conn.execute(
                select(CaseEventRow.id, CaseEventRow.case_id, CaseEventRow.action, CaseEventRow.at)
                .where(CaseEventRow.id > last, CaseEventRow.action.in_(("dispatch", "overdue")))
                .order_by(CaseEventRow.id)
            ).all()
            top = conn.scalar(select(func.max(CaseEventRow.id))) or 0
        if rows:
            disp = [(r.case_id, naive_utc(r.at)) for r in rows if r.action == "dispatch"]
            over = sorted({r.case_id for r in rows if r.action == "overdue"})
            if disp:
                self.con.register("_disp", {"case_id": np.array([d[0] for d in disp], dtype=np.int64),
                                            "t": _ts([d[1] for d in disp])})
                self.con.execute("""INSERT INTO first_dispatch SELECT case_id, min(t) FROM _disp GROUP BY case_id
                                    ON CONFLICT (case_id)
                                    DO UPDATE SET dispatched_at = least(dispatched_at, excluded.dispatched_at)""")
                self.con.execute("""UPDATE cases
                                    SET response_s = CAST(epoch(f.dispatched_at) - epoch(cases.reported_at) AS INTEGER)
                                    FROM first_dispatch f WHERE f.case_id = cases.id
                                    AND f.case_id IN (SELECT case_id FROM _disp)""")
                self.mark_dirty("SELECT case_id FROM _disp")
                self.con.unregister("_disp")
            if over:
                self.con.register("_over", {"case_id": np.array(over, dtype=np.int64)})
                self.con.execute("INSERT OR IGNORE INTO overdue_ids SELECT case_id FROM _over")
                self.con.execute("UPDATE cases SET ever_overdue = true WHERE id IN (SELECT case_id FROM _over)")
                self.mark_dirty("SELECT case_id FROM _over")
                self.con.unregister("_over")
        self.set_meta("event_watermark", str(max(top, last)))
        return len(rows)

    def _refresh_cases(self, engine: Engine, *, remap: bool) -> int:
        mark = self.meta("case_watermark")
        query = select(*_CASE_COLUMNS).order_by(CaseRow.updated_at, CaseRow.id)
        if mark:
            since = datetime.fromisoformat(mark).replace(tzinfo=UTC) - OVERLAP
            query = query.where(CaseRow.updated_at >= since)
        total = 0
        newest: datetime | None = None
        with engine.connect() as conn:
            result = conn.execution_options(yield_per=BATCH).execute(query)
            for part in result.partitions(BATCH):
                self.upsert_rows(part, repeats=False)
                total += len(part)
                newest = naive_utc(part[-1].updated_at)
        if total:
            self._recompute_repeats()
            self.set_meta("case_watermark", newest.isoformat() if newest else (mark or ""))
        return total

    def upsert_rows(self, rows: Sequence[Any], *, repeats: bool = True) -> None:
        """Write case rows (the store's columns, in `_CASE_COLUMNS` order) over their old versions.

        The refresh's write path; the benchmark calls it to time an incremental change of a large snapshot.
        `repeats=False` leaves re-marking repeats to the caller (once after many batches).
        """
        with self.lock:
            if not self.con.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = '_touched'").fetchall():
                self.con.execute("CREATE TEMP TABLE _touched (repeat_key UBIGINT, category VARCHAR)")
            self._upsert_cases(rows)
            if repeats:
                self._recompute_repeats()

    def _upsert_cases(self, rows: Sequence[Any]) -> None:
        cols = list(zip(*rows, strict=True))
        (ids, source, state, cat, dept, level, city, district, street, community, grid, phone,
         reported, dispatched, closed, due, overdue_since, sat, updated) = cols
        finest = [g or c or s or d or ci for g, c, s, d, ci in zip(grid, community, street, district, city,
                                                                   strict=True)]
        batch = {
            "id": np.array(ids, dtype=np.int64), "source": _obj(source), "state": _obj(state),
            "category": _obj(c or "" for c in cat), "department": _obj(dept),
            "level": np.array([-1 if v is None else v for v in level], dtype=np.int8),
            "place_code": _obj(finest), "phone": _obj(self._pseudonym(p) for p in phone),
            "reported_at": _ts(reported), "dispatched_at": _ts(dispatched), "closed_at": _ts(closed),
            "due_at": _ts(due), "overdue_since": _ts(overdue_since),
            "satisfaction": np.array([0 if v is None else v for v in sat], dtype=np.int8),
            "updated_at": _ts(updated),
        }
        self.con.register("_batch", batch)
        try:
            self.add_categories("SELECT DISTINCT category FROM _batch")
            self.mark_dirty("SELECT id FROM _batch")  # the buckets the old versions counted in
            self.con.execute("DELETE FROM cases WHERE id IN (SELECT id FROM _batch)")
            self.con.execute(f"""
                INSERT INTO cases
                SELECT b.id, b.place_code, coalesce(p.place_id, (SELECT min(place_id) FROM places WHERE level = 0)),
                       b.category, k.cat_id, b.source, b.state, nullif(b.level, -1), b.department, b.reported_at,
                       b.dispatched_at, CASE WHEN b.state IN {CLOSED_STATES} THEN b.closed_at END, b.due_at,
                       CAST(epoch(coalesce(f.dispatched_at, b.dispatched_at)) - epoch(b.reported_at) AS INTEGER),
                       CASE WHEN b.state IN {CLOSED_STATES} THEN CAST(epoch(b.closed_at) - epoch(b.reported_at)
                            AS INTEGER) END,
                       nullif(b.satisfaction, 0),
                       o.case_id IS NOT NULL OR b.overdue_since IS NOT NULL,
                       b.state IN {OPEN_STATES} AND b.overdue_since IS NOT NULL,
                       b.state IN {OPEN_STATES},
                       hash(coalesce('p:' || b.phone, 'g:' || b.place_code, 'n:' || b.id)),
                       false, b.updated_at, {self.month_sql('b.reported_at')},
                       CASE WHEN b.state IN {CLOSED_STATES} THEN {self.month_sql('b.closed_at')} END
                FROM _batch b LEFT JOIN places p ON p.code = b.place_code JOIN categories k ON k.code = b.category
                LEFT JOIN first_dispatch f ON f.case_id = b.id LEFT JOIN overdue_ids o ON o.case_id = b.id""")
            self.mark_dirty("SELECT id FROM _batch")  # and the new ones
            self.con.execute("INSERT INTO _touched SELECT DISTINCT c.repeat_key, c.category "
                             "FROM cases c SEMI JOIN _batch b ON c.id = b.id")
        finally:
            self.con.unregister("_batch")

    def add_categories(self, select_codes: str) -> None:
        """Give every new category code (from the one-column query) a small integer id (cheap to group by)."""
        self.con.execute(f"""INSERT INTO categories
            SELECT CAST((SELECT coalesce(max(cat_id), 0) FROM categories) + row_number() OVER (ORDER BY code)
                        AS SMALLINT), code
            FROM ({select_codes}) n(code) WHERE code NOT IN (SELECT code FROM categories)""")

    def _recompute_repeats(self) -> None:
        """Re-mark repeats in every (reporter, category) touched since the last refresh."""
        self.con.execute(f"""
            CREATE OR REPLACE TEMP TABLE _repeat_changes AS SELECT r.id, r.rep FROM (
                SELECT id, is_repeat,
                       coalesce(reported_at - lag(reported_at) OVER w <= INTERVAL {REPEAT_WINDOW_DAYS} DAY,
                                false) AND category <> '' AS rep
                FROM cases SEMI JOIN (SELECT DISTINCT * FROM _touched) t USING (repeat_key, category)
                WINDOW w AS (PARTITION BY repeat_key, category ORDER BY reported_at, id)) r
            WHERE r.is_repeat IS DISTINCT FROM r.rep""")
        self.con.execute("DELETE FROM _touched")
        self.con.execute("UPDATE cases SET is_repeat = r.rep FROM _repeat_changes r WHERE cases.id = r.id")
        self.mark_dirty("SELECT id FROM _repeat_changes")  # an earlier case's repeat flag changed its bucket

    def _refresh_alarms(self, engine: Engine) -> int | None:
        if not inspect(engine).has_table("sensing_alarms"):
            self.has_alarms = False
            self.set_meta("alarms_present", "0")
            return None
        # Read through a table clause (not the sensing capability's ORM class) so this works on any branch.
        t = table("sensing_alarms", column("id"), column("scene"), column("severity"), column("state"),
                  column("raised_at", UtcDateTime()), column("acknowledged_at", UtcDateTime()),
                  column("cleared_at", UtcDateTime()), column("grid_code"), column("case_id"), column("device_id"))
        devices = {}
        if inspect(engine).has_table("sensing_devices"):
            d = table("sensing_devices", column("id"), column("department_code"))
            with engine.connect() as conn:
                devices = dict(conn.execute(select(d.c.id, d.c.department_code)).all())
        with engine.connect() as conn:
            rows = conn.execute(select(t)).all()
        when = naive_utc

        batch = {
            "id": np.array([r.id for r in rows], dtype=np.int64),
            "scene": _obj(r.scene for r in rows), "severity": _obj(r.severity for r in rows),
            "state": _obj(r.state for r in rows), "grid_code": _obj(r.grid_code for r in rows),
            "raised_at": _ts([when(r.raised_at) for r in rows]),
            "acknowledged_at": _ts([when(r.acknowledged_at) for r in rows]),
            "cleared_at": _ts([when(r.cleared_at) for r in rows]),
            "case_id": np.array([-1 if r.case_id is None else r.case_id for r in rows], dtype=np.int64),
            "department": _obj(devices.get(r.device_id) for r in rows),  # the device's department
        }
        self.con.register("_alarms", batch)
        try:
            self.con.execute("DELETE FROM alarms")
            self.con.execute("""
                INSERT INTO alarms SELECT a.id,
                    coalesce(p.place_id, (SELECT min(place_id) FROM places WHERE level = 0)),
                    a.scene, a.severity, a.state, a.raised_at,
                    CAST(epoch(a.acknowledged_at) - epoch(a.raised_at) AS INTEGER), a.cleared_at,
                    nullif(a.case_id, -1), a.department
                FROM _alarms a LEFT JOIN places p ON p.code = a.grid_code""")
        finally:
            self.con.unregister("_alarms")
        self.has_alarms = True
        self.set_meta("alarms_present", "1")
        return len(rows)

    def _refresh_sensing(self, engine: Engine, now: datetime) -> int | None:
        """Devices and datastreams reloaded whole (they are few); readings copied forward by their time.

        Readings from `READINGS_OVERLAP` before the newest one copied are read again and replace the copy,
        so a reading stored late (a device that buffered while offline) still enters. Returns the readings
        read, or None when the store has no sensing tables.
        """
        names = set(inspect(engine).get_table_names())
        if not {"sensing_devices", "sensing_datastreams", "sensing_observation_blocks"} <= names:
            self.has_devices = False
            self.set_meta("devices_present", "0")
            return None
        dev = table("sensing_devices", column("id"), column("scene"), column("type"), column("place_code"),
                    column("department_code"), column("status"), column("last_seen", UtcDateTime()))
        ds = table("sensing_datastreams", column("id"), column("device_id"), column("quantity"))
        mark = self.meta("readings_watermark")
        since = int(mark) - int(READINGS_OVERLAP.total_seconds() * 1000) if mark else None
        with engine.connect() as conn:
            devices = conn.execute(select(dev)).all()
            streams = conn.execute(select(ds)).all()
        r_ds, r_t, r_v = ObservationStore(engine).readings(since)
        self.con.register("_dev", {
            "id": np.array([d.id for d in devices], dtype=np.int64), "scene": _obj(d.scene for d in devices),
            "type": _obj(d.type for d in devices), "place_code": _obj(d.place_code for d in devices),
            "department": _obj(d.department_code for d in devices),
            "active": np.array([d.status == "active" for d in devices], dtype=np.bool_),
            "last_seen": _ts([naive_utc(d.last_seen) for d in devices])})
        self.con.register("_ds", {"id": np.array([d.id for d in streams], dtype=np.int64),
                                  "device_id": np.array([d.device_id for d in streams], dtype=np.int64),
                                  "quantity": _obj(d.quantity for d in streams)})
        self.con.register("_obs", {"ds": r_ds, "t": r_t, "v": r_v})
        try:
            self.con.execute("DELETE FROM devices")
            self.con.execute("""INSERT INTO devices SELECT d.id,
                    coalesce(p.place_id, (SELECT min(place_id) FROM places WHERE level = 0)),
                    d.scene, d.type, d.department, d.active, d.last_seen
                FROM _dev d LEFT JOIN places p ON p.code = d.place_code""")
            self.con.execute("DELETE FROM datastreams")
            self.con.execute("INSERT INTO datastreams SELECT id, device_id, quantity FROM _ds")
            if since is None:
                self.con.execute("DELETE FROM readings")
            else:
                self.con.execute("DELETE FROM readings WHERE t >= make_timestamp($s * 1000)", {"s": since})
            self.con.execute("INSERT INTO readings SELECT ds, make_timestamp(t * 1000), v FROM _obs")
        finally:
            for name in ("_dev", "_ds", "_obs"):
                self.con.unregister(name)
        if r_t.size:
            top = int(r_t.max())
            self.set_meta("readings_watermark", str(max(top, int(mark or 0))))
        self.set_meta("taken_at", naive_utc(now).isoformat())  # type: ignore[union-attr]
        self.has_devices = True
        self.set_meta("devices_present", "1")
        return int(r_t.size)
