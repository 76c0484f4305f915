"""PlaceHierarchy: loading (in any CRS), navigation, GeoJSON export and boundary validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely

from zhizhi.domain.places import Level
from zhizhi.geo.coords import from_wgs84
from zhizhi.geo.hierarchy import PlaceHierarchy

LEVEL_NAMES = ["city", "district", "street", "community", "grid"]
BOUNDARIES = Path(__file__).resolve().parents[2] / "shared" / "data" / "boundaries"


def _split(poly: shapely.Geometry, k: int, rng: np.random.Generator) -> list[shapely.Geometry]:
    """Voronoi cells of k random seeds inside `poly`, clipped to it: an exact partition."""
    x0, y0, x1, y1 = poly.bounds
    seeds: list[tuple[float, float]] = []
    while len(seeds) < k:
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        if poly.contains(shapely.Point(x, y)):
            seeds.append((x, y))
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(seeds), extend_to=poly.envelope))
    return [c for c in shapely.intersection(cells, poly) if not c.is_empty and c.area > 0]


def synthetic_city(fanout: tuple[int, ...] = (3, 2, 2, 6), seed: int = 3) -> dict[str, Any]:
    """A five-level FeatureCollection (WGS-84) near Chongqing, every level a partition of its parent."""
    rng = np.random.default_rng(seed)
    city = shapely.box(106.40, 29.40, 106.60, 29.60)
    features: list[dict[str, Any]] = []

    def add(code: str, name: str, level: int, parent: str | None, geom: shapely.Geometry) -> None:
        features.append(
            {
                "type": "Feature",
                "properties": {
                    "code": code,
                    "name": name,
                    "level": LEVEL_NAMES[level],
                    "parent_code": parent,
                    "approximate": level >= 2,
                    "population": 1000,
                },
                "geometry": json.loads(shapely.to_geojson(geom)),
            }
        )

    add("500000", "测试市", 0, None, city)
    frontier = [("500000", city)]
    for level, k in enumerate(fanout, start=1):
        nxt = []
        for parent, geom in frontier:
            for i, part in enumerate(_split(geom, k, rng)):
                code = f"{parent}{i:02d}"
                add(code, f"{LEVEL_NAMES[level]}{code}", level, parent, part)
                nxt.append((code, part))
        frontier = nxt
    return {"type": "FeatureCollection", "features": features}


@pytest.fixture(scope="module")
def fc() -> dict[str, Any]:
    return synthetic_city()


@pytest.fixture(scope="module")
def hierarchy(fc: dict[str, Any]) -> PlaceHierarchy:
    return PlaceHierarchy.load_geojson(fc)


def test_load_and_navigate(hierarchy: PlaceHierarchy) -> None:
    assert len(hierarchy.at_level(Level.CITY)) == 1
    assert len(hierarchy.at_level("district")) == 3
    assert len(hierarchy.at_level("网格")) > 50
    grid = hierarchy.at_level(Level.GRID)[0]
    chain = hierarchy.ancestors(grid.code)
    assert [p.level for p in chain] == [Level.CITY, Level.DISTRICT, Level.STREET, Level.COMMUNITY]
    assert chain[-1].code == grid.parent_code
    kids = hierarchy.children(chain[-1].code)
    assert grid in kids and all(k.level == Level.GRID for k in kids)
    assert hierarchy.get(grid.code).approximate is True
    assert hierarchy.get("500000").population == 1000
    assert hierarchy.geometry(grid.code).geom_type in {"Polygon", "MultiPolygon"}
    assert hierarchy.level_index(grid.code) == 0
    with pytest.raises(KeyError, match="nope"):
        hierarchy.get("nope")


def test_chinese_levels_and_file_source(tmp_path: Path, fc: dict[str, Any]) -> None:
    zh = json.loads(json.dumps(fc))
    for f in zh["features"]:
        f["properties"]["level"] = Level.parse(f["properties"]["level"]).label_zh
    path = tmp_path / "city.geojson"
    path.write_text(json.dumps(zh, ensure_ascii=False), encoding="utf-8")
    h = PlaceHierarchy.load_geojson(path)
    assert len(h.at_level(Level.GRID)) == len(
        [f for f in fc["features"] if f["properties"]["level"] == "grid"]
    )


@pytest.mark.parametrize("crs", ["gcj02", "bd09"])
def test_load_converts_to_wgs84(fc: dict[str, Any], hierarchy: PlaceHierarchy, crs: str) -> None:
    shifted = json.loads(json.dumps(fc))
    for f in shifted["features"]:
        geom = shapely.from_geojson(json.dumps(f["geometry"]))
        geom = shapely.transform(geom, lambda xy: np.column_stack(from_wgs84(xy[:, 0], xy[:, 1], crs)))
        f["geometry"] = json.loads(shapely.to_geojson(geom))
    h = PlaceHierarchy.load_geojson(shifted, crs=crs)
    for place in h.at_level(Level.GRID)[:20]:
        a = shapely.get_coordinates(h.geometry(place.code))
        b = shapely.get_coordinates(hierarchy.geometry(place.code))
        assert np.max(np.abs(a - b)) < 1e-7


def test_to_geojson_filters_and_simplifies(hierarchy: PlaceHierarchy) -> None:
    district = hierarchy.at_level(Level.DISTRICT)[0]
    out = hierarchy.to_geojson(level=Level.GRID, parent=district.code)
    assert out["type"] == "FeatureCollection"
    codes = {f["properties"]["code"] for f in out["features"]}
    assert codes and all(c.startswith(district.code) for c in codes)
    assert all(f["properties"]["approximate"] is True for f in out["features"])
    everything = hierarchy.to_geojson()
    assert len(everything["features"]) == len(hierarchy)
    full = hierarchy.to_geojson(level="city")
    simple = hierarchy.to_geojson(level="district", simplify_m=200)
    assert full["features"][0]["properties"]["level"] == "city"
    n_full = sum(
        len(shapely.get_coordinates(shapely.from_geojson(json.dumps(f["geometry"]))))
        for f in hierarchy.to_geojson(level="district")["features"]
    )
    n_simple = sum(
        len(shapely.get_coordinates(shapely.from_geojson(json.dumps(f["geometry"]))))
        for f in simple["features"]
    )
    assert n_simple <= n_full


def test_validate_clean_partition(hierarchy: PlaceHierarchy) -> None:
    assert hierarchy.validate() == []


def _with(fc: dict[str, Any], *extra: dict[str, Any]) -> PlaceHierarchy:
    data = {"type": "FeatureCollection", "features": [*fc["features"], *extra]}
    return PlaceHierarchy.load_geojson(data)


def _feature(code: str, level: str, parent: str | None, geom: shapely.Geometry) -> dict[str, Any]:
    return {
        "type": "Feature",
        "properties": {"code": code, "name": code, "level": level, "parent_code": parent},
        "geometry": json.loads(shapely.to_geojson(geom)),
    }


def test_validate_finds_each_kind_of_problem(fc: dict[str, Any], hierarchy: PlaceHierarchy) -> None:
    grid = hierarchy.at_level(Level.GRID)[0]
    community = hierarchy.get(grid.parent_code or "")
    g = hierarchy.geometry(grid.code)
    cx, cy = g.centroid.x, g.centroid.y
    bowtie = shapely.Polygon([(cx, cy), (cx + 0.001, cy + 0.001), (cx + 0.001, cy), (cx, cy + 0.001)])
    h = _with(
        fc,
        _feature(grid.code, "grid", community.code, g),  # duplicate
        _feature("orphan", "grid", "missing", g),  # parent missing
        _feature("skip", "grid", hierarchy.at_level(Level.DISTRICT)[0].code, g),  # wrong level
        _feature("bow", "grid", community.code, bowtie),  # invalid
        _feature("far", "grid", community.code, shapely.box(107.0, 29.0, 107.01, 29.01)),  # outside parent
        _feature("twin", "grid", community.code, g),  # overlaps its sibling completely
    )
    kinds = {(p.code, p.kind) for p in h.validate()}
    assert (grid.code, "duplicate-code") in kinds
    assert ("orphan", "parent-missing") in kinds
    assert ("skip", "parent-level") in kinds
    assert ("bow", "geometry-invalid") in kinds
    assert ("far", "outside-parent") in kinds
    assert (grid.code, "sibling-overlap") in kinds


def test_validate_finds_gaps() -> None:
    fc = synthetic_city(fanout=(3, 2, 2, 6))
    dropped = [f for f in fc["features"] if f["properties"]["level"] == "grid"][:1]
    parent = dropped[0]["properties"]["parent_code"]
    fc["features"] = [f for f in fc["features"] if f not in dropped]
    problems = PlaceHierarchy.load_geojson(fc).validate()
    assert [(p.code, p.kind) for p in problems] == [(parent, "gap")]


def test_validate_tolerates_small_slivers() -> None:
    fc = synthetic_city(fanout=(3, 2, 2, 6))
    grid = next(f for f in fc["features"] if f["properties"]["level"] == "grid")
    g = shapely.from_geojson(json.dumps(grid["geometry"]))
    grid["geometry"] = json.loads(shapely.to_geojson(g.buffer(1e-6)))  # ≈ 0.1 m outward
    assert PlaceHierarchy.load_geojson(fc).validate(tolerance_m=1.0) == []
    assert PlaceHierarchy.load_geojson(fc).validate(tolerance_m=0.0, tolerance_share=0.0) != []


@pytest.mark.slow
@pytest.mark.skipif(not BOUNDARIES.exists(), reason="shared boundary data not present")
def test_real_districts_load_from_gcj02() -> None:
    src = json.loads((BOUNDARIES / "chongqing_districts_amap_gcj02.geojson").read_text(encoding="utf-8"))
    feats = [
        {
            "type": "Feature",
            "properties": {
                "code": f["properties"]["adcode"],
                "name": f["properties"]["name"],
                "level": "district",
                "parent_code": None,
            },
            "geometry": f["geometry"],
        }
        for f in src["features"]
    ]
    h = PlaceHierarchy.load_geojson({"type": "FeatureCollection", "features": feats}, crs="gcj02")
    assert len(h.at_level(Level.DISTRICT)) == 38
    yuzhong = h.geometry("500103")
    assert yuzhong.contains(shapely.Point(106.5774, 29.5573))  # 解放碑 in WGS-84
