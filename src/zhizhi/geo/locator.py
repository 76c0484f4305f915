"""Point location: which grid (and so which community, street, district, city) holds a point.

This is the hot path of intake (every case and every sensor is located), so it is built for
millions of points per second while giving *exactly* the answer of the reference method —
shapely's STRtree query with predicate "intersects", and for a point on a shared border (or
vertex) the place with the smallest level index.

How (per level, built lazily on first use):

1. A uniform raster covers the level's bounding box; its cell size comes from a memory budget.
2. Every cell that any polygon ring touches is *mixed*. Rings are densified to segments no longer
   than a cell, and each segment marks the cells its bounding box (grown by a tiny epsilon)
   overlaps — conservative, so a cell that is not marked is certainly not crossed by a boundary.
3. Unmarked (*pure*) cells are grouped into 4-connected components. A component cannot cross a
   boundary, so one exact lookup per component answers every point in it: the raster stores the
   place index (or -1) and a query is a numpy gather.
4. Mixed cells store a pointer to a sorted list of candidate polygons (CSR arrays). Points falling
   there are tested exactly with `shapely.intersects_xy` — the same GEOS predicate as the
   reference — candidate by candidate in ascending index, so the first hit is the tie-break.
   Large batches are split over a small thread pool (shapely releases the GIL).

Completeness of candidate lists: a polygon meeting a mixed cell either has its ring in the cell
(then it is listed) or contains the whole cell. The latter can only happen when interiors overlap,
so unless the level is a valid coverage (checked by GEOS) the polygons containing each mixed
cell's centre are added as well.

Grids are located first and ancestors follow the parent codes (the hierarchy's definition of
"in the community"); points that fall in no grid are tried at the next coarser level, and so on,
so any loaded hierarchy answers at all five levels.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from zhizhi.domain.errors import OutsideJurisdiction
from zhizhi.domain.places import Level, Location
from zhizhi.geo.coords import Crs, to_wgs84
from zhizhi.geo.hierarchy import PlaceHierarchy, metres_per_degree

__all__ = ["LevelIndex", "LocateResult", "Locator"]

_I32 = NDArray[np.int32]
_F64 = NDArray[np.float64]

# Grow each segment's box by this (degrees, ≈ 0.1 mm) so rounding in the cell arithmetic can
# never leave a boundary point in a cell that claims to be pure.
_EPS = 1e-9
# Below this many points a batch runs on the calling thread (pool overhead would dominate).
_PARALLEL_MIN = 50_000
_CACHE_VERSION = "1"


@dataclass(frozen=True, slots=True)
class IndexStats:
    """What building one level's raster cost and produced (for benchmarks and tuning)."""

    level: Level
    polygons: int
    nx: int
    ny: int
    cell_deg: float
    mixed_cells: int
    components: int
    candidates: int
    build_s: float
    nbytes: int
    from_cache: bool = False

    @property
    def mixed_share(self) -> float:
        return self.mixed_cells / max(self.nx * self.ny, 1)


class LevelIndex:
    """Exact point-in-polygon for one level's polygons: raster gather plus exact tests near edges."""

    def __init__(
        self,
        geometries: NDArray[np.object_],
        level: Level = Level.GRID,
        memory_mb: float = 100.0,
        cache_dir: str | Path | None = None,
        pool: ThreadPoolExecutor | None = None,
    ) -> None:
        import time

        t0 = time.perf_counter()
        self.level = level
        self.geoms = np.asarray(geometries, dtype=object)
        present = np.array([g is not None and not g.is_empty for g in self.geoms], dtype=bool)
        self._ids = np.nonzero(present)[0].astype(np.int32)  # local → level index
        self._local = self.geoms[present]
        shapely.prepare(self._local)
        self._pool = pool
        self.tree = shapely.STRtree(self._local)
        n = len(self._local)
        if n == 0:
            self.x0 = self.y0 = 0.0
            self.cell = 1.0
            self.nx = self.ny = 1
            self.raster = np.full((1, 1), -1, dtype=np.int32)
            self.offsets = np.zeros(1, dtype=np.int64)
            self.cands = np.zeros(0, dtype=np.int32)
            self.stats = IndexStats(level, 0, 1, 1, 1.0, 0, 0, 0, 0.0, 0)
            return

        minx, miny, maxx, maxy = shapely.total_bounds(self._local)
        width, height = max(maxx - minx, 1e-6), max(maxy - miny, 1e-6)
        # The raster takes ~60 % of the budget; the candidate lists and slack the rest.
        budget_cells = max(int(memory_mb * 1e6 * 0.6 / 4), 1024)
        cell = math.sqrt(width * height / budget_cells)
        cell = min(cell, max(width, height) / 4)
        self.cell = float(cell)
        self.x0 = float(minx - cell)
        self.y0 = float(miny - cell)
        self.nx = math.ceil((maxx - self.x0) / cell) + 2
        self.ny = math.ceil((maxy - self.y0) / cell) + 2

        key = None
        loaded = False
        if cache_dir is not None:
            key = self._cache_key()
            path = Path(cache_dir) / f"locator-{key}.npz"
            if path.exists():
                with np.load(path) as data:
                    self.raster = data["raster"]
                    self.offsets = data["offsets"]
                    self.cands = data["cands"]
                    components = int(data["components"])
                loaded = True
        if not loaded:
            components = self._build()
            if cache_dir is not None and key is not None:
                Path(cache_dir).mkdir(parents=True, exist_ok=True)
                tmp = Path(cache_dir) / f".locator-{key}-{os.getpid()}-{threading.get_ident()}.npz"
                np.savez(
                    tmp, raster=self.raster, offsets=self.offsets, cands=self.cands, components=components
                )
                tmp.replace(Path(cache_dir) / f"locator-{key}.npz")
        nbytes = self.raster.nbytes + self.offsets.nbytes + self.cands.nbytes
        self.stats = IndexStats(
            level,
            n,
            self.nx,
            self.ny,
            self.cell,
            len(self.offsets) - 1,
            components,
            len(self.cands),
            time.perf_counter() - t0,
            nbytes,
            loaded,
        )

    # ------------------------------------------------------------------ build
    def _cache_key(self) -> str:
        h = hashlib.sha256()
        h.update(_CACHE_VERSION.encode())
        h.update(np.array([self.x0, self.y0, self.cell, self.nx, self.ny]).tobytes())
        for wkb in shapely.to_wkb(self._local):
            h.update(wkb)
        return h.hexdigest()[:32]

    def _build(self) -> int:
        """Mark mixed cells, build candidate lists, label pure components. Returns #components."""
        n = len(self._local)
        nx, ny, cell = self.nx, self.ny, self.cell
        parts, part_owner = shapely.get_parts(self._local, return_index=True)
        rings, ring_part = shapely.get_rings(parts, return_index=True)
        ring_owner = part_owner[ring_part]
        rings = shapely.segmentize(rings, cell * 0.999)
        xy, ring_of = shapely.get_coordinates(rings, return_index=True)
        same = ring_of[:-1] == ring_of[1:]
        ax, ay = xy[:-1, 0][same], xy[:-1, 1][same]
        bx, by = xy[1:, 0][same], xy[1:, 1][same]
        owner = ring_owner[ring_of[:-1][same]].astype(np.int64)
        inv = 1.0 / cell
        i0 = np.floor((np.minimum(ax, bx) - _EPS - self.x0) * inv).astype(np.int64)
        i1 = np.floor((np.maximum(ax, bx) + _EPS - self.x0) * inv).astype(np.int64)
        j0 = np.floor((np.minimum(ay, by) - _EPS - self.y0) * inv).astype(np.int64)
        j1 = np.floor((np.maximum(ay, by) + _EPS - self.y0) * inv).astype(np.int64)
        np.clip(i0, 0, nx - 1, out=i0)
        np.clip(i1, 0, nx - 1, out=i1)
        np.clip(j0, 0, ny - 1, out=j0)
        np.clip(j1, 0, ny - 1, out=j1)
        # A segment is at most one cell long, so its (grown) box spans at most 3 cells per axis.
        span = int(max(np.max(i1 - i0, initial=0), np.max(j1 - j0, initial=0))) + 1
        keys = []
        for di in range(span):
            for dj in range(span):
                m = (i0 + di <= i1) & (j0 + dj <= j1)
                cells = (j0[m] + dj) * nx + (i0[m] + di)
                keys.append(cells * n + owner[m])
        key = _sorted_unique(np.concatenate(keys))
        cell_of = key // n
        poly_of = (key % n).astype(np.int32)
        starts = np.concatenate([[0], np.nonzero(np.diff(cell_of))[0] + 1])
        mixed_cells = cell_of[starts]

        if not _is_coverage(self._local):
            cell_of, poly_of = self._add_containing(mixed_cells, cell_of, poly_of, n)
            starts = np.concatenate([[0], np.nonzero(np.diff(cell_of))[0] + 1])

        self.offsets = np.concatenate([starts, [len(poly_of)]]).astype(np.int64)
        self.cands = poly_of

        pure = np.ones(nx * ny, dtype=bool)
        pure[mixed_cells] = False
        labels, ncomp = ndimage.label(pure.reshape(ny, nx))
        flat = labels.ravel()
        rep = np.zeros(ncomp + 1, dtype=np.int64)
        rep[flat] = np.arange(flat.size, dtype=np.int64)
        rep = rep[1:]
        cx = self.x0 + (rep % nx + 0.5) * cell
        cy = self.y0 + (rep // nx + 0.5) * cell
        lut = np.full(ncomp + 1, -1, dtype=np.int32)
        lut[1:] = self._exact_min(cx, cy)
        raster = lut[labels]
        raster.ravel()[mixed_cells] = -2 - np.arange(len(mixed_cells), dtype=np.int32)
        self.raster = raster
        return int(ncomp)

    def _add_containing(
        self, mixed_cells: NDArray[np.int64], cell_of: NDArray[np.int64], poly_of: NDArray[np.int32], n: int
    ) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
        """Add polygons that contain a mixed cell's centre (only needed when interiors overlap)."""
        cx = self.x0 + (mixed_cells % self.nx + 0.5) * self.cell
        cy = self.y0 + (mixed_cells // self.nx + 0.5) * self.cell
        inp, poly = self.tree.query(shapely.points(cx, cy), predicate="intersects")
        key = _sorted_unique(np.concatenate([cell_of * n + poly_of, mixed_cells[inp] * n + poly]))
        return key // n, (key % n).astype(np.int32)

    def _exact_min(self, x: _F64, y: _F64) -> _I32:
        """Reference answer (local index, smallest on ties, -1 for none) via the STRtree."""
        out = np.full(len(x), -1, dtype=np.int32)
        if not len(x):
            return out
        inp, poly = self.tree.query(shapely.points(x, y), predicate="intersects")
        if len(inp):
            best = np.full(len(x), np.iinfo(np.int32).max, dtype=np.int64)
            np.minimum.at(best, inp, poly)
            hit = best < np.iinfo(np.int32).max
            out[hit] = best[hit]
        return out

    # ------------------------------------------------------------------ query
    def lookup(self, x: _F64, y: _F64) -> _I32:
        """Level index of the polygon holding each point (-1 for none); exact, threaded if large."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        y = np.ascontiguousarray(y, dtype=np.float64)
        if self._pool is None or len(x) < _PARALLEL_MIN:
            return self._lookup(x, y)
        workers = self._pool._max_workers
        bounds = np.linspace(0, len(x), workers * 2 + 1).astype(int)
        parts = list(self._pool.map(lambda s: self._lookup(x[s[0] : s[1]], y[s[0] : s[1]]), pairwise(bounds)))
        return np.concatenate(parts)

    def _lookup(self, x: _F64, y: _F64) -> _I32:
        inv = 1.0 / self.cell
        fx = (x - self.x0) * inv
        fy = (y - self.y0) * inv
        inside = (fx >= 0) & (fx < self.nx) & (fy >= 0) & (fy < self.ny)
        with np.errstate(invalid="ignore"):  # NaN input: masked out just below
            ix = fx.astype(np.int64)
            iy = fy.astype(np.int64)
        ix[~inside] = 0
        iy[~inside] = 0
        val = self.raster[iy, ix]
        val[~inside] = -1
        mixed = np.nonzero(val <= -2)[0]
        if len(mixed):
            mid = -2 - val[mixed].astype(np.int64)
            val[mixed] = self._exact_mixed(x[mixed], y[mixed], mid)
        hit = val >= 0
        val[hit] = self._ids[val[hit]]
        return val

    def _exact_mixed(self, x: _F64, y: _F64, mid: NDArray[np.int64]) -> _I32:
        """Test each point against its cell's candidates in ascending order; first hit wins."""
        out = np.full(len(x), -1, dtype=np.int32)
        pos = self.offsets[mid]
        end = self.offsets[mid + 1]
        active = np.arange(len(x))
        while len(active):
            cand = self.cands[pos[active]]
            hit = shapely.intersects_xy(self._local[cand], x[active], y[active])
            out[active[hit]] = cand[hit]
            pos[active] += 1
            active = active[~hit & (pos[active] < end[active])]
        return out


@dataclass
class LocateResult:
    """Per level, an int32 array of level indices (-1 where no place); codes on demand."""

    hierarchy: PlaceHierarchy
    indices: dict[Level, _I32]
    lon: _F64 = field(repr=False)
    lat: _F64 = field(repr=False)

    def __len__(self) -> int:
        return len(self.lon)

    def __getitem__(self, level: Level | str | int) -> _I32:
        return self.indices[Level.parse(level)]

    def codes(self, level: Level | str | int) -> NDArray[np.object_]:
        """Codes at one level (None where no place), by one gather."""
        lv = Level.parse(level)
        idx = self.indices[lv]
        table = np.append(self.hierarchy.level_codes(lv), None)
        return table[np.where(idx >= 0, idx, len(table) - 1)]  # type: ignore[no-any-return]

    def found(self) -> NDArray[np.bool_]:
        """Points inside some unit of any level."""
        any_hit = np.zeros(len(self.lon), dtype=bool)
        for idx in self.indices.values():
            any_hit |= idx >= 0
        return any_hit

    def location(self, i: int) -> Location:
        """The i-th point as a domain Location (method "point")."""
        kw: dict[str, Any] = {}
        for lv in Level:
            j = int(self.indices[lv][i])
            kw[lv.name.lower()] = self.hierarchy.level_codes(lv)[j] if j >= 0 else None
        return Location(lon=float(self.lon[i]), lat=float(self.lat[i]), method="point", confidence=1.0, **kw)


class Locator:
    """Locate points in a `PlaceHierarchy`: `locate` for arrays, `locate_one` for a single case.

    Indexes are built per level on first need (the grid level on the first call); pass
    `cache_dir` to keep rasters as .npz keyed by a hash of the geometry.
    """

    def __init__(
        self,
        hierarchy: PlaceHierarchy,
        memory_mb: float = 100.0,
        threads: int = 2,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.hierarchy = hierarchy
        self.memory_mb = memory_mb
        self.cache_dir = cache_dir
        self._pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None
        self._indexes: dict[Level, LevelIndex] = {}
        self._lock = threading.Lock()
        self._nearest: tuple[Level, shapely.STRtree, NDArray[np.object_]] | None = None
        self._levels = [
            lv
            for lv in reversed(hierarchy.levels_present())
            if any(g is not None for g in hierarchy.level_geometries(lv))
        ]

    def close(self) -> None:
        """Stop the worker threads (the locator still works afterwards, single-threaded)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
            for index in self._indexes.values():
                index._pool = None

    def index(self, level: Level | str | int) -> LevelIndex:
        """The level's index, built on first use (thread-safe)."""
        lv = Level.parse(level)
        with self._lock:
            if lv not in self._indexes:
                self._indexes[lv] = LevelIndex(
                    self.hierarchy.level_geometries(lv), lv, self.memory_mb, self.cache_dir, self._pool
                )
            return self._indexes[lv]

    def stats(self) -> list[IndexStats]:
        """Build statistics of the indexes built so far."""
        return [ix.stats for ix in self._indexes.values()]

    def locate(self, lon: ArrayLike, lat: ArrayLike) -> LocateResult:
        """Locate WGS-84 points at every level; exact (see module docstring for the semantics)."""
        x = np.atleast_1d(np.asarray(lon, dtype=np.float64)).ravel()
        y = np.atleast_1d(np.asarray(lat, dtype=np.float64)).ravel()
        if x.shape != y.shape:
            raise ValueError("lon and lat must have the same length")
        n = len(x)
        result = {lv: np.full(n, -1, dtype=np.int32) for lv in Level}
        todo = np.arange(n)
        for lv in self._levels:  # finest first
            if not len(todo):
                break
            index = self.index(lv)
            found = index.lookup(x, y) if len(todo) == n else index.lookup(x[todo], y[todo])
            hit = found >= 0
            pts = todo[hit]
            cur = found[hit]
            result[lv][pts] = cur
            level = lv
            while level > Level.CITY and len(pts):
                parent = self.hierarchy.parent_indices(level)
                cur = parent[cur]
                level = Level(level - 1)
                ok = cur >= 0
                pts, cur = pts[ok], cur[ok]
                result[level][pts] = cur
            todo = todo[~hit]
        return LocateResult(self.hierarchy, result, x, y)

    def locate_one(self, lon: float, lat: float, crs: str | Crs = Crs.WGS84) -> Location:
        """Locate one point given in `crs`; raises OutsideJurisdiction naming the nearest unit."""
        source = Crs.parse(crs)
        wlon, wlat = to_wgs84(float(lon), float(lat), source)
        res = self.locate([wlon], [wlat])
        if not res.found()[0]:
            raise self._outside(float(wlon), float(wlat), float(lon), float(lat), source)
        loc = res.location(0)
        if source is Crs.WGS84:
            return loc
        extra = {"input_crs": source.value, "input_lon": float(lon), "input_lat": float(lat)}
        return replace(loc, extra=extra)

    def nearest(self, lon: float, lat: float) -> tuple[str, float] | None:
        """Nearest unit (district if there are districts) to a WGS-84 point, with distance in metres."""
        if self._nearest is None:
            levels = [lv for lv in self._levels if lv != Level.CITY] or self._levels
            if not levels:
                return None
            lv = Level.DISTRICT if Level.DISTRICT in levels else min(levels)
            geoms = self.hierarchy.level_geometries(lv)
            self._nearest = (lv, shapely.STRtree(geoms), geoms)
        lv, tree, geoms = self._nearest
        point = shapely.Point(lon, lat)
        # Nearest in degrees can differ from nearest in metres; check a few nearby candidates.
        near = tree.query_nearest(point)
        _, deg = tree.query_nearest(point, return_distance=True)
        window = tree.query(point.buffer(float(deg[0]) * 1.5 + 1e-9))
        best: tuple[str, float] | None = None
        for k in np.unique(np.concatenate([near, window])):
            line = shapely.shortest_line(geoms[k], point)
            (x1, y1), (x2, y2) = shapely.get_coordinates(line)
            kx, ky = metres_per_degree((y1 + y2) / 2)
            metres = math.hypot((x2 - x1) * kx, (y2 - y1) * ky)
            code = str(self.hierarchy.level_codes(lv)[k])
            if best is None or metres < best[1]:
                best = (code, metres)
        return best

    def _outside(self, wlon: float, wlat: float, lon: float, lat: float, crs: Crs) -> OutsideJurisdiction:
        point = f"({lon:.6f}, {lat:.6f}{'' if crs is Crs.WGS84 else ', ' + crs.value})"
        near = self.nearest(wlon, wlat)
        if near is None:
            return OutsideJurisdiction(
                f"点{point}不在辖区内：尚未加载任何单元 / outside the jurisdiction: no units are loaded",
                lon=lon,
                lat=lat,
            )
        code, metres = near
        name = self.hierarchy.get(code).name
        dist = f"{metres / 1000:.1f} km" if metres >= 1000 else f"{metres:.0f} m"
        return OutsideJurisdiction(
            f"点{point}不在辖区内：距最近的单元 {name} 约 {dist} / outside the jurisdiction: "
            f"nearest unit {name} ({code}) is about {dist} away",
            lon=lon,
            lat=lat,
            nearest_code=code,
            nearest_name=name,
            distance_m=round(metres, 1),
        )


def _sorted_unique(a: NDArray[np.int64]) -> NDArray[np.int64]:
    """Sorted distinct values; an in-place sort beats np.unique's hashing path several-fold here."""
    a.sort()
    if len(a) < 2:
        return a
    keep = np.empty(len(a), dtype=bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def _is_coverage(geoms: NDArray[np.object_]) -> bool:
    """True when interiors do not overlap (GEOS coverage check); False if it cannot tell."""
    if len(geoms) <= 1:
        return True
    try:
        return bool(shapely.coverage_is_valid(geoms))
    except Exception:  # old GEOS or odd input: take the always-correct slower path
        return False
