"""Perception over HTTP on SQLite and PostgreSQL: devices, batches with bad input, alarms and the cases they open."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import orjson
import pytest
from conftest import login_headers
from fastapi.testclient import TestClient

from zhizhi.api.app import create_app


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(create_app(app)) as c:
        c.headers.update(login_headers(c, app))
        yield c


def devices(client: TestClient, *specs: tuple[str, str, str, float, float]) -> None:
    body = [{"code": c, "type": t, "scene": s, "lon": x, "lat": y} for c, t, s, x, y in specs]
    r = client.post("/api/v1/devices", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["registered"] == len(specs)


def at(app: Any, minutes_ago: float) -> str:
    return (app.clock.now() - timedelta(minutes=minutes_ago)).isoformat()


def post(client: TestClient, items: list[Any]) -> dict[str, Any]:
    r = client.post("/api/v1/observations", json=items)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_register_device_locates_it_and_refuses_bad_ones(client: TestClient) -> None:
    devices(client, ("M1", "methane_detector", "septic_tank", 106.55, 29.55))
    d = client.get("/api/v1/devices/M1").json()
    assert d["place_code"] == "500103001001002" and d["district_code"] == "500103"
    r = client.post("/api/v1/devices", json={"code": "M1", "type": "methane_detector", "scene": "septic_tank",
                                             "lon": 106.55, "lat": 29.55})
    assert r.status_code == 422 and "已存在" in r.json()["detail"]
    r = client.post("/api/v1/devices", json={"code": "Z", "type": "toaster", "scene": "septic_tank",
                                             "lon": 106.55, "lat": 29.55})
    assert r.status_code == 422 and "unknown device type" in r.json()["detail"]
    r = client.post("/api/v1/devices", json={"code": "far", "type": "water_gauge", "scene": "waterlogging",
                                             "lon": 100.0, "lat": 20.0})
    assert r.status_code == 422  # outside the city
    many = client.post("/api/v1/devices", json=[
        {"code": "W1", "type": "water_gauge", "scene": "waterlogging", "lon": 106.65, "lat": 29.58},
        {"code": "W2", "type": "water_gauge", "scene": "nowhere", "lon": 106.65, "lat": 29.58}]).json()
    assert many["registered"] == 1 and many["items"][1]["error"] == "validation-failed"
    assert client.get("/api/v1/devices", params={"area": "500105"}).json()["total"] == 1
    assert client.get("/api/v1/devices/nope").status_code == 404


def test_csv_import(app: Any, tmp_path: Any) -> None:
    f = tmp_path / "devices.csv"
    f.write_text("code,type,scene,lon,lat,model\nC1,waste_bin,kitchen_waste,106.52,29.52,X-1\n"
                 "C2,waste_bin,kitchen_waste,abc,29.52,X-1\nC3,bracelet,elderly,106.68,29.58,B\n", encoding="utf-8")
    n, errors = app.sensing.import_csv(f)
    assert n == 2 and [e[0] for e in errors] == [3]


def test_bad_input_is_refused_per_item_and_good_readings_are_stored(client: TestClient, app: Any) -> None:
    devices(client, ("M1", "methane_detector", "septic_tank", 106.55, 29.55))
    items = [
        {"device": "M1", "quantity": "methane", "value": 3.0, "time": at(app, 3)},       # 0 ok
        "not an object",                                                                  # 1 malformed
        {"device": "M1", "quantity": "methane", "value": "high", "time": at(app, 2)},     # 2 malformed value
        {"device": "GHOST", "quantity": "methane", "value": 3.0, "time": at(app, 2)},     # 3 unknown device
        {"device": "M1", "quantity": "methane", "value": 150.0, "time": at(app, 2)},      # 4 out of range
        {"device": "M1", "quantity": "methane", "value": 3.0, "time": at(app, -60)},      # 5 future
        {"device": "M1", "quantity": "methane", "value": 3.0, "time": at(app, 60 * 24 * 30)},  # 6 too old
        {"device": "M1", "quantity": "methane", "value": 4.0, "time": at(app, 3)},       # 7 duplicate in batch
        {"device": "M1", "quantity": "humidity", "value": 3.0, "time": at(app, 1)},      # 8 not measured
        {"device": "M1", "quantity": "ozone", "value": 3.0, "time": at(app, 1)},         # 9 unknown quantity
        {"device": "M1", "time": at(app, 1), "values": {"methane": 4.0, "temperature": 21.5}},  # 10 two ok
        {"device": ["M1"], "quantity": "methane", "value": 1, "time": at(app, 1)},       # 11 malformed device
        {"device": "M1", "quantity": "methane", "value": 1, "time": "yesterday"},        # 12 malformed time
    ]
    rep = post(client, items)
    reasons = {e["index"]: e["reason"] for e in rep["errors"]}
    assert reasons == {1: "malformed", 2: "malformed", 3: "unknown-device", 4: "out-of-range", 5: "future-time",
                       6: "too-old", 7: "duplicate", 8: "quantity-not-measured", 9: "unknown-quantity",
                       11: "malformed", 12: "malformed"}
    assert rep["accepted"] == 3 and rep["refused"] == 11 and rep["received"] == 13
    # the same reading sent again later is a duplicate of what is stored; a late but new one is stored
    again = post(client, [{"device": "M1", "quantity": "methane", "value": 3.0, "time": at(app, 3)},
                          {"device": "M1", "quantity": "methane", "value": 2.0, "time": at(app, 2.5)}])
    assert again["accepted"] == 1 and again["errors"][0]["reason"] == "duplicate"
    stored = client.get("/api/v1/devices/M1/observations", params={"quantity": "methane"}).json()["items"]
    assert [s["value"] for s in stored] == [4.0, 2.0, 3.0]  # newest first; every acknowledged reading is there
    assert app.sensing.store.count() == 4


def test_ndjson_gzip_and_whole_body_errors(client: TestClient, app: Any) -> None:
    devices(client, ("W1", "water_gauge", "waterlogging", 106.65, 29.58))
    lines = b"\n".join(orjson.dumps({"device": "W1", "quantity": "water_level", "value": float(i),
                                     "time": at(app, 10 - i)}) for i in range(5)) + b"\n{broken\n"
    r = client.post("/api/v1/observations", content=gzip.compress(lines),
                    headers={"content-type": "application/x-ndjson", "content-encoding": "gzip"})
    assert r.status_code == 200 and r.json()["accepted"] == 5 and r.json()["errors"][0]["index"] == 5
    r = client.post("/api/v1/observations", content=b"[{oops", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")


def test_methane_alarm_opens_a_case_for_enforcement_in_its_grid(client: TestClient, app: Any) -> None:
    devices(client, ("M1", "methane_detector", "septic_tank", 106.55, 29.55),
            ("M2", "methane_detector", "septic_tank", 106.65, 29.58))
    rep = post(client, [{"device": "M1", "quantity": "methane", "value": 30.0, "time": at(app, 1)},
                        {"device": "M2", "quantity": "methane", "value": 12.0, "time": at(app, 1)}])
    assert len(rep["alarms_raised"]) == 1
    alarms = client.get("/api/v1/alarms", params={"state": "raised"}).json()
    assert alarms["total"] == 1
    alarm = alarms["items"][0]
    assert alarm["device_code"] == "M1" and alarm["rule_code"] == "methane_high" and alarm["severity"] == "critical"
    case = client.get(f"/api/v1/cases/{alarm['case_id']}").json()
    assert case["source"] == "sensor" and case["source_id"] == f"alarm-{alarm['id']}"
    assert case["state"] == "dispatched" and case["department_code"] == "enforcement"
    assert case["category_code"] == "I0402" and case["location"]["grid"]["code"] == "500103001001002"
    assert case["due_at"] is not None
    from datetime import datetime

    assert datetime.fromisoformat(case["due_at"]) - app.clock.now() == timedelta(minutes=20)
    # repeats update the one active alarm, no new case
    rep = post(client, [{"device": "M1", "quantity": "methane", "value": 31.0, "time": at(app, 0.5)}])
    assert rep["alarms_raised"] == []
    one = client.get(f"/api/v1/alarms/{alarm['id']}").json()
    assert one["count"] == 2 and one["value"] == 31.0
    assert client.get("/api/v1/cases", params={"source": "sensor"}).json()["total"] == 1


def test_alarm_lifecycle_over_the_api(client: TestClient, app: Any) -> None:
    devices(client, ("B1", "bracelet", "elderly", 106.52, 29.52))
    post(client, [{"device": "B1", "quantity": "fall", "value": True, "time": at(app, 2)}])
    aid = client.get("/api/v1/alarms").json()["items"][0]["id"]
    r = client.post(f"/api/v1/alarms/{aid}/acknowledge", json={"note": "已电话联系家属"})
    assert r.status_code == 200 and r.json()["state"] == "acknowledged"
    again = client.post(f"/api/v1/alarms/{aid}/acknowledge")
    assert again.status_code == 409
    post(client, [{"device": "B1", "quantity": "fall", "value": 0, "time": at(app, 1)}])
    done = client.get(f"/api/v1/alarms/{aid}").json()
    assert done["state"] == "cleared" and [s["action"] for s in done["steps"]] == ["raised", "acknowledged",
                                                                                    "cleared"]
    case = client.get(f"/api/v1/cases/{done['case_id']}").json()
    assert case["timeline"][-1]["action"] == "note" and "预警已解除" in case["timeline"][-1]["note"]
    assert client.post("/api/v1/alarms/999/acknowledge").status_code == 404
    assert client.get("/api/v1/alarms", params={"state": "bogus"}).status_code == 422


def test_alarm_cleared_before_dispatch_is_noted_on_the_case(app: Any) -> None:
    app.ctx.auto_dispatch = False  # a dispatcher decides: the case waits in the queue
    with TestClient(create_app(app)) as client:
        client.headers.update(login_headers(client, app))
        devices(client, ("T1", "throw_camera", "high_throw", 106.58, 29.51))
        post(client, [{"device": "T1", "quantity": "throw_event", "value": 1, "time": at(app, 2)}])
        alarm = client.get("/api/v1/alarms").json()["items"][0]
        case = client.get(f"/api/v1/cases/{alarm['case_id']}").json()
        assert case["state"] in ("reported", "registered")
        post(client, [{"device": "T1", "quantity": "throw_event", "value": 0, "time": at(app, 1)}])
        case = client.get(f"/api/v1/cases/{alarm['case_id']}").json()
        notes = [e for e in case["timeline"] if e["action"] == "note"]
        assert notes and "派遣前已解除" in notes[0]["note"] and notes[0]["data"]["before_dispatch"] is True


def test_minor_alarms_open_no_case_and_offline_tick(client: TestClient, app: Any) -> None:
    devices(client, ("M1", "methane_detector", "septic_tank", 106.55, 29.55))
    app.clock.fixed = app.clock.now() + timedelta(minutes=31)
    result = app.sensing.tick()
    assert result["offline_raised"] == 1
    alarm = client.get("/api/v1/alarms").json()["items"][0]
    assert alarm["rule_code"] == "methane_offline" and alarm["case_id"] is None  # minor: no case
    post(client, [{"device": "M1", "quantity": "methane", "value": 1.0, "time": at(app, 0)}])
    assert client.get(f"/api/v1/alarms/{alarm['id']}").json()["state"] == "cleared"
    assert app.sensing.tick()["last_seen_written"] == 1
    assert client.get("/api/v1/devices/M1").json()["last_seen"] is not None


def test_state_survives_a_restart(app: Any) -> None:
    """Active alarms are reloaded: a repeat after restart updates the same alarm."""
    with TestClient(create_app(app)) as client:
        client.headers.update(login_headers(client, app))
        devices(client, ("M1", "methane_detector", "septic_tank", 106.55, 29.55))
        post(client, [{"device": "M1", "quantity": "methane", "value": 30.0, "time": at(app, 2)}])
    app.sensing.load()
    rep = app.sensing.ingest([{"device": "M1", "quantity": "methane", "value": 31.0, "time": at(app, 1)}])
    assert rep.alarms_raised == [] and rep.accepted == 1
    alarms, total = app.sensing.alarms()
    assert total == 1 and alarms[0].count == 2


def test_retention_and_device_retirement(client: TestClient, app: Any) -> None:
    devices(client, ("W1", "water_gauge", "waterlogging", 106.65, 29.58))
    post(client, [{"device": "W1", "quantity": "water_level", "value": 1.0, "time": at(app, 60 * 24 * 5)}])
    app.sensing.retention_days = 3
    assert app.sensing.tick()["purged"] == 1
    assert client.delete("/api/v1/devices/W1").json()["status"] == "inactive"
    rep = post(client, [{"device": "W1", "quantity": "water_level", "value": 1.0, "time": at(app, 1)}])
    assert rep["errors"][0]["reason"] == "device-inactive"


def test_late_readings_are_stored_but_do_not_raise(client: TestClient, app: Any) -> None:
    devices(client, ("M1", "methane_detector", "septic_tank", 106.55, 29.55))
    post(client, [{"device": "M1", "quantity": "methane", "value": 2.0, "time": at(app, 1)}])
    rep = post(client, [{"device": "M1", "quantity": "methane", "value": 40.0, "time": at(app, 5)}])
    assert rep["accepted"] == 1 and rep["alarms_raised"] == []
    assert client.get("/api/v1/alarms").json()["total"] == 0
    assert app.sensing.store.count() == 2
