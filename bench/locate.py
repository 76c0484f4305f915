"""Benchmark: point location against ~40,000 grids — our raster locator, STRtree, and PostGIS.

Prints `name: value unit` lines. Grids come from `zhizhi.geo.demo_city.build_demo_city` when it
is importable, otherwise from a synthetic ~40,000-cell Voronoi partition of Chongqing's real
outline (../shared/data/boundaries, GCJ-02 converted to WGS-84); the `grids_source` line says which.

PostGIS side (measured in the same run, reported as a ratio): needs a local PostgreSQL 15 on
127.0.0.1:5432 (user postgres, trust auth) with PostGIS installed —
`apt-get update && apt-get install -y postgresql-15-postgis-3`. The script creates (and drops)
a database `zhizhi_bench`, COPYs grids (WKB) and points, builds GiST indexes, and times an
ST_Intersects join with max_parallel_workers_per_gather=2. Without PostGIS it says so and still
prints our figures. PostGIS is not a project dependency.

Run: `python bench/locate.py [--points 1000000] [--pg-points 1000000]`.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from zhizhi.domain.places import Level
from zhizhi.geo.coords import gcj02_to_wgs84
from zhizhi.geo.hierarchy import PlaceHierarchy
from zhizhi.geo.locator import Locator

BOUNDARIES = Path(__file__).resolve().parents[2] / "shared" / "data" / "boundaries"


def out(name: str, value: object, unit: str = "") -> None:
    print(f"{name}: {value} {unit}".rstrip(), flush=True)


def outline() -> shapely.Geometry:
    data = json.loads((BOUNDARIES / "chongqing_municipality_amap_gcj02.geojson").read_text(encoding="utf-8"))
    geom = shapely.from_geojson(json.dumps(data["features"][0]["geometry"]))
    return shapely.transform(geom, lambda xy: np.column_stack(gcj02_to_wgs84(xy[:, 0], xy[:, 1])))


def synthetic_fc(n: int = 40_000, seed: int = 1) -> dict[str, Any]:
    """City → one district/street/community → n Voronoi grids clipped to the real outline."""
    city = outline()
    shapely.prepare(city)
    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = city.bounds
    chunks: list[np.ndarray] = []
    while sum(len(c) for c in chunks) < n:
        x, y = rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)
        keep = shapely.intersects_xy(city, x, y)
        chunks.append(np.column_stack([x[keep], y[keep]]))
    seeds = np.concatenate(chunks)[:n]
    cells = shapely.get_parts(
        shapely.voronoi_polygons(
            shapely.multipoints(seeds), extend_to=shapely.box(x0 - 1, y0 - 1, x1 + 1, y1 + 1)
        )
    )
    border = ~shapely.contains(city, cells)
    cells[border] = shapely.intersection(cells[border], city)
    cells = cells[~shapely.is_empty(cells)]

    def feat(code: str, level: str, parent: str | None, geom: shapely.Geometry) -> dict[str, Any]:
        props = {"code": code, "name": code, "level": level, "parent_code": parent}
        return {"type": "Feature", "properties": props, "geometry": json.loads(shapely.to_geojson(geom))}

    feats = [feat("500000", "city", None, city)]
    for code, parent, level in (
        ("5001", "500000", "district"),
        ("5001s", "5001", "street"),
        ("5001c", "5001s", "community"),
    ):
        feats.append(feat(code, level, parent, city))
    feats += [feat(f"g{i:05d}", "grid", "5001c", g) for i, g in enumerate(cells)]
    return {"type": "FeatureCollection", "features": feats}


def load_grids() -> tuple[PlaceHierarchy, str]:
    try:
        from zhizhi.geo.demo_city import build_demo_city  # type: ignore[import-not-found,unused-ignore]

        return PlaceHierarchy.load_geojson(build_demo_city()), "zhizhi.geo.demo_city.build_demo_city()"
    except ImportError:
        return PlaceHierarchy.load_geojson(synthetic_fc()), "synthetic Voronoi partition of Chongqing outline"


def reference(tree: shapely.STRtree, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The exact definition: STRtree 'intersects', smallest index on ties, -1 for none."""
    inp, idx = tree.query(shapely.points(x, y), predicate="intersects")
    best = np.full(len(x), np.iinfo(np.int64).max)
    np.minimum.at(best, inp, idx)
    return np.where(best == np.iinfo(np.int64).max, -1, best)


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}"


def postgis(grids: np.ndarray, x: np.ndarray, y: np.ndarray, ours: np.ndarray, ours_s: float) -> None:
    try:
        import psycopg
    except ImportError:
        out("postgis", "unavailable (psycopg not installed)")
        return
    dsn = "host=127.0.0.1 port=5432 user=postgres"
    try:
        with psycopg.connect(f"{dsn} dbname=test", autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS zhizhi_bench")
            admin.execute("CREATE DATABASE zhizhi_bench")
    except Exception as exc:  # no server
        out("postgis", f"unavailable ({type(exc).__name__}: {exc})".replace("\n", " "))
        return
    try:
        with psycopg.connect(f"{dsn} dbname=zhizhi_bench", autocommit=True) as conn:
            try:
                conn.execute("CREATE EXTENSION postgis")
            except Exception as exc:
                out(
                    "postgis",
                    f"unavailable ({str(exc).strip().splitlines()[0]}); "
                    "install with apt-get install -y postgresql-15-postgis-3",
                )
                return
            version = conn.execute("SELECT postgis_lib_version()").fetchone()[0]  # type: ignore[index]
            out("postgis_version", version)
            t = time.perf_counter()
            conn.execute("CREATE TABLE grids (idx int PRIMARY KEY, geom geometry(Geometry, 4326))")
            conn.execute("CREATE TABLE pts (id int PRIMARY KEY, geom geometry(Point, 4326))")
            with conn.cursor() as cur, cur.copy("COPY grids (idx, geom) FROM STDIN") as copy:
                for i, wkb in enumerate(
                    shapely.to_wkb(shapely.set_srid(grids, 4326), hex=True, include_srid=True)
                ):
                    copy.write_row((i, wkb))
            buf = io.StringIO()
            for i, (px, py) in enumerate(zip(x.tolist(), y.tolist(), strict=True)):
                buf.write(f"{i}\tSRID=4326;POINT({px!r} {py!r})\n")
            with conn.cursor() as cur, cur.copy("COPY pts (id, geom) FROM STDIN") as copy:
                copy.write(buf.getvalue())
            conn.execute("CREATE INDEX ON grids USING gist (geom)")
            conn.execute("ANALYZE grids")
            conn.execute("ANALYZE pts")
            out("postgis_load_s", f"{time.perf_counter() - t:.1f}", "s")
            conn.execute("SET max_parallel_workers_per_gather = 2")
            sql = (
                "SELECT p.id, min(g.idx) FROM pts p "
                "JOIN grids g ON ST_Intersects(g.geom, p.geom) GROUP BY p.id"
            )
            t = time.perf_counter()
            rows = conn.execute(sql).fetchall()
            pg_s = time.perf_counter() - t
            out("postgis_join_s", f"{pg_s:.2f}", "s")
            out("postgis_points_per_s", rate(len(x), pg_s), "points/s")
            pg = np.full(len(x), -1, dtype=np.int64)
            if rows:
                ids, idx = np.array(rows, dtype=np.int64).T
                pg[ids] = idx
            out("postgis_agreement", f"{100 * np.mean(pg == ours):.3f}", "%")
            out("ratio_ours_over_postgis", f"{pg_s / ours_s:.1f}", "x")
    finally:
        with psycopg.connect(f"{dsn} dbname=test", autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS zhizhi_bench")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--pg-points", type=int, default=1_000_000, help="points sent to PostGIS (0 = skip)")
    ap.add_argument("--memory-mb", type=float, default=100.0)
    args = ap.parse_args()

    t = time.perf_counter()
    hierarchy, source = load_grids()
    out("grids_source", source)
    out("grids_load_s", f"{time.perf_counter() - t:.1f}", "s")
    grids = hierarchy.level_geometries(Level.GRID)
    out("grids", len(grids))
    out("grid_vertices", int(shapely.get_num_coordinates(grids).sum()))

    locator = Locator(hierarchy, memory_mb=args.memory_mb, threads=2)
    t = time.perf_counter()
    index = locator.index(Level.GRID)
    out("build_s", f"{time.perf_counter() - t:.2f}", "s")
    st = index.stats
    out("raster", f"{st.nx}x{st.ny}", "cells")
    out("cell_size_m", f"{st.cell_deg * 111_320:.0f}", "m")
    out("mixed_share_cells", f"{100 * st.mixed_share:.2f}", "%")
    out("index_memory_mb", f"{st.nbytes / 1e6:.1f}", "MB")

    city = hierarchy.level_geometries(Level.CITY)
    city_geom = (
        shapely.union_all(city[[g is not None for g in city]]) if len(city) else shapely.union_all(grids)
    )
    x0, y0, x1, y1 = city_geom.bounds
    rng = np.random.default_rng(42)
    n = args.points
    bx, by = rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)
    shapely.prepare(city_geom)
    chunks = []
    while sum(len(c) for c in chunks) < n:
        cx, cy = rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)
        keep = shapely.intersects_xy(city_geom, cx, cy)
        chunks.append(np.column_stack([cx[keep], cy[keep]]))
    inside = np.concatenate(chunks)[:n]
    ix, iy = inside[:, 0], inside[:, 1]

    tree = shapely.STRtree(grids)
    for label, x, y in (("bbox", bx, by), ("inside", ix, iy)):
        index.lookup(x[:10_000], y[:10_000])  # warm
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            got = index.lookup(x, y)
            best = min(best, time.perf_counter() - t)
        fx = (x - index.x0) / index.cell
        fy = (y - index.y0) / index.cell
        ok = (fx >= 0) & (fx < index.nx) & (fy >= 0) & (fy < index.ny)
        cells = index.raster[fy[ok].astype(int), fx[ok].astype(int)]
        out(f"locate_{label}_points_per_s", rate(n, best), "points/s")
        out(f"mixed_share_points_{label}", f"{100 * np.mean(cells <= -2) * ok.mean():.2f}", "%")
        t = time.perf_counter()
        ref = reference(tree, x, y)
        ref_s = time.perf_counter() - t
        out(f"strtree_{label}_points_per_s", rate(n, ref_s), "points/s")
        out(f"agreement_{label}", f"{100 * np.mean(got == ref):.3f}", "%")
        out(f"speedup_{label}_vs_strtree", f"{ref_s / best:.1f}", "x")

    t = time.perf_counter()
    full = locator.locate(ix, iy)
    out(
        "locate_all_levels_first_call_s",
        f"{time.perf_counter() - t:.2f}",
        "s (builds coarser indexes lazily)",
    )
    t = time.perf_counter()
    full = locator.locate(ix, iy)
    out("locate_all_levels_inside_points_per_s", rate(n, time.perf_counter() - t), "points/s")
    out("inside_city_but_in_no_grid", f"{100 * np.mean(full[Level.GRID] < 0):.3f}", "%")
    assert (full[Level.GRID] >= 0).mean() > 0.99

    t = time.perf_counter()
    problems = hierarchy.validate()
    out("validate_s", f"{time.perf_counter() - t:.1f}", "s")
    out("validate_problems", len(problems))

    m = min(args.pg_points, n)
    if m > 0:
        ours = index.lookup(ix[:m], iy[:m])
        t = time.perf_counter()
        index.lookup(ix[:m], iy[:m])
        ours_s = time.perf_counter() - t
        postgis(grids, ix[:m], iy[:m], ours.astype(np.int64), ours_s)
    locator.close()


if __name__ == "__main__":
    main()
