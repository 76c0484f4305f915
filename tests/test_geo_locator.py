"""Locator: exact agreement with the STRtree reference, borders, CRSs, fallbacks, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely

from zhizhi.domain.errors import OutsideJurisdiction
from zhizhi.domain.places import Level
from zhizhi.geo.coords import from_wgs84
from zhizhi.geo.hierarchy import PlaceHierarchy
from zhizhi.geo.locator import LevelIndex, Locator

LEVELS = ["city", "district", "street", "community", "grid"]


def _split(poly: shapely.Geometry, k: int, rng: np.random.Generator) -> list[shapely.Geometry]:
    """Voronoi cells of k random seeds in `poly`, clipped to it (an exact partition)."""
    x0, y0, x1, y1 = poly.bounds
    x, y = rng.uniform(x0, x1, 20 * k), rng.uniform(y0, y1, 20 * k)
    keep = shapely.contains_xy(poly, x, y)
    seeds = np.column_stack([x[keep], y[keep]])[:k]
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(seeds), extend_to=poly.envelope))
    return [c for c in shapely.intersection(cells, poly) if not c.is_empty and c.area > 0]


def city_fc(fanout: tuple[int, ...] = (3, 3, 3, 60), seed: int = 11) -> dict[str, Any]:
    """Five levels near Chongqing; ~1,600 grids by default. Built in code, WGS-84."""
    rng = np.random.default_rng(seed)
    city = shapely.Polygon(
        [(106.40, 29.40), (106.62, 29.38), (106.70, 29.55), (106.55, 29.66), (106.38, 29.58)]
    )
    feats: list[dict[str, Any]] = []

    def add(code: str, level: int, parent: str | None, geom: shapely.Geometry) -> None:
        props = {
            "code": code,
            "name": f"{LEVELS[level]}{code}",
            "level": LEVELS[level],
            "parent_code": parent,
        }
        feats.append(
            {"type": "Feature", "properties": props, "geometry": json.loads(shapely.to_geojson(geom))}
        )

    add("C", 0, None, city)
    frontier = [("C", city)]
    for level, k in enumerate(fanout, start=1):
        nxt = []
        for parent, geom in frontier:
            for i, part in enumerate(_split(geom, k, rng)):
                code = f"{parent}.{i}"
                add(code, level, parent, part)
                nxt.append((code, part))
        frontier = nxt
    return {"type": "FeatureCollection", "features": feats}


def reference(geoms: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The definition of the right answer: STRtree 'intersects', smallest index on ties."""
    tree = shapely.STRtree(geoms)
    inp, idx = tree.query(shapely.points(x, y), predicate="intersects")
    best = np.full(len(x), np.iinfo(np.int64).max)
    np.minimum.at(best, inp, idx)
    return np.where(best == np.iinfo(np.int64).max, -1, best)


@pytest.fixture(scope="module")
def hierarchy() -> PlaceHierarchy:
    return PlaceHierarchy.load_geojson(city_fc())


@pytest.fixture(scope="module")
def locator(hierarchy: PlaceHierarchy) -> Locator:
    return Locator(hierarchy, memory_mb=4)


def _border_points(geoms: np.ndarray, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Vertices, points exactly on edges, and points a hair off them."""
    xy = shapely.get_coordinates(shapely.boundary(geoms))
    pick = rng.integers(0, len(xy) - 1, n)
    a, b = xy[pick], xy[pick + 1]
    t = rng.random(n)[:, None]
    on_edge = a + (b - a) * t
    jitter = on_edge + rng.normal(scale=1e-7, size=on_edge.shape)
    pts = np.concatenate([a, on_edge, jitter])
    return pts[:, 0], pts[:, 1]


def test_agrees_with_reference_on_200k_points(hierarchy: PlaceHierarchy, locator: Locator) -> None:
    geoms = hierarchy.level_geometries(Level.GRID)
    rng = np.random.default_rng(5)
    x0, y0, x1, y1 = shapely.total_bounds(geoms)
    x = rng.uniform(x0 - 0.02, x1 + 0.02, 200_000)
    y = rng.uniform(y0 - 0.02, y1 + 0.02, 200_000)
    bx, by = _border_points(geoms, rng, 20_000)
    x, y = np.concatenate([x, bx]), np.concatenate([y, by])
    got = locator.locate(x, y)
    np.testing.assert_array_equal(got[Level.GRID], reference(geoms, x, y))
    stats = locator.index(Level.GRID).stats
    assert 0 < stats.mixed_share < 1 and stats.nbytes < 4e6 * 1.5


def test_ancestors_follow_parent_codes(hierarchy: PlaceHierarchy, locator: Locator) -> None:
    rng = np.random.default_rng(1)
    x, y = rng.uniform(106.45, 106.6, 2000), rng.uniform(29.45, 29.55, 2000)
    res = locator.locate(x, y)
    grids = res.codes(Level.GRID)
    communities = res.codes("community")
    cities = res.codes(Level.CITY)
    for g, c, top in zip(grids, communities, cities, strict=True):
        assert g is not None
        assert hierarchy.get(g).parent_code == c
        assert top == "C"


def test_shared_border_and_vertex_take_the_smallest_index(
    hierarchy: PlaceHierarchy, locator: Locator
) -> None:
    geoms = hierarchy.level_geometries(Level.GRID)
    xy = shapely.get_coordinates(geoms)
    # A vertex shared by three or more grids, and the midpoint of an edge shared by two.
    keys, counts = np.unique(xy, axis=0, return_counts=True)
    vertex = keys[np.argmax(counts)]
    tree = shapely.STRtree(geoms)
    holders = tree.query(shapely.Point(*vertex), predicate="intersects")
    assert len(holders) >= 3
    assert locator.locate([vertex[0]], [vertex[1]])[Level.GRID][0] == holders.min()
    loc = locator.locate_one(*vertex)
    assert loc.grid == hierarchy.level_codes(Level.GRID)[holders.min()]

    a, b = geoms[holders[0]], geoms[holders[1]]
    shared = shapely.intersection(a.boundary, b.boundary)
    mid = (
        shapely.line_interpolate_point(shapely.line_merge(shared), 0.5, normalized=True)
        if shared.length
        else None
    )
    if mid is not None and not mid.is_empty:
        on = tree.query(mid, predicate="intersects")
        assert locator.locate([mid.x], [mid.y])[Level.GRID][0] == on.min()


def test_locate_one_returns_a_location(hierarchy: PlaceHierarchy, locator: Locator) -> None:
    grid = hierarchy.at_level(Level.GRID)[7]
    p = hierarchy.geometry(grid.code).representative_point()
    loc = locator.locate_one(p.x, p.y)
    assert loc.grid == grid.code
    assert loc.community == grid.parent_code
    assert [loc.city, loc.district, loc.street, loc.community] == [
        a.code for a in hierarchy.ancestors(grid.code)
    ]
    assert loc.method == "point" and loc.confidence == 1.0
    assert loc.lon == pytest.approx(p.x)


@pytest.mark.parametrize("crs", ["gcj02", "bd09"])
def test_other_crs_gives_the_same_answer(hierarchy: PlaceHierarchy, locator: Locator, crs: str) -> None:
    rng = np.random.default_rng(2)
    for grid in rng.choice(hierarchy.at_level(Level.GRID), 30, replace=False):
        p = hierarchy.geometry(grid.code).representative_point()
        lon, lat = from_wgs84(p.x, p.y, crs)
        loc = locator.locate_one(lon, lat, crs=crs)
        assert loc.grid == locator.locate_one(p.x, p.y).grid == grid.code
        assert loc.extra["input_crs"] == crs


def test_outside_names_the_nearest_unit(hierarchy: PlaceHierarchy, locator: Locator) -> None:
    # 0.02° east of the city's easternmost vertex (106.70, 29.55): about 1.9 km.
    with pytest.raises(OutsideJurisdiction) as err:
        locator.locate_one(106.72, 29.55)
    e = err.value
    nearest = hierarchy.get(str(e.details["nearest_code"]))
    assert nearest.level == Level.DISTRICT
    assert nearest.name in e.message and "不在辖区内" in e.message and "outside the jurisdiction" in e.message
    assert 1_800 < float(e.details["distance_m"]) < 2_000  # type: ignore[arg-type]
    assert "1.9 km" in e.message


def test_points_outside_every_grid_fall_back_to_coarser_levels() -> None:
    fc = city_fc(fanout=(2, 2, 2, 8), seed=4)
    grids = [f for f in fc["features"] if f["properties"]["level"] == "grid"]
    removed = grids[0]
    fc["features"] = [f for f in fc["features"] if f is not removed]
    h = PlaceHierarchy.load_geojson(fc)
    loc = Locator(h, memory_mb=1, threads=1)
    p = shapely.from_geojson(json.dumps(removed["geometry"])).representative_point()
    found = loc.locate_one(p.x, p.y)
    assert found.grid is None
    assert found.community == removed["properties"]["parent_code"]
    assert found.city == "C"
    res = loc.locate([p.x, 0.0], [p.y, 0.0])
    assert res[Level.GRID].tolist() == [-1, -1] and res[Level.COMMUNITY][1] == -1
    assert res.found().tolist() == [True, False]


def test_overlapping_polygons_still_match_reference() -> None:
    """Not a coverage (overlaps): the locator must take the slower, complete candidate path."""
    rng = np.random.default_rng(9)
    centres = rng.uniform(0, 1, (300, 2))
    geoms = shapely.buffer(shapely.points(centres), rng.uniform(0.01, 0.08, 300), quad_segs=4)
    index = LevelIndex(geoms, memory_mb=1)
    x, y = rng.uniform(-0.1, 1.1, 100_000), rng.uniform(-0.1, 1.1, 100_000)
    bx, by = _border_points(geoms, rng, 5_000)
    x, y = np.concatenate([x, bx]), np.concatenate([y, by])
    np.testing.assert_array_equal(index.lookup(x, y), reference(geoms, x, y))


def test_threaded_equals_single_threaded(hierarchy: PlaceHierarchy) -> None:
    rng = np.random.default_rng(3)
    x, y = rng.uniform(106.38, 106.7, 120_000), rng.uniform(29.38, 29.66, 120_000)
    one = Locator(hierarchy, memory_mb=2, threads=1).locate(x, y)
    two = Locator(hierarchy, memory_mb=2, threads=2).locate(x, y)
    for lv in Level:
        np.testing.assert_array_equal(one[lv], two[lv])


def test_raster_cache_round_trip(hierarchy: PlaceHierarchy, tmp_path: Path) -> None:
    geoms = hierarchy.level_geometries(Level.GRID)
    first = LevelIndex(geoms, memory_mb=1, cache_dir=tmp_path)
    second = LevelIndex(geoms, memory_mb=1, cache_dir=tmp_path)
    assert not first.stats.from_cache and second.stats.from_cache
    rng = np.random.default_rng(8)
    x, y = rng.uniform(106.38, 106.7, 20_000), rng.uniform(29.38, 29.66, 20_000)
    np.testing.assert_array_equal(first.lookup(x, y), second.lookup(x, y))


def test_nan_and_empty_input(locator: Locator) -> None:
    res = locator.locate([np.nan, 106.5], [29.5, np.nan])
    assert res[Level.GRID].tolist() == [-1, -1]
    assert len(locator.locate([], [])) == 0
