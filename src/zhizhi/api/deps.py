"""Shared FastAPI dependencies: who is calling (`CurrentPrincipal`).

Every route either depends on `CurrentPrincipal` (directly or through another
dependency) or is listed in `PUBLIC_PATHS`; `tests/test_access_routes.py` walks
`app.routes` and fails for a route that is neither, so a new route cannot skip
authentication by accident. A request authenticates with `Authorization: Bearer
<token>` (from `POST /api/v1/auth/login`) or `X-API-Key: <key>`; anything else on a
non-public route is 401 problem+json. Clients that only speak HTTP Basic (the SensorThings clients, e.g. FROST's
`frost_sta_client`) send the account's username and one of its API keys as the password; passwords are never
taken over Basic (no argon2 per request, and a key can be revoked alone). A browser's reads (EventSource
included) may rely on the HttpOnly `zhizhi_session` cookie that login sets; writes never do.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Depends, Path, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from zhizhi.domain.access import Principal, Unauthenticated

#: The login also sets this HttpOnly cookie; it authenticates GET/HEAD requests only.
SESSION_COOKIE = "zhizhi_session"

#: Routes anyone may call. Capabilities add theirs with `declare_public(path)` (exact route paths).
PUBLIC_PATHS: set[str] = {"/", "/health", "/api/v1/auth/login"}

_bearer = HTTPBearer(auto_error=False, description="token from POST /api/v1/auth/login")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="an integration's API key")


#: The largest id any table holds (a signed 64-bit integer); bigger ids answer 422, never a database error.
MAX_INT = 2**63 - 1
#: A case id path parameter.
CaseId = Annotated[int, Path(ge=1, le=MAX_INT)]


def declare_public(*paths: str) -> None:
    """Mark route paths as callable without credentials (say why where you call it)."""
    PUBLIC_PATHS.update(paths)


def client_origin(request: Request) -> str:
    return request.client.host if request.client else ""


def current_principal(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
    api_key: Annotated[str | None, Security(_api_key)] = None,
) -> Principal:
    """The authenticated caller, or 401."""
    from zhizhi.service import accounts

    zz = request.app.state.zz
    origin = client_origin(request)
    principal = None
    cookie = request.cookies.get(SESSION_COOKIE)
    if bearer is not None and bearer.credentials:
        principal = accounts.principal_for_token(zz, bearer.credentials[:200], origin)
    elif api_key:
        principal = accounts.principal_for_api_key(zz, api_key[:200], origin)
    elif cookie and request.method in ("GET", "HEAD"):
        # The login cookie (HttpOnly, SameSite=Strict) serves reads only, e.g. the console's EventSource,
        # which cannot send headers; a change always needs the Authorization header (no CSRF by cookie).
        principal = accounts.principal_for_token(zz, cookie[:200], origin)
    elif (basic := _basic_credentials(request)) is not None:
        principal = accounts.principal_for_api_key(zz, basic[1][:200], origin)
        if principal is not None and principal.username != basic[0]:
            principal = None  # a key presented under another account's name
    if principal is None:
        raise Unauthenticated("请先登录或提供有效的 API key / log in or send a valid API key")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    """(username, API key) from `Authorization: Basic …`, or None when absent or malformed."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not value or len(value) > 600:
        return None
    try:
        username, sep, secret = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (username, secret) if sep and secret else None
