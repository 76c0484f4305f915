"""The gazetteer the service layer asks 'where is this?': point locator plus address matcher."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zhizhi.domain.places import Level, Location, Place
from zhizhi.geo.address import AddressLocator
from zhizhi.geo.hierarchy import PlaceHierarchy
from zhizhi.geo.locator import LocateResult, Locator


class GeoGazetteer:
    """Implements `service.ports.Gazetteer` over a loaded `PlaceHierarchy`."""

    def __init__(self, hierarchy: PlaceHierarchy, cache_dir: Path | None = None) -> None:
        self.hierarchy = hierarchy
        self.locator = Locator(hierarchy, cache_dir=cache_dir)
        self._address: AddressLocator | None = None

    @property
    def address_locator(self) -> AddressLocator:
        if self._address is None:  # built on first use: most API calls carry coordinates
            self._address = AddressLocator(list(self.hierarchy))
        return self._address

    def locate_point(self, lon: float, lat: float, crs: str = "wgs84") -> Location:
        return self.locator.locate_one(lon, lat, crs)

    def locate_many(self, lon: Any, lat: Any) -> LocateResult:
        """Vectorised locate of WGS-84 arrays (batch imports, `places locate --file`)."""
        return self.locator.locate(lon, lat)

    def locate_address(self, text: str) -> Location | None:
        match = self.address_locator.locate(text)
        if match is None:
            return None
        finest = match.community_code or match.street_code or match.district_code
        if finest is None:
            return None
        base = self.location_of(finest)
        return Location(
            city=base.city, district=base.district, street=base.street, community=base.community,
            grid=None, method="address", confidence=float(match.confidence),
            extra={"matched": list(match.matched), "explanation": match.explanation},
        )

    def place(self, code: str) -> Place | None:
        return self.hierarchy.get(code) if code in self.hierarchy else None

    def location_of(self, code: str) -> Location:
        codes: dict[str, str | None] = {lv.name.lower(): None for lv in Level}
        for p in [*self.hierarchy.ancestors(code), self.hierarchy.get(code)]:
            codes[p.level.name.lower()] = p.code
        return Location(method="manual", confidence=1.0, **codes)


class LazyGazetteer:
    """Loads the hierarchy from storage on first use, so commands that never locate stay fast."""

    def __init__(self, load: Callable[[], GeoGazetteer]) -> None:
        self._load = load
        self._real: GeoGazetteer | None = None
        self._lock = threading.Lock()

    @property
    def real(self) -> GeoGazetteer:
        if self._real is None:
            with self._lock:
                if self._real is None:
                    self._real = self._load()
        return self._real

    def reload(self) -> None:
        """Forget the loaded hierarchy (after `places load`); the next use reads it again."""
        self._real = None

    @property
    def hierarchy(self) -> PlaceHierarchy:
        return self.real.hierarchy

    def locate_point(self, lon: float, lat: float, crs: str = "wgs84") -> Location:
        return self.real.locate_point(lon, lat, crs)

    def locate_many(self, lon: Any, lat: Any) -> LocateResult:
        return self.real.locate_many(lon, lat)

    def locate_address(self, text: str) -> Location | None:
        return self.real.locate_address(text)

    def place(self, code: str) -> Place | None:
        return self.real.place(code)

    def location_of(self, code: str) -> Location:
        return self.real.location_of(code)
