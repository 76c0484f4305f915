"""The reporter's ID number (身份证号) end to end, and the audit trail of the system's own writes.

Issue 5: the ID number is checked at intake (GB 11643), encrypted at rest, masked everywhere,
shown whole only to a permitted role that asks (audited), never in Open311 or the logs; and
every write that touches personal data is audited, also when no person made it (an import,
triage, the overdue job, an alarm, a key rotation), with a chain that still verifies.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import login_headers
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text, update

from zhizhi.adapters import audit_log
from zhizhi.adapters.hotline import import_hotline
from zhizhi.adapters.orm import CaseRow
from zhizhi.adapters.orm_access import AuditRow
from zhizhi.api.app import create_app
from zhizhi.domain.access import Principal, system_principal
from zhizhi.domain.errors import ValidationFailed
from zhizhi.domain.personal import parse_id_number
from zhizhi.service import accounts
from zhizhi.service.commands import CheckOverdue, ReportCase

# GB 11643-1999's own example numbers (the check character is part of the published example).
ID_A = "11010519491231002X"
ID_B = "440524188001010014"
ID_A_MASKED = "1101**********002X"
BAD_CHECKSUM = "110105194912310021"
#: The standard's weight table, written out (the code derives it as 2^(17-i) mod 11).
WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(create_app(app)) as c:
        yield c


def _body(sid: str, **kw: Any) -> dict[str, Any]:
    body = {"source": "citizen", "source_id": sid, "title": "路灯不亮", "category_code": "C0102",
            "lon": 106.52, "lat": 29.52, "reporter_name": "王小明", "reporter_phone": "13912345678",
            "reporter_id_number": ID_A}
    body.update(kw)
    return body


def _audit(app: Any, **where: str) -> list[AuditRow]:
    with app.uow() as uow:
        stmt = select(AuditRow).order_by(AuditRow.id)
        for k, v in where.items():
            stmt = stmt.where(getattr(AuditRow, k) == v)
        rows = list(uow.session.scalars(stmt).all())
        uow.session.expunge_all()  # plain snapshots: the unit of work rolls back on exit
        return rows


def _audit_text(app: Any) -> str:
    with app.engine.connect() as conn:
        return str(conn.execute(text("SELECT * FROM audit_log")).all())


# ------------------------------------------------------------------------------ the number itself
def test_id_number_checksum_follows_gb_11643() -> None:
    for good in (ID_A, ID_B):
        total = sum(int(d) * w for d, w in zip(good[:17], WEIGHTS, strict=True))
        assert "10X98765432"[total % 11] == good[17]  # the examples are valid by the standard's table
        assert parse_id_number(good) == good
    assert parse_id_number(" 110105 19491231 002x ") == ID_A  # spaces removed, x upper-cased
    bad = {
        BAD_CHECKSUM: "check character",
        ID_A[:17]: "18",                         # too short
        "1101051949123100200": "18",             # too long
        "11010519491231002Y": "digit or X",
        "1101051949A231002X": "digit or X",
        "010105194912310025": "region",
        "110105194913310024": "date of birth",   # month 13
        "１１０１０５１９４９１２３１００２Ｘ": "digit or X",  # full-width digits are not ASCII
    }
    for value, why in bad.items():
        with pytest.raises(ValidationFailed) as exc:
            parse_id_number(value)
        assert why in exc.value.message and value not in exc.value.message
        assert exc.value.details["field"] == "reporter_id_number"


# ------------------------------------------------------------------------------ through the API
def test_id_number_encrypted_masked_and_unmasked_only_when_allowed_and_audited(
        client: TestClient, app: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    admin = login_headers(client, app)
    r = client.post("/api/v1/cases", json=_body("id-1"), headers=admin)
    assert r.status_code == 201, r.text
    case = r.json()["case"]
    assert case["reporter_id_number"] == ID_A_MASKED
    listed = client.get("/api/v1/cases", headers=admin)
    assert ID_A not in listed.text and listed.json()["items"][0]["reporter_id_number"] == ID_A_MASKED
    plain = client.get(f"/api/v1/cases/{case['id']}", headers=admin)
    assert plain.json()["reporter_id_number"] == ID_A_MASKED and ID_A not in plain.text
    # at rest: ciphertext under the data key (raw row, not through the repository)
    with app.engine.connect() as conn:
        stored = conn.execute(text("SELECT reporter_id_number FROM cases WHERE id = :i"), {"i": case["id"]}).scalar()
    assert stored.startswith("enc1:") and ID_A not in stored and "002X" not in stored
    # unmasked: only a role with the right, only when asked, always audited
    disp = login_headers(client, app, "d1", ("dispatcher",))
    full = client.get(f"/api/v1/cases/{case['id']}", headers=disp, params={"unmask": True}).json()
    assert full["reporter_id_number"] == ID_A
    for role in ("leader", "auditor"):
        who = login_headers(client, app, f"x-{role}", (role,))
        r = client.get(f"/api/v1/cases/{case['id']}", headers=who, params={"unmask": True})
        assert r.status_code == 403 and ID_A not in r.text
        assert client.get(f"/api/v1/cases/{case['id']}", headers=who).json()["reporter_id_number"] == ID_A_MASKED
    unmasks = _audit(app, action="case.unmask")
    assert [a.username for a in unmasks] == ["d1"] and "reporter_id_number" in unmasks[0].detail["fields"]
    report = _audit(app, action="case.report")[0]
    assert report.username == "admin" and "reporter_id_number" in report.detail["personal"]
    # the value never reaches the logs or the audit log (which records field names, not values)
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert ID_A not in logged and ID_A not in _audit_text(app)


@pytest.mark.parametrize("value", [BAD_CHECKSUM, "'; DROP TABLE cases; --", "<script>alert(1)</script>",
                                   "11010519491231002X' OR '1'='1", "\" OR 1=1 --"])
def test_bad_id_numbers_and_payloads_are_refused_with_a_clear_422(client: TestClient, app: Any,
                                                                   value: str) -> None:
    admin = login_headers(client, app)
    r = client.post("/api/v1/cases", json=_body("bad-1", reporter_id_number=value), headers=admin)
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["field"] == "reporter_id_number" and "ID number" in problem["detail"]
    assert value not in r.text  # the refused value is not echoed back
    with app.engine.connect() as conn:
        assert conn.execute(select(func.count(CaseRow.id))).scalar() == 0  # nothing stored, table intact
    # an over-long value stops at the schema, also a 422
    r = client.post("/api/v1/cases", json=_body("bad-2", reporter_id_number="1" * 200), headers=admin)
    assert r.status_code == 422


def test_open311_never_shows_the_id_number(client: TestClient, app: Any) -> None:
    accounts.create_user(app, "bridge", None, ("citizen",))
    key = accounts.create_api_key(app, "bridge", "open311")
    r = client.post("/open311/v2/requests.json", data={
        "api_key": key, "service_code": "C0102", "lat": "29.52", "long": "106.52", "description": "路灯不亮",
        "reporter_id_number": ID_A, "id_number": ID_A})  # not Open311 fields: ignored, never stored
    assert r.status_code == 201, r.text
    request_id = r.json()[0]["service_request_id"]
    with app.engine.connect() as conn:
        assert conn.execute(select(CaseRow.reporter_id_number)).scalar() is None
    # even a case that has one (given to staff over the API) shows neither the number nor its mask
    with app.uow() as uow:
        case = uow.cases.get(int(request_id))
        case.reporter_id_number = ID_A
        uow.commit()
    for fmt in ("json", "xml"):
        for url in (f"/open311/v2/requests/{request_id}.{fmt}", f"/open311/v2/requests.{fmt}"):
            got = client.get(url)
            assert got.status_code == 200 and "002X" not in got.text and "1101**" not in got.text, url


# ------------------------------------------------------------------------------ hotline import
def _hotline_file(tmp_path: Path) -> Path:
    path = tmp_path / "tickets.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["工单编号", "来电时间", "诉求内容", "经度", "纬度", "电话", "姓名", "身份证号", "类别"])
        w.writerow(["H1", "2026-11-20 09:30:00", "路口井盖缺失", "106.52", "29.52", "13800000001", "张三",
                    ID_B, "C0101"])
        w.writerow(["H2", "2026-11-20 09:40:00", "路灯不亮", "106.52", "29.52", "", "", BAD_CHECKSUM, "C0102"])
        w.writerow(["H3", "2026-11-20 09:50:00", "垃圾满了", "106.52", "29.52", "", "", "", "C0102"])
    return path


def test_hotline_import_checks_encrypts_and_audits_id_numbers(app: Any, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    rejects = tmp_path / "rejects.csv"
    s = import_hotline(app, _hotline_file(tmp_path), reject_path=rejects)
    assert (s.created, s.rejected) == (2, 1)
    (reason,) = csv.DictReader(rejects.read_text(encoding="utf-8-sig").splitlines())
    assert rejects.stat().st_mode & 0o777 == 0o600  # rejected rows keep their personal cells: owner only
    assert reason["source_id"] == "H2" and "check character" in reason["reason"]
    with app.engine.connect() as conn:
        raw = dict(conn.execute(select(CaseRow.source_id, CaseRow.reporter_id_number)).all())
    assert raw["H1"].startswith("enc1:") and ID_B not in raw["H1"] and raw["H3"] is None
    with app.uow() as uow:
        assert uow.cases.get_by_source("hotline", "H1").reporter_id_number == ID_B
    # one audit row per imported case, by the import job, naming the personal fields written
    reports = _audit(app, action="case.report")
    assert [(a.username, a.role) for a in reports] == [("system:import", "system")] * 2
    assert "reporter_id_number" in reports[0].detail["personal"]
    assert "reporter_id_number" not in reports[1].detail["personal"]
    # the automatic triage that registered and dispatched them is audited as well
    triaged = _audit(app, username="system:triage")
    assert {a.target for a in triaged} == {a.target for a in reports}
    assert all(a.action == "case.dispatch" and "register" in a.detail["actions"] for a in triaged)
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert ID_B not in logged and BAD_CHECKSUM not in logged and ID_B not in _audit_text(app)
    with app.uow() as uow:
        assert audit_log.verify(uow.session).ok


# ------------------------------------------------------------------------------ system writes
def test_system_writes_are_audited_and_the_chain_catches_a_modified_one(app: Any) -> None:
    # An alarm opens a case through the service layer without a principal (as the sensing engine does).
    alarm = app.handle(ReportCase(source="sensor", source_id="alarm-1", title="积水预警", category_code="C0102",
                                  lon=106.52, lat=29.52))
    trusted = app.handle(ReportCase(source="citizen", source_id="cli-1", title="井盖", category_code="C0101",
                                    lon=106.52, lat=29.52, reporter_id_number=ID_A))
    opened = {a.target: a for a in _audit(app, action="case.report")}
    assert opened[f"case:{alarm.case_id}"].username == "system:alarm"
    assert opened[f"case:{trusted.case_id}"].username == "system:intake"
    assert opened[f"case:{trusted.case_id}"].detail["personal"] == ["reporter_id_number"]
    # the overdue job, far past every deadline: its marks and escalations are audited as system:overdue
    app.clock.fixed = app.clock.fixed + timedelta(days=60)
    marked = app.handle(CheckOverdue())
    assert marked["marked_overdue"] >= 1
    overdue = _audit(app, username="system:overdue")
    assert len(overdue) >= marked["marked_overdue"]
    assert overdue[0].role == "system" and overdue[0].detail["actions"] == ["overdue"]
    with app.uow() as uow:
        v = audit_log.verify(uow.session)
    assert v.ok and v.rows == len(_audit(app))
    # a modified system row breaks the chain exactly there
    target = overdue[0].id
    with app.engine.begin() as conn:
        conn.execute(update(AuditRow).where(AuditRow.id == target).values(username="someone"))
    with app.uow() as uow:
        bad = audit_log.verify(uow.session)
    assert not bad.ok and bad.first_bad_id == target


def test_batch_appends_make_the_same_chain(app: Any) -> None:
    p = Principal(1, "x", frozenset({"admin"}))
    with app.uow() as uow:
        audit_log.append(uow.session, p, "one", "t:0")
        audit_log.append_many(uow.session, [audit_log.Entry(system_principal("import"), "many", f"t:{i}", {"i": i})
                                            for i in range(1, 6)])
        audit_log.append(uow.session, p, "one", "t:6")
        uow.session.commit()
        v = audit_log.verify(uow.session)
        rows = uow.session.scalars(select(AuditRow).order_by(AuditRow.id)).all()
        assert v.ok and v.rows == 7 and [r.target for r in rows] == [f"t:{i}" for i in range(7)]
        assert rows[3].username == "system:import" and rows[3].role == "system" and rows[3].origin == "system"
        uow.session.execute(AuditRow.__table__.delete().where(AuditRow.id == rows[3].id))
        uow.session.commit()
        assert audit_log.verify(uow.session).first_bad_id == rows[4].id
