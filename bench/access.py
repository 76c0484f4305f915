"""Costs of access control: authenticated reads, scoped lists, audit appends and chain verification.

Prints `name: value unit` lines for SQLite and (when a server answers) PostgreSQL:
- auth_get_case_p50/p99: GET /api/v1/cases/{id} with a bearer token (token look-up + scope check), in-process;
- scoped_list_p50: GET /api/v1/cases?limit=50 as a street dispatcher over 2,000 cases;
- audit_append_rows_per_s: chained audit rows appended, 100 per transaction;
- audit_verify_rows_per_s: `audit verify` over the whole chain;
- fernet_encrypt_us: one personal field encrypted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import backends, database, emit, load_city, make_app, pg_base_url, workdir

PASSWORD = "Bench-pass-2026!"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run(backend: str, url: str, hierarchy: object, tmp: Path) -> None:
    from fastapi.testclient import TestClient

    from zhizhi.adapters import audit_log
    from zhizhi.api.app import create_app
    from zhizhi.domain.access import Principal
    from zhizhi.service import accounts
    from zhizhi.service.commands import ReportCase, ReportCases

    zz = make_app(url, hierarchy, tmp / backend)
    reports = tuple(ReportCase(source="hotline", source_id=f"b{i}", title="路灯不亮", category_code="C0102",
                               lon=106.51 + (i % 19) * 0.01, lat=29.51 + (i % 9) * 0.01,
                               reporter_phone="13800138000") for i in range(2000))
    zz.handle(ReportCases(reports))
    accounts.create_user(zz, "admin", PASSWORD, ("admin",))
    accounts.create_user(zz, "street", PASSWORD, ("dispatcher",), ("500103001",))
    with TestClient(create_app(zz)) as c:
        def token(user: str) -> dict[str, str]:
            r = c.post("/api/v1/auth/login", json={"username": user, "password": PASSWORD})
            return {"Authorization": f"Bearer {r.json()['access_token']}"}

        admin, street = token("admin"), token("street")
        times = []
        for i in range(300):
            t = time.perf_counter()
            assert c.get(f"/api/v1/cases/{1 + i % 2000}", headers=admin).status_code == 200
            times.append((time.perf_counter() - t) * 1000)
        emit(f"auth_get_case_p50_{backend}", statistics.median(times), "ms")
        emit(f"auth_get_case_p99_{backend}", pct(times, 0.99), "ms")
        times = []
        for _ in range(100):
            t = time.perf_counter()
            assert c.get("/api/v1/cases", params={"limit": 50}, headers=street).status_code == 200
            times.append((time.perf_counter() - t) * 1000)
        emit(f"scoped_list_p50_{backend}", statistics.median(times), "ms")
    p = Principal(1, "bench", frozenset({"admin"}), origin="127.0.0.1")
    t = time.perf_counter()
    n = 0
    for _ in range(20):
        with zz.uow() as uow:
            for _ in range(100):
                audit_log.append(uow.session, p, "bench", "case:1", {"k": n})
                n += 1
            uow.session.commit()
    emit(f"audit_append_rows_per_s_{backend}", n / (time.perf_counter() - t), "rows/s")
    with zz.uow() as uow:
        t = time.perf_counter()
        v = audit_log.verify(uow.session)
        dt = time.perf_counter() - t
    assert v.ok
    emit(f"audit_verify_rows_per_s_{backend}", v.rows / dt, "rows/s")
    zz.engine.dispose()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pg", default=None)
    ap.add_argument("--only", choices=["sqlite", "postgresql"], default=None)
    args = ap.parse_args(argv)
    from zhizhi.adapters.crypto import Cipher, generate_key

    cipher = Cipher([generate_key()])
    t = time.perf_counter()
    for _ in range(5000):
        cipher.encrypt("重庆市渝中区解放碑街道民族路188号")
    emit("fernet_encrypt_us", (time.perf_counter() - t) / 5000 * 1e6, "us")
    pg = pg_base_url(args.pg)
    with workdir() as wd:
        tmp = Path(wd)
        hierarchy, label = load_city("tiny", tmp)
        print(f"# city: {label}", flush=True)
        for backend in backends(pg, args.only):
            with database(backend, pg, tmp) as url:
                run(backend, url, hierarchy, tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
