"""The place hierarchy (city → district → street → community → grid) with its geometry.

The domain's `Place` knows only the tree; this module pairs each place with a shapely geometry
in WGS-84 (zhizhi's storage system: inputs in GCJ-02 or BD-09 are converted on load), keeps
them indexed by code and by level, exports GeoJSON for maps, and checks that the boundaries
actually form a hierarchy (children inside parents, siblings not overlapping, no holes).

Per level, places keep their load order; the position of a place in `at_level(level)` is its
*level index*, the integer the locator returns (and the tie-break for points on a border).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry.base import BaseGeometry

from zhizhi.domain.places import Level, Place
from zhizhi.geo.coords import Crs, to_wgs84

__all__ = ["PlaceHierarchy", "Problem", "metres_per_degree"]

# Mean metres per degree of latitude; longitude scales by cos(latitude).
_M_PER_DEG = 111_320.0


def metres_per_degree(lat: float | NDArray[np.float64]) -> tuple[Any, Any]:
    """(metres per degree of longitude, of latitude) at a latitude: a local planar scale.

    Good to well under 1 % across a city, which is all validation and display need.
    """
    return _M_PER_DEG * np.cos(np.radians(lat)), _M_PER_DEG


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the boundaries, for an operator to fix (kind is machine-readable)."""

    code: str
    kind: str
    message: str


def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "y", "是"}
    return bool(value)


class PlaceHierarchy:
    """Places plus WGS-84 geometries, indexed by code and level.

    Duplicate codes are kept out of the index but remembered, so that `validate()` can report
    them instead of the loader failing on the first one (operators fix a whole file at once).
    """

    def __init__(self, items: Iterable[tuple[Place, BaseGeometry | None]] = ()) -> None:
        self._places: dict[str, Place] = {}
        self._geoms: dict[str, BaseGeometry | None] = {}
        self._levels: dict[Level, list[str]] = {lv: [] for lv in Level}
        self._children: dict[str, list[str]] = {}
        self._duplicates: list[Place] = []
        self._cache: dict[tuple[str, Level], Any] = {}
        for place, geom in items:
            self.add(place, geom)

    # ------------------------------------------------------------------ building
    def add(self, place: Place, geometry: BaseGeometry | None) -> None:
        """Add one place (geometry already in WGS-84). A repeated code is recorded, not added."""
        if place.code in self._places:
            self._duplicates.append(place)
            return
        self._places[place.code] = place
        self._geoms[place.code] = geometry
        self._levels[place.level].append(place.code)
        if place.parent_code is not None:
            self._children.setdefault(place.parent_code, []).append(place.code)
        self._cache.clear()

    @classmethod
    def load_geojson(
        cls, source: str | Path | Mapping[str, Any], crs: str | Crs = Crs.WGS84
    ) -> PlaceHierarchy:
        """Load a FeatureCollection (path or dict) whose features carry code/name/level/parent_code.

        `level` may be English (city … grid) or Chinese (市 … 网格). Coordinates are converted
        from `crs` to WGS-84 so every geometry in the hierarchy is in one system.
        """
        source_crs = Crs.parse(crs)
        if isinstance(source, Mapping):
            data = source
        else:
            with open(source, encoding="utf-8") as fh:
                data = json.load(fh)
        if data.get("type") != "FeatureCollection":
            raise ValueError("expected a GeoJSON FeatureCollection")
        hierarchy = cls()
        for number, feature in enumerate(data.get("features", [])):
            props = feature.get("properties") or {}
            missing = [k for k in ("code", "name", "level") if props.get(k) in (None, "")]
            if missing:
                raise ValueError(f"feature #{number} lacks properties {missing}")
            parent = props.get("parent_code")
            population = props.get("population")
            place = Place(
                code=str(props["code"]),
                name=str(props["name"]),
                level=Level.parse(props["level"]),
                parent_code=None if parent in (None, "") else str(parent),
                approximate=_truthy(props.get("approximate", False)),
                population=None if population in (None, "") else int(population),
            )
            geometry = feature.get("geometry")
            geom = None
            if geometry:
                geom = shapely.from_geojson(json.dumps(geometry))
                if source_crs is not Crs.WGS84:
                    geom = _convert(geom, source_crs)
            hierarchy.add(place, geom)
        return hierarchy

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self._places)

    def __contains__(self, code: object) -> bool:
        return code in self._places

    def __iter__(self) -> Iterator[Place]:
        return iter(self._places.values())

    def get(self, code: str) -> Place:
        """The place with this code; KeyError names the code when unknown."""
        try:
            return self._places[code]
        except KeyError:
            raise KeyError(f"no place with code {code!r}") from None

    def geometry(self, code: str) -> BaseGeometry | None:
        """The place's WGS-84 geometry (None if it was loaded without one)."""
        self.get(code)
        return self._geoms[code]

    def children(self, code: str) -> list[Place]:
        """Direct children, in load order."""
        return [self._places[c] for c in self._children.get(code, []) if c in self._places]

    def ancestors(self, code: str) -> list[Place]:
        """Ancestors from the top down (the place itself excluded); stops at a missing parent."""
        chain: list[Place] = []
        seen = {code}
        place = self.get(code)
        while place.parent_code is not None and place.parent_code in self._places:
            if place.parent_code in seen:  # a cycle in bad data must not hang the caller
                break
            seen.add(place.parent_code)
            place = self._places[place.parent_code]
            chain.append(place)
        chain.reverse()
        return chain

    def at_level(self, level: Level | str | int) -> list[Place]:
        """All places of one level, in load order (list position = level index)."""
        return [self._places[c] for c in self._levels[Level.parse(level)]]

    def level_codes(self, level: Level | str | int) -> NDArray[np.object_]:
        """Codes of one level as an array, so level indices map to codes with one gather."""
        lv = Level.parse(level)
        key = ("codes", lv)
        if key not in self._cache:
            self._cache[key] = np.array(self._levels[lv], dtype=object)
        return self._cache[key]  # type: ignore[no-any-return]

    def level_geometries(self, level: Level | str | int) -> NDArray[np.object_]:
        """Geometries of one level as a shapely array (None where missing), aligned with codes."""
        lv = Level.parse(level)
        key = ("geoms", lv)
        if key not in self._cache:
            arr = np.empty(len(self._levels[lv]), dtype=object)
            arr[:] = [self._geoms[c] for c in self._levels[lv]]
            self._cache[key] = arr
        return self._cache[key]  # type: ignore[no-any-return]

    def level_index(self, code: str) -> int:
        """Position of a place within its level (what the locator returns)."""
        place = self.get(code)
        key = ("index", place.level)
        if key not in self._cache:
            self._cache[key] = {c: i for i, c in enumerate(self._levels[place.level])}
        return self._cache[key][code]  # type: ignore[no-any-return]

    def parent_indices(self, level: Level | str | int) -> NDArray[np.int32]:
        """For each place of `level`, its parent's level index one level up (-1 if none)."""
        lv = Level.parse(level)
        key = ("parents", lv)
        if key not in self._cache:
            out = np.full(len(self._levels[lv]), -1, dtype=np.int32)
            if lv > Level.CITY:
                up = Level(lv - 1)
                pos = {c: i for i, c in enumerate(self._levels[up])}
                for i, code in enumerate(self._levels[lv]):
                    parent = self._places[code].parent_code
                    if parent is not None and parent in pos:
                        out[i] = pos[parent]
            self._cache[key] = out
        return self._cache[key]  # type: ignore[no-any-return]

    def levels_present(self) -> list[Level]:
        """Levels that hold at least one place."""
        return [lv for lv in Level if self._levels[lv]]

    # ------------------------------------------------------------------ export
    def to_geojson(
        self,
        level: Level | str | int | None = None,
        parent: str | None = None,
        simplify_m: float | None = None,
    ) -> dict[str, Any]:
        """A FeatureCollection for maps: one level and/or one parent's subtree, optionally simplified.

        `parent` keeps the places below that code (all depths, or only `level` when given).
        Simplification preserves topology per polygon; it is for display only, never for lookup.
        """
        if parent is not None:
            self.get(parent)
            codes: list[str] = []
            stack = list(reversed(self._children.get(parent, [])))
            while stack:
                code = stack.pop()
                if code not in self._places:
                    continue
                codes.append(code)
                stack.extend(reversed(self._children.get(code, [])))
        else:
            codes = list(self._places)
        if level is not None:
            lv = Level.parse(level)
            codes = [c for c in codes if self._places[c].level == lv]
        geoms = np.empty(len(codes), dtype=object)
        geoms[:] = [self._geoms[c] for c in codes]
        if simplify_m and len(codes):
            present = np.array([g is not None for g in geoms], dtype=bool)
            sub = geoms[present]
            lat = np.array([g.centroid.y for g in sub]) if len(sub) else np.empty(0)
            tol = simplify_m / _M_PER_DEG / np.maximum(np.cos(np.radians(lat)), 0.1) if len(sub) else 0.0
            geoms[present] = shapely.simplify(sub, tol, preserve_topology=True)
        texts = shapely.to_geojson(geoms)
        features = []
        for code, text in zip(codes, texts, strict=True):
            place = self._places[code]
            features.append(
                {
                    "type": "Feature",
                    "id": code,
                    "properties": {
                        "code": code,
                        "name": place.name,
                        "level": place.level.name.lower(),
                        "level_zh": place.level.label_zh,
                        "parent_code": place.parent_code,
                        "approximate": place.approximate,
                        "population": place.population,
                    },
                    "geometry": None if text is None else json.loads(text),
                }
            )
        return {"type": "FeatureCollection", "features": features}

    # ------------------------------------------------------------------ validation
    def validate(self, tolerance_m: float = 1.0, tolerance_share: float = 0.001) -> list[Problem]:
        """Check that the boundaries form a hierarchy; returns every problem found (empty = fine).

        A child may stick out of its parent, overlap a sibling, or leave part of its parent
        uncovered by up to max(`tolerance_share` × area, `tolerance_m` × perimeter): surveyed
        boundaries from different sources disagree by a few metres along every border, and a
        pure area share would punish long thin units. All geometric checks run as vectorised
        shapely calls (STRtree for sibling pairs), so ~40,000 grids validate in seconds.
        """
        problems: list[Problem] = []
        for dup in self._duplicates:
            problems.append(
                Problem(dup.code, "duplicate-code", f"code {dup.code} ({dup.name}) appears more than once")
            )

        for place in self._places.values():
            if place.parent_code is None:
                if place.level != Level.CITY:
                    problems.append(
                        Problem(
                            place.code,
                            "parent-missing",
                            f"{place.name} ({place.level.name.lower()}) has no parent",
                        )
                    )
                continue
            parent = self._places.get(place.parent_code)
            if parent is None:
                problems.append(
                    Problem(
                        place.code,
                        "parent-missing",
                        f"parent {place.parent_code} of {place.name} does not exist",
                    )
                )
            elif parent.level != place.level - 1:
                problems.append(
                    Problem(
                        place.code,
                        "parent-level",
                        f"{place.name} is {place.level.name.lower()} but its parent {parent.name} is "
                        f"{parent.level.name.lower()} (expected {Level(place.level - 1).name.lower()})",
                    )
                )

        for level in self.levels_present():
            problems.extend(self._validate_level(level, tolerance_m, tolerance_share))
        return problems

    def _validate_level(self, level: Level, tolerance_m: float, share: float) -> list[Problem]:
        problems: list[Problem] = []
        codes = self.level_codes(level)
        geoms = self.level_geometries(level)
        has = np.array([g is not None for g in geoms], dtype=bool)
        for i in np.nonzero(~has)[0]:
            problems.append(Problem(codes[i], "geometry-missing", f"{codes[i]} has no geometry"))
        idx = np.nonzero(has)[0]
        if not len(idx):
            return problems
        g = geoms[idx]
        c = codes[idx]
        valid = shapely.is_valid(g)
        for k in np.nonzero(~valid)[0]:
            problems.append(Problem(c[k], "geometry-invalid", f"{c[k]}: {shapely.is_valid_reason(g[k])}"))
        kinds = shapely.get_type_id(g)
        areal = np.isin(kinds, (3, 6))
        for k in np.nonzero(~areal)[0]:
            problems.append(Problem(c[k], "geometry-type", f"{c[k]} is not a (multi)polygon"))
        ok = valid & areal
        g, c = g[ok], c[ok]
        if not len(g):
            return problems

        # Metric scale per geometry (areas in m², lengths in m) from its centroid latitude.
        lat = shapely.get_y(shapely.centroid(g))
        kx, ky = metres_per_degree(lat)
        area = shapely.area(g) * kx * ky
        perim = shapely.length(g) * np.sqrt(kx * ky)
        allowed = np.maximum(share * area, tolerance_m * perim)

        parents = np.array([self._places[code].parent_code for code in c], dtype=object)
        parent_geom = np.array(
            [self._geoms.get(p) if p is not None and p in self._places else None for p in parents],
            dtype=object,
        )
        has_parent = np.array([pg is not None and pg.is_valid for pg in parent_geom], dtype=bool)

        # 1. children inside parents: exact covers first (prepared, cheap); areas only for failures.
        inside_area = area.copy()
        pi = np.nonzero(has_parent)[0]
        if len(pi):
            pg = parent_geom[pi]
            shapely.prepare(pg)
            covered = shapely.covers(pg, g[pi])
            bad = pi[~covered]
            if len(bad):
                inter = shapely.area(shapely.intersection(parent_geom[bad], g[bad])) * kx[bad] * ky
                inside_area[bad] = inter
                outside = area[bad] - inter
                for k, out_m2 in zip(bad, outside, strict=True):
                    if out_m2 > allowed[k]:
                        problems.append(
                            Problem(
                                c[k],
                                "outside-parent",
                                f"{c[k]} lies {out_m2 / max(area[k], 1e-9):.1%} ({out_m2:,.0f} m²) "
                                f"outside its "
                                f"parent {parents[k]}",
                            )
                        )

        # 2. sibling overlaps: candidate pairs from an STRtree, interiors meeting = overlaps or contains.
        tree = shapely.STRtree(g)
        pairs = [tree.query(g, predicate="overlaps"), tree.query(g, predicate="contains")]
        pair = np.concatenate(pairs, axis=1)
        pair = pair[:, pair[0] < pair[1]] if pair.size else pair
        overlap_by_parent: dict[object, float] = {}
        if pair.size:
            a, b = pair
            same = parents[a] == parents[b]
            a, b = a[same], b[same]
            if len(a):
                ov = shapely.area(shapely.intersection(g[a], g[b])) * kx[a] * ky
                for i, j, ov_m2 in zip(a, b, ov, strict=True):
                    overlap_by_parent[parents[i]] = overlap_by_parent.get(parents[i], 0.0) + ov_m2
                    if ov_m2 > min(allowed[i], allowed[j]):
                        problems.append(
                            Problem(c[i], "sibling-overlap", f"{c[i]} and {c[j]} overlap by {ov_m2:,.0f} m²")
                        )

        # 3. gaps: parent area minus what its children cover (inclusion–exclusion to pairs, which
        #    is exact when no three siblings share a point's neighbourhood — the normal case).
        if len(pi):
            covered_by_parent: dict[object, float] = {}
            for p, inside in zip(parents[pi], inside_area[pi], strict=True):
                covered_by_parent[p] = covered_by_parent.get(p, 0.0) + inside
            for p, cov in covered_by_parent.items():
                pgeom = self._geoms[p]  # type: ignore[index]
                assert pgeom is not None
                plat = pgeom.centroid.y
                pkx, pky = metres_per_degree(plat)
                parea = pgeom.area * pkx * pky
                pperim = pgeom.length * math.sqrt(pkx * pky)
                gap = parea - (cov - overlap_by_parent.get(p, 0.0))
                if gap > max(share * parea, tolerance_m * pperim):
                    problems.append(
                        Problem(
                            str(p),
                            "gap",
                            f"children of {p} leave {gap / parea:.1%} ({gap:,.0f} m²) of it uncovered",
                        )
                    )
        return problems


def _convert(geom: BaseGeometry, crs: Crs) -> BaseGeometry:
    """Reproject a geometry's vertices to WGS-84 (vectorised over all coordinates at once)."""

    def fn(xy: NDArray[np.float64]) -> NDArray[np.float64]:
        lon, lat = to_wgs84(xy[:, 0], xy[:, 1], crs)
        return np.column_stack([lon, lat])

    return shapely.transform(geom, fn)
