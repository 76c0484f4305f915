"""Accounts, roles, personal data and the audit trail, through the API on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import TEST_PASSWORD, login_headers
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update

from zhizhi.adapters import audit_log
from zhizhi.adapters.crypto import Cipher, DataKeyError, generate_key
from zhizhi.adapters.orm import CaseRow
from zhizhi.adapters.orm_access import AuditRow, UserRow
from zhizhi.api.app import create_app
from zhizhi.domain.access import Principal, Scope, scope_of
from zhizhi.domain.errors import ValidationFailed
from zhizhi.service import accounts

PHONE, NAME, ADDRESS = "13912345678", "王小明", "重庆市渝中区解放碑街道民族路188号3栋2单元501"


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(create_app(app)) as c:
        yield c


def report(c: TestClient, headers: dict[str, str], sid: str = "acc-1", **kw: Any) -> Any:
    body = {"source": "citizen", "source_id": sid, "title": "路灯不亮", "category_code": "C0102",
            "lon": 106.52, "lat": 29.52, "reporter_phone": PHONE, "reporter_name": NAME, "address": ADDRESS}
    body.update(kw)
    r = c.post("/api/v1/cases", json=body, headers=headers)
    assert r.status_code in (200, 201), r.text
    return r.json()


# ------------------------------------------------------------------------------ domain
def test_scope_rules() -> None:
    def p(*roles: str, places: tuple[str, ...] = (), departments: tuple[str, ...] = ()) -> Principal:
        return Principal(1, "u", frozenset(roles), places, departments)

    assert scope_of(p("admin")).unlimited
    assert scope_of(p("dispatcher", places=("500103",))) == Scope(places=("500103",))
    assert scope_of(p("handler")).nothing  # a handler without a department sees nothing
    assert scope_of(p("grid_worker")).nothing
    assert scope_of(p("citizen")).nothing
    s = scope_of(p("handler", departments=("D1",)))
    assert s.admits(["500000", "500103"], "D1") and not s.admits(["500000"], "D2")
    s = scope_of(p("dispatcher", places=("500103001",)))
    assert s.admits(["500000", "500103", "500103001", None, None], None)
    assert not s.admits(["500000", "500103", "500103002"], None)


def test_weak_and_default_passwords_are_refused(app: Any) -> None:
    for bad in ("short1!", "password123", "admin@123", "aaaaaaaaaaaaaa", "alice-is-great-1", "abcdefghijkl"):
        with pytest.raises(ValidationFailed):
            accounts.create_user(app, "alice", bad, ("admin",))
    assert accounts.create_user(app, "alice", "Corr3ct-Horse-B", ("admin",)) > 0
    with pytest.raises(ValidationFailed):  # unknown role, unknown place, handler without department
        accounts.create_user(app, "bob", TEST_PASSWORD, ("emperor",))
    with pytest.raises(ValidationFailed):
        accounts.create_user(app, "bob", TEST_PASSWORD, ("dispatcher",), ("999999",))
    with pytest.raises(ValidationFailed):
        accounts.create_user(app, "bob", TEST_PASSWORD, ("handler",))
    with app.uow() as uow:
        stored = uow.session.scalar(select(UserRow.password_hash).where(UserRow.username == "alice"))
    assert stored.startswith("$argon2id$") and "Corr3ct" not in stored


# ------------------------------------------------------------------------------ auth
def test_login_me_logout_and_api_keys(client: TestClient, app: Any) -> None:
    accounts.create_user(app, "disp", TEST_PASSWORD, ("dispatcher",), ("500103",), display_name="调度员甲")
    r = client.post("/api/v1/auth/login", json={"username": "disp", "password": TEST_PASSWORD})
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "bearer" and body["user"]["roles"] == ["dispatcher"]
    assert body["user"]["places"] == ["500103"]
    auth = {"Authorization": f"Bearer {body['access_token']}"}
    assert client.get("/api/v1/auth/me", headers=auth).json()["username"] == "disp"
    assert client.post("/api/v1/auth/logout", headers=auth).status_code == 204
    assert client.get("/api/v1/auth/me", headers=auth).status_code == 401
    # API key of a service account
    key = accounts.create_api_key(app, "disp", "hotline bridge")
    assert client.get("/api/v1/auth/me", headers={"X-API-Key": key}).json()["username"] == "disp"
    accounts.set_disabled(app, "disp")
    assert client.get("/api/v1/auth/me", headers={"X-API-Key": key}).status_code == 401
    assert client.post("/api/v1/auth/login", json={"username": "disp", "password": TEST_PASSWORD}).status_code == 401


def test_login_is_throttled(client: TestClient, app: Any) -> None:
    accounts.create_user(app, "victim", TEST_PASSWORD, ("auditor",))
    for _ in range(app.settings.login_max_failures):
        r = client.post("/api/v1/auth/login", json={"username": "victim", "password": "guess-guess-1"})
        assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")
    r = client.post("/api/v1/auth/login", json={"username": "victim", "password": TEST_PASSWORD})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0  # even the right password waits
    with app.uow() as uow:
        failed = uow.session.scalar(select(AuditRow.id).where(AuditRow.action == "auth.login_failed"))
    assert failed is not None


def test_login_is_throttled_per_address_across_usernames(client: TestClient, app: Any) -> None:
    """Password spraying (one guess for many usernames from one address) meets the same limit."""
    accounts.create_user(app, "sprayed", TEST_PASSWORD, ("auditor",))
    for i in range(app.settings.login_max_failures):
        r = client.post("/api/v1/auth/login", json={"username": f"nobody-{i}", "password": "guess-guess-1"})
        assert r.status_code == 401
    r = client.post("/api/v1/auth/login", json={"username": "sprayed", "password": TEST_PASSWORD})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0


# ------------------------------------------------------------------------------ roles
def test_roles_decide_actions_and_the_actor_is_the_principal(client: TestClient, app: Any) -> None:
    admin = login_headers(client, app)
    case = report(client, admin)["case"]
    dept = case["department_code"]
    handler = login_headers(client, app, "h1", ("handler",), (), (dept,))
    leader = login_headers(client, app, "lead", ("leader",))
    auditor = login_headers(client, app, "aud", ("auditor",))
    got = client.get(f"/api/v1/cases/{case['id']}", headers=handler).json()
    assert "accept" in got["allowed_actions"] and "dispatch" not in got["allowed_actions"]
    assert client.get(f"/api/v1/cases/{case['id']}", headers=auditor).json()["allowed_actions"] == []
    r = client.post(f"/api/v1/cases/{case['id']}/actions", headers=auditor, json={"action": "accept"})
    assert r.status_code == 403
    r = client.post(f"/api/v1/cases/{case['id']}/actions", headers=handler,
                    json={"action": "accept", "actor": {"name": "冒名者", "role": "admin"}})
    assert r.status_code == 200
    last = r.json()["timeline"][-1]
    assert last["actor"] == "h1" and last["role"] == "handler"  # not the name claimed in the body
    r = client.post(f"/api/v1/cases/{case['id']}/actions", headers=leader, json={"action": "supervise",
                                                                                  "note": "加快"})
    assert r.status_code == 200
    # reporting needs the right too
    assert client.post("/api/v1/cases", headers=auditor, json={"source_id": "a1", "title": "t", "lon": 106.52,
                                                               "lat": 29.52}).status_code == 403
    # auditors query the log, others may not
    rows = client.get("/api/v1/audit", headers=auditor, params={"action": "case.accept"}).json()
    assert rows and rows[0]["username"] == "h1" and rows[0]["target"] == f"case:{case['id']}"
    assert client.get("/api/v1/audit", headers=handler).status_code == 403


# ------------------------------------------------------------------------------ personal data
def test_personal_data_masked_encrypted_and_unmasked_only_when_allowed(client: TestClient, app: Any,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    admin = login_headers(client, app)
    case = report(client, admin)["case"]
    assert case["reporter_phone"] == "139****5678" and case["reporter_name"] == "王**"
    assert ADDRESS not in str(case) and PHONE not in str(case)
    listed = client.get("/api/v1/cases", headers=admin).text
    assert PHONE not in listed and NAME not in listed and ADDRESS not in listed
    # at rest: ciphertext only
    with app.engine.connect() as conn:
        row = conn.execute(text("SELECT reporter_phone, reporter_name, address FROM cases")).one()
    assert all(v.startswith("enc1:") for v in row) and PHONE not in str(row) and NAME not in str(row)
    # unmask: a dispatcher may, and it is audited; a leader may not
    disp = login_headers(client, app, "d1", ("dispatcher",))
    full = client.get(f"/api/v1/cases/{case['id']}", headers=disp, params={"unmask": True}).json()
    assert full["reporter_phone"] == PHONE and full["reporter_name"] == NAME and full["address"] == ADDRESS
    leader = login_headers(client, app, "l1", ("leader",))
    assert client.get(f"/api/v1/cases/{case['id']}", headers=leader, params={"unmask": True}).status_code == 403
    with app.uow() as uow:
        who = uow.session.scalars(select(AuditRow.username).where(AuditRow.action == "case.unmask")).all()
    assert who == ["d1"]
    # personal data never reaches the logs
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert PHONE not in logged and NAME not in logged and ADDRESS not in logged


def test_cipher_rotation_and_refusals(tmp_path: Any) -> None:
    old, new = generate_key(), generate_key()
    c_old = Cipher([old])
    token = c_old.encrypt(PHONE)
    c_both = Cipher([new, old])
    assert c_both.decrypt(token) == PHONE and not c_both.is_current(token)
    rotated = c_both.rotate(token)
    assert c_both.is_current(rotated) and Cipher([new]).decrypt(rotated) == PHONE
    with pytest.raises(DataKeyError):
        Cipher([new]).decrypt(token)  # the old key retired: old ciphertext no longer readable
    with pytest.raises(DataKeyError):
        Cipher(["changeme"])
    assert Cipher([new]).decrypt("legacy plain") == "legacy plain"


INJECTIONS = ["'; DROP TABLE cases; --", "<script>alert(1)</script>", "\" OR 1=1 --", "${7*7}{{7*7}}",
              "Robert'); DELETE FROM users;--", "<img src=x onerror=alert(1)>"]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_payloads_are_stored_as_text(client: TestClient, app: Any, payload: str) -> None:
    admin = login_headers(client, app)
    body = report(client, admin, sid=payload, title=payload, description=payload, address=payload,
                  reporter_name=payload, reporter_phone="13800138000")
    got = client.get(f"/api/v1/cases/{body['id']}", headers=admin, params={"unmask": True}).json()
    assert got["title"] == payload and got["description"] == payload and got["source_id"] == payload
    assert got["address"] == payload and got["reporter_name"] == payload
    found = client.get("/api/v1/cases", headers=admin, params={"q": payload}).json()
    assert found["total"] == 1  # the search treats it as text, not SQL
    with app.engine.connect() as conn:
        assert conn.execute(select(CaseRow.id)).all()  # the table is still there
    assert client.post("/api/v1/auth/login", json={"username": payload, "password": payload}).status_code == 401
    acted = client.post(f"/api/v1/cases/{body['id']}/actions", headers=admin,
                        json={"action": "supervise", "note": payload})
    assert acted.status_code == 200 and acted.json()["timeline"][-1]["note"] == payload
    rec = client.post("/api/v1/records", headers=admin, json={
        "kind": "person", "external_id": payload[:100], "name": payload, "community_code": "500103001001",
        "tags": [payload], "fields": {"address": payload, "note": payload}})
    assert rec.status_code == 201, rec.text
    full = client.get(f"/api/v1/records/{rec.json()['id']}", headers=admin, params={"unmask": True}).json()
    assert full["name"] == payload and full["fields"] == {"address": payload, "note": payload}
    assert full["external_id"] == payload[:100] and full["tags"] == [payload]
    assert client.get("/api/v1/audit", headers=admin, params={"target": payload}).json() == []


def test_oversized_bodies_are_refused_everywhere(client: TestClient, app: Any) -> None:
    admin = login_headers(client, app)
    big = b"{" + b" " * 1_100_000 + b"}"
    for path in ("/api/v1/cases", "/api/v1/auth/login", "/api/v1/users", "/api/v1/cases/1/actions"):
        r = client.post(path, content=big, headers={**admin, "content-type": "application/json"})
        assert r.status_code == 413, path


def test_oversized_bodies_without_a_length_are_refused_while_read(client: TestClient, app: Any) -> None:
    """A chunked body has no Content-Length to check up front: the limit is applied as it streams in."""
    admin = login_headers(client, app)

    def chunks() -> Iterator[bytes]:
        yield b'{"source_id": "big", "title": "'
        for _ in range(40):
            yield b"x" * 32_768  # 1.3 MB in all, over the 1 MB default
        yield b'"}'

    r = client.post("/api/v1/cases", content=chunks(), headers={**admin, "content-type": "application/json"})
    assert "content-length" not in {k.lower() for k in r.request.headers}  # really sent chunked
    assert r.status_code == 413 and r.headers["content-type"].startswith("application/problem+json")
    r = client.post("/open311/v2/requests.json", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()[0]["code"] == 413  # in the Open311 error format
    with app.engine.connect() as conn:
        assert conn.execute(select(CaseRow.id)).all() == []


# ------------------------------------------------------------------------------ audit chain
def test_audit_verify_catches_a_modified_row(client: TestClient, app: Any) -> None:
    admin = login_headers(client, app)
    for i in range(3):
        report(client, admin, sid=f"au-{i}")
    with app.uow() as uow:
        v = audit_log.verify(uow.session)
    assert v.ok and v.rows >= 5
    auditor = login_headers(client, app, "aud", ("auditor",))
    assert client.get("/api/v1/audit/verify", headers=auditor).json()["ok"] is True
    with app.uow() as uow:
        target = uow.session.scalars(select(AuditRow).where(AuditRow.action == "case.report")
                                     .order_by(AuditRow.id)).first()
        target_id = target.id
        uow.session.execute(update(AuditRow).where(AuditRow.id == target_id).values(username="someone-else"))
        uow.session.commit()
        bad = audit_log.verify(uow.session)
    assert not bad.ok and bad.first_bad_id == target_id
    body = client.get("/api/v1/audit/verify", headers=auditor).json()
    assert body["ok"] is False and body["first_bad_id"] == target_id


def test_audit_verify_catches_a_deleted_row(app: Any) -> None:
    p = Principal(1, "x", frozenset({"admin"}))
    with app.uow() as uow:
        for i in range(4):
            audit_log.append(uow.session, p, "test", f"t:{i}", {"i": i})
        uow.session.commit()
        ids = uow.session.scalars(select(AuditRow.id).order_by(AuditRow.id)).all()
        uow.session.execute(AuditRow.__table__.delete().where(AuditRow.id == ids[1]))
        uow.session.commit()
        v = audit_log.verify(uow.session)
    assert not v.ok and v.first_bad_id == ids[2]


def test_demo_creates_one_account_per_role(app: Any, tmp_path: Any, client: TestClient) -> None:
    from zhizhi.demo import ensure_demo_accounts, replay_day

    replay_day(app, n_cases=30, seed=7)
    out = tmp_path / "demo-accounts.txt"
    made = ensure_demo_accounts(app, out)
    assert {"demo-admin", "demo-leader", "demo-auditor", "demo-dispatcher", "demo-street", "demo-handler",
            "demo-grid", "demo-citizen"} <= set(made)
    assert (out.stat().st_mode & 0o777) == 0o600
    rows = [line.split("\t") for line in out.read_text().splitlines() if line.startswith("demo-")]
    totals = {}
    for username, password, *_ in rows:
        r = client.post("/api/v1/auth/login", json={"username": username, "password": password})
        assert r.status_code == 200, username
        auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
        totals[username] = client.get("/api/v1/cases", headers=auth).json().get("total", 0)
    assert totals["demo-admin"] == 30 and 0 < totals["demo-street"] < 30 and totals["demo-citizen"] == 0
    assert ensure_demo_accounts(app, out) == []  # a second run leaves them alone


def test_login_cookie_serves_reads_only(client: TestClient, app: Any) -> None:
    accounts.create_user(app, "web", TEST_PASSWORD, ("dispatcher",))
    r = client.post("/api/v1/auth/login", json={"username": "web", "password": TEST_PASSWORD})
    cookie = r.headers["set-cookie"]
    assert "zhizhi_session=" in cookie and "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    # the client keeps the cookie: reads work without a header (an EventSource can do this) …
    assert client.get("/api/v1/auth/me").json()["username"] == "web"
    # … changes do not (no cross-site request forgery through the cookie)
    r = client.post("/api/v1/cases", json={"source_id": "ck1", "title": "t", "lon": 106.52, "lat": 29.52})
    assert r.status_code == 401
    assert client.post("/api/v1/auth/logout").status_code == 401  # logout needs the header too
    client.cookies.clear()
    assert client.get("/api/v1/auth/me").status_code == 401


def test_concurrent_appends_keep_one_chain(app: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def worker(n: int) -> None:
        p = Principal(n, f"w{n}", frozenset({"admin"}))
        for i in range(15):
            with app.uow() as uow:
                audit_log.append(uow.session, p, "test", f"t:{n}:{i}", {"i": i})
                uow.session.commit()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(worker, range(4)))
    with app.uow() as uow:
        v = audit_log.verify(uow.session)
    assert v.ok and v.rows == 60, v
