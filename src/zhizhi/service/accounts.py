"""Accounts, login tokens and API keys: who may call the platform, and as which principal.

Passwords are stored as argon2id hashes and must be strong (no default, no
common password, not the username). Tokens and API keys are 256-bit random
strings given once to the caller; only their SHA-256 is stored, so a leaked
database does not let anyone in. Every account change is audited.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update

from zhizhi.adapters import audit_log
from zhizhi.adapters.orm_access import ApiKeyRow, SessionRow, UserRow
from zhizhi.domain.access import ROLES, Principal, Throttled, Unauthenticated
from zhizhi.domain.errors import NotFound, ValidationFailed

if TYPE_CHECKING:
    from zhizhi.service.bootstrap import Zhizhi

_hasher = PasswordHasher()
# Verifying against this keeps a wrong username as slow as a wrong password (no user enumeration by timing).
_DUMMY_HASH = _hasher.hash("not-a-password-" + secrets.token_hex(8))

#: Refused whatever their length: defaults, keyboard walks, the product's own name.
COMMON_PASSWORDS = frozenset({
    "password", "password1", "password123", "123456", "12345678", "123456789", "1234567890", "qwerty",
    "qwertyuiop", "admin", "admin123", "admin@123", "administrator", "root", "changeme", "letmein",
    "welcome", "iloveyou", "abc123", "111111", "000000", "zhizhi", "zhizhi123", "passw0rd", "p@ssw0rd",
    "a123456", "woaini1314", "1q2w3e4r", "1qaz2wsx", "qwe123", "admin12345", "password!", "default",
})
MIN_PASSWORD = 10


@dataclass(frozen=True)
class UserInfo:
    id: int
    username: str
    display_name: str
    roles: list[str]
    places: list[str]
    departments: list[str]
    disabled: bool

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "username": self.username, "display_name": self.display_name,
                "roles": self.roles, "places": self.places, "departments": self.departments,
                "disabled": self.disabled}


def _info(row: UserRow) -> UserInfo:
    return UserInfo(row.id, row.username, row.display_name, list(row.roles), list(row.places),
                    list(row.departments), bool(row.disabled))


def principal_of(row: UserRow, origin: str = "", via: str = "") -> Principal:
    return Principal(user_id=row.id, username=row.username, roles=frozenset(row.roles),
                     places=tuple(row.places), departments=tuple(row.departments),
                     display_name=row.display_name, origin=origin, via=via)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------
# Passwords
# --------------------------------------------------------------------------------------------
def check_password_strength(password: str, username: str = "") -> None:
    """Refuse weak or default passwords with a reason a person can act on."""
    low = password.lower()
    if len(password) < MIN_PASSWORD:
        raise ValidationFailed(f"密码至少 {MIN_PASSWORD} 个字符 / password needs at least {MIN_PASSWORD} characters",
                               field="password")
    if low in COMMON_PASSWORDS or low.rstrip("!@#.0123456789") in COMMON_PASSWORDS:
        raise ValidationFailed("密码过于常见或为默认密码 / password is a common or default one", field="password")
    if username and username.lower() in low:
        raise ValidationFailed("密码不能包含用户名 / password must not contain the username", field="password")
    if len(set(password)) < 5:
        raise ValidationFailed("密码重复字符过多 / password has too few different characters", field="password")
    classes = sum(any(f(c) for c in password) for f in (str.islower, str.isupper, str.isdigit,
                                                         lambda c: not c.isalnum()))
    if classes < 2 and len(password) < 16:
        raise ValidationFailed("密码需混合字母、数字或符号（或不少于 16 个字符）/ mix letters, digits or symbols "
                               "(or use 16+ characters)", field="password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


# --------------------------------------------------------------------------------------------
# Users
# --------------------------------------------------------------------------------------------
def _validate_scope(zz: Zhizhi, roles: tuple[str, ...], places: tuple[str, ...],
                    departments: tuple[str, ...]) -> None:
    unknown = [r for r in roles if r not in ROLES]
    if not roles or unknown:
        raise ValidationFailed(f"未知角色 {unknown} / unknown role", allowed=list(ROLES), field="roles")
    for code in places:
        if zz.gazetteer.place(code) is None:
            raise ValidationFailed(f"未知地点 {code!r} / unknown place", field="places")
    for code in departments:
        try:
            zz.catalogue.department(code)
        except Exception:
            raise ValidationFailed(f"未知部门 {code!r} / unknown department", field="departments") from None
    if "handler" in roles and not departments:
        raise ValidationFailed("部门处置人员需要指定部门 / a handler needs a department", field="departments")
    if {"grid_worker"} & set(roles) and not places:
        raise ValidationFailed("网格员需要指定网格 / a grid worker needs places", field="places")
    if "integrator" in roles and not places and not departments:
        raise ValidationFailed("系统对接账号需要指定地点或部门 / an integrator needs places or departments",
                               field="departments")


def create_user(zz: Zhizhi, username: str, password: str | None, roles: tuple[str, ...] | list[str] = (),
                places: tuple[str, ...] | list[str] = (), departments: tuple[str, ...] | list[str] = (),
                display_name: str = "", by: Principal | None = None) -> int:
    """Create an account and return its id. `password=None` makes an account usable only by API key."""
    username = username.strip()
    if not username or len(username) > 64 or any(c.isspace() for c in username):
        raise ValidationFailed("用户名为 1–64 个非空白字符 / username: 1–64 non-space characters", field="username")
    roles, places, departments = tuple(roles), tuple(places), tuple(departments)
    _validate_scope(zz, roles, places, departments)
    if password is not None:
        check_password_strength(password, username)
    now = zz.clock.now()
    with zz.uow() as uow:
        if uow.session.scalar(select(UserRow.id).where(UserRow.username == username)) is not None:
            raise ValidationFailed(f"用户名 {username} 已存在 / username taken", field="username")
        row = UserRow(username=username, display_name=display_name or username,
                      password_hash=hash_password(password) if password is not None else None,
                      roles=list(roles), places=list(places), departments=list(departments), disabled=False,
                      created_at=now, updated_at=now)
        uow.session.add(row)
        uow.session.flush()
        audit_log.append(uow.session, by or _cli(), "user.create", f"user:{row.id}",
                         {"username": username, "roles": list(roles), "places": list(places),
                          "departments": list(departments)}, at=now)
        uow.session.commit()
        return row.id


def _cli() -> Principal:
    return Principal(user_id=None, username="cli", roles=frozenset({"admin"}), display_name="命令行", via="cli")


def list_users(zz: Zhizhi) -> list[UserInfo]:
    with zz.uow() as uow:
        return [_info(r) for r in uow.session.scalars(select(UserRow).order_by(UserRow.id))]


def get_user(zz: Zhizhi, user_id: int) -> UserInfo:
    with zz.uow() as uow:
        row = uow.session.get(UserRow, user_id)
        if row is None:
            raise NotFound(f"用户 {user_id} 不存在 / user not found")
        return _info(row)


def set_disabled(zz: Zhizhi, username: str, disabled: bool = True, by: Principal | None = None) -> None:
    """Disable (or enable) an account; a disabled account's tokens and keys stop working at once."""
    now = zz.clock.now()
    with zz.uow() as uow:
        row = uow.session.scalar(select(UserRow).where(UserRow.username == username))
        if row is None:
            raise NotFound(f"用户 {username} 不存在 / user not found")
        row.disabled = disabled
        row.updated_at = now
        if disabled:
            uow.session.execute(update(SessionRow).where(SessionRow.user_id == row.id,
                                                         SessionRow.revoked_at.is_(None)).values(revoked_at=now))
        audit_log.append(uow.session, by or _cli(), "user.disable" if disabled else "user.enable",
                         f"user:{row.id}", {"username": username}, at=now)
        uow.session.commit()


def set_password(zz: Zhizhi, username: str, password: str, by: Principal | None = None) -> None:
    check_password_strength(password, username)
    now = zz.clock.now()
    with zz.uow() as uow:
        row = uow.session.scalar(select(UserRow).where(UserRow.username == username))
        if row is None:
            raise NotFound(f"用户 {username} 不存在 / user not found")
        row.password_hash = hash_password(password)
        row.updated_at = now
        audit_log.append(uow.session, by or _cli(), "user.password", f"user:{row.id}", {}, at=now)
        uow.session.commit()


# --------------------------------------------------------------------------------------------
# Login throttling: counted per username and per client address, in this process
# --------------------------------------------------------------------------------------------
class LoginThrottle:
    """At most `max_failures` failed logins per key in `window_s`; then 429 until the oldest ages out."""

    def __init__(self, max_failures: int = 5, window_s: float = 300.0) -> None:
        self.max_failures, self.window_s = max_failures, window_s
        self._fails: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, *keys: str) -> float:
        now = time.monotonic()
        worst = 0.0
        with self._lock:
            for key in keys:
                q = self._fails.get(key)
                if not q:
                    continue
                while q and now - q[0] > self.window_s:
                    q.popleft()
                if len(q) >= self.max_failures:
                    worst = max(worst, self.window_s - (now - q[0]))
        return worst

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._fails.setdefault(key, deque()).append(now)

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._fails.pop(key, None)


# --------------------------------------------------------------------------------------------
# Tokens and API keys
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Login:
    token: str
    expires_at: datetime
    user: UserInfo


def login(zz: Zhizhi, username: str, password: str, origin: str = "",
          throttle: LoginThrottle | None = None) -> Login:
    """Check the password and open a session; failures are counted and audited, never explained."""
    keys = (f"u:{username.lower()}", f"ip:{origin}")
    if throttle is not None:
        wait = throttle.retry_after(*keys)
        if wait > 0:
            raise Throttled("登录失败次数过多，请稍后再试 / too many failed logins; try later",
                            retry_after=int(wait) + 1)
    now = zz.clock.now()
    with zz.uow() as uow:
        row = uow.session.scalar(select(UserRow).where(UserRow.username == username))
        ok = False
        try:
            ok = _hasher.verify(row.password_hash if row is not None and row.password_hash else _DUMMY_HASH,
                                password) and row is not None and bool(row.password_hash) and not row.disabled
        except (VerificationError, InvalidHashError):
            ok = False
        who = Principal(user_id=row.id if row else None, username=username[:64], origin=origin, via="login")
        if not ok or row is None:
            audit_log.append(uow.session, who, "auth.login_failed", f"user:{username[:50]}", {}, at=now)
            uow.session.commit()
            if throttle is not None:
                throttle.failed(*keys)
            raise Unauthenticated("用户名或密码错误 / wrong username or password")
        if _hasher.check_needs_rehash(row.password_hash or ""):
            row.password_hash = hash_password(password)
        token = secrets.token_urlsafe(32)
        expires = now + timedelta(hours=zz.settings.session_ttl_hours)
        uow.session.add(SessionRow(token_hash=_digest(token), user_id=row.id, created_at=now, expires_at=expires,
                                   origin=origin[:64]))
        audit_log.append(uow.session, principal_of(row, origin, "login"), "auth.login", f"user:{row.id}", {},
                         at=now)
        uow.session.commit()
        if throttle is not None:
            throttle.succeeded(keys[0])
        return Login(token, expires, _info(row))


def logout(zz: Zhizhi, token: str) -> None:
    with zz.uow() as uow:
        uow.session.execute(update(SessionRow).where(SessionRow.token_hash == _digest(token))
                            .values(revoked_at=zz.clock.now()))
        uow.session.commit()


def principal_for_token(zz: Zhizhi, token: str, origin: str = "") -> Principal | None:
    now = zz.clock.now()
    with zz.uow() as uow:
        found = uow.session.execute(
            select(UserRow, SessionRow).join(SessionRow, SessionRow.user_id == UserRow.id)
            .where(SessionRow.token_hash == _digest(token))
        ).first()
        if found is None:
            return None
        user, sess = found
        if sess.revoked_at is not None or sess.expires_at <= now or user.disabled:
            return None
        return principal_of(user, origin, "token")


def create_api_key(zz: Zhizhi, username: str, name: str, by: Principal | None = None) -> str:
    """A new key for an account (an integration's service account); shown once, stored as a digest."""
    key = "zz_" + secrets.token_urlsafe(32)
    now = zz.clock.now()
    with zz.uow() as uow:
        row = uow.session.scalar(select(UserRow).where(UserRow.username == username))
        if row is None:
            raise NotFound(f"用户 {username} 不存在 / user not found")
        kr = ApiKeyRow(key_hash=_digest(key), prefix=key[:10], name=name[:100] or "key", user_id=row.id,
                       created_at=now)
        uow.session.add(kr)
        uow.session.flush()
        audit_log.append(uow.session, by or _cli(), "apikey.create", f"user:{row.id}",
                         {"key_id": kr.id, "prefix": kr.prefix, "name": kr.name}, at=now)
        uow.session.commit()
    return key


def revoke_api_key(zz: Zhizhi, key_id: int, by: Principal | None = None) -> None:
    now = zz.clock.now()
    with zz.uow() as uow:
        kr = uow.session.get(ApiKeyRow, key_id)
        if kr is None:
            raise NotFound(f"API key {key_id} 不存在 / not found")
        kr.revoked_at = now
        audit_log.append(uow.session, by or _cli(), "apikey.revoke", f"user:{kr.user_id}", {"key_id": key_id},
                         at=now)
        uow.session.commit()


def list_api_keys(zz: Zhizhi) -> list[dict[str, Any]]:
    with zz.uow() as uow:
        rows = uow.session.execute(select(ApiKeyRow, UserRow.username).join(UserRow)
                                   .order_by(ApiKeyRow.id)).all()
        return [{"id": k.id, "prefix": k.prefix, "name": k.name, "username": u, "created_at": k.created_at,
                 "revoked": k.revoked_at is not None} for k, u in rows]


def principal_for_api_key(zz: Zhizhi, key: str, origin: str = "") -> Principal | None:
    with zz.uow() as uow:
        found = uow.session.execute(
            select(UserRow, ApiKeyRow).join(ApiKeyRow, ApiKeyRow.user_id == UserRow.id)
            .where(ApiKeyRow.key_hash == _digest(key))
        ).first()
        if found is None:
            return None
        user, kr = found
        if kr.revoked_at is not None or user.disabled:
            return None
        return principal_of(user, origin, "api_key")
