"""Service layer over real storage (SQLite and PostgreSQL): report → locate → register → dispatch → … → close."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from zhizhi.adapters.orm import CaseEventRow, OutboxRow
from zhizhi.adapters.repository import CaseFilter
from zhizhi.domain.case import Actor, CaseState
from zhizhi.domain.errors import IllegalAction, NotFound, OutsideJurisdiction, ValidationFailed
from zhizhi.geo.coords import wgs84_to_bd09, wgs84_to_gcj02
from zhizhi.service.commands import ActOnCase, CheckOverdue, ReportCase

DISPATCHER = Actor("王调度", "dispatcher")


def report(app, sid: str = "r1", **kw):  # type: ignore[no-untyped-def]
    fields = {"source": "citizen", "source_id": sid, "title": "路口井盖缺失", "description": "很危险",
              "category_code": "C0101", "lon": 106.52, "lat": 29.52}
    fields.update(kw)
    return app.handle(ReportCase(**fields))


def get(app, case_id: int):  # type: ignore[no-untyped-def]
    with app.uow() as uow:
        return uow.cases.get(case_id)


def test_report_is_located_registered_and_dispatched(app) -> None:
    res = report(app)
    assert res.created
    case = get(app, res.case_id)
    assert case.state is CaseState.DISPATCHED
    assert case.location.district == "500103" and case.location.grid == "500103001001001"
    assert case.department_code and case.level is not None
    assert case.due_at is not None and case.due_at > case.reported_at
    assert [e.action for e in case.timeline] == ["report", "register", "dispatch"]
    assert "派遣至" in case.timeline[-1].note  # the timeline explains the decision


def test_intake_is_idempotent_by_source_id(app) -> None:
    first = report(app, "dup-1")
    again = report(app, "dup-1", title="another text")
    assert again.case_id == first.case_id and not again.created
    other_source = report(app, "dup-1", source="hotline")
    assert other_source.case_id != first.case_id
    with app.uow() as uow:
        _, total = uow.cases.list(CaseFilter())
    assert total == 2


@pytest.mark.parametrize("crs", ["wgs84", "gcj02", "bd09"])
def test_points_in_all_three_coordinate_systems(app, crs: str) -> None:
    lon, lat = 106.66, 29.58  # inside 江北区
    if crs == "gcj02":
        lon, lat = wgs84_to_gcj02(lon, lat)
    elif crs == "bd09":
        lon, lat = wgs84_to_bd09(lon, lat)
    case = get(app, report(app, f"crs-{crs}", lon=float(lon), lat=float(lat), crs=crs).case_id)
    assert case.location.district == "500105"
    assert case.location.lon == pytest.approx(106.66, abs=1e-6)
    assert case.location.lat == pytest.approx(29.58, abs=1e-6)


def test_point_outside_the_city_is_refused_and_not_stored(app) -> None:
    with pytest.raises(OutsideJurisdiction) as err:
        report(app, "far", lon=106.9, lat=29.55)
    assert "江北区" in err.value.message and err.value.details["distance_m"] > 10_000
    with app.uow() as uow:
        assert uow.cases.get_by_source("citizen", "far") is None


@pytest.mark.parametrize("bad", [
    {"source": "pigeon"}, {"source_id": ""}, {"title": "", "description": ""},
    {"category_code": "NOPE"}, {"lon": None, "lat": 29.5}, {"lon": None, "lat": None, "address": None},
    {"description": "长" * 4001},
])
def test_bad_reports_get_clear_errors(app, bad: dict) -> None:
    with pytest.raises(ValidationFailed) as err:
        report(app, "bad", **bad)
    assert err.value.message


def test_address_only_report_is_located_by_name(app) -> None:
    res = report(app, "addr-1", lon=None, lat=None, address="江北区观音桥街道步行街旁")
    case = get(app, res.case_id)
    assert case.location.district == "500105" and case.location.street == "500105001"
    assert case.location.method == "address"
    assert case.state is CaseState.DISPATCHED


def test_unresolvable_address_waits_in_manual_location_queue(app) -> None:
    res = report(app, "addr-2", lon=None, lat=None, address="A市A3区某小区")
    case = get(app, res.case_id)
    assert case.state is CaseState.REPORTED and case.location.finest is None
    with app.uow() as uow:
        queue, total = uow.cases.list(CaseFilter(needs_location=True))
    assert total == 1 and queue[0].id == res.case_id
    # A dispatcher places it by hand; then it can be registered and dispatched.
    app.handle(ActOnCase(res.case_id, "locate", DISPATCHER, place_code="500103002001"))
    app.handle(ActOnCase(res.case_id, "register", DISPATCHER))
    case = get(app, res.case_id)
    assert case.location.street == "500103002" and case.state is CaseState.DISPATCHED


def test_uncategorised_report_is_classified_by_keywords_or_waits(app) -> None:
    res = report(app, "kw-1", category_code=None, title="小区门口路灯不亮了", description="晚上很黑")
    assert get(app, res.case_id).category_code is not None
    res2 = report(app, "kw-2", category_code=None, title="有个情况", description="麻烦看看")
    case = get(app, res2.case_id)
    assert case.category_code is None and case.state is CaseState.REPORTED


def test_the_whole_loop_with_deadlines_and_timeline(app) -> None:
    cid = report(app, "loop").case_id
    case = get(app, cid)
    handler = Actor("李处置", "handler", department=case.department_code)
    t = app.clock.now()
    app.handle(ActOnCase(cid, "accept", handler, at=t + timedelta(minutes=10)))
    app.handle(ActOnCase(cid, "handle", handler, note="已补装井盖", photos=("https://x/1.jpg",),
                         at=t + timedelta(hours=3)))
    app.handle(ActOnCase(cid, "verify", DISPATCHER, passed=False, note="未安装牢固", at=t + timedelta(hours=4)))
    app.handle(ActOnCase(cid, "handle", handler, note="已加固", at=t + timedelta(hours=5)))
    app.handle(ActOnCase(cid, "verify", DISPATCHER, passed=True, note="核查通过", at=t + timedelta(hours=6)))
    app.handle(ActOnCase(cid, "evaluate", Actor("市民", "citizen"), satisfaction=5, at=t + timedelta(hours=7)))
    case = get(app, cid)
    assert case.state is CaseState.EVALUATED and case.satisfaction == 5
    actions = [e.action for e in case.timeline]
    assert actions == ["report", "register", "dispatch", "accept", "handle", "verify", "handle", "verify",
                       "evaluate"]
    assert case.timeline[4].attachments == ("https://x/1.jpg",)
    with app.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(CaseEventRow).where(CaseEventRow.case_id == cid)) == 9


def test_illegal_action_is_refused_with_allowed_actions(app) -> None:
    cid = report(app, "ill").case_id
    with pytest.raises(IllegalAction) as err:
        app.handle(ActOnCase(cid, "evaluate", DISPATCHER, satisfaction=5))
    assert "accept" in err.value.details["allowed"]
    with pytest.raises(NotFound):
        app.handle(ActOnCase(999999, "accept", DISPATCHER))
    with pytest.raises(ValidationFailed):
        app.handle(ActOnCase(cid, "fly", DISPATCHER))


def test_return_then_redispatch_and_escalation(app) -> None:
    cid = report(app, "ret").case_id
    dept = get(app, cid).department_code
    app.handle(ActOnCase(cid, "return", Actor("h", "handler", department=dept), note="非我部门职责"))
    assert get(app, cid).state is CaseState.REGISTERED
    app.handle(ActOnCase(cid, "dispatch", DISPATCHER, department="housing", level="district"))
    case = get(app, cid)
    assert case.department_code == "housing" and case.state is CaseState.DISPATCHED
    app.handle(ActOnCase(cid, "escalate", DISPATCHER, note="需市级协调"))
    case = get(app, cid)  # escalation re-dispatches automatically at the level above
    assert case.state is CaseState.DISPATCHED and int(case.level) == 0


def test_overdue_job_marks_and_escalates(app) -> None:
    cid = report(app, "late").case_id
    case = get(app, cid)
    assert case.due_at is not None
    later = case.due_at + timedelta(minutes=5)
    assert app.handle(CheckOverdue(now=later))["marked_overdue"] == 1
    assert app.handle(CheckOverdue(now=later))["marked_overdue"] == 0  # once per deadline
    case = get(app, cid)
    assert case.timeline[-1].action == "overdue" and case.overdue_since is not None
    with app.uow() as uow:
        _, n = uow.cases.list(CaseFilter(overdue_at=later))
    assert n == 1
    much_later = later + timedelta(hours=200)
    result = app.handle(CheckOverdue(now=much_later))
    assert result["escalated"] == 1
    assert any(e.action == "escalate" for e in get(app, cid).timeline)


def test_dispatch_notice_is_in_the_outbox_and_delivered(app) -> None:
    cid = report(app, "ob").case_id
    with app.engine.connect() as conn:
        rows = conn.execute(select(OutboxRow).where(OutboxRow.case_id == cid)).all()
    assert [r.topic for r in rows] == ["CaseDispatched"]
    assert rows[0].delivered_at is None
    assert app.outbox.deliver_pending()["delivered"] >= 1
    with app.engine.connect() as conn:
        row = conn.execute(select(OutboxRow).where(OutboxRow.case_id == cid)).first()
    assert row.delivered_at is not None and row.attempts == 1
    log = (app.settings.data_dir / "notifications.jsonl").read_text(encoding="utf-8")
    assert f'"case_id": {cid}' in log


def test_failed_webhook_is_retried_not_lost(settings, tiny_hierarchy) -> None:
    from zhizhi.adapters.gazetteer import GeoGazetteer
    from zhizhi.adapters.places_store import save_hierarchy
    from zhizhi.service.bootstrap import bootstrap

    zz = bootstrap(settings, gazetteer=GeoGazetteer(tiny_hierarchy),
                   webhooks={d.code: "http://127.0.0.1:9/nothing-listens" for d in _departments()})
    save_hierarchy(zz.engine, tiny_hierarchy)
    cid = report(zz, "wh").case_id
    assert zz.outbox.deliver_pending()["delivered"] == 0
    with zz.engine.connect() as conn:
        row = conn.execute(select(OutboxRow).where(OutboxRow.case_id == cid)).first()
    assert row.delivered_at is None and row.attempts == 1 and row.last_error
    assert row.next_attempt_at > row.created_at
    zz.engine.dispose()


def _departments():  # type: ignore[no-untyped-def]
    from zhizhi.adapters.catalogue_files import load_catalogue

    return load_catalogue().departments()


def test_concurrent_change_is_detected_not_overwritten(app) -> None:
    from sqlalchemy.orm.exc import StaleDataError

    from zhizhi.service.uow import UnitOfWork

    cid = report(app, "cc").case_id
    now = app.clock.now()
    first, second = UnitOfWork(app.sessions), UnitOfWork(app.sessions)
    with first:
        mine = first.cases.get(cid)
        with second:
            theirs = second.cases.get(cid)
            theirs.supervise(now, DISPATCHER, "请加快")
            second.commit()
        mine.supervise(now, DISPATCHER, "我也督办")
        with pytest.raises(StaleDataError):
            first.commit()
    notes = [e.note for e in get(app, cid).timeline]
    assert "请加快" in notes and "我也督办" not in notes


def test_racing_duplicate_report_returns_the_stored_case(app, monkeypatch) -> None:
    from zhizhi.adapters.repository import CaseRepository

    first = report(app, "race")
    original = CaseRepository.get_by_source
    calls = {"n": 0}

    def blind_once(self, source, source_id):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        return None if calls["n"] == 1 else original(self, source, source_id)

    monkeypatch.setattr(CaseRepository, "get_by_source", blind_once)
    again = report(app, "race")  # the look-up misses; the unique constraint catches the copy
    assert again.case_id == first.case_id and not again.created


def test_batch_of_reports_one_outcome_each(app) -> None:
    from zhizhi.service.commands import ReportCases

    good = ReportCase(source="hotline", source_id="b1", title="路灯不亮", category_code="C0102", lon=106.55, lat=29.55)
    outside = ReportCase(source="hotline", source_id="b2", title="路灯不亮", lon=107.5, lat=29.55)
    by_address = ReportCase(source="hotline", source_id="b3", title="垃圾没人清运", address="江北区石马河街道")
    nowhere = ReportCase(source="hotline", source_id="b4", title="路灯不亮", address="不知道在哪")
    first = report(app, "b0", source="hotline")
    outcomes = app.handle(ReportCases((good, outside, by_address, good, nowhere,
                                       ReportCase(source="hotline", source_id="b0", title="x", lon=106.55,
                                                  lat=29.55))))
    assert len(outcomes) == 6
    assert outcomes[0].created and isinstance(outcomes[1], OutsideJurisdiction)
    assert outcomes[3].case_id == outcomes[0].case_id and not outcomes[3].created  # repeated in the batch
    assert outcomes[5].case_id == first.case_id and not outcomes[5].created  # stored before
    assert get(app, outcomes[0].case_id).state is CaseState.DISPATCHED
    case = get(app, outcomes[2].case_id)
    assert case.location.street == "500105002" and case.state is CaseState.DISPATCHED
    assert get(app, outcomes[4].case_id).state is CaseState.REPORTED  # waits for manual location


def test_reports_whose_follow_up_never_ran_are_recovered(app) -> None:
    from zhizhi.domain import events as ev

    handlers = app.bus.batch_handlers.pop(ev.CaseReported)  # as if the process died after the commit
    cid = report(app, "crash").case_id
    assert get(app, cid).state is CaseState.REPORTED
    app.bus.batch_handlers[ev.CaseReported] = handlers
    later = app.clock.now() + timedelta(minutes=2)
    app.clock.fixed = later
    assert app.handle(CheckOverdue(now=later))["recovered"] == 1
    assert get(app, cid).state is CaseState.DISPATCHED


def test_handlers_on_many_threads_keep_their_own_transactions(app) -> None:  # type: ignore[no-untyped-def]
    """The server runs handlers on a thread pool over one wired unit of work: no thread may see another's session."""
    from concurrent.futures import ThreadPoolExecutor

    def work(worker: int) -> list[int]:
        ids = []
        for i in range(8):
            res = report(app, f"thread-{worker}-{i}")
            case = get(app, res.case_id)
            assert case.source_id == f"thread-{worker}-{i}"
            ids.append(res.case_id)
        return ids

    with ThreadPoolExecutor(max_workers=6) as pool:
        ids = [i for part in pool.map(work, range(6)) for i in part]
    assert len(set(ids)) == 48
    with app.uow() as uow:
        assert sum(uow.cases.count_by_state().values()) == 48
