"""Places: the city → district → street → community → grid hierarchy.

A place is identified by its code (the national statistical code where one
exists; generated grids get their community code plus a suffix). Geometry lives
in the geo engine; the domain only knows the tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class Level(IntEnum):
    """Levels of the hierarchy, from the top. The integer is the depth."""

    CITY = 0
    DISTRICT = 1
    STREET = 2
    COMMUNITY = 3
    GRID = 4

    @property
    def label_zh(self) -> str:
        return _LEVEL_ZH[self]

    @classmethod
    def parse(cls, value: str | int | Level) -> Level:
        if isinstance(value, Level):
            return value
        if isinstance(value, int):
            return cls(value)
        text = str(value).strip().lower()
        for level in cls:
            if text in (level.name.lower(), _LEVEL_ZH[level]):
                return level
        raise ValueError(f"unknown level {value!r}; use one of {[lv.name.lower() for lv in cls]}")


_LEVEL_ZH = {
    Level.CITY: "市",
    Level.DISTRICT: "区县",
    Level.STREET: "镇街",
    Level.COMMUNITY: "村社",
    Level.GRID: "网格",
}


@dataclass(frozen=True, slots=True)
class Place:
    """One unit of the hierarchy. `approximate` marks generated (not surveyed) geometry."""

    code: str
    name: str
    level: Level
    parent_code: str | None
    approximate: bool = False
    population: int | None = None


@dataclass(frozen=True, slots=True)
class Location:
    """Where a case is: the five codes from city to grid (any may be None if unknown)."""

    city: str | None = None
    district: str | None = None
    street: str | None = None
    community: str | None = None
    grid: str | None = None
    lon: float | None = None
    lat: float | None = None
    method: str = "unknown"  # "point", "address", "manual"
    confidence: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)

    def code_at(self, level: Level) -> str | None:
        return (self.city, self.district, self.street, self.community, self.grid)[level]

    @property
    def finest(self) -> str | None:
        for code in (self.grid, self.community, self.street, self.district, self.city):
            if code:
                return code
        return None
