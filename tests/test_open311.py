"""Open311 GeoReport v2 at /open311/v2: discovery, services, definitions, requests and tokens, XML and JSON."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from conftest import login_headers
from fastapi.testclient import TestClient

from zhizhi.api.app import create_app
from zhizhi.service import accounts

B = "/open311/v2"


@pytest.fixture
def api(app: Any) -> Iterator[dict[str, Any]]:
    with TestClient(create_app(app)) as c:
        accounts.create_user(app, "wechat-bridge", None, ("citizen",), display_name="微信小程序")
        key = accounts.create_api_key(app, "wechat-bridge", "open311")
        yield {"c": c, "key": key, "app": app}


def post(api: dict[str, Any], fmt: str = "json", **form: str) -> Any:
    data = {"api_key": api["key"], "service_code": "C0102", "lat": "29.52", "long": "106.52",
            "description": "路灯不亮，晚上很黑", "phone": "13611112222", "first_name": "小明", "last_name": "王"}
    data.update(form)
    return api["c"].post(f"{B}/requests.{fmt}", data={k: v for k, v in data.items() if v is not None})


def test_discovery_and_services_in_both_formats(api: dict[str, Any]) -> None:
    c = api["c"]
    d = c.get(f"{B}/discovery.json")
    assert d.status_code == 200 and d.headers["content-type"] == "application/json; charset=utf-8"
    ep = d.json()["endpoints"][0]
    assert ep["specification"] == "http://wiki.open311.org/GeoReport_v2" and "text/xml" in ep["formats"]
    x = c.get(f"{B}/discovery.xml")
    assert x.headers["content-type"] == "text/xml; charset=utf-8" and x.text.startswith("<?xml")
    assert ET.fromstring(x.content).find("endpoints/endpoint/specification").text == ep["specification"]

    services = c.get(f"{B}/services.json").json()
    codes = {s["service_code"] for s in services}
    assert "C0102" in codes and len(services) > 50
    s = next(s for s in services if s["service_code"] == "C0102")
    assert set(s) == {"service_code", "service_name", "description", "metadata", "type", "keywords", "group"}
    root = ET.fromstring(c.get(f"{B}/services.xml").content)
    assert root.tag == "services" and len(root.findall("service")) == len(services)
    assert root.find("service/metadata").text in ("true", "false")

    definition = c.get(f"{B}/services/C0102.json").json()
    assert definition["service_code"] == "C0102" and definition["attributes"][0]["code"] == "asset_id"
    xml_def = ET.fromstring(c.get(f"{B}/services/C0102.xml").content)
    assert xml_def.find("attributes/attribute/code").text == "asset_id"
    missing = c.get(f"{B}/services/NOPE.json")
    assert missing.status_code == 404 and missing.json()[0]["code"] == 404 and missing.json()[0]["description"]
    assert c.get(f"{B}/services.yaml").status_code == 404


def test_post_then_follow_the_case_loop(api: dict[str, Any]) -> None:
    c, app = api["c"], api["app"]
    r = post(api, **{"attribute[asset_id]": "LD-0001"})
    assert r.status_code == 201, r.text
    created = r.json()[0]
    sid, token = created["service_request_id"], created["token"]
    assert c.get(f"{B}/tokens/{token}.json").json() == [{"service_request_id": sid, "token": token}]
    req = c.get(f"{B}/requests/{sid}.json").json()[0]
    assert req["status"] == "open" and req["service_code"] == "C0102" and "LD-0001" in req["description"]
    assert req["requested_datetime"].endswith("+08:00") and req["agency_responsible"]
    assert "13611112222" not in str(req) and "王" not in (req["address"] or "")  # no reporter in public view
    # the case loop moves; Open311 shows it
    admin = login_headers(c, app)
    for body in ({"action": "accept"}, {"action": "handle", "note": "已更换灯泡"},
                 {"action": "verify", "passed": True, "note": "核查通过"}):
        assert c.post(f"/api/v1/cases/{sid}/actions", json=body, headers=admin).status_code == 200
    req = c.get(f"{B}/requests/{sid}.json").json()[0]
    assert req["status"] == "closed" and "核查通过" in req["status_notes"]
    xml_req = ET.fromstring(c.get(f"{B}/requests/{sid}.xml").content)
    assert xml_req.tag == "service_requests" and xml_req.find("request/status").text == "closed"
    # filters
    assert [q["service_request_id"] for q in c.get(f"{B}/requests.json", params={"status": "closed"}).json()] == [sid]
    assert c.get(f"{B}/requests.json", params={"status": "open"}).json() == []
    assert c.get(f"{B}/requests.json", params={"service_code": "C0101"}).json() == []
    assert len(c.get(f"{B}/requests.json", params={"service_request_id": f"{sid},999"}).json()) == 1
    assert c.get(f"{B}/requests.json", params={"end_date": "2020-01-01T00:00:00Z"}).json() == []
    bad = c.get(f"{B}/requests.json", params={"status": "flying"})
    assert bad.status_code == 400 and bad.json()[0]["code"] == 400


def test_post_errors_use_the_spec_error_format(api: dict[str, Any]) -> None:
    cases = [({"api_key": "wrong"}, 403), ({"api_key": None}, 403), ({"service_code": "NOPE"}, 400),
             ({"lat": None, "long": None}, 400), ({"lat": "abc"}, 400), ({"long": "107.9"}, 400),
             ({"lat": None}, 400)]
    for form, status in cases:
        r = post(api, **form)
        assert r.status_code == status, (form, r.text)
        assert r.json()[0]["code"] == status and r.json()[0]["description"]
    x = post(api, "xml", api_key="wrong")
    err = ET.fromstring(x.content)
    assert x.headers["content-type"] == "text/xml; charset=utf-8"
    assert err.tag == "errors" and err.find("error/code").text == "403"
    # by address only: accepted, waits for location if the address is unknown
    r = post(api, lat=None, long=None, address_string="渝中区解放碑街道")
    assert r.status_code == 201, r.text


def test_script_payloads_are_escaped_in_xml(api: dict[str, Any]) -> None:
    payload = "<script>alert('x')</script>&<b>"
    sid = post(api, description=payload).json()[0]["service_request_id"]
    x = api["c"].get(f"{B}/requests/{sid}.xml")
    assert "<script>" not in x.text and "&lt;script&gt;" in x.text
    assert ET.fromstring(x.content).find("request/description").text == payload
    assert api["c"].get(f"{B}/requests/{sid}.json").json()[0]["description"] == payload


def test_only_open311_requests_are_public(api: dict[str, Any]) -> None:
    c, app = api["c"], api["app"]
    admin = login_headers(c, app)
    other = c.post("/api/v1/cases", headers=admin, json={"source": "hotline", "source_id": "h1", "title": "内部工单",
                                                         "lon": 106.52, "lat": 29.52, "category_code": "C0102"})
    cid = other.json()["id"]
    assert c.get(f"{B}/requests/{cid}.json").status_code == 404
    assert c.get(f"{B}/requests.json").json() == []
