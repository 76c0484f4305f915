"""Person and enterprise records per community: CSV import with provenance, scoped edits, masking, case links."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import login_headers
from fastapi.testclient import TestClient
from sqlalchemy import text

from zhizhi.api.app import create_app
from zhizhi.service import records

COMMUNITY, GRID = "500103001001", "500103001001001"
CSV = ("档案编号,社区编码,网格编码,姓名,身份证号,电话,地址,人群类别,年龄\n"
       "P001,500103001001,500103001001001,赵德明,500103194501011236,13900001111,民族路1号,独居老人、低保,81\n"
       "P002,500103001001,500103001001002,钱秀英,500103195002021231,13900002222,民族路2号,独居老人,76\n"
       "P003,500103001002,,孙建国,500103198003031232,13900003333,民权路3号,,46\n"
       "P004,999999999999,,查无此社区,,,,,1\n"
       "P005,500103001001,,李错号,500103194501011234,,,,70\n")  # wrong GB 11643 check character


@pytest.fixture
def env(app: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    path = tmp_path / "people.csv"
    path.write_text(CSV, encoding="gb18030")
    result = records.import_csv(app, path, "person", "民政局 2026-11 底册")
    with TestClient(create_app(app)) as c:
        yield {"c": c, "app": app, "import": result,
               "community": login_headers(c, app, "sq1", ("dispatcher",), (COMMUNITY,)),
               "street": login_headers(c, app, "jd1", ("dispatcher",), ("500103001",)),
               "district": login_headers(c, app, "qx1", ("leader",), ("500103",)),
               "other": login_headers(c, app, "jd2", ("dispatcher",), ("500103002",)),
               "grid": login_headers(c, app, "wg1", ("grid_worker",), (GRID,))}


def test_import_keeps_provenance_and_encrypts(env: dict[str, Any]) -> None:
    assert env["import"]["created"] == 3 and env["import"]["rejected"] == 2
    assert "row 4" in env["import"]["errors"][0]
    assert "row 5" in env["import"]["errors"][1] and "check character" in env["import"]["errors"][1]
    assert "500103194501011234" not in " ".join(env["import"]["errors"])  # the refused value is not repeated
    c = env["c"]
    listed = c.get("/api/v1/records", headers=env["street"]).json()
    assert {r["external_id"] for r in listed} == {"P001", "P002", "P003"}
    p1 = next(r for r in listed if r["external_id"] == "P001")
    assert p1["name"] == "赵**" and p1["fields"]["phone"] == "139****1111"
    assert p1["fields"]["id_number"] == "5001**********1236" and p1["fields"]["年龄"] == "81"
    assert p1["provenance"]["phone"]["source"] == "民政局 2026-11 底册" and p1["street_code"] == "500103001"
    with env["app"].engine.connect() as conn:
        stored = " ".join(str(v) for v in conn.execute(text("SELECT name, fields FROM community_records")).all())
    assert "赵德明" not in stored and "13900001111" not in stored and "500103194501011236" not in stored
    # the import is audited as the system job, one row per record, naming fields and never values
    with env["app"].engine.connect() as conn:
        audited = conn.execute(text("SELECT username, role, action, detail FROM audit_log "
                                    "WHERE action = 'record.create'")).all()
    assert [(a.username, a.role) for a in audited] == [("system:import", "system")] * 3
    assert "id_number" in str(audited[0].detail) and "500103194501011236" not in str(audited)
    # through the API too: a wrong ID number is a 422 naming the field, and nothing is stored
    r = c.post("/api/v1/records", headers=env["community"], json={
        "kind": "person", "external_id": "P9", "name": "周某", "community_code": COMMUNITY,
        "fields": {"id_number": "500103194501011234"}})
    assert r.status_code == 422 and r.json()["field"] == "id_number" and "500103194501011234" not in r.text
    # again: idempotent by external id
    assert records.import_csv(env["app"], _write(env, CSV), "person", "again")["created"] == 0


def _write(env: dict[str, Any], content: str) -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "again.csv"
    path.write_text(content, encoding="utf-8")
    return path


def test_scoped_reads_edits_and_the_solitary_elderly_of_a_grid(env: dict[str, Any]) -> None:
    c = env["c"]
    rid = next(r["id"] for r in c.get("/api/v1/records", headers=env["community"]).json() if r["external_id"] == "P001")
    assert c.get("/api/v1/records", headers=env["other"]).json() == []
    assert c.get(f"/api/v1/records/{rid}", headers=env["other"]).status_code == 404
    # the community edits; its change is visible to the street and district above, with provenance
    r = c.patch(f"/api/v1/records/{rid}", headers=env["community"], json={"fields": {"phone": "13700009999"}})
    assert r.status_code == 200, r.text
    for who in ("street", "district"):
        seen = c.get(f"/api/v1/records/{rid}", headers=env[who]).json()
        assert seen["fields"]["phone"] == "137****9999" and seen["provenance"]["phone"]["editor"] == "sq1"
    # the street above reads but does not edit the community's records
    assert c.patch(f"/api/v1/records/{rid}", headers=env["street"], json={"tags": []}).status_code == 403
    # unmask: allowed for the community, audited; not for a leader
    full = c.get(f"/api/v1/records/{rid}", headers=env["community"], params={"unmask": True}).json()
    assert full["name"] == "赵德明" and full["fields"]["phone"] == "13700009999"
    assert c.get(f"/api/v1/records/{rid}", headers=env["district"], params={"unmask": True}).status_code == 403
    elderly = c.get("/api/v1/records", headers=env["grid"], params={"tag": "独居老人"}).json()
    assert [r["external_id"] for r in elderly] == ["P001"]  # only the grid worker's own grid
    assert len(c.get("/api/v1/records", headers=env["street"], params={"tag": "独居老人"}).json()) == 2


def test_cases_link_to_records(env: dict[str, Any]) -> None:
    c, app = env["c"], env["app"]
    admin = login_headers(c, app)
    case = c.post("/api/v1/cases", headers=admin, json={"source_id": "lk1", "title": "独居老人家中漏水",
                                                        "lon": 106.51, "lat": 29.51, "category_code": "C0102"}).json()
    rid = next(r["id"] for r in c.get("/api/v1/records", headers=env["community"]).json() if r["external_id"] == "P001")
    assert c.post(f"/api/v1/cases/{case['id']}/records/{rid}", headers=env["street"],
                  json={"note": "当事人"}).status_code == 204
    linked = c.get(f"/api/v1/cases/{case['id']}/records", headers=env["street"]).json()
    assert [r["external_id"] for r in linked] == ["P001"] and linked[0]["name"] == "赵**"
    assert c.get(f"/api/v1/cases/{case['id']}/records", headers=env["other"]).status_code == 404
    assert c.post(f"/api/v1/cases/{case['id']}/records/{rid}", headers=env["other"]).status_code == 404
