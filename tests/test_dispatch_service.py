"""Smart dispatch through the service and the API, on SQLite and PostgreSQL: queue, decisions, thresholds at
intake, duplicates, 吹哨报到, and the server's refusal of a tampered model."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import login_headers
from fastapi.testclient import TestClient
from test_dispatch import synthetic_examples

from zhizhi.config import Settings
from zhizhi.dispatch.model import ModelError, TextModel
from zhizhi.dispatch.training import train
from zhizhi.geo.hierarchy import PlaceHierarchy

IN_JIEFANGBEI = (106.52, 29.52)  # 渝中区 解放碑街道, first grid


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = train(synthetic_examples(), folds=3, params={"min_df": 1, "min_support": 3})
    model.thresholds = {label: 0.9 for label in model.labels}  # the tests control which texts are sure
    model.meta["kind"] = "category"
    return model.save(tmp_path_factory.mktemp("models") / "dispatch-category-20260101T000000Z.npz")


def _boot(settings: Settings, hierarchy: PlaceHierarchy, models: Path | None) -> Any:
    from zhizhi.adapters.gazetteer import GeoGazetteer
    from zhizhi.adapters.places_store import save_hierarchy
    from zhizhi.service.bootstrap import bootstrap
    from zhizhi.service.ports import Clock

    if models is not None:
        settings = settings.model_copy(update={"dispatch_models_dir": models})
    clock = Clock()
    clock.fixed = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    zz = bootstrap(settings, gazetteer=GeoGazetteer(hierarchy), clock=clock)
    save_hierarchy(zz.engine, hierarchy)
    return zz


@pytest.fixture
def zz(settings: Settings, tiny_hierarchy: PlaceHierarchy, model_file: Path) -> Iterator[Any]:
    z = _boot(settings.model_copy(update={"dispatch_merge_duplicates": True}), tiny_hierarchy, model_file.parent)
    yield z
    z.engine.dispose()


@pytest.fixture
def client(zz: Any) -> TestClient:
    from zhizhi.api.app import create_app

    c = TestClient(create_app(zz))
    c.headers.update(login_headers(c, zz))  # an administrator; the whistle test also acts as departments
    return c


def report(client: TestClient, sid: str, title: str, description: str = "", at: tuple[float, float] = IN_JIEFANGBEI,
           **extra: Any) -> dict[str, Any]:
    r = client.post("/api/v1/cases", json={"source": "citizen", "source_id": sid, "title": title,
                                            "description": description, "lon": at[0], "lat": at[1], **extra})
    assert r.status_code == 201, r.text
    return client.get(f"/api/v1/cases/{r.json()['id']}").json()  # type: ignore[no-any-return]


def test_sure_prediction_is_dispatched_with_level_explained(client: TestClient) -> None:
    case = report(client, "s1", "公司拖欠工资", "农民工讨薪，公司拖欠工资半年")
    assert case["state"] == "dispatched"
    assert case["category_code"].startswith("I10")
    cat = next(e for e in case["timeline"] if e["action"] == "categorise")
    assert "智能分拨" in cat["note"] and cat["data"]["confidence"] >= cat["data"]["threshold"]
    dispatched = next(e for e in case["timeline"] if e["action"] == "dispatch")
    assert dispatched["note"].startswith("派遣至") and "因为" in dispatched["note"]


def test_unsure_case_waits_in_queue_and_dispatcher_decides(client: TestClient, zz: Any) -> None:
    # A text the model cannot place with confidence, and no keyword either.
    case = report(client, "q1", "情况说明", "有件事想请你们看看")
    assert case["state"] == "reported" and case["category_code"] is None
    q = client.get("/api/v1/dispatch/queue").json()
    item = next(i for i in q["items"] if i["case_id"] == case["id"])
    assert 1 <= len(item["suggestions"]) <= 3
    s = client.get(f"/api/v1/cases/{case['id']}/suggestions").json()
    assert s["suggestions"] == item["suggestions"]
    assert {"category_code", "category_name", "department_code", "department_name", "level",
            "confidence"} <= set(s["suggestions"][0])
    # Override: the dispatcher says it is about school fees, handled by 教育 at district level.
    r = client.post(f"/api/v1/cases/{case['id']}/dispatch-decision",
                    json={"accept": False, "category_code": "I0903", "department_code": "education",
                          "level": "district", "note": "学校收费问题"})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "dispatched" and r.json()["department_code"] == "education"
    assert r.json()["level"] == "district"
    assert case["id"] not in [i["case_id"] for i in client.get("/api/v1/dispatch/queue").json()["items"]]
    # The decision is stored for retraining.
    from zhizhi.adapters.orm_dispatch import DispatchStore

    with zz.uow() as uow:
        rows = DispatchStore(uow.session).decisions()
        assert len(rows) == 1 and rows[0].chosen_category == "I0903" and rows[0].accepted is False
        assert rows[0].suggestions and rows[0].model_version
    # `zhizhi dispatch train --from-db` reads it back as a training row (the 大类 of the choice).
    from zhizhi.cli_dispatch import decisions_examples

    rows_for_training = decisions_examples(zz.settings, zz.catalogue, "category")
    assert [(e.label, e.raw is not None) for e in rows_for_training] == [("I09", True)]
    assert [e.label for e in decisions_examples(zz.settings, zz.catalogue, "department")] == ["education"]
    # Deciding twice is refused: the case is no longer waiting.
    again = client.post(f"/api/v1/cases/{case['id']}/dispatch-decision", json={"accept": True})
    assert again.status_code == 409 and again.headers["content-type"].startswith("application/problem+json")


def test_accepting_the_top_suggestion(client: TestClient) -> None:
    case = report(client, "q2", "情况说明", "有件事想请你们看看")
    top = client.get(f"/api/v1/cases/{case['id']}/suggestions").json()["suggestions"][0]
    r = client.post(f"/api/v1/cases/{case['id']}/dispatch-decision", json={"accept": True})
    assert r.status_code == 200 and r.json()["category_code"] == top["category_code"]
    assert r.json()["department_code"] == top["department_code"] and r.json()["level"] == top["level"]
    other = report(client, "q3", "情况说明", "想请你们看看", at=(106.68, 29.58))["id"]
    bad = client.post(f"/api/v1/cases/{other}/dispatch-decision", json={"accept": False, "category_code": "NOPE"})
    assert bad.status_code == 422


def test_duplicate_report_is_linked_and_hears_of_closure(client: TestClient) -> None:
    first = report(client, "d1", "小区物业乱收费", "小区物业乱收费，每月多收物业费")
    second = report(client, "d2", "小区物业乱收费", "小区物业乱收费，每月多收物业费，请处理",
                    at=(IN_JIEFANGBEI[0] + 0.001, IN_JIEFANGBEI[1]))
    assert second["state"] == "merged"
    merge = next(e for e in second["timeline"] if e["action"] == "merge")
    assert merge["data"]["case_id"] == first["id"]
    far = report(client, "d3", "小区物业乱收费", "小区物业乱收费，每月多收物业费", at=(106.68, 29.58))
    assert far["state"] != "merged"  # other district: a separate job
    dup = client.get(f"/api/v1/cases/{first['id']}/duplicates").json()
    assert dup["report_count"] == 2 and [x["case_id"] for x in dup["linked"]] == [second["id"]]
    assert client.get(f"/api/v1/cases/{second['id']}/duplicates").json()["merged_into"] == first["id"]
    # The primary case closes: the merged report's timeline tells its reporter.
    cid, dept = first["id"], first["department_code"]
    for body in ({"action": "accept", "actor": {"name": "h", "role": "handler", "department": dept}},
                 {"action": "handle", "note": "已整改", "actor": {"name": "h", "role": "handler", "department": dept}},
                 {"action": "verify", "passed": True, "note": "ok", "actor": {"name": "d", "role": "dispatcher"}}):
        assert client.post(f"/api/v1/cases/{cid}/actions", json=body).status_code == 200
    merged = client.get(f"/api/v1/cases/{second['id']}").json()
    assert merged["timeline"][-1]["action"] == "linked_closed"
    assert client.get(f"/api/v1/cases/{cid}/duplicates").json()["linked"][0]["notified_at"] is not None


def test_manual_link(client: TestClient) -> None:
    a = report(client, "m1", "公司拖欠工资", "公司拖欠工资")
    b = report(client, "m2", "情况说明", "有件事想请你们看看")
    r = client.post(f"/api/v1/cases/{b['id']}/duplicate-of", json={"into_case_id": a["id"]})
    assert r.status_code == 200 and r.json()["report_count"] == 2
    assert client.get(f"/api/v1/cases/{b['id']}").json()["state"] == "merged"


def test_whistle_flow_end_to_end(client: TestClient) -> None:
    case = report(client, "w1", "小区物业乱收费", "房屋漏水开裂，物业乱收费")
    cid = case["id"]
    level_before = case["level"]
    assert case["state"] == "dispatched", case
    r = client.post(f"/api/v1/cases/{cid}/whistle", json={
        "departments": ["housing", "market"], "reason": "街道无法单独解决，需住建和市场监管报到",
        "tasks": {"housing": "房屋安全检测"}})
    assert r.status_code == 200, r.text
    status = r.json()
    assert status["state"] == "handling"
    order = ["city", "district", "street", "community", "grid"]
    assert order.index(status["level"]) == order.index(level_before) - 1
    tasks = {t["department_code"]: t for t in status["tasks"]}
    assert tasks["housing"]["task"] == "房屋安全检测" and tasks["market"]["state"] == "called"
    # Finishing before reporting in is refused; an uncalled department is unknown.
    assert client.post(f"/api/v1/cases/{cid}/whistle/tasks/housing",
                       json={"action": "done", "note": "x"}).status_code == 409
    assert client.post(f"/api/v1/cases/{cid}/whistle/tasks/education",
                       json={"action": "report_in", "hours": 4}).status_code == 404
    # Each called department reports in itself: the case is not assigned to it, yet the call makes it visible.
    zz = client.app.state.zz  # type: ignore[attr-defined]
    as_dept = {d: login_headers(client, zz, f"h-{d}", ("handler",), (), (d,)) for d in ("housing", "market")}
    outsider = login_headers(client, zz, "h-education", ("handler",), (), ("education",))
    assert client.get(f"/api/v1/cases/{cid}/whistle", headers=outsider).status_code == 404
    assert client.post(f"/api/v1/cases/{cid}/whistle/tasks/market", headers=as_dept["housing"],
                       json={"action": "report_in", "hours": 4}).status_code == 404  # not its own task
    for dept, hours in (("housing", 48), ("market", 24)):
        r = client.post(f"/api/v1/cases/{cid}/whistle/tasks/{dept}", headers=as_dept[dept],
                        json={"action": "report_in", "hours": hours})
        assert r.status_code == 200, r.text
    tasks = {t["department_code"]: t for t in r.json()["tasks"]}
    assert tasks["housing"]["due_at"] != tasks["market"]["due_at"]  # each its own deadline
    r = client.post(f"/api/v1/cases/{cid}/whistle/tasks/housing", json={"action": "done", "note": "检测完成"})
    assert r.json()["state"] == "handling"  # one task still open
    r = client.post(f"/api/v1/cases/{cid}/whistle/tasks/market", json={"action": "done", "note": "已查处"})
    assert r.json()["state"] == "closed"
    timeline = [e["action"] for e in client.get(f"/api/v1/cases/{cid}").json()["timeline"]]
    assert timeline[-6:] == ["whistle", "report_in", "report_in", "task_done", "task_done", "close"]
    # Each step is audited: who called the departments in, who reported in, and the system closing the case.
    from sqlalchemy import select

    from zhizhi.adapters.orm_access import AuditRow

    with zz.uow() as uow:
        audited = {tuple(r) for r in uow.session.execute(select(AuditRow.username, AuditRow.action)
                                                         .where(AuditRow.target == f"case:{cid}"))}
    assert {("admin", "case.whistle"), ("h-housing", "case.report_in"), ("h-market", "case.report_in"),
            ("admin", "case.task_done"), ("system:auto", "case.close")} <= audited, audited
    # A whistle on a closed case is refused.
    assert client.post(f"/api/v1/cases/{cid}/whistle", json={"departments": ["housing"], "reason": "x"}
                       ).status_code == 409


def test_no_model_falls_back_to_keywords(settings: Settings, tiny_hierarchy: PlaceHierarchy, tmp_path: Path) -> None:
    zz = _boot(settings, tiny_hierarchy, tmp_path / "empty")
    assert zz.ctx.advisor.model is None
    from zhizhi.service.commands import ReportCase

    res = zz.handle(ReportCase(source="citizen", source_id="k1", title="路灯不亮", lon=106.52, lat=29.52))
    with zz.uow() as uow:
        case = uow.cases.get(res.case_id)
    assert case.category_code == "C0102" and case.state.value == "dispatched"
    zz.engine.dispose()


def test_server_refuses_a_tampered_model(settings: Settings, tiny_hierarchy: PlaceHierarchy, model_file: Path,
                                         tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    with np.load(model_file, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["intercept"] = arrays["intercept"] + 1.0
    with open(folder / "dispatch-category-20990101T000000Z.npz", "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="refusing to start"):
        _boot(settings, tiny_hierarchy, folder)
    zz = _boot(settings.model_copy(update={"dispatch_on_bad_model": "fallback"}), tiny_hierarchy, folder)
    assert zz.ctx.advisor.model is None  # runs on keywords, loudly
    zz.engine.dispose()
    assert isinstance(TextModel.load(model_file), TextModel)


def test_overdue_job_supervises_whistle_departments_past_their_deadlines(client: TestClient) -> None:
    """The real overdue job (CheckOverdue): a called department that does not report in within its window,
    or does not finish by the deadline it committed to, is marked overdue once per deadline, the case
    records 督办 naming it, the department gets a WhistleTaskOverdue message, and the whistle API shows it."""
    from datetime import timedelta

    from sqlalchemy import select

    from zhizhi.adapters.orm import OutboxRow
    from zhizhi.service.commands import CheckOverdue

    zz = client.app.state.zz  # type: ignore[attr-defined]
    t0 = zz.clock.now()
    cid = report(client, "wo1", "小区物业乱收费", "房屋漏水开裂，物业乱收费")["id"]
    r = client.post(f"/api/v1/cases/{cid}/whistle", json={"departments": ["housing", "market"],
                                                          "reason": "街道无法单独解决，需住建和市场监管报到"})
    assert r.status_code == 200, r.text
    assert client.post(f"/api/v1/cases/{cid}/whistle/tasks/housing",
                       json={"action": "report_in", "hours": 24}).status_code == 200

    def job(hours: float) -> dict[str, int]:
        zz.clock.fixed = t0 + timedelta(hours=hours)
        client.headers.update(login_headers(client, zz))  # a fresh session at the new time
        return zz.handle(CheckOverdue())  # type: ignore[no-any-return]

    def supervisions() -> list[dict[str, Any]]:
        timeline = client.get(f"/api/v1/cases/{cid}").json()["timeline"]
        return [e for e in timeline if e["action"] == "supervise"]

    assert job(1)["whistle_tasks_overdue"] == 0  # market still has an hour to report in
    assert job(3)["whistle_tasks_overdue"] == 1  # market missed its 2 h window; housing is within its 24 h
    assert job(4)["whistle_tasks_overdue"] == 0  # urged once per missed deadline
    sup = supervisions()
    assert [e["data"]["department"] for e in sup] == ["market"] and sup[0]["data"]["stage"] == "report_in"
    assert "market" in sup[0]["note"] and "督办" in sup[0]["note"]
    tasks = {t["department_code"]: t for t in client.get(f"/api/v1/cases/{cid}/whistle").json()["tasks"]}
    assert tasks["market"]["overdue"] and tasks["market"]["overdue_since"] is not None
    assert len(tasks["market"]["supervised"]) == 1
    assert not tasks["housing"]["overdue"] and tasks["housing"]["overdue_since"] is None
    assert tasks["housing"]["supervised"] == []
    with zz.engine.connect() as conn:
        sent = conn.execute(select(OutboxRow.recipient, OutboxRow.payload)
                            .where(OutboxRow.topic == "WhistleTaskOverdue", OutboxRow.case_id == cid)).all()
    assert [(rec, p["stage"]) for rec, p in sent] == [("market", "report_in")]

    # Market reports in late, with its own deadline; housing misses the deadline it committed to.
    assert client.post(f"/api/v1/cases/{cid}/whistle/tasks/market",
                       json={"action": "report_in", "hours": 30}).status_code == 200  # at 4 h: due at 34 h
    tasks = {t["department_code"]: t for t in client.get(f"/api/v1/cases/{cid}/whistle").json()["tasks"]}
    assert not tasks["market"]["overdue"] and tasks["market"]["overdue_since"] is None
    assert job(25)["whistle_tasks_overdue"] == 1  # housing: its task was due at 24 h
    assert job(26)["whistle_tasks_overdue"] == 0
    assert job(35)["whistle_tasks_overdue"] == 1  # market missed its new deadline: urged again
    assert [(e["data"]["department"], e["data"]["stage"]) for e in supervisions()] == [
        ("market", "report_in"), ("housing", "task"), ("market", "task")]
    # The case is still open and visible; closing the tasks ends the urging.
    for dept in ("housing", "market"):
        assert client.post(f"/api/v1/cases/{cid}/whistle/tasks/{dept}",
                           json={"action": "done", "note": "已处置"}).status_code == 200
    assert job(100)["whistle_tasks_overdue"] == 0
    assert client.get(f"/api/v1/cases/{cid}").json()["state"] == "closed"
