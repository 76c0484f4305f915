"""Accounts, sessions, API keys, the audit log, person and enterprise records.

Login is the only route here without credentials; it is throttled per username
and per client address. Administration needs the `manage_users` right, the
audit log `read_audit`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from zhizhi.adapters import audit_log
from zhizhi.api.deps import SESSION_COOKIE, CaseId, CurrentPrincipal, client_origin
from zhizhi.domain.access import ROLE_ZH, require
from zhizhi.service import accounts, records

if TYPE_CHECKING:
    from zhizhi.service.bootstrap import Zhizhi


RecordId = Annotated[int, Path(ge=1, le=2**63 - 1)]


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(..., min_length=1, max_length=64)
    password: str = Field(..., min_length=1, max_length=200)


class UserOut(BaseModel):
    id: int | None
    username: str
    display_name: str
    roles: list[str]
    places: list[str]
    departments: list[str]


class LoginOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_at: datetime
    user: UserOut


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(..., min_length=1, max_length=64)
    password: str | None = Field(None, min_length=1, max_length=200)
    display_name: str = Field("", max_length=100)
    roles: list[str] = Field(..., min_length=1, max_length=7)
    places: list[str] = Field(default_factory=list, max_length=200)
    departments: list[str] = Field(default_factory=list, max_length=200)


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(..., min_length=1, max_length=64)
    name: str = Field(..., min_length=1, max_length=100)


class RecordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = Field(..., pattern="^(person|enterprise)$")
    external_id: str = Field(..., min_length=1, max_length=128)
    name: str = Field(..., min_length=1, max_length=200)
    community_code: str | None = Field(None, max_length=32)
    grid_code: str | None = Field(None, max_length=32)
    tags: list[str] = Field(default_factory=list, max_length=20)
    fields: dict[str, str | int | float | bool | None] = Field(default_factory=dict, max_length=50)


class RecordEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=200)
    tags: list[str] | None = Field(None, max_length=20)
    fields: dict[str, str | int | float | bool | None] = Field(default_factory=dict, max_length=50)


class LinkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field("", max_length=200)


class AuditOut(BaseModel):
    id: int
    at: datetime
    user_id: int | None
    username: str
    role: str
    scope: dict[str, Any]
    action: str
    target: str
    detail: dict[str, Any]
    origin: str
    hash: str


def install(app: FastAPI, zz: Zhizhi) -> None:
    """Add this capability's routes to the app."""
    throttle = accounts.LoginThrottle(zz.settings.login_max_failures, zz.settings.login_window_s)
    app.state.login_throttle = throttle

    @app.post("/api/v1/auth/login", operation_id="login", tags=["auth"], response_model=LoginOut,
              responses={401: {"description": "wrong credentials"}, 429: {"description": "throttled"}})
    def login(body: LoginIn, request: Request, response: Response) -> LoginOut:
        result = accounts.login(zz, body.username, body.password, client_origin(request), throttle)
        u = result.user
        response.set_cookie(SESSION_COOKIE, result.token, httponly=True, samesite="strict", path="/",
                            secure=request.url.scheme == "https",
                            max_age=int(zz.settings.session_ttl_hours * 3600))
        return LoginOut(access_token=result.token, expires_at=result.expires_at,
                        user=UserOut(id=u.id, username=u.username, display_name=u.display_name, roles=u.roles,
                                     places=u.places, departments=u.departments))

    @app.post("/api/v1/auth/logout", operation_id="logout", tags=["auth"], status_code=204)
    def logout(principal: CurrentPrincipal, request: Request) -> Response:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            accounts.logout(zz, header[7:].strip())
        if request.cookies.get(SESSION_COOKIE):
            accounts.logout(zz, request.cookies[SESSION_COOKIE])
        out = Response(status_code=204)
        out.delete_cookie(SESSION_COOKIE, path="/")
        return out

    @app.get("/api/v1/auth/me", operation_id="me", tags=["auth"], response_model=UserOut)
    def me(principal: CurrentPrincipal) -> UserOut:
        return UserOut(id=principal.user_id, username=principal.username, display_name=principal.display_name,
                       roles=sorted(principal.roles), places=list(principal.places),
                       departments=list(principal.departments))

    @app.get("/api/v1/auth/roles", operation_id="list_roles", tags=["auth"])
    def roles(principal: CurrentPrincipal) -> list[dict[str, str]]:
        return [{"code": code, "label": label} for code, label in ROLE_ZH.items()]

    # ---------------------------------------------------------------- administration
    @app.get("/api/v1/users", operation_id="list_users", tags=["auth"], response_model=list[UserOut])
    def list_users(principal: CurrentPrincipal) -> list[UserOut]:
        require(principal, "manage_users")
        return [UserOut(**{k: v for k, v in u.as_dict().items() if k != "disabled"})
                for u in accounts.list_users(zz)]

    @app.post("/api/v1/users", operation_id="create_user", tags=["auth"], status_code=201,
              response_model=UserOut)
    def create_user(body: UserIn, principal: CurrentPrincipal) -> UserOut:
        require(principal, "manage_users")
        uid = accounts.create_user(zz, body.username, body.password, tuple(body.roles), tuple(body.places),
                                   tuple(body.departments), body.display_name, by=principal)
        u = accounts.get_user(zz, uid)
        return UserOut(**{k: v for k, v in u.as_dict().items() if k != "disabled"})

    @app.post("/api/v1/users/{username}/disable", operation_id="disable_user", tags=["auth"], status_code=204)
    def disable_user(username: str, principal: CurrentPrincipal) -> Response:
        require(principal, "manage_users")
        accounts.set_disabled(zz, username, True, by=principal)
        return Response(status_code=204)

    @app.post("/api/v1/api-keys", operation_id="create_api_key", tags=["auth"], status_code=201)
    def create_key(body: ApiKeyIn, principal: CurrentPrincipal) -> dict[str, str]:
        require(principal, "manage_users")
        return {"api_key": accounts.create_api_key(zz, body.username, body.name, by=principal),
                "note": "shown once; store it safely / 仅显示一次"}

    # ---------------------------------------------------------------- audit
    @app.get("/api/v1/audit", operation_id="query_audit", tags=["audit"], response_model=list[AuditOut])
    def audit(
        principal: CurrentPrincipal,
        username: Annotated[str | None, Query(max_length=64)] = None,
        action: Annotated[str | None, Query(max_length=64)] = None,
        target: Annotated[str | None, Query(max_length=128)] = None,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[AuditOut]:
        require(principal, "read_audit")
        with zz.uow() as uow:
            rows = list(audit_log.query(uow.session, username=username, action=action, target=target,
                                        since=since, until=until, offset=offset, limit=limit))
            return [AuditOut(id=r.id, at=r.at, user_id=r.user_id, username=r.username, role=r.role,
                             scope=r.scope, action=r.action, target=r.target, detail=r.detail, origin=r.origin,
                             hash=r.hash) for r in rows]

    @app.get("/api/v1/audit/verify", operation_id="verify_audit", tags=["audit"])
    def audit_verify(principal: CurrentPrincipal) -> dict[str, Any]:
        require(principal, "read_audit")
        with zz.uow() as uow:
            v = audit_log.verify(uow.session)
        return {"ok": v.ok, "rows": v.rows, "head": v.head, "first_bad_id": v.first_bad_id, "reason": v.reason}

    # ---------------------------------------------------------------- records (一人一档 / 一企一档)
    @app.get("/api/v1/records", operation_id="list_records", tags=["records"])
    def list_records(
        principal: CurrentPrincipal,
        kind: Annotated[str | None, Query(pattern="^(person|enterprise)$")] = None,
        area: Annotated[str | None, Query(max_length=32, description="place code: its subtree")] = None,
        tag: Annotated[str | None, Query(max_length=50, description="e.g. 独居老人")] = None,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[dict[str, Any]]:
        return records.search(zz, principal, kind, area, tag, offset, limit)

    @app.post("/api/v1/records", operation_id="create_record", tags=["records"], status_code=201)
    def create_record(body: RecordIn, principal: CurrentPrincipal) -> dict[str, Any]:
        rid, _ = records.upsert(zz, principal, body.kind, body.external_id, body.name, body.community_code,
                                body.grid_code, body.tags, dict(body.fields), source=f"api:{principal.username}")
        return records.get(zz, principal, rid)

    @app.get("/api/v1/records/{record_id}", operation_id="get_record", tags=["records"])
    def get_record(record_id: RecordId, principal: CurrentPrincipal,
                   unmask: Annotated[bool, Query(description="show personal data (allowed roles; audited)")]
                   = False) -> dict[str, Any]:
        return records.get(zz, principal, record_id, unmask)

    @app.patch("/api/v1/records/{record_id}", operation_id="edit_record", tags=["records"])
    def edit_record(record_id: RecordId, body: RecordEdit, principal: CurrentPrincipal) -> dict[str, Any]:
        return records.edit(zz, principal, record_id, dict(body.fields), body.tags, body.name,
                            source=f"api:{principal.username}")

    @app.post("/api/v1/cases/{case_id}/records/{record_id}", operation_id="link_case_record",
              tags=["records"], status_code=204)
    def link(case_id: CaseId, record_id: RecordId, principal: CurrentPrincipal,
             body: LinkIn | None = None) -> Response:
        records.link_case(zz, principal, case_id, record_id, body.note if body else "")
        return Response(status_code=204)

    @app.get("/api/v1/cases/{case_id}/records", operation_id="case_records", tags=["records"])
    def case_records(case_id: CaseId, principal: CurrentPrincipal) -> list[dict[str, Any]]:
        return records.case_records(zz, principal, case_id)
