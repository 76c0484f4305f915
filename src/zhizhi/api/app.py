"""The REST API (FastAPI): cases, actions, places, catalogue, health.

Routes only translate HTTP to commands and queries; rules live in the service
layer and the domain. The app is built by `create_app(zz)` from a wired
application, never at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy import text

from zhizhi import __version__
from zhizhi.adapters import audit_log
from zhizhi.adapters.repository import CaseFilter
from zhizhi.api import problems
from zhizhi.api.deps import MAX_INT, CaseId, CurrentPrincipal
from zhizhi.api.schemas import (
    CaseAction,
    CaseCreate,
    CaseCreated,
    CaseOut,
    CasePage,
    LocationOut,
    PlaceRef,
    TimelineOut,
)
from zhizhi.domain import access as acc
from zhizhi.domain.case import ACTION_ZH, Action, Case, CaseState
from zhizhi.domain.errors import NotFound, ValidationFailed
from zhizhi.domain.places import Level
from zhizhi.service import scope as scoped
from zhizhi.service.bootstrap import Zhizhi
from zhizhi.service.commands import ActOnCase, CheckOverdue, ReportCase

log = logging.getLogger(__name__)


def get_zz(request: Request) -> Zhizhi:
    """The wired application the app was built with (one per app, never a global)."""
    return request.app.state.zz  # type: ignore[no-any-return]


ZZ = Annotated[Zhizhi, Depends(get_zz)]


def create_app(zz: Zhizhi, *, background_jobs: bool = False) -> FastAPI:
    """Build the API over a wired application; `background_jobs` runs the overdue job and outbox worker."""

    @contextlib.asynccontextmanager
    async def lifespan(this: FastAPI) -> AsyncIterator[None]:
        tasks = []
        if background_jobs:
            tasks.append(asyncio.create_task(_every(zz.settings.overdue_interval_s,
                                                    lambda: zz.handle(CheckOverdue()))))
            tasks.append(asyncio.create_task(_every(zz.settings.outbox_interval_s, zz.outbox.deliver_pending)))
            if zz.sensing is not None:
                tasks.append(asyncio.create_task(_every(zz.settings.sensing_tick_s, zz.sensing.tick)))
        yield
        for t in tasks:
            t.cancel()
        live = getattr(this.state, "live", None)
        if live is not None:  # the live hub's thread reads the store: stop it before the store goes away
            live.close()

    app = FastAPI(
        title="zhizhi 整体智治",
        version=__version__,
        description="城市运行和治理中心 API: cases (案件), places (网格), catalogue (事项目录).",
        lifespan=lifespan,
    )
    app.state.zz = zz
    problems.install(app)
    _limit_body(app, zz.settings.max_body_bytes, {"/api/v1/observations": zz.settings.sensing_max_body_bytes,
                                                  "/sta/v1.1/CreateObservations": zz.settings.sensing_max_body_bytes})

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/console/")

    @app.get("/health", operation_id="health", tags=["system"])
    def health(zz: ZZ) -> dict[str, Any]:
        with zz.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        with zz.uow() as uow:
            states = uow.cases.count_by_state()
        return {"status": "ok", "version": __version__, "database": zz.engine.dialect.name,
                "cases": sum(states.values()), "cases_by_state": states}

    # ---------------------------------------------------------------- cases
    @app.post("/api/v1/cases", operation_id="report_case", tags=["cases"], status_code=201,
              response_model=CaseCreated,
              responses={200: {"description": "already reported (same source and source_id)"}})
    def report_case(body: CaseCreate, zz: ZZ, principal: CurrentPrincipal) -> Response:
        result = zz.handle(ReportCase(
            source=body.source, source_id=body.source_id, title=body.title, description=body.description,
            category_code=body.category_code, lon=body.lon, lat=body.lat, crs=body.crs, address=body.address,
            reporter_name=body.reporter_name, reporter_phone=body.reporter_phone,
            reporter_id_number=body.reporter_id_number, photos=tuple(body.photos),
            reported_at=_aware(body.reported_at), principal=principal,
        ))
        with zz.uow() as uow:
            # A repeated source id answers with the stored case only to whom may see it (or reported it).
            case = scoped.report_answer(uow, principal, result.case_id, result.created)
        out = CaseCreated(id=result.case_id, created=result.created, state=case.state.value,
                          case=case_out(zz, case, with_timeline=True, principal=principal))
        return JSONResponse(out.model_dump(mode="json"), status_code=201 if result.created else 200)

    @app.get("/api/v1/cases", operation_id="list_cases", tags=["cases"], response_model=CasePage)
    def list_cases(
        zz: ZZ,
        principal: CurrentPrincipal,
        state: Annotated[list[str] | None, Query(description="one or more states")] = None,
        level: str | None = None,
        area: Annotated[str | None, Query(description="place code at any level (subtree)")] = None,
        department: str | None = None,
        category: str | None = None,
        source: str | None = None,
        overdue: bool = False,
        needs_location: bool = False,
        reported_from: datetime | None = None,
        reported_to: datetime | None = None,
        q: Annotated[str | None, Query(max_length=100, description="text search")] = None,
        offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> CasePage:
        states = [s for s in (state or []) if s]
        bad = [s for s in states if s not in {c.value for c in CaseState}]
        if bad:
            raise ValidationFailed(f"未知状态 {bad} / unknown state", allowed=[c.value for c in CaseState])
        flt = CaseFilter(
            states=states, level=int(_parsed(Level.parse, level, "level")) if level else None, area=area,
            department=department,
            category=category, source=source, overdue_at=zz.clock.now() if overdue else None,
            reported_from=_aware(reported_from), reported_to=_aware(reported_to), text=q,
            needs_location=needs_location or None, offset=offset, limit=limit,
        )
        with zz.uow() as uow:
            cases, total = scoped.list_cases(uow, principal, flt)
        return CasePage(total=total, offset=offset, limit=limit,
                        items=[case_out(zz, c, principal=principal) for c in cases])

    @app.get("/api/v1/cases/{case_id}", operation_id="get_case", tags=["cases"], response_model=CaseOut)
    def get_case(
        case_id: CaseId, zz: ZZ, principal: CurrentPrincipal,
        unmask: Annotated[bool, Query(description="show the reporter's personal data (allowed roles; audited)")]
        = False,
    ) -> CaseOut:
        with zz.uow() as uow:
            case = scoped.get_case(uow, principal, case_id)
            if unmask:
                acc.require(principal, "unmask")
                audit_log.append(uow.session, principal, "case.unmask", f"case:{case_id}",
                                 {"fields": ["reporter_name", "reporter_phone", "reporter_id_number", "address"]},
                                 at=zz.clock.now())
                uow.session.commit()
        return case_out(zz, case, with_timeline=True, principal=principal, unmask=unmask)

    @app.post("/api/v1/cases/{case_id}/actions", operation_id="act_on_case", tags=["cases"],
              response_model=CaseOut)
    def act(case_id: CaseId, body: CaseAction, zz: ZZ, principal: CurrentPrincipal) -> CaseOut:
        # The actor is the authenticated principal (set by the service layer); `body.actor` is ignored.
        actor = acc_actor(principal)
        zz.handle(ActOnCase(
            case_id=case_id, action=body.action, actor=actor, note=body.note, department=body.department,
            level=body.level, passed=body.passed, satisfaction=body.satisfaction, photos=tuple(body.photos),
            place_code=body.place_code, category_code=body.category_code, principal=principal,
        ))
        return case_out(zz, _load(zz, case_id), with_timeline=True, principal=principal)

    # ---------------------------------------------------------------- places
    @app.get("/api/v1/places", operation_id="places_geojson", tags=["places"])
    def places(
        zz: ZZ,
        principal: CurrentPrincipal,
        level: str | None = None,
        parent: str | None = None,
        simplify_m: Annotated[float | None, Query(ge=0, le=5000)] = 50.0,
    ) -> JSONResponse:
        hierarchy = _hierarchy(zz)
        lv = _parsed(Level.parse, level, "level") if level else None
        if parent and parent not in hierarchy:
            raise NotFound(f"地点 {parent} 不存在 / place not found")
        if parent and lv is None:  # drill-down: the parent's direct children
            parent_level = hierarchy.get(parent).level
            lv = Level(parent_level + 1) if parent_level < Level.GRID else parent_level
        fc = hierarchy.to_geojson(level=lv, parent=parent, simplify_m=simplify_m or None)
        return JSONResponse(fc, media_type="application/geo+json")

    @app.get("/api/v1/places/{code}", operation_id="get_place", tags=["places"])
    def place(code: str, zz: ZZ, principal: CurrentPrincipal) -> dict[str, Any]:
        hierarchy = _hierarchy(zz)
        if code not in hierarchy:
            raise NotFound(f"地点 {code} 不存在 / place not found")
        p = hierarchy.get(code)
        return {
            "code": p.code, "name": p.name, "level": p.level.name.lower(), "level_label": p.level.label_zh,
            "parent_code": p.parent_code, "approximate": p.approximate, "population": p.population,
            "ancestors": [{"code": a.code, "name": a.name, "level": a.level.name.lower()}
                          for a in hierarchy.ancestors(code)],
            "children": [{"code": c.code, "name": c.name, "approximate": c.approximate}
                         for c in hierarchy.children(code)],
        }

    @app.get("/api/v1/locate", operation_id="locate_point", tags=["places"])
    def locate(zz: ZZ, principal: CurrentPrincipal, lon: Annotated[float, Query(ge=-180, le=180)],
               lat: Annotated[float, Query(ge=-90, le=90)], crs: str = "wgs84") -> dict[str, Any]:
        loc = _parsed(lambda _: zz.gazetteer.locate_point(lon, lat, crs), crs, "crs")
        return _location_out(zz, loc).model_dump()

    # ---------------------------------------------------------------- catalogue
    @app.get("/api/v1/catalogue/categories", operation_id="list_categories", tags=["catalogue"])
    def categories(zz: ZZ, principal: CurrentPrincipal, kind: str | None = None) -> list[dict[str, Any]]:
        return [{"code": c.code, "name_zh": c.name_zh, "name_en": c.name_en, "kind": c.kind.value,
                 "parent_code": c.parent_code, "keywords": list(c.keywords),
                 "severity": c.severity.name.lower() if c.severity is not None else None}
                for c in _parsed(zz.catalogue.categories, kind, "kind")]

    @app.get("/api/v1/catalogue/departments", operation_id="list_departments", tags=["catalogue"])
    def departments(zz: ZZ, principal: CurrentPrincipal) -> list[dict[str, Any]]:
        return [{"code": d.code, "name_zh": d.name_zh, "name_en": d.name_en,
                 "levels": sorted(lv.name.lower() for lv in d.levels)} for d in zz.catalogue.departments()]

    @app.get("/api/v1/catalogue/rules", operation_id="list_rules", tags=["catalogue"])
    def rules(zz: ZZ, principal: CurrentPrincipal) -> list[dict[str, Any]]:
        return [{"category": r.category_code, "area": r.area, "department": r.department_code,
                 "level": r.level.name.lower(), "note": r.note} for r in zz.catalogue.rules]

    @app.get("/api/v1/catalogue/actions", operation_id="list_actions", tags=["catalogue"])
    def actions(principal: CurrentPrincipal) -> list[dict[str, str]]:
        return [{"code": a.value, "label": ACTION_ZH[a]} for a in Action]

    # Each capability installs its own routes (one module each; see their docstrings).
    from zhizhi.api import access, console, dispatch, indicators, open311, sensing, sensorthings

    for capability in (access, dispatch, sensing, sensorthings, open311, indicators, console):
        capability.install(app, zz)
    return app


# ------------------------------------------------------------------------------------------
def case_out(zz: Zhizhi, c: Case, with_timeline: bool = False, principal: acc.Principal | None = None,
             unmask: bool = False) -> CaseOut:
    """The public view of a case: names resolved, personal data masked, allowed actions listed.

    With a principal, `allowed_actions` are those its role may do now; `unmask` shows the
    reporter's name, phone, ID number and exact address (the caller has checked the right and
    audited it).
    """
    assert c.id is not None
    category = _safe(lambda: zz.catalogue.category(c.category_code)) if c.category_code else None
    department = _safe(lambda: zz.catalogue.department(c.department_code)) if c.department_code else None
    timeline = None
    if with_timeline:
        timeline = [TimelineOut(
            seq=e.seq, at=e.at, actor=e.actor, role=e.role, action=e.action,
            action_label=_action_label(e.action), from_state=e.from_state.value if e.from_state else None,
            to_state=e.to_state.value, note=e.note, attachments=list(e.attachments), data=e.data,
        ) for e in c.timeline]
    return CaseOut(
        id=c.id, source=c.source, source_id=c.source_id, title=c.title, description=c.description,
        state=c.state.value, state_label=c.state.label_zh, category_code=c.category_code,
        category_name=category.name_zh if category else None, department_code=c.department_code,
        department_name=department.name_zh if department else None,
        level=c.level.name.lower() if c.level is not None else None,
        location=_location_out(zz, c.location),
        address=c.address if unmask else acc.mask_address(c.address),
        reporter_phone=c.reporter_phone if unmask else mask_phone(c.reporter_phone),
        reporter_name=c.reporter_name if unmask else acc.mask_name(c.reporter_name),
        reporter_id_number=c.reporter_id_number if unmask else acc.mask_id_number(c.reporter_id_number),
        photos=c.photos, reported_at=c.reported_at, due_at=c.due_at, overdue=c.is_overdue(zz.clock.now()),
        closed_at=c.closed_at, satisfaction=c.satisfaction,
        allowed_actions=([a.value for a in c.allowed_actions()] if principal is None
                         else scoped.allowed_actions(principal, c)), timeline=timeline,
    )


def mask_phone(phone: str | None) -> str | None:
    """138****1234: personal contact is never shown whole unless a permitted role asks (audited)."""
    return acc.mask_phone(phone)


def acc_actor(principal: acc.Principal) -> Any:
    """The timeline actor of a principal (the service layer sets the same from the command's principal)."""
    from zhizhi.domain.case import Actor

    return Actor(principal.display_name or principal.username, principal.role)


def _location_out(zz: Zhizhi, loc: Any) -> LocationOut:
    def ref(code: str | None) -> PlaceRef | None:
        if not code:
            return None
        p = zz.gazetteer.place(code)
        return PlaceRef(code=code, name=p.name if p else code, approximate=bool(p and p.approximate))

    return LocationOut(city=ref(loc.city), district=ref(loc.district), street=ref(loc.street),
                       community=ref(loc.community), grid=ref(loc.grid), lon=loc.lon, lat=loc.lat,
                       method=loc.method, confidence=loc.confidence)


def _action_label(action: str) -> str:
    try:
        return ACTION_ZH[Action(action)]
    except ValueError:
        return {"report": "上报", "overdue": "超期"}.get(action, action)


def _parsed(parse: Callable[[Any], Any], value: Any, name: str) -> Any:
    """A query value parsed by the domain; a value it refuses is a 422, not a 500."""
    try:
        return parse(value)
    except ValueError as exc:
        raise ValidationFailed(str(exc), field=name) from None


def _load(zz: Zhizhi, case_id: int) -> Case:
    with zz.uow() as uow:
        case = uow.cases.get(case_id)
    if case is None:
        raise NotFound(f"案件 {case_id} 不存在 / case {case_id} not found")
    return case


def _hierarchy(zz: Zhizhi) -> Any:
    hierarchy = getattr(zz.gazetteer, "hierarchy", None)
    if hierarchy is None:
        raise NotFound("没有加载地点数据 / no places loaded")
    return hierarchy


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    from zoneinfo import ZoneInfo

    return value.replace(tzinfo=ZoneInfo("Asia/Shanghai"))  # naive times are Chinese local time


def _safe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:
        return None


def _limit_body(app: FastAPI, default_max_bytes: int, per_path: dict[str, int] | None = None) -> None:
    """Refuse bodies over the limit (413 problem+json); bulk paths get their own limit."""
    app.add_middleware(_BodyLimit, default_max_bytes=default_max_bytes, per_path=dict(per_path or {}))


class _BodyLimit:
    """Body size limit as plain ASGI middleware, so it sees the body as it arrives.

    A declared Content-Length over the limit is refused before anything is read. A body sent
    without one (chunked) is counted while the route reads it, and reading stops with a 413
    as soon as it passes the limit: otherwise a client could stream an unbounded body into
    memory past a check that only looks at the header.
    """

    def __init__(self, app: Any, default_max_bytes: int, per_path: dict[str, int]) -> None:
        self.app = app
        self.default_max_bytes = default_max_bytes
        self.per_path = per_path

    async def __call__(self, scope: Any, receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        max_bytes = self.per_path.get(path, self.default_max_bytes)
        detail = f"请求体超过 {max_bytes} 字节 / body larger than {max_bytes} bytes"
        length = next((v for k, v in scope.get("headers", ()) if k == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > max_bytes:
            await problems.problem(413, "请求体过大 / Payload too large", detail, "http-413", path)(
                scope, receive, send)
            return
        received = 0

        async def counted() -> Any:
            nonlocal received
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    # FastAPI passes its own HTTPException through body parsing; problems.py renders it.
                    raise HTTPException(413, detail=detail)
            return message

        await self.app(scope, counted, send)


async def _every(seconds: float, job: Callable[[], Any]) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await asyncio.to_thread(job)
        except Exception:
            log.exception("background job failed")
