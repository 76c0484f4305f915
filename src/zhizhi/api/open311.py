"""The Open311 GeoReport v2 citizen API at /open311/v2 (http://wiki.open311.org/GeoReport_v2).

Every resource is served as XML (required by the spec) and JSON, chosen by the
path's extension, with the spec's element names, its error list
(`[{code, description}]`) and plain content types. Reading is public, as the spec
expects; posting a request needs an `api_key` (an account's API key with the right
to report). Reports posted here enter the same case loop as every other source
(source `open311`), and their status and status_notes follow the case.

Privacy: the public view lists the requests that came in through Open311 only,
gives the place as district / street / community names instead of the exact
address, rounds the point to about 100 m, and never shows the reporter.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET
from zoneinfo import ZoneInfo

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response

from zhizhi.adapters.repository import CaseFilter
from zhizhi.api.deps import client_origin, declare_public
from zhizhi.domain.access import Forbidden
from zhizhi.domain.case import Case, CaseState
from zhizhi.domain.errors import DomainError, NotFound, OutsideJurisdiction, ValidationFailed

if TYPE_CHECKING:
    from zhizhi.service.bootstrap import Zhizhi

BASE = "/open311/v2"
SPEC = "http://wiki.open311.org/GeoReport_v2"
CONTENT = {"json": "application/json; charset=utf-8", "xml": "text/xml; charset=utf-8"}
TZ = ZoneInfo("Asia/Shanghai")
MAX_RESULTS = 1000
CHANGESET = "2026-11-23T00:00:00+08:00"  # when this endpoint's behaviour last changed
#: Attributes every component (部件) service accepts: the component's asset number, when the reporter sees it.
COMPONENT_ATTRIBUTES = [{
    "variable": True, "code": "asset_id", "datatype": "string", "required": False,
    "datatype_description": "部件编码（标牌上的编号）/ the asset number on the component's tag", "order": 1,
    "description": "部件编码 / asset number", "values": [],
}]


class Open311Error(Exception):
    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status, self.description = status, description


# --------------------------------------------------------------------------------------------
# Rendering: one structure, two formats
# --------------------------------------------------------------------------------------------
def _xml_value(parent: ET.Element, key: str, value: Any) -> None:
    el = ET.SubElement(parent, key)
    if isinstance(value, bool):
        el.text = "true" if value else "false"
    elif isinstance(value, list):
        if key == "keywords":
            el.text = ",".join(str(v) for v in value)
        else:  # attribute values
            for v in value:
                item = ET.SubElement(el, "value")
                for k2, v2 in v.items():
                    _xml_value(item, k2, v2)
    elif isinstance(value, dict):
        for k2, v2 in value.items():
            _xml_value(el, k2, v2)
    elif value is not None:
        el.text = str(value)


def render(fmt: str, data: Any, root: str, item: str | None, status: int = 200) -> Response:
    """JSON as the data is; XML with `root` and one `item` element per list entry (ElementTree escapes)."""
    if fmt == "json":
        return Response(json.dumps(data, ensure_ascii=False), status_code=status, media_type=CONTENT["json"])
    top = ET.Element(root)
    for entry in (data if isinstance(data, list) else [data]) if item else []:
        el = ET.SubElement(top, item)  # type: ignore[arg-type]
        for k, v in entry.items():
            _xml_value(el, k, v)
    if not item:
        for k, v in data.items():
            if isinstance(v, list) and k in ("endpoints", "attributes"):
                holder = ET.SubElement(top, k)
                for entry in v:
                    el = ET.SubElement(holder, k[:-1])
                    for k2, v2 in entry.items():
                        if k2 == "formats":
                            fm = ET.SubElement(el, "formats")
                            for f in v2:
                                ET.SubElement(fm, "format").text = f
                        else:
                            _xml_value(el, k2, v2)
            else:
                _xml_value(top, k, v)
    body = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(top, encoding="utf-8")
    return Response(body, status_code=status, media_type=CONTENT["xml"])


def error(fmt: str, status: int, description: str) -> Response:
    return render(fmt if fmt in CONTENT else "xml", [{"code": status, "description": description}], "errors",
                  "error", status)


def _fmt(value: str) -> str:
    if value not in CONTENT:
        raise Open311Error(404, f"unknown format {value[:20]!r}; use .xml or .json")
    return value


# --------------------------------------------------------------------------------------------
# Views
# --------------------------------------------------------------------------------------------
def _service(zz: Zhizhi, c: Any) -> dict[str, Any]:
    group = zz.catalogue.category(c.parent_code).name_zh if c.parent_code else ""
    return {"service_code": c.code, "service_name": c.name_zh, "description": c.name_en,
            "metadata": c.code.startswith("C"), "type": "realtime", "keywords": list(c.keywords)[:10],
            "group": group}


def _iso(t: datetime | None) -> str | None:
    return t.astimezone(TZ).isoformat(timespec="seconds") if t else None


def status_of(case: Case) -> str:
    return "open" if case.state.is_open else "closed"


def status_notes(case: Case) -> str:
    """The state in words and the last note a person wrote (what the citizen would be told)."""
    note = next((e.note for e in reversed(case.timeline) if e.note), "")
    return f"{case.state.label_zh}：{note}" if note else case.state.label_zh


def request_view(zz: Zhizhi, case: Case) -> dict[str, Any]:
    loc = case.location
    names = [p.name for code in (loc.district, loc.street, loc.community)
             if code and (p := zz.gazetteer.place(code)) is not None]
    try:
        service_name = zz.catalogue.category(case.category_code).name_zh if case.category_code else None
    except DomainError:
        service_name = None
    try:
        agency = zz.catalogue.department(case.department_code).name_zh if case.department_code else None
    except Exception:
        agency = None
    last = case.timeline[-1].at if case.timeline else case.reported_at
    return {
        "service_request_id": str(case.id), "status": status_of(case), "status_notes": status_notes(case),
        "service_name": service_name, "service_code": case.category_code, "description": case.description,
        "agency_responsible": agency, "service_notice": case.state.label_zh,
        "requested_datetime": _iso(case.reported_at), "updated_datetime": _iso(last),
        "expected_datetime": _iso(case.due_at) if case.state.is_open else None,
        "address": "".join(names) or None, "address_id": loc.community, "zipcode": None,
        "lat": round(loc.lat, 3) if loc.lat is not None else None,
        "long": round(loc.lon, 3) if loc.lon is not None else None,
        "media_url": case.photos[0] if case.photos else None,
    }


def _parse_time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Open311Error(400, f"{name} must be an ISO 8601 date-time") from None
    return t if t.tzinfo else t.replace(tzinfo=TZ)


def install(app: FastAPI, zz: Zhizhi) -> None:
    """Add this capability's routes to the app."""
    # Open311 reads are public by the spec; POST authenticates with the api_key parameter itself.
    paths = [f"{BASE}/discovery.{{fmt}}", f"{BASE}/services.{{fmt}}", f"{BASE}/services/{{service_code}}.{{fmt}}",
             f"{BASE}/requests.{{fmt}}", f"{BASE}/requests/{{service_request_id}}.{{fmt}}",
             f"{BASE}/tokens/{{token_id}}.{{fmt}}"]
    declare_public(*paths)
    tags = ["open311"]

    def guarded(fmt: str, fn: Any) -> Response:
        try:
            return fn(_fmt(fmt))
        except Open311Error as exc:
            return error(fmt, exc.status, exc.description)
        except Forbidden as exc:
            return error(fmt, 403, exc.message)
        except NotFound as exc:
            return error(fmt, 404, exc.message)
        except (ValidationFailed, OutsideJurisdiction) as exc:
            return error(fmt, 400, exc.message)

    @app.get(paths[0], operation_id="open311_discovery", tags=tags)
    def discovery(fmt: str, request: Request) -> Response:
        def go(f: str) -> Response:
            url = str(request.base_url).rstrip("/") + BASE
            endpoint = {"specification": SPEC, "url": url, "changeset": CHANGESET, "type": "production",
                        "formats": ["text/xml", "application/json"]}
            return render(f, {"changeset": CHANGESET, "contact": "城市运行和治理中心 12345",
                              "key_service": "向管理员申请 API key / ask an administrator for an API key",
                              "endpoints": [endpoint]}, "discovery", None)
        return guarded(fmt, go)

    @app.get(paths[1], operation_id="open311_services", tags=tags)
    def services(fmt: str) -> Response:
        return guarded(fmt, lambda f: render(f, [_service(zz, c) for c in zz.catalogue.leaves()],
                                             "services", "service"))

    @app.get(paths[2], operation_id="open311_service_definition", tags=tags)
    def service_definition(service_code: str, fmt: str) -> Response:
        def go(f: str) -> Response:
            try:
                c = zz.catalogue.category(service_code)
            except DomainError:
                raise Open311Error(404, f"service_code {service_code[:32]!r} not found") from None
            if c.is_major:
                raise Open311Error(404, f"service_code {service_code[:32]!r} not found")
            attrs = COMPONENT_ATTRIBUTES if c.code.startswith("C") else []
            return render(f, {"service_code": c.code, "attributes": attrs}, "service_definition", None)
        return guarded(fmt, go)

    @app.post(paths[3], operation_id="open311_post_request", tags=tags,
              openapi_extra={"requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {
                  "type": "object", "required": ["api_key", "service_code"],
                  "properties": {k: {"type": "string"} for k in (
                      "api_key", "service_code", "lat", "long", "address_string", "address_id", "email",
                      "device_id", "account_id", "first_name", "last_name", "phone", "description",
                      "media_url")}}}}}})
    async def post_request(fmt: str, request: Request) -> Response:
        form: dict[str, Any] = {}
        try:
            if request.headers.get("content-type", "").startswith("application/json"):
                raw = await request.json()
                form = raw if isinstance(raw, dict) else {}
            else:
                form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        except HTTPException as exc:  # the body limit stopped reading (a chunked body over the limit)
            return error(fmt, exc.status_code, str(exc.detail))
        except Exception:
            return error(fmt, 400, "request body must be form-encoded (or a JSON object)")

        def go(f: str) -> Response:
            clean = {k: str(v).replace("\x00", "") for k, v in form.items() if v is not None}
            return _post(zz, f, clean, client_origin(request))
        return guarded(fmt, go)

    @app.get(paths[3], operation_id="open311_get_requests", tags=tags)
    def get_requests(fmt: str, service_request_id: str | None = None, service_code: str | None = None,
                     start_date: str | None = None, end_date: str | None = None,
                     status: str | None = None) -> Response:
        def go(f: str) -> Response:
            if service_request_id:
                cases = [c for sid in service_request_id.split(",")[:MAX_RESULTS]
                         if (c := _public_case(zz, sid.strip())) is not None]
            else:
                end = _parse_time(end_date, "end_date") or zz.clock.now()
                start = _parse_time(start_date, "start_date") or end - timedelta(days=90)
                states: list[str] = []
                if status:
                    wanted = {s.strip() for s in status.split(",")}
                    if not wanted <= {"open", "closed"}:
                        raise Open311Error(400, "status must be open, closed or both")
                    states = [s.value for s in CaseState if ("open" if s.is_open else "closed") in wanted]
                with zz.uow() as uow:
                    page, _ = uow.cases.list(CaseFilter(source="open311", states=states, reported_from=start,
                                                        reported_to=end + timedelta(microseconds=1),
                                                        limit=MAX_RESULTS))
                    ids = [c.id for c in page if c.id is not None and
                           (not service_code or c.category_code == service_code)]
                    cases = uow.cases.get_many(ids)
            return render(f, [request_view(zz, c) for c in cases], "service_requests", "request")
        return guarded(fmt, go)

    @app.get(paths[4], operation_id="open311_get_request", tags=tags)
    def get_request(service_request_id: str, fmt: str) -> Response:
        def go(f: str) -> Response:
            case = _public_case(zz, service_request_id)
            if case is None:
                raise Open311Error(404, f"service_request_id {service_request_id[:20]!r} not found")
            return render(f, [request_view(zz, case)], "service_requests", "request")
        return guarded(fmt, go)

    @app.get(paths[5], operation_id="open311_token", tags=tags)
    def token(token_id: str, fmt: str) -> Response:
        def go(f: str) -> Response:
            with zz.uow() as uow:
                found = uow.cases.existing_by_source("open311", [token_id[:128]])
            if not found:
                raise Open311Error(404, "token not found")
            case_id, _ = found[token_id[:128]]
            return render(f, [{"service_request_id": str(case_id), "token": token_id}], "service_requests",
                          "request")
        return guarded(fmt, go)


def _public_case(zz: Zhizhi, sid: str) -> Case | None:
    """A request as the public sees it: only those that came in through Open311."""
    if not sid.isdigit() or len(sid) > 18:
        return None
    with zz.uow() as uow:
        case = uow.cases.get(int(sid))
    return case if case is not None and case.source == "open311" else None


def _post(zz: Zhizhi, fmt: str, form: dict[str, str], origin: str) -> Response:
    from zhizhi.service import accounts
    from zhizhi.service.commands import ReportCase

    key = form.get("api_key", "")
    principal = accounts.principal_for_api_key(zz, key[:200], origin) if key else None
    if principal is None:
        raise Open311Error(403, "api_key missing or invalid")
    code = form.get("service_code", "")
    try:
        category = zz.catalogue.category(code)
    except DomainError:
        category = None
    if category is None or category.is_major:
        raise Open311Error(400, f"service_code {code[:32]!r} not found")
    lat, lon = form.get("lat"), form.get("long")
    address = form.get("address_string") or None
    if (lat is None) != (lon is None):
        raise Open311Error(400, "give both lat and long")
    if lat is None and not address:
        raise Open311Error(400, "a location is required: lat & long, or address_string")
    try:
        lat_f = float(lat) if lat is not None else None
        lon_f = float(lon) if lon is not None else None
    except ValueError:
        raise Open311Error(400, "lat and long must be numbers") from None
    if lat_f is not None and lon_f is not None and not (-90 <= lat_f <= 90 and -180 <= lon_f <= 180):
        raise Open311Error(400, "lat/long out of range")
    description = (form.get("description") or "")[:4000]
    extra = [f"{k[10:-1]}: {v[:100]}" for k, v in form.items() if k.startswith("attribute[") and k.endswith("]")]
    if extra:
        description = (description + "\n[属性] " + "; ".join(extra))[:4000]
    name = " ".join(p for p in (form.get("last_name"), form.get("first_name")) if p) or None
    token = uuid.uuid4().hex
    result = zz.handle(ReportCase(
        source="open311", source_id=token, title=(description or category.name_zh)[:80],
        description=description or category.name_zh, category_code=category.code, lon=lon_f, lat=lat_f,
        address=address[:500] if address else None, reporter_name=name[:100] if name else None,
        reporter_phone=(form.get("phone") or None), photos=tuple(u for u in [form.get("media_url")] if u),
        principal=principal,
    ))
    return render(fmt, [{"service_request_id": str(result.case_id), "token": token,
                         "service_notice": "已受理，可用 service_request_id 查询进度", "account_id": None}],
                  "service_requests", "request", status=201)
