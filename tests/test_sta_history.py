"""SensorThings fidelity: HistoricalLocations that are the history of moves, Locations and FeaturesOfInterest
created by clients, Observations corrected and deleted — on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from conftest import login_headers
from fastapi.testclient import TestClient
from sqlalchemy import text

from zhizhi.adapters import audit_log
from zhizhi.api.app import create_app

STA = "/sta/v1.1"
STREET_A, STREET_B = "500103001", "500103002"


def _point(lon: float, lat: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [lon, lat]}


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(create_app(app)) as c:
        c.headers.update(login_headers(c, app))
        r = c.post("/api/v1/devices", json=[
            {"code": "M1", "type": "methane_detector", "scene": "septic_tank", "lon": 106.52, "lat": 29.52},
            {"code": "M2", "type": "methane_detector", "scene": "septic_tank", "lon": 106.53, "lat": 29.53}])
        assert r.json()["registered"] == 2, r.text
        yield c


def _thing(c: TestClient, code: str) -> dict[str, Any]:
    return c.get(f"{STA}/Things", params={"$filter": f"name eq '{code}'"}).json()["value"][0]


def _later(app: Any, minutes: int) -> None:
    app.clock.fixed = app.clock.fixed + timedelta(minutes=minutes)


def test_every_move_is_a_historical_location_newest_first(client: TestClient, app: Any) -> None:
    c = client
    tid = _thing(c, "M1")["@iot.id"]
    first = c.get(f"{STA}/Things({tid})/HistoricalLocations").json()["value"]
    assert len(first) == 1  # the registration
    registered = first[0]["time"]
    moves = [  # each way a device is moved, ten minutes apart
        lambda: c.patch("/api/v1/devices/M1", json={"lon": 106.54, "lat": 29.58}),
        lambda: c.patch(f"{STA}/Things({tid})", json={"Locations": [{"name": "井口二", "location":
                                                                     _point(106.56, 29.51)}]}),
        lambda: c.post(f"{STA}/Things({tid})/Locations", json={
            "name": "井口三", "encodingType": "application/geo+json", "location": _point(106.57, 29.52)}),
        lambda: c.patch(f"{STA}/FeaturesOfInterest({tid})", json={"feature": _point(106.58, 29.53)}),
    ]
    for move in moves:
        _later(app, 10)
        r = move()
        assert r.status_code in (200, 201), r.text
    hist = c.get(f"{STA}/Things({tid})/HistoricalLocations", params={"$expand": "Locations,Thing"}).json()["value"]
    assert len(hist) == 5
    times = [h["time"] for h in hist]
    assert times == sorted(times, reverse=True) and times[-1] == registered  # newest first by default
    coords = [h["Locations"][0]["location"]["coordinates"] for h in hist]
    assert coords == [[106.58, 29.53], [106.57, 29.52], [106.56, 29.51], [106.54, 29.58], [106.52, 29.52]]
    assert {h["Thing"]["name"] for h in hist} == {"M1"}
    assert hist[2]["Locations"][0]["name"] == "井口二"
    # the Thing's Location is the newest; a former position is no Thing's Location any more
    (now,) = c.get(f"{STA}/Things({tid})/Locations").json()["value"]
    assert now["@iot.id"] == hist[0]["Locations"][0]["@iot.id"] and now["location"]["coordinates"] == [106.58, 29.53]
    assert [t["name"] for t in c.get(f"{STA}/Locations({now['@iot.id']})/Things").json()["value"]] == ["M1"]
    old = hist[-1]["Locations"][0]["@iot.id"]
    assert c.get(f"{STA}/Locations({old})/Things").json()["value"] == []
    assert c.get(f"{STA}/HistoricalLocations({hist[1]['@iot.id']})/Thing").json()["name"] == "M1"
    # query options on time
    asc = c.get(f"{STA}/HistoricalLocations", params={"$orderby": "time asc", "$top": "2",
                                                       "$filter": f"Thing/name eq 'M1' or time ge {times[2]}"})
    assert asc.status_code == 200
    mine = c.get(f"{STA}/Things({tid})/HistoricalLocations", params={
        "$filter": f"time gt {registered}", "$orderby": "time asc", "$top": "3", "$count": "true"}).json()
    assert mine["@iot.count"] == 4 and [h["time"] for h in mine["value"]] == sorted(times[:4])[:3]
    assert "@iot.nextLink" in mine
    every = c.get(f"{STA}/HistoricalLocations", params={"$count": "true"}).json()
    assert every["@iot.count"] == 6  # M1's five and M2's registration
    # the device is where its newest Location is, and the REST API shows the same history
    dev = c.get("/api/v1/devices/M1").json()
    assert (dev["lon"], dev["lat"]) == (106.58, 29.53) and dev["place_code"].startswith(STREET_B)
    rest = c.get("/api/v1/devices/M1/history").json()["items"]
    assert [(i["lon"], i["lat"]) for i in rest] == [tuple(x) for x in coords]
    assert rest[0]["place_code"] == dev["place_code"] and rest[-1]["place_code"].startswith(STREET_A)


def test_patching_the_current_location_moves_the_device_and_keeps_its_id(client: TestClient, app: Any) -> None:
    c = client
    tid = _thing(c, "M1")["@iot.id"]
    loc = c.get(f"{STA}/Things({tid})/Locations").json()["value"][0]
    _later(app, 5)
    r = c.patch(f"{STA}/Locations({loc['@iot.id']})", json={"location": _point(106.58, 29.53)})
    assert r.status_code == 200 and r.json()["@iot.id"] == loc["@iot.id"], r.text
    assert c.get(f"{STA}/Things({tid})/Locations").json()["value"][0]["@iot.id"] == loc["@iot.id"]
    hist = c.get(f"{STA}/Things({tid})/HistoricalLocations", params={"$expand": "Locations"}).json()["value"]
    assert [h["Locations"][0]["location"]["coordinates"] for h in hist] == [[106.58, 29.53], [106.52, 29.52]]
    former = hist[1]["Locations"][0]["@iot.id"]
    # a former position is history: not changed, not deleted; HistoricalLocations are the server's to write
    r = c.patch(f"{STA}/Locations({former})", json={"location": _point(106.51, 29.51)})
    assert r.status_code == 422 and "history" in r.text
    assert c.delete(f"{STA}/Locations({former})").status_code == 422
    assert c.patch(f"{STA}/HistoricalLocations({former})", json={"time": "2026-01-01T00:00:00Z"}).status_code == 422
    assert c.post(f"{STA}/HistoricalLocations", json={"time": "2026-01-01T00:00:00Z"}).status_code == 405
    # the same position given back (a PUT of the whole Location) is no move
    same = c.put(f"{STA}/Locations({loc['@iot.id']})", json={"location": _point(106.58, 29.53)})
    assert same.status_code == 200
    assert len(c.get(f"{STA}/Things({tid})/HistoricalLocations").json()["value"]) == 2


def test_locations_created_on_their_own_then_linked(client: TestClient, app: Any) -> None:
    c = client
    m1, m2 = _thing(c, "M1")["@iot.id"], _thing(c, "M2")["@iot.id"]
    r = c.post(f"{STA}/Locations", json={"name": "新井口", "description": "北侧", "encodingType":
                                         "application/geo+json", "location": _point(106.58, 29.57)})
    assert r.status_code == 201, r.text
    loose = r.json()
    assert r.headers["Location"].endswith(f"/Locations({loose['@iot.id']})")
    assert loose["name"] == "新井口" and loose["properties"]["place_code"].startswith(STREET_B)
    assert c.get(f"{STA}/Locations({loose['@iot.id']})/Things").json()["value"] == []
    assert c.get(f"{STA}/HistoricalLocations({loose['@iot.id']})").status_code == 404  # no one's history yet
    # a Location no one holds is edited and deleted freely
    r = c.patch(f"{STA}/Locations({loose['@iot.id']})", json={"location": _point(106.59, 29.58)})
    assert r.status_code == 200 and r.json()["location"]["coordinates"] == [106.59, 29.58]
    spare = c.post(f"{STA}/Locations", json={"name": "x", "location": _point(106.51, 29.51)}).json()["@iot.id"]
    assert c.delete(f"{STA}/Locations({spare})").status_code == 200
    assert c.get(f"{STA}/Locations({spare})").status_code == 404
    # linked to a Thing by id: the device moves there, the Location is now its own
    _later(app, 1)
    r = c.patch(f"{STA}/Things({m1})", json={"Locations": [{"@iot.id": loose["@iot.id"]}]})
    assert r.status_code == 200, r.text
    assert r.json()["properties"]["place_code"].startswith(STREET_B)
    assert c.get(f"{STA}/Things({m1})/Locations").json()["value"][0]["@iot.id"] == loose["@iot.id"]
    assert c.get(f"{STA}/HistoricalLocations({loose['@iot.id']})/Thing").json()["name"] == "M1"
    # the same Location given to another Thing: it moves to that position, as a Location of its own
    _later(app, 1)
    r = c.patch(f"{STA}/Things({m2})", json={"Locations": [{"@iot.id": loose["@iot.id"]}]})
    assert r.status_code == 200
    m2_loc = c.get(f"{STA}/Things({m2})/Locations").json()["value"][0]
    assert m2_loc["@iot.id"] != loose["@iot.id"] and m2_loc["location"]["coordinates"] == [106.59, 29.58]
    # created with its Thing: at once that Thing's Location
    _later(app, 1)
    r = c.post(f"{STA}/Locations", json={"name": "回原处", "location": _point(106.52, 29.52),
                                         "Things": [{"@iot.id": m1}]})
    assert r.status_code == 201 and [t["name"] for t in
                                     c.get(f"{STA}/Locations({r.json()['@iot.id']})/Things").json()["value"]] == ["M1"]
    assert len(c.get(f"{STA}/Things({m1})/HistoricalLocations").json()["value"]) == 3
    # what the model cannot hold is refused with the reason, never a server error
    assert c.post(f"{STA}/Locations", json={"name": "two", "location": _point(106.52, 29.52),
                                            "Things": [{"@iot.id": m1}, {"@iot.id": m2}]}).status_code == 422
    assert c.post(f"{STA}/Locations", json={"location": {"type": "Polygon"}}).status_code == 422
    assert c.post(f"{STA}/Locations", json={"location": _point(500, 29)}).status_code == 422
    assert c.post(f"{STA}/Locations", json={"location": _point(106.5, 29.5), "Things": [{"@iot.id": 999}]}) \
        .status_code == 404
    assert c.patch(f"{STA}/Things({m1})", json={"Locations": [{"@iot.id": 999}]}).status_code == 404


def test_features_of_interest_are_the_devices_positions(client: TestClient, app: Any) -> None:
    c = client
    m1 = _thing(c, "M1")["@iot.id"]
    r = c.post(f"{STA}/FeaturesOfInterest", json={"name": "井口", "encodingType": "application/geo+json",
                                                  "feature": _point(106.52, 29.52)})
    assert r.status_code == 201 and r.json()["@iot.id"] == m1, r.text
    r = c.post(f"{STA}/FeaturesOfInterest", json={"name": "x", "feature": _point(106.6, 29.6)})
    assert r.status_code == 422 and "FeatureOfInterest" in r.text
    ds = c.get(f"{STA}/Datastreams", params={"$filter": "name eq 'M1/methane'"}).json()["value"][0]["@iot.id"]
    t = (app.clock.now() - timedelta(minutes=3)).isoformat()
    ok = c.post(f"{STA}/Observations", json={"result": 1.0, "phenomenonTime": t, "Datastream": {"@iot.id": ds},
                                             "FeatureOfInterest": {"@iot.id": m1}})
    assert ok.status_code == 201, ok.text
    t2 = (app.clock.now() - timedelta(minutes=2)).isoformat()
    inline = c.post(f"{STA}/Observations", json={"result": 2.0, "phenomenonTime": t2, "Datastream": {"@iot.id": ds},
                                                 "FeatureOfInterest": {"name": "p", "encodingType":
                                                                       "application/geo+json",
                                                                       "feature": _point(106.52, 29.52)}})
    assert inline.status_code == 201, inline.text
    elsewhere = c.post(f"{STA}/Observations", json={"result": 2.0, "phenomenonTime": t, "Datastream": {"@iot.id": ds},
                                                    "FeatureOfInterest": {"feature": _point(106.6, 29.6)}})
    assert elsewhere.status_code == 422 and "move" in elsewhere.text
    assert c.get(f"{STA}/Observations('{ok.json()['@iot.id']}')/FeatureOfInterest").json()["@iot.id"] == m1


def test_observations_are_corrected_and_deleted_and_the_latest_value_follows(client: TestClient, app: Any) -> None:
    c = client
    ds = c.get(f"{STA}/Datastreams", params={"$filter": "name eq 'M1/methane'"}).json()["value"][0]["@iot.id"]
    now = app.clock.now()
    ids = []
    for minutes, value in ((3, 1.0), (2, 2.0), (1, 3.0)):
        r = c.post(f"{STA}/Observations", json={"result": value, "Datastream": {"@iot.id": ds},
                                                "phenomenonTime": (now - timedelta(minutes=minutes)).isoformat()})
        ids.append(r.json()["@iot.id"])
    assert app.sensing.latest("M1")["methane"]["value"] == 3.0
    r = c.patch(f"{STA}/Observations('{ids[2]}')", json={"result": 4.5})
    assert r.status_code == 200 and r.json()["result"] == 4.5, r.text
    assert c.get(f"{STA}/Observations('{ids[2]}')").json()["result"] == 4.5
    assert app.sensing.latest("M1")["methane"]["value"] == 4.5  # the latest value held follows
    r = c.patch(f"{STA}/Observations('{ids[0]}')", json={"result": 1.5})
    assert r.status_code == 200 and app.sensing.latest("M1")["methane"]["value"] == 4.5
    # refused with the reason
    assert c.patch(f"{STA}/Observations('{ids[0]}')", json={"result": 500}).json()["reason"] == "out-of-range"
    assert c.patch(f"{STA}/Observations('{ids[0]}')", json={"result": "x"}).status_code == 422
    moved = c.patch(f"{STA}/Observations('{ids[0]}')", json={"phenomenonTime": "2026-11-23T01:00:00Z"})
    assert moved.status_code == 422 and "delete" in moved.text
    assert c.patch(f"{STA}/Observations('{ds}-1')", json={"result": 1}).status_code == 404
    # JSON Patch (RFC 6902), as some clients send it
    r = c.patch(f"{STA}/Observations('{ids[1]}')", content=b'[{"op": "replace", "path": "/result", "value": 2.5}]',
                headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200 and r.json()["result"] == 2.5, r.text
    # deleting the latest: the one before becomes the latest value held
    assert c.delete(f"{STA}/Observations('{ids[2]}')").status_code == 200
    assert c.get(f"{STA}/Observations('{ids[2]}')").status_code == 404
    assert c.delete(f"{STA}/Observations('{ids[2]}')").status_code == 404
    assert app.sensing.latest("M1")["methane"]["value"] == 2.5
    left = c.get(f"{STA}/Datastreams({ds})/Observations").json()["value"]
    assert [o["result"] for o in left] == [2.5, 1.5]
    for i in ids[:2]:
        assert c.delete(f"{STA}/Observations('{i}')").status_code == 200
    assert "methane" not in app.sensing.latest("M1")
    with app.uow() as uow:
        got = [(r.action, r.target) for r in audit_log.query(uow.session, limit=1000)]
        assert ("observation.update", f"observation:{ids[2]}") in got
        assert ("observation.delete", f"observation:{ids[2]}") in got
        assert audit_log.verify(uow.session).ok


def test_location_and_observation_writes_follow_the_scope(client: TestClient, app: Any) -> None:
    c = client
    ds = c.get(f"{STA}/Datastreams", params={"$filter": "name eq 'M1/methane'"}).json()["value"][0]["@iot.id"]
    t = (app.clock.now() - timedelta(minutes=1)).isoformat()
    obs = c.post(f"{STA}/Observations", json={"result": 1.0, "phenomenonTime": t,
                                              "Datastream": {"@iot.id": ds}}).json()["@iot.id"]
    m1 = _thing(c, "M1")["@iot.id"]
    loc = c.get(f"{STA}/Things({m1})/Locations").json()["value"][0]["@iot.id"]
    disp_b = login_headers(c, app, "disp_b", ("dispatcher",), (STREET_B,))
    gas_a = login_headers(c, app, "gas_a", ("integrator",), (STREET_A,))
    disp_a = login_headers(c, app, "disp_a", ("dispatcher",), (STREET_A,))
    for method, path, body in (("PATCH", f"Observations('{obs}')", {"result": 2.0}),
                               ("DELETE", f"Observations('{obs}')", None),
                               ("GET", f"Locations({loc})", None), ("GET", f"HistoricalLocations({loc})", None),
                               ("PATCH", f"Locations({loc})", {"location": _point(106.58, 29.52)})):
        assert c.request(method, f"{STA}/{path}", headers=disp_b, json=body).status_code == 404, path  # out of scope
        r = c.request(method, f"{STA}/{path}", headers=disp_a, json=body)
        assert r.status_code == (200 if method == "GET" else 403), (path, r.text)  # in scope, may not write
    # the street-B dispatcher sees none of street A's history
    assert c.get(f"{STA}/HistoricalLocations", headers=disp_b).json()["value"] == []
    # an integrator of street A corrects and deletes its readings, and may not move a device out of its street
    assert c.patch(f"{STA}/Observations('{obs}')", headers=gas_a, json={"result": 2.0}).status_code == 200
    assert c.patch(f"{STA}/Locations({loc})", headers=gas_a, json={"location": _point(106.58, 29.52)}) \
        .status_code == 403
    assert c.post(f"{STA}/Locations", headers=gas_a, json={"location": _point(106.58, 29.52)}).status_code == 403
    own = c.post(f"{STA}/Locations", headers=gas_a, json={"location": _point(106.51, 29.51)})
    assert own.status_code == 201
    assert c.get(f"{STA}/Locations({own.json()['@iot.id']})", headers=disp_b).status_code == 404
    assert c.delete(f"{STA}/Observations('{obs}')", headers=gas_a).status_code == 200


def test_the_migration_backfills_one_position_per_device(database_url: str) -> None:
    from alembic import command

    from zhizhi.adapters import db

    engine = db.make_engine(database_url)
    cfg = db.alembic_config(engine)
    from alembic.script import ScriptDirectory

    down = ScriptDirectory.from_config(cfg).get_revision("0008").down_revision
    command.upgrade(cfg, str(down))
    with engine.begin() as conn:
        for code, lon in (("D1", 106.52), ("D2", 106.61)):
            conn.execute(text(
                "INSERT INTO sensing_devices (code, name, type, model, scene, place_code, district_code, lon, lat, "
                "department_code, status, registered_at, rule_overrides, properties) VALUES (:c, :c, "
                "'methane_detector', '', 'septic_tank', 'g1', 'd1', :lon, 29.5, NULL, 'active', :at, '{}', '{}')"),
                {"c": code, "lon": lon, "at": "2026-11-01 08:00:00"})
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT d.code, l.lon, l.lat, l.place_code FROM sensing_device_locations l "
                                 "JOIN sensing_devices d ON d.id = l.device_id ORDER BY d.code")).all()
        same_time = conn.execute(text("SELECT count(*) FROM sensing_device_locations l JOIN sensing_devices d "
                                      "ON d.id = l.device_id WHERE l.time = d.registered_at")).scalar()
    engine.dispose()
    assert [tuple(r) for r in rows] == [("D1", 106.52, 29.5, "g1"), ("D2", 106.61, 29.5, "g1")]
    assert same_time == 2
