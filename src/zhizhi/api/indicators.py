"""City vital signs (体征指标): the indicator tree, values per area, CSV export, and the console's chart data.

Routes translate HTTP to `IndicatorService` calls; every route takes the principal so the access
capability's scope applies in the service (an area outside the caller's places answers 404).
"""

from __future__ import annotations

import itertools
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import StreamingResponse

from zhizhi.analytics.service import IndicatorService, Reading
from zhizhi.api.deps import CurrentPrincipal
from zhizhi.domain.errors import NotFound
from zhizhi.domain.indicators import FACTS, Grain, tree_to_dict
from zhizhi.domain.places import Level

if TYPE_CHECKING:
    from zhizhi.service.bootstrap import Zhizhi

TAGS: list[str | Any] = ["indicators"]
CHARTS = ("by_category", "by_level", "by_state", "trend", "on_time", "closure", "satisfaction", "open", "overdue",
          "alarms_by_scene")

AreaQ = Annotated[str | None, Query(description="place code (default: the caller's first place, else the city)")]
LevelQ = Annotated[str | None, Query(description="list every area at this level inside `area` "
                                                 "(city|district|street|community|grid, or 市/区县/镇街/村社/网格)")]
GrainQ = Annotated[str | None, Query(description="day|week|month|quarter|year (default: each indicator's own)")]
AtQ = Annotated[datetime | None, Query(description="a time inside the period (default now; no zone = city time)")]
IndQ = Annotated[list[str] | None, Query(description="only these indicator codes (repeatable)")]


def service_of(request: Request) -> IndicatorService:
    """The app's indicator service, created on first use (it opens the snapshot file)."""
    state = request.app.state
    with state.indicators_lock:
        if state.indicators is None:
            state.indicators = IndicatorService.for_app(state.zz)
        return state.indicators  # type: ignore[no-any-return]


def install(app: FastAPI, zz: Zhizhi) -> None:
    """Add this capability's routes to the app."""
    app.state.indicators = None
    app.state.indicators_lock = threading.Lock()

    @app.get("/api/v1/indicators/tree", operation_id="indicator_tree", tags=TAGS)
    def tree(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
        """The tree: sectors → runways → sub-runways → indicators, with formulas and thresholds."""
        svc = service_of(request)
        return {"sectors": tree_to_dict(svc.tree), "grains": [g.value for g in Grain],
                "facts": [{"code": f.code, "source": f.source.value, "name_zh": f.name_zh,
                           "description": f.description, "basis": f.basis} for f in FACTS.values()]}

    @app.get("/api/v1/indicators", operation_id="indicator_values", tags=TAGS)
    def read(request: Request, principal: CurrentPrincipal, area: AreaQ = None, level: LevelQ = None,
             grain: GrainQ = None, at: AtQ = None, indicator: IndQ = None,
             offset: Annotated[int, Query(ge=0)] = 0,
             limit: Annotated[int, Query(ge=1, le=50_000, description="areas per page")] = 1000) -> dict[str, Any]:
        """Values of the tree for an area, or for every area at `level` inside it (paged by area)."""
        svc = service_of(request)
        reading = svc.read(principal, area=area, level=level, grain=grain, at=at, indicators=indicator,
                           limit=limit, offset=offset)
        return _reading_json(svc, reading, offset, limit)

    @app.get("/api/v1/indicators.csv", operation_id="indicator_values_csv", tags=TAGS,
             response_class=StreamingResponse)
    def export(request: Request, principal: CurrentPrincipal, area: AreaQ = None, level: LevelQ = None,
               grain: GrainQ = None, at: AtQ = None, indicator: IndQ = None) -> StreamingResponse:
        """The same values as CSV (UTF-8 with BOM), one row per area and indicator, every area at `level`."""
        svc = service_of(request)
        lines = svc.csv_lines(principal, area=area, level=level, grain=grain, at=at, indicators=indicator)
        header = next(lines)  # reads the values: a bad request fails here, before the response starts
        name = f"indicators-{area or 'city'}-{level or 'area'}.csv"
        return StreamingResponse(itertools.chain([header], lines), media_type="text/csv; charset=utf-8",
                                 headers={"content-disposition": f'attachment; filename="{name}"'})

    @app.get("/api/v1/indicators/summary", operation_id="indicator_summary", tags=TAGS)
    def summary(request: Request, principal: CurrentPrincipal, area: AreaQ = None,
                days: Annotated[int, Query(ge=1, le=366)] = 30, at: AtQ = None,
                overdue_limit: Annotated[int, Query(ge=0, le=200)] = 10) -> dict[str, Any]:
        """Every chart of the console at once: by category, by level, by state, daily trend, on-time and
        closure rates, satisfaction, open and overdue cases (with the most overdue), alarms by scene."""
        return service_of(request).summary(principal, area=area, days=days, at=at, overdue_limit=overdue_limit)

    @app.get("/api/v1/indicators/summary/{chart}", operation_id="indicator_chart", tags=TAGS)
    def chart(request: Request, principal: CurrentPrincipal, chart: str, area: AreaQ = None,
              days: Annotated[int, Query(ge=1, le=366)] = 30, at: AtQ = None,
              overdue_limit: Annotated[int, Query(ge=0, le=200)] = 10) -> dict[str, Any]:
        """One chart of the summary (`chart` is one of its keys)."""
        if chart not in CHARTS:
            raise NotFound(f"没有图表 {chart!r} / no chart {chart!r}", allowed=list(CHARTS))
        s = service_of(request).summary(principal, area=area, days=days, at=at, overdue_limit=overdue_limit)
        return {"area": s["area"], "window": s["window"], chart: s[chart]}

    @app.post("/api/v1/indicators/refresh", operation_id="indicator_refresh", tags=TAGS)
    def refresh(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
        """Pull what changed in the case store into the snapshot now (otherwise at most every 30 s)."""
        svc = service_of(request)
        stats = svc.refresh(force=True)
        assert stats is not None
        return {"cases_read": stats.cases_read, "events_read": stats.events_read,
                "places_reloaded": stats.places_reloaded, "alarms": stats.alarms,
                "snapshot_version": svc.snapshot.version}


def _reading_json(svc: IndicatorService, reading: Reading, offset: int, limit: int) -> dict[str, Any]:
    names = {i.code: i for i in svc.tree.indicators()}
    return {
        "area": {"code": reading.area.code, "name": reading.area.name, "level": reading.area.level.name.lower(),
                 "population": reading.area.population},
        "level": reading.level.name.lower(),
        "periods": {g.value: {"label": p.label, "start": p.start.isoformat(), "end": p.end.isoformat()}
                    for g, p in reading.periods.items()},
        "total_areas": reading.total_areas, "offset": offset, "limit": limit,
        "snapshot_version": svc.snapshot.version,
        "values": [{**r, "level": _level_name(r["level"]), "name_zh": names[r["indicator"]].name_zh,
                    "unit": names[r["indicator"]].unit} for r in reading.rows],
    }


def _level_name(level: int) -> str:
    return Level(level).name.lower()
