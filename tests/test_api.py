"""The REST API over HTTP (in-process ASGI client), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import login_headers
from fastapi.testclient import TestClient

from zhizhi.api.app import create_app, mask_phone

PROBLEM = "application/problem+json"


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(create_app(app)) as c:
        c.headers.update(login_headers(c, app))  # an administrator: these tests are about the case loop
        yield c


def new_report(client: TestClient, sid: str = "api-1", **kw: Any) -> Any:
    body = {"source": "citizen", "source_id": sid, "title": "路灯不亮", "description": "整条街都黑",
            "category_code": "C0102", "lon": 106.55, "lat": 29.55, "reporter_phone": "13812341234"}
    body.update(kw)
    return client.post("/api/v1/cases", json=body)


def assert_problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body = resp.json()
    assert body["status"] == status and body["title"] and body["detail"] and body["type"]
    return body  # type: ignore[no-any-return]


def test_report_then_read_with_timeline(client: TestClient) -> None:
    resp = new_report(client)
    assert resp.status_code == 201
    body = resp.json()
    case = body["case"]
    assert body["created"] and case["state"] == "dispatched"
    assert case["location"]["district"]["name"] == "渝中区"
    assert case["location"]["grid"]["approximate"] is True
    assert case["reporter_phone"] == "138****1234"  # contact masked
    assert [e["action"] for e in case["timeline"]] == ["report", "register", "dispatch"]
    got = client.get(f"/api/v1/cases/{body['id']}").json()
    assert got["id"] == body["id"] and "accept" in got["allowed_actions"]


def test_repeat_report_returns_the_existing_case(client: TestClient) -> None:
    first = new_report(client, "same")
    again = new_report(client, "same")
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.json()["created"] is False


def test_list_filters_and_pagination(client: TestClient) -> None:
    for i in range(5):
        new_report(client, f"l{i}", lon=106.55 if i % 2 else 106.65)
    page = client.get("/api/v1/cases", params={"limit": 2}).json()
    assert page["total"] == 5 and len(page["items"]) == 2
    assert client.get("/api/v1/cases", params={"area": "500105"}).json()["total"] == 3
    assert client.get("/api/v1/cases", params={"area": "500103001"}).json()["total"] == 2
    assert client.get("/api/v1/cases", params={"state": "dispatched"}).json()["total"] == 5
    assert client.get("/api/v1/cases", params={"state": "closed"}).json()["total"] == 0
    assert client.get("/api/v1/cases", params={"q": "路灯"}).json()["total"] == 5
    assert client.get("/api/v1/cases", params={"category": "C01"}).json()["total"] == 5
    dept = page["items"][0]["department_code"]
    assert client.get("/api/v1/cases", params={"department": dept}).json()["total"] == 5
    assert client.get("/api/v1/cases", params={"level": "street"}).json()["total"] in range(0, 6)


def test_actions_through_the_api(client: TestClient) -> None:
    cid = new_report(client, "act").json()["id"]
    dept = client.get(f"/api/v1/cases/{cid}").json()["department_code"]
    handler = {"name": "李", "role": "handler", "department": dept}
    assert client.post(f"/api/v1/cases/{cid}/actions", json={"action": "accept", "actor": handler}).status_code == 200
    r = client.post(f"/api/v1/cases/{cid}/actions",
                    json={"action": "handle", "actor": handler, "note": "已更换灯泡", "photos": ["https://p/1.jpg"]})
    assert r.json()["state"] == "feedback"
    r = client.post(f"/api/v1/cases/{cid}/actions", json={"action": "verify", "passed": True, "note": "通过"})
    assert r.json()["state"] == "closed"
    r = client.post(f"/api/v1/cases/{cid}/actions", json={"action": "evaluate", "satisfaction": 4})
    assert r.json()["state"] == "evaluated" and r.json()["satisfaction"] == 4


@pytest.mark.parametrize(("payload", "status", "needle"), [
    ({"source_id": "x"}, 422, "title"),  # neither title nor description
    ({"title": "t"}, 422, "source_id"),  # missing required field
    ({"source_id": "x", "title": "t", "category_code": "NOPE", "lon": 106.55, "lat": 29.55}, 422, "NOPE"),
    ({"source_id": "x", "title": "t", "category_code": "C0102", "lon": 106.9, "lat": 29.55}, 422, "江北区"),
    ({"source_id": "x", "title": "t", "category_code": "C0102", "lon": 200, "lat": 29.55}, 422, "lon"),
    ({"source_id": "x", "title": "t", "category_code": "C0102", "lon": 106.55}, 422, "经纬度"),
    ({"source_id": "x", "title": "t", "crs": "mars", "lon": 106.55, "lat": 29.5}, 422, "crs"),
    ({"source_id": "x", "title": "t", "lon": 106.55, "lat": 29.55, "unknown_field": 1}, 422, "unknown_field"),
    ({"source_id": "x", "title": "t", "source": "pigeon", "lon": 106.55, "lat": 29.55}, 422, "pigeon"),
])
def test_bad_reports_answer_problem_json(client: TestClient, payload: dict, status: int, needle: str) -> None:
    body = assert_problem(client.post("/api/v1/cases", json=payload), status)
    assert needle in str(body)


def test_malformed_json_is_400(client: TestClient) -> None:
    r = client.post("/api/v1/cases", content=b'{"source_id": "x", ', headers={"content-type": "application/json"})
    assert_problem(r, 400)
    r = client.post("/api/v1/cases", content="不是JSON".encode(), headers={"content-type": "application/json"})
    assert_problem(r, 400)


def test_outside_point_names_nearest_unit_and_distance(client: TestClient) -> None:
    body = assert_problem(new_report(client, "far", lon=106.9, lat=29.55), 422)
    assert body["nearest_code"] == "500105" and body["distance_m"] > 10_000


def test_illegal_action_is_409_with_allowed_actions(client: TestClient) -> None:
    cid = new_report(client, "ill").json()["id"]
    body = assert_problem(client.post(f"/api/v1/cases/{cid}/actions", json={"action": "verify", "passed": True}), 409)
    assert "accept" in body["allowed"] and body["state"] == "dispatched"
    assert_problem(client.post(f"/api/v1/cases/{cid}/actions", json={"action": "teleport"}), 422)
    assert_problem(client.post("/api/v1/cases/99999/actions", json={"action": "accept"}), 404)
    assert_problem(client.get("/api/v1/cases/99999"), 404)
    assert_problem(client.get("/api/v1/cases/abc"), 422)
    assert_problem(client.get("/api/v1/cases", params={"state": "flying"}), 422)


def test_oversized_body_is_413(client: TestClient) -> None:
    r = client.post("/api/v1/cases", content=b"x" * 1_100_000, headers={"content-type": "application/json"})
    assert_problem(r, 413)


def test_places_catalogue_and_health(client: TestClient) -> None:
    fc = client.get("/api/v1/places", params={"level": "district"})
    assert fc.status_code == 200 and fc.headers["content-type"].startswith("application/geo+json")
    names = {f["properties"]["name"] for f in fc.json()["features"]}
    assert names == {"渝中区", "江北区"}
    kids = client.get("/api/v1/places", params={"parent": "500103"}).json()["features"]
    assert len(kids) == 2 and all(f["properties"]["approximate"] for f in kids)
    assert_problem(client.get("/api/v1/places", params={"parent": "nope"}), 404)
    place = client.get("/api/v1/places/500103001").json()
    assert place["ancestors"][-1]["code"] == "500103" and len(place["children"]) == 2
    loc = client.get("/api/v1/locate", params={"lon": 106.66, "lat": 29.58}).json()
    assert loc["district"]["code"] == "500105"
    cats = client.get("/api/v1/catalogue/categories").json()
    assert {"城乡建设", "环境保护", "交通运输", "教育文体", "劳动和社会保障", "商贸旅游", "卫生计生"} <= {
        c["name_zh"] for c in cats}
    assert client.get("/api/v1/catalogue/departments").json()
    assert client.get("/api/v1/catalogue/rules").json()
    health = client.get("/health").json()
    assert health["status"] == "ok"
    schema = client.get("/openapi.json").json()
    assert "/api/v1/cases" in schema["paths"]


def test_mask_phone() -> None:
    assert mask_phone("13812341234") == "138****1234"
    assert mask_phone("023-6388-1234") == "023****1234"
    assert mask_phone(None) is None and mask_phone("123") == "***"
