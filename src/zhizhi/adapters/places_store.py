"""Places in the database: the hierarchy is loaded once (`zhizhi places load`) and read at start-up.

Geometry is stored as WKB so the same table works on SQLite and PostgreSQL;
loading 50,000 geometries back is one vectorised `shapely.from_wkb` call.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from sqlalchemy import Engine, delete, func, insert, select

from zhizhi.adapters.orm import PlaceRow
from zhizhi.domain.places import Level, Place
from zhizhi.geo.hierarchy import PlaceHierarchy


def save_hierarchy(engine: Engine, hierarchy: PlaceHierarchy, sources: dict[str, str] | None = None,
                   full_names: dict[str, str] | None = None) -> int:
    """Replace the places table with the hierarchy (one transaction). Returns the number stored."""
    places = list(hierarchy)
    geoms = np.array([hierarchy.geometry(p.code) for p in places], dtype=object)
    wkb = shapely.to_wkb(geoms)
    rows: list[dict[str, Any]] = [
        {
            "code": p.code, "name": p.name, "level": int(p.level), "parent_code": p.parent_code,
            "approximate": p.approximate, "population": p.population,
            "source": (sources or {}).get(p.code), "full_name": (full_names or {}).get(p.code),
            "geometry_wkb": w,
        }
        for p, w in zip(places, wkb, strict=True)
    ]
    with engine.begin() as conn:
        conn.execute(delete(PlaceRow))
        for start in range(0, len(rows), 5000):
            conn.execute(insert(PlaceRow), rows[start:start + 5000])
    return len(rows)


def count_places(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(PlaceRow)) or 0)


def load_hierarchy(engine: Engine) -> PlaceHierarchy:
    """Read every place with its geometry, parents before children."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(PlaceRow.code, PlaceRow.name, PlaceRow.level, PlaceRow.parent_code, PlaceRow.approximate,
                   PlaceRow.population, PlaceRow.geometry_wkb).order_by(PlaceRow.level, PlaceRow.code)
        ).all()
    wkb = np.array([r.geometry_wkb for r in rows], dtype=object)
    geoms = shapely.from_wkb(wkb) if len(rows) else []
    items = (
        (Place(code=r.code, name=r.name, level=Level(r.level), parent_code=r.parent_code,
               approximate=bool(r.approximate), population=r.population), g)
        for r, g in zip(rows, geoms, strict=True)
    )
    return PlaceHierarchy(items)
