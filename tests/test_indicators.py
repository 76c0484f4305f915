"""Vital signs over the real case store (SQLite and PostgreSQL): values checked against cases counted by hand.

The fixture drives seven cases through the real loop with a pinned clock, so every fact below can be
recounted from the story in `loop_story`:

  A  C0101 渝中 grid …001001001, phone P1, t0        accepted, handled, closed t0+1.5h, evaluated 5
  B  C0101 same place, phone P1, t0+0.5h             left dispatched → marked overdue at t0+3h (repeat of A)
  D  C0102 江北 …002002001, phone P2, t0              overdue at t0+3h, then accepted and closed t0+4.5h, evaluated 2
  E  (no category) 江北 …002001001, t0+1h            categorised C0204 and registered at t0+2h → dispatched (1 h)
  F  C0101 江北 …001001001, phone P2, t0+4h          dispatched, open
  G  (no category) 江北 …002001001, t0+1h            rejected at t0+2h
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import BigInteger, Float, Integer, MetaData, String, Table, Text, insert, inspect
from sqlalchemy import Column as Col

from zhizhi.adapters.orm import UtcDateTime
from zhizhi.analytics.service import IndicatorService
from zhizhi.domain.access import SYSTEM_PRINCIPAL, Principal
from zhizhi.domain.case import Actor
from zhizhi.domain.errors import NotFound, ValidationFailed
from zhizhi.service.commands import ActOnCase, CheckOverdue, ReportCase

T0 = datetime(2026, 11, 22, 20, 0, tzinfo=UTC)  # 2026-11-23 04:00 in Chongqing
END = T0 + timedelta(hours=6)
DISPATCHER = Actor("王调度", "dispatcher")
CITIZEN = Actor("市民", "citizen")


def at(app: Any, hours: float) -> datetime:
    app.clock.fixed = T0 + timedelta(hours=hours)
    return app.clock.fixed


def report(app: Any, sid: str, hours: float, lon: float, lat: float, **kw: Any) -> int:
    at(app, hours)
    fields = {"source": "citizen", "source_id": sid, "title": "问题", "lon": lon, "lat": lat,
              "reported_at": app.clock.fixed, **kw}
    if "category_code" not in fields:
        fields["title"] = "有个情况"
    return int(app.handle(ReportCase(**fields)).case_id)


def act(app: Any, cid: int, hours: float, action: str, actor: Actor = DISPATCHER, **kw: Any) -> None:
    app.handle(ActOnCase(cid, action, actor, at=at(app, hours), **kw))


def handler_of(app: Any, cid: int) -> Actor:
    with app.uow() as uow:
        return Actor("李处置", "handler", department=uow.cases.get(cid).department_code)


@pytest.fixture
def loop_story(app: Any) -> dict[str, int]:
    ids = {
        "A": report(app, "A", 0, 106.52, 29.52, category_code="C0101", reporter_phone="13800000001"),
        "D": report(app, "D", 0, 106.66, 29.58, category_code="C0102", reporter_phone="13800000002"),
    }
    a_handler = handler_of(app, ids["A"])
    act(app, ids["A"], 1 / 6, "accept", a_handler)
    ids["B"] = report(app, "B", 0.5, 106.52, 29.52, category_code="C0101", reporter_phone="13800000001")
    act(app, ids["A"], 1, "handle", a_handler, note="已补装")
    ids["E"] = report(app, "E", 1, 106.66, 29.52)
    ids["G"] = report(app, "G", 1, 106.66, 29.52)
    act(app, ids["A"], 1.5, "verify", passed=True, note="核查通过")
    act(app, ids["E"], 2, "categorise", category_code="C0204", note="路面坑洼")
    act(app, ids["E"], 2, "register")
    act(app, ids["G"], 2, "reject", note="信息不全")
    act(app, ids["A"], 2, "evaluate", CITIZEN, satisfaction=5)
    assert app.handle(CheckOverdue(now=at(app, 3)))["marked_overdue"] == 2  # B and D
    d_handler = handler_of(app, ids["D"])
    act(app, ids["D"], 3.5, "accept", d_handler)
    act(app, ids["D"], 4, "handle", d_handler, note="已修复")
    ids["F"] = report(app, "F", 4, 106.61, 29.51, category_code="C0101", reporter_phone="13800000002")
    act(app, ids["D"], 4.5, "verify", passed=True, note="核查通过")
    act(app, ids["D"], 5, "evaluate", CITIZEN, satisfaction=2)
    at(app, 6)
    return ids


@pytest.fixture
def service(app: Any) -> IndicatorService:
    service = IndicatorService.for_app(app, in_memory=True)  # phones are encrypted at rest: it decrypts them
    service.refresh_interval_s = 0
    return service


def values(reading: Any, area: str) -> dict[str, dict[str, Any]]:
    return {r["indicator"]: r for r in reading.rows if r["area"] == area}


def test_loop_measures_for_the_city_match_the_story(app: Any, loop_story: dict[str, int],
                                                    service: IndicatorService) -> None:
    reading = service.read(SYSTEM_PRINCIPAL, grain="month")
    assert reading.area.code == "500000" and reading.periods["month"].label == "2026-11"
    v = values(reading, "500000")
    assert v["loop.intake.reported"]["value"] == 6
    assert v["loop.intake.registration_rate"]["value"] == pytest.approx(500 / 6)  # G rejected
    assert v["loop.handling.on_time_rate"]["numerator"] == 1 and v["loop.handling.on_time_rate"]["denominator"] == 2
    assert v["loop.handling.on_time_rate"]["value"] == pytest.approx(50.0)
    assert v["loop.handling.on_time_rate"]["status"] == "red"  # red at ≤ 85 %
    assert v["loop.handling.closure_rate"]["value"] == pytest.approx(40.0)  # A, D of A B D E F
    assert v["loop.response.hours"]["value"] == pytest.approx(0.2)  # E waited 1 h, four were dispatched at once
    assert v["loop.response.hours"]["status"] == "green"
    assert v["loop.handling.closing_hours"]["value"] == pytest.approx(3.0)  # (1.5 h + 4.5 h) / 2
    assert v["loop.evaluation.satisfaction_rate"]["value"] == pytest.approx(50.0)
    assert v["loop.evaluation.satisfaction_score"]["value"] == pytest.approx(3.5)
    assert v["loop.evaluation.repeat_rate"]["value"] == pytest.approx(100 / 6)  # B repeats A
    assert v["loop.handling.overdue_open"]["value"] == 1  # B; D was overdue but is closed
    assert v["loop.handling.overdue_share"]["value"] == pytest.approx(100 / 3)  # of B, E, F
    assert v["loop.intake.per_10k"]["value"] == pytest.approx(6 / 800_000 * 10_000)
    # Sectors slice by category prefix; an empty slice counts 0, it is not "no data".
    assert v["public_safety.facilities.manholes.cases"]["value"] == 3  # A, B, F
    assert v["transport.roads.cases"]["value"] == 1  # E, as C0204
    assert v["urban_management.appearance.cases"]["value"] == 0
    assert v["urban_management.appearance.closure_rate"]["status"] == "no_data"  # 0 / 0


def test_snapshot_holds_no_phone_in_clear_or_encrypted(app: Any, loop_story: dict[str, int],
                                                       service: IndicatorService) -> None:
    service.refresh(force=True)
    con = service.snapshot.con
    text_columns = con.execute("SELECT table_name, column_name FROM duckdb_columns() "
                               "WHERE data_type = 'VARCHAR' AND NOT internal").fetchall()
    assert text_columns
    for table_name, column_name in text_columns:
        hits = con.execute(f'SELECT count(*) FROM "{table_name}" WHERE "{column_name}" LIKE \'%1380000000%\' '
                           f'OR "{column_name}" LIKE \'enc1:%\'').fetchall()[0][0]
        assert hits == 0, (table_name, column_name)
    # The pseudonyms still recognise the repeat (B repeats A with the same phone).
    v = values(service.read(SYSTEM_PRINCIPAL, grain="month"), "500000")
    assert v["loop.evaluation.repeat_rate"]["value"] == pytest.approx(100 / 6)


def test_every_level_rolls_up_the_same_cases(app: Any, loop_story: dict[str, int],
                                             service: IndicatorService) -> None:
    districts = service.read(SYSTEM_PRINCIPAL, level="district", grain="month")
    yz, jb = values(districts, "500103"), values(districts, "500105")
    assert {r["area"] for r in districts.rows} == {"500103", "500105"}
    assert (yz["loop.intake.reported"]["value"], jb["loop.intake.reported"]["value"]) == (2, 4)
    assert yz["loop.handling.on_time_rate"]["value"] == 100.0 and yz["loop.handling.on_time_rate"]["status"] == "green"
    assert jb["loop.handling.on_time_rate"]["value"] == 0.0
    assert jb["loop.handling.closure_rate"]["value"] == pytest.approx(100 / 3)
    assert yz["loop.evaluation.repeat_rate"]["value"] == 50.0
    assert jb["loop.intake.per_10k"]["value"] == pytest.approx(4 / 400_000 * 10_000)
    grids = service.read(SYSTEM_PRINCIPAL, area="500105", level="grid", grain="month")
    g = values(grids, "500105002001001")  # E and G
    assert (g["loop.intake.reported"]["value"], g["loop.intake.registration_rate"]["value"]) == (2, 50.0)
    assert len({r["area"] for r in grids.rows}) == 8  # every grid of 江北区, cases or not
    assert values(grids, "500105001002001")["loop.intake.reported"]["value"] == 0
    streets = service.read(SYSTEM_PRINCIPAL, area="500105", level="street", grain="month")
    assert values(streets, "500105002")["loop.intake.reported"]["value"] == 3  # D, E, G


def test_sql_values_agree_with_the_domain_formulas(app: Any, loop_story: dict[str, int],
                                                   service: IndicatorService) -> None:
    reading = service.read(SYSTEM_PRINCIPAL, level="street", grain="month")
    assert reading.rows
    for r in reading.rows:
        ind = service.tree.get(r["indicator"])
        facts = {ind.formula.numerator: r["numerator"]}
        if ind.formula.denominator:
            facts[ind.formula.denominator] = r["denominator"]
        expected = ind.formula.apply(facts)
        assert (r["value"] is None) == (expected is None), r
        if expected is not None:
            assert r["value"] == pytest.approx(expected)
        assert r["status"] == ind.judge(r["value"]).value, r


def test_periods_select_by_report_and_closure_time(app: Any, loop_story: dict[str, int],
                                                   service: IndicatorService) -> None:
    # The next day (local) has no reports, no closures; the stock of open cases is still there.
    nxt = service.read(SYSTEM_PRINCIPAL, grain="day", at=T0 + timedelta(days=1))
    v = values(nxt, "500000")
    assert nxt.periods["day"].label == "2026-11-24"
    assert v["loop.intake.reported"]["value"] == 0
    assert v["loop.handling.on_time_rate"]["status"] == "no_data"
    assert v["loop.handling.overdue_open"]["value"] == 1
    # Each indicator's own grain when none is asked for: the default tree reads months.
    own = service.read(SYSTEM_PRINCIPAL)
    assert set(own.periods) == {"month"} and own.periods["month"].label == "2026-11"


def test_incremental_refresh_sees_new_changes(app: Any, loop_story: dict[str, int],
                                              service: IndicatorService) -> None:
    before = values(service.read(SYSTEM_PRINCIPAL, grain="month"), "500000")
    f = loop_story["F"]
    h = handler_of(app, f)
    act(app, f, 6.1, "accept", h)
    act(app, f, 6.2, "handle", h, note="已处理")
    act(app, f, 6.3, "verify", passed=True, note="通过")
    stats = service.refresh(force=True)
    assert stats is not None and stats.cases_read >= 1
    after = values(service.read(SYSTEM_PRINCIPAL, grain="month"), "500000")
    assert before["loop.handling.closure_rate"]["value"] == pytest.approx(40.0)
    assert after["loop.handling.closure_rate"]["value"] == pytest.approx(60.0)
    assert after["loop.handling.on_time_rate"]["numerator"] == 2  # F was never overdue
    assert after["loop.intake.reported"]["value"] == 6  # re-read rows replace, never duplicate


def test_scope_hides_areas_outside_the_principals_places(app: Any, loop_story: dict[str, int],
                                                          service: IndicatorService) -> None:
    jiangbei = Principal(user_id=7, username="jb", roles=frozenset({"leader"}), places=("500105",))
    mine = service.read(jiangbei, grain="month")
    assert mine.area.code == "500105"
    assert values(mine, "500105")["loop.intake.reported"]["value"] == 4
    with pytest.raises(NotFound):
        service.read(jiangbei, area="500103")
    with pytest.raises(NotFound):
        service.read(jiangbei, area="500000")  # the city is above the scope
    with pytest.raises(NotFound):
        service.read(SYSTEM_PRINCIPAL, area="999999")
    with pytest.raises(ValidationFailed):
        service.read(SYSTEM_PRINCIPAL, area="500105", level="city")
    with pytest.raises(ValidationFailed):
        service.read(SYSTEM_PRINCIPAL, grain="fortnight")


def _alarms_table(engine: Any) -> Table:
    """`sensing_alarms` as the sensing capability defines it (CONTRACTS.md), created here if absent."""
    md = MetaData()
    t = Table("sensing_alarms", md,
              Col("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
              Col("device_id", BigInteger, nullable=False), Col("device_code", String(64), nullable=False),
              Col("rule_code", String(64), nullable=False), Col("scene", String(64), nullable=False),
              Col("severity", String(16), nullable=False), Col("state", String(16), nullable=False),
              Col("raised_at", UtcDateTime, nullable=False), Col("acknowledged_at", UtcDateTime),
              Col("cleared_at", UtcDateTime), Col("grid_code", String(32)), Col("case_id", BigInteger),
              Col("value", Float), Col("count", Integer, nullable=False, default=1),
              Col("message", Text, nullable=False, default=""))
    if not inspect(engine).has_table("sensing_alarms"):
        md.create_all(engine)
    return t


def test_alarm_indicators_are_no_data_without_alarms_then_counted(app: Any, loop_story: dict[str, int],
                                                                  service: IndicatorService) -> None:
    had_table = inspect(app.engine).has_table("sensing_alarms")
    v = values(service.read(SYSTEM_PRINCIPAL, grain="month"), "500000")
    if not had_table:  # never 0 when there is nothing to count from
        assert v["loop.sensing.alarms"]["value"] is None and v["loop.sensing.alarms"]["status"] == "no_data"
    t = _alarms_table(app.engine)
    rows = [  # scene, grid, raised (h after T0), acknowledged after (min), cleared?, case
        ("waterlogging", "500105002001001", 1, 4, False, loop_story["E"]),
        ("waterlogging", "500105002001002", 2, None, False, None),
        ("elderly", "500103001001001", 3, 10, True, None),
    ]
    with app.engine.begin() as conn:
        for i, (scene, grid, h, ack, cleared, case) in enumerate(rows):
            raised = T0 + timedelta(hours=h)
            conn.execute(insert(t).values(
                device_id=i + 1, device_code=f"D{i}", rule_code="r", scene=scene, severity="major",
                state="cleared" if cleared else ("acknowledged" if ack else "raised"), raised_at=raised,
                acknowledged_at=None if ack is None else raised + timedelta(minutes=ack),
                cleared_at=raised + timedelta(hours=1) if cleared else None, grid_code=grid, case_id=case,
                count=1, message=""))
    service.refresh(force=True)
    city = values(service.read(SYSTEM_PRINCIPAL, grain="month"), "500000")
    assert city["loop.sensing.alarms"]["value"] == 3
    assert city["loop.sensing.ack_minutes"]["value"] == pytest.approx(7.0)  # (4 + 10) / 2
    assert city["loop.sensing.to_case_rate"]["value"] == pytest.approx(100 / 3)
    assert city["loop.sensing.active"]["value"] == 2
    assert city["emergencies.flood.alarms"]["value"] == 2
    assert city["health.elderly.alarms"]["value"] == 1
    assert city["urban_management.kitchen_waste.alarms"]["value"] == 0  # the table exists: a real zero
    jb = values(service.read(SYSTEM_PRINCIPAL, area="500105", grain="month"), "500105")
    assert jb["loop.sensing.alarms"]["value"] == 2 and jb["health.elderly.alarms"]["value"] == 0


def test_summary_for_the_console_charts(app: Any, loop_story: dict[str, int], service: IndicatorService) -> None:
    s = service.summary(SYSTEM_PRINCIPAL, days=7)
    assert s["area"]["code"] == "500000" and len(s["trend"]) == 7
    assert sum(d["reported"] for d in s["trend"]) == 6 and sum(d["closed"] for d in s["trend"]) == 2
    assert s["trend"][-1]["day"] == "2026-11-23" and s["trend"][-1]["reported"] == 6  # all on 23 Nov, local
    cats = {c["code"]: c["count"] for c in s["by_category"]}
    assert cats == {"C01": 4, "C02": 1, None: 1}  # A B D F; E; G has none
    assert {c["code"]: c["name_zh"] for c in s["by_category"]}[None] == "未分类"
    assert s["on_time"] == {"closed": 2, "on_time": 1, "rate": 50.0}
    assert s["satisfaction"]["rate"] == 50.0 and s["satisfaction"]["mean"] == 3.5
    assert s["overdue"]["count"] == 1 and [c["id"] for c in s["overdue"]["cases"]] == [loop_story["B"]]
    assert sum(x["count"] for x in s["by_level"]) == 6
    assert {x["state"]: x["count"] for x in s["by_state"]}["rejected"] == 1
    jb = service.summary(SYSTEM_PRINCIPAL, area="500105", days=7)
    assert sum(d["reported"] for d in jb["trend"]) == 4 and jb["overdue"]["count"] == 0
    with pytest.raises(ValidationFailed):
        service.summary(SYSTEM_PRINCIPAL, days=0)


def test_clustering_the_snapshot_changes_no_value(app: Any, loop_story: dict[str, int],
                                                  service: IndicatorService) -> None:
    before = service.read(SYSTEM_PRINCIPAL, level="grid", grain="month").rows
    assert service.snapshot.cluster() == 6
    service.refresh(force=True)  # the overlap re-reads rows into the rewritten table: still no duplicates
    after = service.read(SYSTEM_PRINCIPAL, level="grid", grain="month").rows
    assert after == before


def _sensing_rows(app: Any) -> None:
    """Devices, datastreams, readings and one alarm, in the sensing capability's tables (rows as it writes them).

    G1 gauge 江北, online (heard 30 min before now), department water: water level 10, 25, 30
    G2 gauge 渝中, silent for 3 h (offline), department other: 5
    G3 gauge 江北, retired (not a device any more, its reading still counts): 50
    M1 methane detector 江北, online: 30 and 10 in November, 40 in October (another period); one alarm
    """
    from zhizhi.adapters.observations_store import ObservationStore
    from zhizhi.adapters.orm_sensing import AlarmRow, DatastreamRow, DeviceRow

    devices = [  # code, type, scene, grid, department, status, last seen (h after T0), {quantity: [(h, value)]}
        ("G1", "water_gauge", "waterlogging", "500105002001001", "water", "active", 5.5,
         {"water_level": [(1, 10.0), (2, 25.0), (3, 30.0)]}),
        ("G2", "water_gauge", "waterlogging", "500103001001001", "other", "active", 3,
         {"water_level": [(2, 5.0)]}),
        ("G3", "water_gauge", "waterlogging", "500105002001001", "water", "retired", 2,
         {"water_level": [(2, 50.0)]}),
        ("M1", "methane_detector", "septic_tank", "500105002001001", "water", "active", 5.9,
         {"methane": [(1, 30.0), (2, 10.0), (-24 * 30, 40.0)], "temperature": [(1, 20.0)]}),
    ]
    readings_in: list[tuple[int, int, float]] = []
    with app.sessions() as s:
        for code, typ, scene, grid, dep, status, seen, streams in devices:
            d = DeviceRow(code=code, name=code, type=typ, model="", scene=scene, place_code=grid,
                          district_code=grid[:6], lon=106.6, lat=29.5, department_code=dep, status=status,
                          last_seen=T0 + timedelta(hours=seen), registered_at=T0 - timedelta(days=60),
                          rule_overrides={}, properties={})
            s.add(d)
            s.flush()
            for quantity, readings in streams.items():
                ds = DatastreamRow(device_id=d.id, quantity=quantity, name=quantity, description="", unit="",
                                   properties={})
                s.add(ds)
                s.flush()
                for h, v in readings:
                    t = int((T0 + timedelta(hours=h)).timestamp() * 1000)
                    readings_in.append((ds.id, t, v))
            if code == "M1":
                s.add(AlarmRow(device_id=d.id, device_code=code, rule_code="methane_high", scene=scene,
                               severity="major", state="raised", raised_at=T0 + timedelta(hours=1),
                               grid_code=grid, count=1, message=""))
        s.commit()
    a = np.array(readings_in, dtype=np.float64)
    ObservationStore(app.engine).insert(a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2])


def test_observation_indicators_from_devices_and_readings(app: Any, loop_story: dict[str, int],
                                                          service: IndicatorService) -> None:
    empty = values(service.read(SYSTEM_PRINCIPAL, grain="month"), "500000")
    assert empty["emergencies.flood.online_rate"]["status"] == "no_data"  # no device: nothing to divide by
    assert empty["emergencies.flood.water_level_mean"]["status"] == "no_data"
    _sensing_rows(app)
    service.refresh(force=True)
    city = values(service.read(SYSTEM_PRINCIPAL, grain="month"), "500000")
    online = city["emergencies.flood.online_rate"]
    assert (online["numerator"], online["denominator"], online["value"]) == (1, 2, 50.0)  # G1 of G1, G2
    assert online["status"] == "red"
    assert city["emergencies.flood.water_level_mean"]["value"] == pytest.approx(24.0)  # 120 / 5 readings
    assert city["emergencies.flood.water_level_mean"]["status"] == "red"
    assert city["emergencies.flood.water_over_per_1000"]["value"] == pytest.approx(600.0)  # 25, 30, 50 of 5
    assert city["public_safety.sensing.methane_over_per_1000"]["value"] == pytest.approx(500.0)  # October's 40 is out
    assert city["public_safety.sensing.online_rate"]["value"] == 100.0
    assert city["public_safety.sensing.alarms_per_device"]["value"] == 1.0  # one alarm, one septic-tank device
    assert city["ecology.forest_monitoring.online_rate"]["status"] == "no_data"  # no forest station
    jb = values(service.read(SYSTEM_PRINCIPAL, area="500105", grain="month"), "500105")
    assert jb["emergencies.flood.online_rate"]["value"] == 100.0
    assert jb["emergencies.flood.water_level_mean"]["value"] == pytest.approx(115 / 4)
    yz = values(service.read(SYSTEM_PRINCIPAL, area="500103", grain="month"), "500103")
    assert yz["emergencies.flood.online_rate"]["value"] == 0.0 and yz["public_safety.sensing.online_rate"][
        "status"] == "no_data"
    october = values(service.read(SYSTEM_PRINCIPAL, grain="month", at=T0 - timedelta(days=30)), "500000")
    assert october["public_safety.sensing.methane_over_per_1000"]["value"] == 1000.0


def test_department_handler_counts_only_its_departments(app: Any, loop_story: dict[str, int],
                                                        service: IndicatorService) -> None:
    with app.uow() as uow:
        deps = {k: uow.cases.get(cid).department_code for k, cid in loop_story.items()}
    dep = deps["A"]
    mine = [k for k, d in deps.items() if d == dep]
    assert dep and 0 < len(mine) < len(loop_story)
    handler = Principal(user_id=9, username="h", roles=frozenset({"handler"}), departments=(dep,))
    for grain in ("month", "year", "day"):  # the cube (months, years) and the scan (days)
        v = values(service.read(handler, grain=grain), "500000")
        assert v["loop.intake.reported"]["value"] == len(mine), grain
    everyone = values(service.read(SYSTEM_PRINCIPAL, grain="month"), "500000")
    assert everyone["loop.intake.reported"]["value"] == 6  # the unscoped read is not served the scoped cache
    s = service.summary(handler, days=7)
    assert sum(d["reported"] for d in s["trend"]) == len(mine)
    assert all(c["department_code"] == dep for c in s["overdue"]["cases"])
    _sensing_rows(app)
    service.refresh(force=True)
    water = Principal(user_id=10, username="w", roles=frozenset({"handler"}), departments=("water",))
    w = values(service.read(water, grain="month"), "500000")
    assert w["loop.intake.reported"]["value"] == 0  # no case of "water"
    assert w["emergencies.flood.online_rate"]["denominator"] == 1  # G1 only: G2 belongs to another department
    nobody = Principal(user_id=11, username="n", roles=frozenset({"handler"}))  # a handler without a department
    with pytest.raises(NotFound):
        service.read(nobody)
    with pytest.raises(NotFound):
        service.summary(nobody)


def test_the_cube_gives_exactly_the_sums_of_a_full_scan(app: Any, loop_story: dict[str, int],
                                                         service: IndicatorService) -> None:
    from zhizhi.analytics import rollup
    from zhizhi.domain.indicators import Grain, period_of

    def same() -> None:
        for grain in (Grain.MONTH, Grain.QUARTER, Grain.YEAR, Grain.WEEK):
            period = period_of(grain, T0)
            cubed = rollup.compute_facts(service.snapshot, service.tree, period, cube=service.cube)
            scanned = rollup.compute_facts(service.snapshot, service.tree, period)
            assert cubed.index == scanned.index
            assert (cubed.matrix == scanned.matrix).all(), grain
            assert cubed.matrix.any(), grain

    service.refresh(force=True)
    assert service.cube.months_of(period_of(Grain.QUARTER, T0)) is not None  # whole months: from the cube
    assert service.cube.months_of(period_of(Grain.WEEK, T0)) is None
    same()
    f = loop_story["F"]  # closed after the cube was built: its buckets are recomputed at the next sync
    h = handler_of(app, f)
    act(app, f, 6.1, "accept", h)
    act(app, f, 6.2, "handle", h, note="已处理")
    act(app, f, 6.3, "verify", passed=True, note="通过")
    report(app, "H", 6.4, 106.52, 29.52, category_code="C0101", reporter_phone="13800000001")  # a repeat of B
    service.refresh(force=True)
    assert service.snapshot.con.execute("SELECT count(*) FROM cube_dirty").fetchall()[0][0] == 0
    same()
    before = {t: service.snapshot.con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()
              for t in ("cube_r", "cube_c", "cube_ry", "cube_cy", "cube_n")}
    service.cube.build()  # a rebuild from scratch agrees with the incremental upkeep
    after = {t: service.snapshot.con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in before}
    assert after == before
