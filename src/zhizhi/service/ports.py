"""Ports the service layer needs from the outside: places (the gazetteer) and a clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from zhizhi.domain.places import Location, Place


class Gazetteer(Protocol):
    """Answers 'where is this?' against the place hierarchy."""

    def locate_point(self, lon: float, lat: float, crs: str = "wgs84") -> Location:
        """All five levels for a point; raises OutsideJurisdiction outside the city."""
        ...

    def locate_address(self, text: str) -> Location | None:
        """Best effort from Chinese address text; None when nothing can be resolved."""
        ...

    def place(self, code: str) -> Place | None: ...

    def location_of(self, code: str) -> Location:
        """The Location (all levels above and including `code`) of a place chosen by a person."""
        ...


class Clock:
    """Wall clock by default; the demo replay pins it to simulated time."""

    def __init__(self) -> None:
        self.fixed: datetime | None = None

    def now(self) -> datetime:
        return self.fixed if self.fixed is not None else datetime.now(UTC)
