"""The SensorThings API v1.1: entity model, navigation, every query option, create/update/delete, dataArray."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from conftest import login_headers
from fastapi.testclient import TestClient

from zhizhi.api.app import create_app

STA = "/sta/v1.1"


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(create_app(app)) as c:
        c.headers.update(login_headers(c, app))
        r = c.post(f"{STA}/Things", json={
            "name": "M1", "description": "化粪池1号",
            "properties": {"type": "methane_detector", "scene": "septic_tank"},
            "Locations": [{"name": "p", "encodingType": "application/geo+json",
                           "location": {"type": "Point", "coordinates": [106.55, 29.55]}}]})
        assert r.status_code == 201, r.text
        c.post("/api/v1/devices", json=[
            {"code": "W1", "type": "water_gauge", "scene": "waterlogging", "lon": 106.65, "lat": 29.58},
            {"code": "W2", "type": "water_gauge", "scene": "waterlogging", "lon": 106.62, "lat": 29.52}])
        now = app.clock.now()
        items = [{"device": d, "quantity": "water_level", "value": float(i + k * 10),
                  "time": (now - timedelta(minutes=10 - i)).isoformat()} for k, d in enumerate(["W1", "W2"])
                 for i in range(5)]
        assert c.post("/api/v1/observations", json=items).json()["accepted"] == 10
        yield c


def test_root_and_entity_model(client: TestClient) -> None:
    root = client.get(STA).json()
    assert {v["name"] for v in root["value"]} == {"Things", "Locations", "HistoricalLocations", "Datastreams",
                                                 "Sensors", "ObservedProperties", "Observations",
                                                 "FeaturesOfInterest"}
    things = client.get(f"{STA}/Things").json()["value"]
    assert [t["name"] for t in things] == ["M1", "W1", "W2"]
    t = things[0]
    assert t["@iot.selfLink"].endswith(f"/Things({t['@iot.id']})")
    assert t["Datastreams@iot.navigationLink"].endswith(f"/Things({t['@iot.id']})/Datastreams")
    for es in ("Locations", "HistoricalLocations", "Datastreams", "Sensors", "ObservedProperties", "Observations",
               "FeaturesOfInterest"):
        body = client.get(f"{STA}/{es}").json()
        assert body["value"] and all("@iot.id" in e and "@iot.selfLink" in e for e in body["value"]), es
    loc = client.get(f"{STA}/Things({t['@iot.id']})/Locations").json()["value"][0]
    assert loc["location"] == {"type": "Point", "coordinates": [106.55, 29.55]}
    ds = client.get(f"{STA}/Things({things[1]['@iot.id']})/Datastreams").json()["value"]
    assert [d["name"] for d in ds] == ["W1/water_level"] and ds[0]["unitOfMeasurement"]["symbol"] == "cm"
    obs = client.get(f"{STA}/Datastreams({ds[0]['@iot.id']})/Observations").json()["value"]
    assert len(obs) == 5
    one = client.get(obs[0]["@iot.selfLink"].split("/sta/v1.1")[1].join([STA, ""])).json()
    assert one["result"] == obs[0]["result"]
    assert client.get(f"{STA}/Datastreams({ds[0]['@iot.id']})/Thing").json()["name"] == "W1"
    assert client.get(f"{STA}/Datastreams({ds[0]['@iot.id']})/ObservedProperty").json()["name"] == "water_level"
    assert client.get(f"{STA}/Things({t['@iot.id']})/name").json() == {"name": "M1"}
    assert client.get(f"{STA}/Things(999)").status_code == 404
    assert client.get(f"{STA}/Nothing").status_code == 404


def test_query_options(client: TestClient) -> None:
    q = client.get(f"{STA}/Observations", params={"$filter": "result ge 3 and result lt 12", "$orderby": "result desc",
                                                  "$count": "true", "$top": "2", "$skip": "1"}).json()
    assert q["@iot.count"] == 4  # 3, 4, 10, 11
    assert [o["result"] for o in q["value"]] == [10.0, 4.0]
    assert "@iot.nextLink" in q and "%24skip=3" in q["@iot.nextLink"]
    sel = client.get(f"{STA}/Things", params={"$select": "name,id"}).json()["value"]
    assert sel[0].keys() == {"name", "@iot.id"}
    f = client.get(f"{STA}/Things", params={"$filter": "startswith(name,'W') and properties/scene eq 'waterlogging'"})
    assert [t["name"] for t in f.json()["value"]] == ["W1", "W2"]
    f = client.get(f"{STA}/Things", params={"$filter": "not (name eq 'W1') or substringof('1', name)"}).json()
    assert [t["name"] for t in f["value"]] == ["M1", "W1", "W2"]
    f = client.get(f"{STA}/Observations", params={"$filter": "result add 1 eq 5 or tolower('X') eq 'y'"}).json()
    assert [o["result"] for o in f["value"]] == [4.0]
    exp = client.get(f"{STA}/Things", params={
        "$filter": "name eq 'W2'",
        "$expand": "Datastreams($select=name;$expand=Observations($orderby=result;$top=2;$count=true)),Locations"})
    thing = exp.json()["value"][0]
    assert thing["Locations"][0]["location"]["coordinates"] == [106.62, 29.52]
    stream = thing["Datastreams"][0]
    assert stream["name"] == "W2/water_level" and "unitOfMeasurement" not in stream
    assert [o["result"] for o in stream["Observations"]] == [10.0, 11.0] and stream["Observations@iot.count"] == 5
    nested = client.get(f"{STA}/Observations", params={"$top": "1", "$expand": "Datastream/Thing"}).json()["value"][0]
    assert nested["Datastream"]["Thing"]["name"] in ("W1", "W2")
    assert client.get(f"{STA}/Things", params={"$filter": "name eq"}).status_code == 422


def test_create_update_delete_and_data_array(client: TestClient, app: Any) -> None:
    ds = client.get(f"{STA}/Datastreams", params={"$filter": "name eq 'M1/methane'"}).json()["value"][0]
    t = (app.clock.now() - timedelta(minutes=1)).isoformat()
    r = client.post(f"{STA}/Observations", json={"result": 31.5, "phenomenonTime": t,
                                                 "Datastream": {"@iot.id": ds["@iot.id"]}})
    assert r.status_code == 201 and r.json()["result"] == 31.5 and r.headers["Location"]
    assert client.get("/api/v1/alarms").json()["total"] >= 1  # the same rules run for SensorThings readings
    bad = client.post(f"{STA}/Datastreams({ds['@iot.id']})/Observations", json={"result": 500, "phenomenonTime": t})
    assert bad.status_code == 422 and bad.json()["reason"] == "out-of-range"
    times = [(app.clock.now() - timedelta(seconds=s)).isoformat() for s in (50, 40, 30)]
    arr = client.post(f"{STA}/CreateObservations", json=[{
        "Datastream": {"@iot.id": ds["@iot.id"]}, "components": ["phenomenonTime", "result"],
        "dataArray": [[times[0], 1.0], [times[1], 999.0], [times[2], 2.0]]}])
    assert arr.status_code == 201
    links = arr.json()
    assert links[1] == "error" and links[0].startswith("http") and links[2].startswith("http")
    thing = client.get(f"{STA}/Things", params={"$filter": "name eq 'M1'"}).json()["value"][0]
    p = client.patch(f"{STA}/Things({thing['@iot.id']})", json={"description": "新描述",
                                                               "properties": {"model": "GX-2"}})
    assert p.status_code == 200 and p.json()["description"] == "新描述" and p.json()["properties"]["model"] == "GX-2"
    assert client.delete(f"{STA}/Things({thing['@iot.id']})").status_code == 200
    assert client.get(f"{STA}/Things({thing['@iot.id']})").json()["properties"]["status"] == "inactive"
    assert client.post(f"{STA}/Sensors", json={"name": "x"}).status_code == 422  # not in the catalogue
    assert client.post(f"{STA}/FeaturesOfInterest", json={"name": "x"}).status_code == 422  # no geometry
    assert client.post(f"{STA}/HistoricalLocations", json={"time": "2026-11-23T00:00:00Z"}).status_code == 405
    assert client.post(f"{STA}/Nothing", json={"name": "x"}).status_code == 404


def test_a_standard_client_creates_sensor_property_thing_datastream_then_observes(client: TestClient,
                                                                                   app: Any) -> None:
    """The usual client sequence: POST Sensor, ObservedProperty, Thing with Datastreams, Datastream, Observation.
    Sensors and ObservedProperties are the catalogue's, so the client is given the entries it names."""
    sensor = client.post(f"{STA}/Sensors", json={"name": "water_gauge", "encodingType": "text/plain",
                                                 "metadata": "radar", "description": "水位计"})
    assert sensor.status_code == 201 and sensor.json()["name"] == "water_gauge", sensor.text
    assert sensor.headers["Location"].endswith(f"/Sensors({sensor.json()['@iot.id']})")
    prop = client.post(f"{STA}/ObservedProperties", json={"name": "积水深度",
                                                          "definition": "urn:zhizhi:quantity:water_level"})
    assert prop.status_code == 201 and prop.json()["name"] == "water_level", prop.text
    sid, pid = sensor.json()["@iot.id"], prop.json()["@iot.id"]
    thing = client.post(f"{STA}/Things", json={
        "name": "W9", "description": "下穿道积水",
        "Locations": [{"name": "p", "encodingType": "application/geo+json",
                       "location": {"type": "Point", "coordinates": [106.62, 29.55]}}],
        "Datastreams": [{"name": "水位", "unitOfMeasurement": {"name": "cm", "symbol": "cm", "definition": "x"},
                         "observationType": "OM_Measurement", "Sensor": {"@iot.id": sid},
                         "ObservedProperty": {"@iot.id": pid}}]})
    assert thing.status_code == 201, thing.text
    props = thing.json()["properties"]
    assert props["type"] == "water_gauge" and props["scene"] == "waterlogging"  # the only scene of the type
    tid = thing.json()["@iot.id"]
    ds = client.post(f"{STA}/Datastreams", json={
        "name": "水位", "unitOfMeasurement": {"symbol": "cm"}, "Thing": {"@iot.id": tid},
        "Sensor": {"@iot.id": sid}, "ObservedProperty": {"name": "water_level"}})
    assert ds.status_code == 201 and ds.json()["name"] == "W9/water_level", ds.text
    listed = client.get(f"{STA}/Things({tid})/Datastreams").json()["value"]
    assert [d["@iot.id"] for d in listed] == [ds.json()["@iot.id"]]  # linked to the one stream, not a second
    t = (app.clock.now() - timedelta(minutes=1)).isoformat()
    obs = client.post(f"{STA}/Datastreams({ds.json()['@iot.id']})/Observations",
                      json={"result": 12.0, "phenomenonTime": t})
    assert obs.status_code == 201 and obs.json()["result"] == 12.0
    # what the catalogue cannot give is refused with a reason
    methane = client.get(f"{STA}/ObservedProperties", params={"$filter": "name eq 'methane'"}).json()["value"][0]
    r = client.post(f"{STA}/Things({tid})/Datastreams", json={"ObservedProperty": {"@iot.id": methane["@iot.id"]}})
    assert r.status_code == 422 and "methane" in r.text
    r = client.post(f"{STA}/Things", json={
        "name": "X1", "Locations": [{"location": {"type": "Point", "coordinates": [106.62, 29.55]}}],
        "Datastreams": [{"Sensor": {"name": "water_gauge"}, "ObservedProperty": {"name": "methane"}}]})
    assert r.status_code == 422
    assert client.post(f"{STA}/ObservedProperties", json={"name": "colour"}).status_code == 422
