"""Errors as RFC 9457 problem details (application/problem+json), with messages a person understands.

Every failure the API can meet is mapped here, so no request ends in a bare 500
with a stack trace: domain errors keep their own status, malformed JSON is a 400,
schema violations a 422 listing each field, and anything unexpected a 500
problem that says so without leaking internals.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from zhizhi.domain.access import Forbidden, Throttled, Unauthenticated
from zhizhi.domain.errors import DomainError, IllegalAction, NotFound, OutsideJurisdiction, ValidationFailed

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
TYPE_BASE = "https://zhizhi.example/problems/"

_STATUS = {
    NotFound: (404, "找不到 / Not found"),
    IllegalAction: (409, "当前状态不允许此操作 / Action not allowed now"),
    OutsideJurisdiction: (422, "不在辖区内 / Outside the jurisdiction"),
    ValidationFailed: (422, "输入有误 / Invalid input"),
    Unauthenticated: (401, "未登录或凭据无效 / Not authenticated"),
    Forbidden: (403, "无权操作 / Forbidden"),
    Throttled: (429, "请求过于频繁 / Too many requests"),
}


def problem(status: int, title: str, detail: str, type_: str, instance: str | None = None,
            **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": TYPE_BASE + type_, "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def install(app: FastAPI) -> None:
    """Register the handlers on an app."""

    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        status, title = next(((s, t) for cls, (s, t) in _STATUS.items() if isinstance(exc, cls)),
                             (400, "请求无法处理 / Request refused"))
        details = {k: jsonable(v) for k, v in exc.details.items()}
        resp = problem(status, title, exc.message, exc.code, request.url.path, **details)
        if status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="zhizhi"'
        if "retry_after" in exc.details:
            resp.headers["Retry-After"] = str(exc.details["retry_after"])
        return resp

    @app.exception_handler(StaleDataError)
    async def _stale(request: Request, exc: StaleDataError) -> JSONResponse:
        return problem(409, "案件已被他人修改 / Changed by someone else",
                       "案件在您操作时已被他人修改，请刷新后重试 / the case changed meanwhile; reload and retry",
                       "concurrent-change", request.url.path)

    @app.exception_handler(DataError)
    async def _data(request: Request, exc: DataError) -> JSONResponse:
        # The database refused a value the schema let through (e.g. a NUL character on PostgreSQL).
        return problem(422, "输入有误 / Invalid input",
                       "输入包含数据库无法保存的字符或数值 / the input holds characters or numbers that cannot be "
                       "stored (e.g. NUL)", "invalid-data", request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return problem(400, "JSON 格式错误 / Malformed JSON",
                           "请求体不是合法的 JSON / the request body is not valid JSON", "malformed-json",
                           request.url.path)
        fields = [{"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"),
                   "message": e.get("msg", ""), "type": e.get("type", "")} for e in errors]
        summary = "; ".join(f"{f['field'] or 'body'}: {f['message']}" for f in fields[:5])
        return problem(422, "输入有误 / Invalid input", summary, "validation-failed", request.url.path,
                       errors=fields)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {404: "找不到 / Not found", 405: "方法不允许 / Method not allowed",
                  413: "请求体过大 / Payload too large", 415: "不支持的媒体类型 / Unsupported media type"}
        return problem(exc.status_code, titles.get(exc.status_code, "请求错误 / Request error"),
                       str(exc.detail), f"http-{exc.status_code}", request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return problem(500, "服务器内部错误 / Internal error",
                       "处理请求时发生意外错误，已记录 / an unexpected error was logged", "internal",
                       request.url.path)


def jsonable(value: Any) -> Any:
    """Plain JSON values from domain data (datetimes in ISO 8601, anything unknown as text)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value)
