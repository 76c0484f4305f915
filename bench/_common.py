"""Helpers shared by the bench scripts: the city, the two stores, the app, and the output format.

Every figure is printed as one ``name: value unit`` line so runs can be compared by a script.
The stores are fresh for each run: a temporary SQLite file, and a temporary PostgreSQL database
(created and dropped like tests/conftest.py) when a server answers.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ZHIZHI_SHARED_DATA", ROOT.parent / "shared" / "data"))
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def emit(name: str, value: float | int | str, unit: str = "") -> None:
    """Print one result line (`name: value unit`), flushed so partial runs still report."""
    text = f"{value:.2f}" if isinstance(value, float) else str(value)
    print(f"{name}: {text} {unit}".rstrip(), flush=True)


def pg_base_url(explicit: str | None = None) -> str | None:
    """The PostgreSQL server URL to use: --pg, ZHIZHI_TEST_PG, or the local server if it answers."""
    url = explicit or os.environ.get("ZHIZHI_TEST_PG")
    if url:
        return url
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return DEFAULT_PG
    except OSError:
        return None


@contextmanager
def database(backend: str, pg_url: str | None, workdir: Path) -> Iterator[str]:
    """A fresh empty database URL for `backend` ("sqlite" or "postgresql"), removed afterwards."""
    if backend == "sqlite":
        path = workdir / f"bench-{uuid.uuid4().hex[:8]}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    assert pg_url is not None
    name = f"zhizhi_b_{uuid.uuid4().hex[:10]}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def backends(pg_url: str | None, only: str | None = None) -> list[str]:
    """The backends to run: SQLite always, PostgreSQL when a server answers (or `only` one)."""
    names = ["sqlite"] + (["postgresql"] if pg_url else [])
    if only:
        if only == "postgresql" and not pg_url:
            raise SystemExit("no PostgreSQL server answers (set --pg or ZHIZHI_TEST_PG)")
        names = [only]
    return names


def load_city(which: str, cache_dir: Path) -> tuple[Any, str]:
    """The place hierarchy and a label: the Chongqing demo city if it builds, else the tests' tiny city.

    `which` is "demo", "tiny" or "auto" (demo, falling back to tiny with the reason printed).
    """
    from zhizhi.geo.hierarchy import PlaceHierarchy

    if which in ("demo", "auto"):
        try:
            from zhizhi.geo.demo_city import load_or_build_demo_city

            path = load_or_build_demo_city(cache_dir)
            return PlaceHierarchy.load_geojson(path), f"demo city ({path.name})"
        except Exception as exc:
            if which == "demo":
                raise
            print(f"# demo city unavailable ({type(exc).__name__}: {exc}); using the tiny test city",
                  file=sys.stderr)
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import tiny_city_features  # the same tiny city the tests build

    return PlaceHierarchy.load_geojson({"type": "FeatureCollection", "features": tiny_city_features()}), \
        "tiny test city (tests/conftest.py)"


def make_app(url: str, hierarchy: Any, data_dir: Path, cache_dir: Path | None = None) -> Any:
    """The wired application over `hierarchy` (places are held in memory; the table is not needed)."""
    from zhizhi.adapters.gazetteer import GeoGazetteer
    from zhizhi.config import Settings
    from zhizhi.service.bootstrap import bootstrap

    return bootstrap(Settings(database_url=url, data_dir=data_dir),
                     gazetteer=GeoGazetteer(hierarchy, cache_dir=cache_dir))


def workdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="zhizhi-bench-")
