"""Scope enforcement generated from the route table, so routes added later are covered by the same rules.

- every route is either declared public or depends on `current_principal` (a route that is neither fails);
- every non-public route answers 401 problem+json without credentials;
- every route whose path names a scoped thing (a case, a record, a device, an alarm, a SensorThings entity)
  answers 404 to principals of another street, another department or another grid, for every method, with a
  body generated from the route's own schema;
- no list route (GET without path parameters, and every SensorThings collection with $expand and $count) shows
  a case, device, alarm or reading outside the caller's scope.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from conftest import login_headers
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from zhizhi.api.app import create_app
from zhizhi.api.deps import PUBLIC_PATHS, current_principal

#: Path parameters that name a scoped thing (a case, a community record, a device, an alarm, a SensorThings
#: resource path); each gets out-of-scope values (a list: every value is probed).
SCOPED_PARAMS = {"case_id", "record_id", "device_code", "alarm_id", "path"}
STA = "/sta/v1.1"
#: Every SensorThings collection, expanded down to the readings, with counts.
STA_LISTS = [f"{STA}/{es}?$count=true&$expand={ex}" for es, ex in [
    ("Things", "Datastreams($count=true;$expand=Observations),Locations,HistoricalLocations"),
    ("Locations", "Things"), ("HistoricalLocations", "Thing"), ("Datastreams", "Thing,Observations"),
    ("Sensors", "Datastreams($count=true)"), ("ObservedProperties", "Datastreams($count=true)"),
    ("Observations", "Datastream,FeatureOfInterest"), ("FeaturesOfInterest", "Observations")]]
#: Streaming routes (server-sent events) never end, so they are probed for auth only, never for content.
STREAMING = {"/api/v1/stream"}


def _streaming(path: str) -> bool:
    return path in STREAMING or "stream" in path.rsplit("/", 1)[-1]
SECRET = "仅A街道可见-7f3a"


def _depends_on_principal(dependant: Any) -> bool:
    return any(d.call is current_principal or _depends_on_principal(d) for d in dependant.dependencies)


def _api_routes(app: Any) -> list[APIRoute]:
    return [r for r in app.routes if isinstance(r, APIRoute)]


def _fill(path: str, value: str) -> str:
    return re.sub(r"\{[^}]+\}", value, path)


def _sample(schema: dict[str, Any], spec: dict[str, Any], depth: int = 0) -> Any:
    """A minimal valid instance of a JSON schema (required fields only), for request bodies."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _sample(spec["components"]["schemas"][name], spec, depth + 1)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return _sample(options[0], spec, depth + 1)
    if "default" in schema:
        return schema["default"]
    if "enum" in schema:
        return schema["enum"][0]
    if "examples" in schema:
        return schema["examples"][0]
    t = schema.get("type", "object")
    if t == "object":
        props = schema.get("properties", {})
        return {k: _sample(props[k], spec, depth + 1) for k in schema.get("required", []) if k in props}
    if t == "array":
        return [_sample(schema.get("items", {}), spec, depth + 1) for _ in range(schema.get("minItems", 0))]
    if t == "integer":
        return max(1, schema.get("minimum", 1))
    if t == "number":
        return schema.get("minimum", 1.0)
    if t == "boolean":
        return True
    alternatives = re.fullmatch(r"\^\(([^()]+)\)\$", schema.get("pattern", ""))
    if alternatives:  # a pattern of alternatives such as ^(report_in|done)$
        return alternatives.group(1).split("|")[0]
    return "x" * max(1, schema.get("minLength", 1))


def _body_for(route: APIRoute, method: str, spec: dict[str, Any]) -> Any:
    op = spec["paths"].get(route.path_format, {}).get(method.lower(), {})
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        return _sample(content["application/json"]["schema"], spec)
    return None


@pytest.fixture
def world(app: Any) -> Iterator[dict[str, Any]]:
    """One case in 解放碑街道 (street A); principals of street A and of everywhere else."""
    with TestClient(create_app(app)) as c:
        admin = login_headers(c, app)
        r = c.post("/api/v1/cases", headers=admin, json={
            "source": "citizen", "source_id": "scope-a", "title": f"井盖缺失 {SECRET}", "category_code": "C0102",
            "lon": 106.52, "lat": 29.52, "reporter_phone": "13800001111", "reporter_name": "张三"})
        assert r.status_code == 201, r.text
        case = r.json()["case"]
        assert case["location"]["street"]["code"] == "500103001"
        # another department than the case's, the methane detector's owner and the alarm case's (enforcement)
        other_dept = next(d["code"] for d in c.get("/api/v1/catalogue/departments", headers=admin).json()
                          if d["code"] not in (case["department_code"], "utilities", "enforcement"))
        outsiders = {
            "dispatcher of another street": login_headers(c, app, "disp_b", ("dispatcher",), ("500103002",)),
            "dispatcher of another district": login_headers(c, app, "disp_d", ("dispatcher",), ("500105",)),
            "handler of another department": login_headers(c, app, "hand_x", ("handler",), (), (other_dept,)),
            "grid worker of another grid": login_headers(c, app, "grid_x", ("grid_worker",), ("500103001002002",)),
            "citizen": login_headers(c, app, "citizen1", ("citizen",)),
        }
        insider = login_headers(c, app, "disp_a", ("dispatcher",), ("500103001",))
        rec = c.post("/api/v1/records", headers=admin, json={
            "kind": "person", "external_id": "scope-a-p1", "name": "赵大爷", "community_code": "500103001001",
            "tags": ["独居老人"], "fields": {"note": SECRET, "phone": "13900001111"}})
        assert rec.status_code == 201, rec.text
        sensing = _sensing_in_street_a(c, app, admin)
        ids: dict[str, str | list[str]] = {"case_id": str(case["id"]), "record_id": str(rec.json()["id"]),
                                           **sensing}
        yield {"client": c, "app": app, "case": case, "outsiders": outsiders, "insider": insider, "admin": admin,
               "ids": ids}


def _sensing_in_street_a(c: TestClient, app: Any, admin: dict[str, str]) -> dict[str, str | list[str]]:
    """A methane detector in street A (owned by the gas utility), a reading that raises an alarm (and its case),
    and the ids of everything that makes visible: the device, the alarm, every SensorThings entity."""
    r = c.post("/api/v1/devices", headers=admin, json={
        "code": "scope-a-m1", "name": f"化粪池 {SECRET}", "type": "methane_detector", "scene": "septic_tank",
        "lon": 106.52, "lat": 29.52, "department_code": "utilities"})
    assert r.status_code == 201, r.text
    device = r.json()["items"][0]
    assert device["place_code"].startswith("500103001")
    at = (app.clock.now() - timedelta(minutes=1)).isoformat()
    rep = c.post("/api/v1/observations", headers=admin,
                 json=[{"device": "scope-a-m1", "quantity": "methane", "value": 30.0, "time": at}]).json()
    assert rep["accepted"] == 1 and len(rep["alarms_raised"]) == 1, rep
    sid = c.get("/api/v1/devices/scope-a-m1/observations", params={"quantity": "methane"},
                headers=admin).json()["datastream_id"]
    obs = c.get(f"{STA}/Datastreams({sid})/Observations", headers=admin).json()["value"][0]["@iot.id"]
    thing = device["id"]
    loc = c.get(f"{STA}/Things({thing})/Locations", headers=admin).json()["value"][0]["@iot.id"]
    paths = [f"Things({thing})", f"Locations({loc})", f"HistoricalLocations({loc})",
             f"FeaturesOfInterest({thing})", f"Datastreams({sid})", f"Observations('{obs}')",
             f"Things({thing})/Datastreams", f"Datastreams({sid})/Observations", f"Observations('{obs}')/Datastream"]
    return {"device_code": "scope-a-m1", "alarm_id": str(rep["alarms_raised"][0]), "path": paths}


def _urls(path: str, ids: dict[str, Any]) -> list[str]:
    """The route's path with every parameter filled, once per combination of the scoped values."""
    names = re.findall(r"\{([^}:]+)(?::[^}]*)?\}", path)
    choices = [ids.get(n, "1") for n in names]
    parts = re.split(r"\{[^}]+\}", path)
    return ["".join(p + v for p, v in zip(parts, [*combo, ""], strict=True))
            for combo in itertools.product(*[c if isinstance(c, list) else [c] for c in choices])]


def test_every_route_is_public_or_authenticated(app: Any) -> None:
    api = create_app(app)
    unguarded = [r.path for r in _api_routes(api)
                 if r.path not in PUBLIC_PATHS and not _depends_on_principal(r.dependant)]
    assert unguarded == [], f"routes neither public nor depending on CurrentPrincipal: {unguarded}"
    # the check can fail: a route without the dependency is caught
    api.add_api_route("/api/v1/leaky", lambda: {"x": 1}, methods=["GET"])
    assert "/api/v1/leaky" in [r.path for r in _api_routes(api)
                                if r.path not in PUBLIC_PATHS and not _depends_on_principal(r.dependant)]


def test_every_private_route_needs_credentials(app: Any) -> None:
    with TestClient(create_app(app)) as c:
        checked = 0
        for route in _api_routes(c.app):  # type: ignore[arg-type]
            if route.path in PUBLIC_PATHS:
                continue
            for method in route.methods - {"HEAD", "OPTIONS"}:
                for headers in ({}, {"Authorization": "Bearer nope"}, {"X-API-Key": "zz_forged"}):
                    r = c.request(method, _fill(route.path, "1"), headers=headers, json={})
                    assert r.status_code == 401, (method, route.path, r.status_code, r.text)
                    assert r.headers["content-type"].startswith("application/problem+json")
                    checked += 1
        assert checked > 30


def test_case_routes_answer_404_out_of_scope(world: dict[str, Any]) -> None:
    c: TestClient = world["client"]
    spec = c.get("/openapi.json").json()
    ids = world["ids"]
    probed = set()
    for route in _api_routes(c.app):  # type: ignore[arg-type]
        params = set(re.findall(r"\{([^}:.]+)", route.path))
        if not params & SCOPED_PARAMS or _streaming(route.path) or route.path in PUBLIC_PATHS:
            continue
        for url in _urls(route.path, ids):
            for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
                body = _body_for(route, method, spec)
                for who, headers in world["outsiders"].items():
                    r = c.request(method, url, headers=headers, json=body)
                    assert r.status_code == 404, (who, method, url, r.status_code, r.text)
                    assert SECRET not in r.text, (who, method, url)
                if method == "GET":  # the same request inside the scope finds the thing
                    assert c.request(method, url, headers=world["insider"]).status_code == 200, url
                probed.add((method, route.path))
    assert {("GET", "/api/v1/cases/{case_id}"), ("POST", "/api/v1/cases/{case_id}/actions"),
            ("GET", "/api/v1/records/{record_id}"), ("PATCH", "/api/v1/records/{record_id}"),
            ("GET", "/api/v1/devices/{device_code}"), ("DELETE", "/api/v1/devices/{device_code}"),
            ("POST", "/api/v1/alarms/{alarm_id}/acknowledge"), ("GET", STA + "/{path:path}"),
            ("PATCH", STA + "/{path:path}"), ("POST", STA + "/{path:path}")} <= probed
    # nothing was changed by the outsiders: the alarm is still raised, the device still active
    alarm = c.get(f"/api/v1/alarms/{ids['alarm_id']}", headers=world["admin"]).json()
    assert alarm["state"] == "raised" and alarm["acknowledged_by"] is None
    assert c.get("/api/v1/devices/scope-a-m1", headers=world["admin"]).json()["status"] == "active"


def test_list_routes_hide_out_of_scope_cases(world: dict[str, Any]) -> None:
    c: TestClient = world["client"]
    listed = 0
    for route in _api_routes(c.app):  # type: ignore[arg-type]
        if "GET" not in route.methods or "{" in route.path or route.path in PUBLIC_PATHS or _streaming(route.path):
            continue
        for who, headers in world["outsiders"].items():
            r = c.get(route.path, headers=headers)
            assert r.status_code in (200, 403, 404, 422), (who, route.path, r.status_code, r.text)
            assert SECRET not in r.text and "scope-a" not in r.text, (who, route.path)
        listed += 1
    for url in STA_LISTS:
        for who, headers in world["outsiders"].items():
            r = c.get(url, headers=headers)
            assert r.status_code in (200, 403), (who, url, r.status_code, r.text)
            assert SECRET not in r.text and "scope-a" not in r.text, (who, url)
            if r.status_code == 200 and not url.startswith((f"{STA}/Sensors", f"{STA}/ObservedProperties")):
                assert r.json()["@iot.count"] == 0, (who, url)
        listed += 1
    assert listed >= 5 + len(STA_LISTS)
    # the same list shows the case to its own street: the probe can see a leak
    assert SECRET in c.get("/api/v1/cases", headers=world["insider"]).text
    assert SECRET in c.get("/api/v1/records", headers=world["insider"]).text
    for url in ("/api/v1/devices", "/api/v1/alarms", *STA_LISTS):
        assert "scope-a" in c.get(url, headers=world["insider"]).text, url


def test_a_repeated_source_id_does_not_reveal_another_streets_case(world: dict[str, Any]) -> None:
    c: TestClient = world["client"]
    body = {"source": "citizen", "source_id": "scope-a", "title": "探测", "lon": 106.57, "lat": 29.52}
    for who, headers in world["outsiders"].items():
        r = c.post("/api/v1/cases", headers=headers, json=body)
        assert r.status_code in (403, 409), (who, r.status_code)
        assert SECRET not in r.text and "13800001111" not in r.text
    again = c.post("/api/v1/cases", headers=world["admin"], json=body)  # the reporter itself gets its case back
    assert again.status_code == 200 and SECRET in again.text
    citizen = world["outsiders"]["citizen"]
    mine = {"source": "citizen", "source_id": "cit-own-1", "title": "噪声扰民", "lon": 106.57, "lat": 29.52}
    first = c.post("/api/v1/cases", headers=citizen, json=mine)
    retry = c.post("/api/v1/cases", headers=citizen, json=mine)
    assert first.status_code == 201 and retry.status_code == 200 and retry.json()["id"] == first.json()["id"]
