"""Shared fixtures: a tiny city built in code, and the application on SQLite and PostgreSQL.

The same service and API tests run on both stores. PostgreSQL is used when
ZHIZHI_TEST_PG names a server URL or the machine's local server answers on
127.0.0.1:5432; with ZHIZHI_REQUIRE_PG=1 (set by .ci/run) its absence is an error,
not a skip, so CI cannot pass without the PostgreSQL run.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from shapely.geometry import box, mapping

from zhizhi.config import Settings
from zhizhi.geo.hierarchy import PlaceHierarchy

SHARED_DATA = Path(os.environ.get("ZHIZHI_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

# A made-up city of two districts, each 2 streets × 2 communities × 2 grids, as boxes.
CITY = ("500000", "重庆市")
DISTRICTS = [("500103", "渝中区", (106.50, 29.50, 106.60, 29.60)),
             ("500105", "江北区", (106.60, 29.50, 106.70, 29.60))]
STREET_NAMES = {"500103": ["解放碑街道", "朝天门街道"], "500105": ["观音桥街道", "石马河街道"]}


def tiny_city_features() -> list[dict[str, Any]]:
    feats: list[dict[str, Any]] = []

    def add(code: str, name: str, level: str, parent: str | None, geom: Any, pop: int) -> None:
        feats.append({"type": "Feature", "geometry": mapping(geom),
                      "properties": {"code": code, "name": name, "level": level, "parent_code": parent,
                                     "approximate": level not in ("city", "district"), "population": pop}})

    add(CITY[0], CITY[1], "city", None, box(106.50, 29.50, 106.70, 29.60), 800000)
    for dcode, dname, (x0, y0, x1, y1) in DISTRICTS:
        add(dcode, dname, "district", CITY[0], box(x0, y0, x1, y1), 400000)
        xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
        for si, sname in enumerate(STREET_NAMES[dcode]):
            scode = f"{dcode}{si + 1:03d}"
            sx0, sx1 = (x0, xm) if si == 0 else (xm, x1)
            add(scode, sname, "street", dcode, box(sx0, y0, sx1, y1), 200000)
            for ci in range(2):
                ccode = f"{scode}{ci + 1:03d}"
                cy0, cy1 = (y0, ym) if ci == 0 else (ym, y1)
                add(ccode, f"{sname[:2]}{'东西'[ci]}社区", "community", scode, box(sx0, cy0, sx1, cy1), 100000)
                sm = (sx0 + sx1) / 2
                for gi in range(2):
                    gx0, gx1 = (sx0, sm) if gi == 0 else (sm, sx1)
                    add(f"{ccode}{gi + 1:03d}", f"第{gi + 1}网格", "grid", ccode, box(gx0, cy0, gx1, cy1), 50000)
    return feats


@pytest.fixture(scope="session")
def tiny_city() -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": tiny_city_features()}


@pytest.fixture(scope="session")
def tiny_hierarchy(tiny_city: dict[str, Any]) -> PlaceHierarchy:
    return PlaceHierarchy.load_geojson(tiny_city)


def _pg_base_url() -> str | None:
    url = os.environ.get("ZHIZHI_TEST_PG")
    if url:
        return url
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    except OSError:
        return None


@pytest.fixture(scope="session")
def pg_server() -> str | None:
    url = _pg_base_url()
    if url is None and os.environ.get("ZHIZHI_REQUIRE_PG") == "1":
        pytest.fail("ZHIZHI_REQUIRE_PG=1 but no PostgreSQL answers (set ZHIZHI_TEST_PG or start the server)")
    return url


def _fresh_pg_database(base_url: str) -> tuple[str, Any]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"zhizhi_t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(base_url).set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, pg_server: str | None) -> Iterator[str]:
    """A fresh, empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'zhizhi.db'}"
        return
    if pg_server is None:
        pytest.skip("PostgreSQL not available here (set ZHIZHI_TEST_PG)")
    url, drop = _fresh_pg_database(pg_server)
    try:
        yield url
    finally:
        drop()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # Repeat reports in these tests are separate cases on purpose; merging is tested in test_dispatch*.py.
    return Settings(database_url=database_url, data_dir=tmp_path / "var", dispatch_merge_duplicates=False)


@pytest.fixture
def app(settings: Settings, tiny_hierarchy: PlaceHierarchy) -> Iterator[Any]:
    """The wired application over the tiny city, with a pinned clock."""
    from zhizhi.adapters.gazetteer import GeoGazetteer
    from zhizhi.adapters.places_store import save_hierarchy
    from zhizhi.service.bootstrap import bootstrap
    from zhizhi.service.ports import Clock

    clock = Clock()
    clock.fixed = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # Monday 10:00 in Chongqing
    zz = bootstrap(settings, gazetteer=GeoGazetteer(tiny_hierarchy), clock=clock)
    save_hierarchy(zz.engine, tiny_hierarchy)
    yield zz
    zz.engine.dispose()


# ------------------------------------------------------------------------------------------
# Authenticated clients (issue 5): every non-public route needs credentials.
TEST_PASSWORD = "Test-pass-2026!"


def login_headers(client: Any, zz: Any, username: str = "admin", roles: tuple[str, ...] = ("admin",),
                  places: tuple[str, ...] = (), departments: tuple[str, ...] = ()) -> dict[str, str]:
    """Create the account if needed, log in through the API, return the Authorization header."""
    from zhizhi.service import accounts

    if username not in {u.username for u in accounts.list_users(zz)}:
        accounts.create_user(zz, username, TEST_PASSWORD, roles, places, departments)
    resp = client.post("/api/v1/auth/login", json={"username": username, "password": TEST_PASSWORD})
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}


@pytest.fixture
def admin_client(app: Any) -> Iterator[Any]:
    """A TestClient over the app, logged in as an administrator."""
    from fastapi.testclient import TestClient

    from zhizhi.api.app import create_app

    with TestClient(create_app(app)) as c:
        c.headers.update(login_headers(c, app))
        yield c


@pytest.fixture
def http_server(app: Any) -> Iterator[str]:
    """The app served by uvicorn on a free port of 127.0.0.1: for clients that speak real HTTP (SSE, STA clients)."""
    from http_kit import serving

    from zhizhi.api.app import create_app

    with serving(create_app(app)) as (base, _):
        yield base


@pytest.fixture
def cli_city(tmp_path: Path, tiny_city: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Path:
    """For CLI tests: a fresh data dir (so the embedded SQLite default) and the tiny city as a GeoJSON file."""
    monkeypatch.setenv("ZHIZHI_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("ZHIZHI_DATABASE_URL", raising=False)
    city = tmp_path / "city.geojson"
    city.write_text(json.dumps(tiny_city, ensure_ascii=False), encoding="utf-8")
    return city
