"""Roles and regions for perception (感知分权分域): who sees which devices, readings and alarms, and who may act.

Two methane detectors, one in 解放碑街道 (street A, owned by the gas utility) and one in 朝天门街道 (street B, owned
by the water department); a reading above the limit on each raises an alarm whose case goes to 综合执法.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from conftest import login_headers
from fastapi.testclient import TestClient

from zhizhi.api.app import create_app
from zhizhi.domain.access import NO_SCOPE, Principal, Scope, may, sensing_scope_of

STA = "/sta/v1.1"
STREET_A, STREET_B = "500103001", "500103002"


@pytest.fixture
def city(app: Any) -> Iterator[dict[str, Any]]:
    with TestClient(create_app(app)) as c:
        admin = login_headers(c, app)
        r = c.post("/api/v1/devices", headers=admin, json=[
            {"code": "A1", "type": "methane_detector", "scene": "septic_tank", "lon": 106.52, "lat": 29.52,
             "department_code": "utilities"},
            {"code": "B1", "type": "methane_detector", "scene": "septic_tank", "lon": 106.57, "lat": 29.52,
             "department_code": "water"}])
        assert r.json()["registered"] == 2, r.text
        at = (app.clock.now() - timedelta(minutes=1)).isoformat()
        rep = c.post("/api/v1/observations", headers=admin, json=[
            {"device": d, "quantity": "methane", "value": 30.0, "time": at} for d in ("A1", "B1")]).json()
        assert rep["accepted"] == 2 and len(rep["alarms_raised"]) == 2
        alarms = {a["device_code"]: a for a in c.get("/api/v1/alarms", headers=admin).json()["items"]}
        things = {t["name"]: t["@iot.id"] for t in c.get(f"{STA}/Things", headers=admin).json()["value"]}
        streams = {d["name"]: d["@iot.id"] for d in c.get(f"{STA}/Datastreams", headers=admin).json()["value"]}
        yield {"c": c, "app": app, "admin": admin, "alarms": alarms, "things": things, "streams": streams,
               "at": at}


def _who(city: dict[str, Any], name: str, roles: tuple[str, ...], places: tuple[str, ...] = (),
         departments: tuple[str, ...] = ()) -> dict[str, str]:
    return login_headers(city["c"], city["app"], name, roles, places, departments)


def _codes(c: TestClient, headers: dict[str, str], url: str, key: str = "device_code") -> list[str]:
    r = c.get(url, headers=headers)
    assert r.status_code == 200, r.text
    return sorted(x[key] for x in r.json()["items"])


def test_street_dispatcher_sees_and_acknowledges_only_its_own_street(city: dict[str, Any]) -> None:
    c, alarms = city["c"], city["alarms"]
    disp_a = _who(city, "disp_a", ("dispatcher",), (STREET_A,))
    assert _codes(c, disp_a, "/api/v1/devices", "code") == ["A1"]
    assert c.get("/api/v1/devices", headers=disp_a).json()["total"] == 1
    assert _codes(c, disp_a, "/api/v1/alarms") == ["A1"]
    assert c.get("/api/v1/alarms", headers=disp_a).json()["total"] == 1
    b_alarm = alarms["B1"]["id"]
    unknown = c.get("/api/v1/alarms/999999", headers=disp_a)
    for method, url in (("GET", f"/api/v1/alarms/{b_alarm}"), ("POST", f"/api/v1/alarms/{b_alarm}/acknowledge"),
                        ("POST", f"/api/v1/alarms/{b_alarm}/clear"), ("GET", "/api/v1/devices/B1"),
                        ("GET", "/api/v1/devices/B1/observations")):
        r = c.request(method, url, headers=disp_a)
        assert r.status_code == 404 and r.json()["title"] == unknown.json()["title"], (url, r.text)
    # street B's alarm was not touched; street A's own alarm is acknowledged by its dispatcher
    assert c.get(f"/api/v1/alarms/{b_alarm}", headers=city["admin"]).json()["state"] == "raised"
    r = c.post(f"/api/v1/alarms/{alarms['A1']['id']}/acknowledge", headers=disp_a, json={"note": "已通知"})
    assert r.status_code == 200 and r.json()["state"] == "acknowledged" and r.json()["acknowledged_by"] == "disp_a"
    # a dispatcher reads but does not manage devices or post readings
    assert c.patch("/api/v1/devices/A1", headers=disp_a, json={"name": "x"}).status_code == 403
    assert c.post("/api/v1/observations", headers=disp_a, json=[]).status_code == 403


def test_district_and_city_scopes_cover_their_subtrees(city: dict[str, Any]) -> None:
    c = city["c"]
    district = _who(city, "disp_dist", ("dispatcher",), ("500103",))
    assert _codes(c, district, "/api/v1/devices", "code") == ["A1", "B1"]
    city_wide = _who(city, "leader_city", ("leader",), ("500000",))  # the city's code is no prefix of its grids'
    assert _codes(c, city_wide, "/api/v1/alarms") == ["A1", "B1"]
    other = _who(city, "disp_jb", ("dispatcher",), ("500105",))
    assert _codes(c, other, "/api/v1/devices", "code") == [] and _codes(c, other, "/api/v1/alarms") == []


def test_handler_sees_its_departments_devices_and_the_alarms_of_cases_assigned_to_it(city: dict[str, Any]) -> None:
    c, alarms = city["c"], city["alarms"]
    gas = _who(city, "hand_gas", ("handler",), (), ("utilities",))
    assert _codes(c, gas, "/api/v1/devices", "code") == ["A1"]
    assert _codes(c, gas, "/api/v1/alarms") == ["A1"]
    assert c.get("/api/v1/devices/B1", headers=gas).status_code == 404
    assert c.post(f"/api/v1/alarms/{alarms['B1']['id']}/acknowledge", headers=gas).status_code == 404
    # 综合执法 owns no detector, but both alarms opened cases assigned to it
    assert alarms["A1"]["case_id"] and alarms["B1"]["case_id"]
    enforcement = _who(city, "hand_enf", ("handler",), (), ("enforcement",))
    assert _codes(c, enforcement, "/api/v1/devices", "code") == []
    assert _codes(c, enforcement, "/api/v1/alarms") == ["A1", "B1"]
    r = c.post(f"/api/v1/alarms/{alarms['B1']['id']}/acknowledge", headers=enforcement)
    assert r.status_code == 200 and r.json()["state"] == "acknowledged"


def test_grid_worker_reads_its_grid_only_and_does_not_acknowledge(city: dict[str, Any]) -> None:
    c, alarms = city["c"], city["alarms"]
    grid = c.get("/api/v1/devices/A1", headers=city["admin"]).json()["place_code"]
    worker = _who(city, "grid_a", ("grid_worker",), (grid,))
    assert _codes(c, worker, "/api/v1/devices", "code") == ["A1"]
    assert _codes(c, worker, "/api/v1/alarms") == ["A1"]
    assert c.get(f"/api/v1/alarms/{alarms['B1']['id']}", headers=worker).status_code == 404
    assert c.post(f"/api/v1/alarms/{alarms['A1']['id']}/acknowledge", headers=worker).status_code == 403
    readings = c.get("/api/v1/devices/A1/observations", headers=worker).json()["items"]
    assert [r["value"] for r in readings] == [30.0] and readings[0]["quantity"] == "methane"


def test_integrator_posts_readings_only_for_its_devices_item_by_item(city: dict[str, Any]) -> None:
    c, app = city["c"], city["app"]
    gas = _who(city, "gas_co", ("integrator",), (), ("utilities",))
    at = (app.clock.now() - timedelta(seconds=30)).isoformat()
    rep = c.post("/api/v1/observations", headers=gas, json=[
        {"device": "A1", "quantity": "methane", "value": 31.0, "time": at},
        {"device": "B1", "quantity": "methane", "value": 1.0, "time": at},
        {"device": "GHOST", "quantity": "methane", "value": 1.0, "time": at},
        {"device": "A1", "quantity": "methane", "value": 500.0, "time": at}]).json()
    assert rep["accepted"] == 1 and rep["refused"] == 3
    why = {e["index"]: e for e in rep["errors"]}
    # another department's device is refused exactly like one that does not exist
    assert why[1]["reason"] == why[2]["reason"] == "unknown-device"
    assert why[1]["detail"] == why[2]["detail"]
    assert why[3]["reason"] == "out-of-range"
    stored = c.get("/api/v1/devices/B1/observations", headers=city["admin"]).json()["items"]
    assert [s["value"] for s in stored] == [30.0]  # B1 kept only the admin's reading
    # it reads its own devices, not the others', and may not acknowledge alarms
    assert _codes(c, gas, "/api/v1/devices", "code") == ["A1"]
    assert c.post(f"/api/v1/alarms/{city['alarms']['A1']['id']}/acknowledge", headers=gas).status_code == 403
    # SensorThings: the same refusals
    b_stream = city["streams"]["B1/methane"]
    r = c.post(f"{STA}/Datastreams({b_stream})/Observations", headers=gas, json={"result": 1.0})
    assert r.status_code == 404
    later = (app.clock.now() - timedelta(seconds=10)).isoformat()
    r = c.post(f"{STA}/CreateObservations", headers=gas, json=[
        {"Datastream": {"@iot.id": city["streams"]["A1/methane"]}, "components": ["phenomenonTime", "result"],
         "dataArray": [[later, 2.0]]},
        {"Datastream": {"@iot.id": b_stream}, "components": ["phenomenonTime", "result"],
         "dataArray": [[later, 2.0]]}])
    assert r.status_code == 201 and r.json()[1] == "error" and r.json()[0] != "error", r.text


def test_integrator_registers_devices_in_its_scope_only(city: dict[str, Any]) -> None:
    c = city["c"]
    gas = _who(city, "gas_co2", ("integrator",), (STREET_A,), ("utilities",))
    r = c.post("/api/v1/devices", headers=gas, json=[
        {"code": "A2", "type": "methane_detector", "scene": "septic_tank", "lon": 106.53, "lat": 29.53},
        {"code": "B2", "type": "methane_detector", "scene": "septic_tank", "lon": 106.57, "lat": 29.53},
        {"code": "A3", "type": "methane_detector", "scene": "septic_tank", "lon": 106.53, "lat": 29.53,
         "department_code": "water"}])
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["registered"] == 1
    assert body["items"][0]["code"] == "A2" and body["items"][0]["department_code"] == "utilities"
    assert body["items"][1]["error"] == "forbidden" and body["items"][2]["error"] == "forbidden"
    assert c.get("/api/v1/devices/B2", headers=city["admin"]).status_code == 404  # not registered
    # it may not hand its device to another department, nor touch another's device
    assert c.patch("/api/v1/devices/A2", headers=gas, json={"department_code": "water"}).status_code == 403
    assert c.patch("/api/v1/devices/B1", headers=gas, json={"name": "x"}).status_code == 404
    assert c.delete("/api/v1/devices/B1", headers=gas).status_code == 404
    assert c.patch("/api/v1/devices/A2", headers=gas, json={"name": "2号井"}).json()["name"] == "2号井"
    # an integrator account needs a scope: one without places or departments is refused
    r = c.post("/api/v1/users", headers=city["admin"], json={
        "username": "bare_int", "password": "Xq9!long-enough-pass", "roles": ["integrator"]})
    assert r.status_code == 422 and "integrator" in r.text


def test_citizen_sees_no_sensing_at_all(city: dict[str, Any]) -> None:
    c = city["c"]
    citizen = _who(city, "cit", ("citizen",))
    for url in ("/api/v1/devices", "/api/v1/alarms", f"{STA}/Things", "/api/v1/sensing/catalogue"):
        assert c.get(url, headers=citizen).status_code == 403, url
    for url in ("/api/v1/devices/A1", f"/api/v1/alarms/{city['alarms']['A1']['id']}",
                f"{STA}/Things({city['things']['A1']})", f"{STA}/Datastreams({city['streams']['A1/methane']})"):
        assert c.get(url, headers=citizen).status_code == 404, url
    assert c.post("/api/v1/observations", headers=citizen, json=[]).status_code == 403
    assert c.post(f"{STA}/Things", headers=citizen, json={}).status_code == 403


def test_sensorthings_shows_only_the_scope_with_expand_and_count(city: dict[str, Any]) -> None:
    c, things, streams = city["c"], city["things"], city["streams"]
    disp_b = _who(city, "disp_b", ("dispatcher",), (STREET_B,))
    body = c.get(f"{STA}/Things", headers=disp_b, params={"$count": "true"}).json()
    assert body["@iot.count"] == 1 and [t["name"] for t in body["value"]] == ["B1"]
    ds = c.get(f"{STA}/Datastreams", headers=disp_b, params={"$count": "true"}).json()
    assert {d["name"].split("/")[0] for d in ds["value"]} == {"B1"} and ds["@iot.count"] == len(ds["value"]) > 0
    obs = c.get(f"{STA}/Observations", headers=disp_b, params={"$expand": "Datastream"}).json()["value"]
    assert obs and {o["Datastream"]["name"] for o in obs} == {"B1/methane"}
    sensor = c.get(f"{STA}/Sensors", headers=disp_b,
                   params={"$filter": "name eq 'methane_detector'",
                           "$expand": "Datastreams($count=true)"}).json()["value"][0]
    assert sensor["Datastreams@iot.count"] == len(ds["value"])
    assert {d["name"].split("/")[0] for d in sensor["Datastreams"]} == {"B1"}
    a1_loc = c.get(f"{STA}/Things({things['A1']})/Locations", headers=city["admin"]).json()["value"][0]["@iot.id"]
    for path in (f"Things({things['A1']})", f"Things({things['A1']})/Datastreams", f"Locations({a1_loc})",
                 f"HistoricalLocations({a1_loc})",
                 f"Datastreams({streams['A1/methane']})/Observations", f"FeaturesOfInterest({things['A1']})"):
        assert c.get(f"{STA}/{path}", headers=disp_b).status_code == 404, path
    assert c.patch(f"{STA}/Things({things['A1']})", headers=disp_b, json={"description": "x"}).status_code == 404
    assert c.delete(f"{STA}/Things({things['A1']})", headers=disp_b).status_code == 404
    # in scope but not permitted: 403
    assert c.patch(f"{STA}/Things({things['B1']})", headers=disp_b, json={"description": "x"}).status_code == 403
    # the administrator still sees the whole city
    assert c.get(f"{STA}/Things", headers=city["admin"], params={"$count": "true"}).json()["@iot.count"] == 2


def test_sensing_scope_of_each_role() -> None:
    def p(*roles: str, places: tuple[str, ...] = (), departments: tuple[str, ...] = ()) -> Principal:
        return Principal(user_id=1, username="u", roles=frozenset(roles), places=places, departments=departments)

    assert sensing_scope_of(p("admin")).unlimited
    assert sensing_scope_of(p("dispatcher", places=(STREET_A,))) == Scope(places=(STREET_A,))
    assert sensing_scope_of(p("handler")) == NO_SCOPE
    assert sensing_scope_of(p("handler", departments=("water",))) == Scope(departments=("water",))
    assert sensing_scope_of(p("grid_worker")) == NO_SCOPE
    assert sensing_scope_of(p("integrator")) == NO_SCOPE
    assert sensing_scope_of(p("integrator", departments=("water",))) == Scope(departments=("water",))
    assert sensing_scope_of(p("citizen")) == NO_SCOPE
    assert may(p("integrator"), "ingest_observations") and not may(p("integrator"), "acknowledge_alarms")
    assert may(p("handler"), "acknowledge_alarms") and not may(p("grid_worker"), "acknowledge_alarms")
    assert not may(p("dispatcher"), "manage_devices") and not may(p("citizen"), "read_sensing")


def test_a_moved_device_is_located_again_and_its_scope_follows(city: dict[str, Any]) -> None:
    c, things, admin = city["c"], city["things"], city["admin"]
    gas = _who(city, "gas_mv", ("integrator",), (STREET_A,), ("utilities",))
    before = c.get("/api/v1/devices/A1", headers=admin).json()["place_code"]
    r = c.patch("/api/v1/devices/A1", headers=gas, json={"lon": 106.54, "lat": 29.58})  # another grid of street A
    assert r.status_code == 200, r.text
    assert r.json()["place_code"].startswith(STREET_A) and r.json()["place_code"] != before
    # not out of its own street, and not with half a position
    assert c.patch("/api/v1/devices/A1", headers=gas, json={"lon": 106.57, "lat": 29.52}).status_code == 403
    assert c.patch("/api/v1/devices/A1", headers=gas, json={"lon": 106.53}).status_code == 422
    assert c.get("/api/v1/devices/A1", headers=admin).json()["lon"] == 106.54
    # SensorThings: the administrator moves it into street B by its Location; street B now sees it
    disp_b = _who(city, "disp_b2", ("dispatcher",), (STREET_B,))
    loc_id = c.get(f"{STA}/Things({things['A1']})/Locations", headers=admin).json()["value"][0]["@iot.id"]
    loc = f"{STA}/Locations({loc_id})"
    assert c.patch(loc, headers=disp_b, json={"location": {"type": "Point", "coordinates": [1, 2]}}).status_code \
        == 404
    r = c.patch(loc, headers=admin, json={"location": {"type": "Point", "coordinates": [106.58, 29.53]}})
    assert r.status_code == 200 and r.json()["location"]["coordinates"] == [106.58, 29.53], r.text
    assert c.get(f"{STA}/Things({things['A1']})", headers=disp_b).json()["properties"]["place_code"] \
        .startswith(STREET_B)
    assert c.get("/api/v1/devices/A1", headers=gas).status_code == 404  # gone from the integrator's street
    # and back by a new Location posted to the Thing
    r = c.post(f"{STA}/Things({things['A1']})/Locations", headers=admin, json={
        "name": "moved", "encodingType": "application/geo+json",
        "location": {"type": "Point", "coordinates": [106.52, 29.52]}})
    assert r.status_code == 201 and r.json()["location"]["coordinates"] == [106.52, 29.52], r.text
    assert c.get(f"{STA}/Things({things['A1']})", headers=disp_b).status_code == 404
    r = c.patch(f"{STA}/FeaturesOfInterest({things['A1']})", headers=admin, json={"feature": {"type": "Polygon"}})
    assert r.status_code == 422
