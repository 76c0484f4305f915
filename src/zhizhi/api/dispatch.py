"""Smart dispatch routes: suggestions, the dispatcher's queue, accept or override, whistle-blowing, duplicate links.

Routes translate HTTP to the use cases in `zhizhi.dispatch.service` (run on the message bus) and pass
the caller's principal along, so scope checks can be added in one place.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Query
from pydantic import BaseModel, Field

from zhizhi.api.deps import MAX_INT, CaseId, CurrentPrincipal
from zhizhi.dispatch import service as ds

if TYPE_CHECKING:
    from zhizhi.service.bootstrap import Zhizhi


class SuggestionOut(BaseModel):
    category_code: str
    category_name: str
    department_code: str
    department_name: str
    level: str
    confidence: float
    source: str = Field(description="model | keywords")
    auto: bool = Field(description="the confidence reaches this category's auto-dispatch threshold")
    threshold: float
    level_reasons: list[str] = []
    matched: list[str] = []


class SuggestionsOut(BaseModel):
    case_id: int
    model_version: str | None
    report_count: int
    suggestions: list[SuggestionOut]
    department_model: list[dict[str, Any]] = []


class QueueItem(BaseModel):
    case_id: int
    title: str
    state: str
    reported_at: str
    category_code: str | None
    district: str | None
    report_count: int
    suggestions: list[SuggestionOut]


class QueueOut(BaseModel):
    total: int
    items: list[QueueItem]
    model_version: str | None


class DecisionIn(BaseModel):
    """Accept the top suggestion (`accept: true`) or override any of category, department and level."""

    accept: bool = True
    category_code: str | None = None
    department_code: str | None = None
    level: str | None = Field(default=None, description="grid | community | street | district | city (or 网格 …)")
    note: str = ""


class WhistleIn(BaseModel):
    departments: list[str] = Field(min_length=1, description="department codes called in (被点名的部门)")
    reason: str = Field(min_length=1)
    tasks: dict[str, str] | None = Field(default=None, description="department → its task")
    report_within_hours: float = Field(default=ds.REPORT_IN_HOURS, gt=0, le=240)


class TaskActionIn(BaseModel):
    """`report_in` (报到) with the department's own deadline (`due_at` or `hours`), or `done` with a note."""

    action: str = Field(pattern="^(report_in|done)$")
    due_at: datetime | None = None
    hours: float | None = Field(default=None, gt=0, le=24 * 90)
    task: str | None = None
    note: str = ""


class LinkIn(BaseModel):
    into_case_id: int = Field(ge=1, le=MAX_INT, description="the open case this report duplicates")


def install(app: FastAPI, zz: Zhizhi) -> None:
    """Add this capability's routes to the app."""

    def run(fn: Any, *args: Any, **kwargs: Any) -> Any:
        return zz.handle(ds.DispatchCall(fn, args, kwargs))

    @app.get("/api/v1/dispatch/queue", response_model=QueueOut, operation_id="dispatch_queue", tags=["dispatch"])
    def dispatch_queue(principal: CurrentPrincipal, limit: int = Query(50, ge=1, le=200),
                       offset: int = Query(0, ge=0)) -> Any:
        """Cases waiting for a dispatcher (待分拨), each with its top three suggestions."""
        return ds.queue(zz.ctx, principal, limit=limit, offset=offset)

    @app.get("/api/v1/cases/{case_id}/suggestions", response_model=SuggestionsOut,
             operation_id="case_suggestions", tags=["dispatch"])
    def case_suggestions(case_id: CaseId, principal: CurrentPrincipal) -> Any:
        """Category, department and level suggestions with calibrated confidence and the level's reasons."""
        return ds.suggestions(zz.ctx, case_id, principal)

    @app.post("/api/v1/cases/{case_id}/dispatch-decision", operation_id="case_dispatch_decision",
              tags=["dispatch"])
    def case_dispatch_decision(case_id: CaseId, body: DecisionIn, principal: CurrentPrincipal) -> Any:
        """Accept or override; the case is registered and dispatched and the choice kept for retraining."""
        case = run(ds.decide, case_id, ds.Decision(body.accept, body.category_code, body.department_code,
                                                   body.level, body.note), principal)
        return {"case_id": case.id, "state": case.state.value, "category_code": case.category_code,
                "department_code": case.department_code,
                "level": case.level.name.lower() if case.level is not None else None,
                "note": case.timeline[-1].note if case.timeline else ""}

    @app.post("/api/v1/cases/{case_id}/whistle", operation_id="case_whistle", tags=["dispatch"])
    def case_whistle(case_id: CaseId, body: WhistleIn, principal: CurrentPrincipal) -> Any:
        """吹哨: the case rises one level; each named department must report in with its own task."""
        return run(ds.whistle, case_id, ds.WhistleCall(tuple(body.departments), body.reason, body.tasks,
                                                       body.report_within_hours), principal)

    @app.get("/api/v1/cases/{case_id}/whistle", operation_id="case_whistle_status", tags=["dispatch"])
    def case_whistle_status(case_id: CaseId, principal: CurrentPrincipal) -> Any:
        return ds.whistle_status(zz.ctx, case_id, principal)

    @app.post("/api/v1/cases/{case_id}/whistle/tasks/{department}", operation_id="case_whistle_task",
              tags=["dispatch"])
    def case_whistle_task(case_id: CaseId, department: str, body: TaskActionIn, principal: CurrentPrincipal) -> Any:
        """报到 or 完成 for one called department; the last task done closes the case."""
        return run(ds.task_action, case_id, department, body.action, principal, due_at=body.due_at,
                   hours=body.hours, task=body.task, note=body.note)

    @app.get("/api/v1/cases/{case_id}/duplicates", operation_id="case_duplicates", tags=["dispatch"])
    def case_duplicates(case_id: CaseId, principal: CurrentPrincipal) -> Any:
        """Reports merged into this case (and the case this one was merged into, if any)."""
        return ds.duplicates_of(zz.ctx, case_id, principal)

    @app.post("/api/v1/cases/{case_id}/duplicate-of", operation_id="case_link_duplicate", tags=["dispatch"])
    def case_link_duplicate(case_id: CaseId, body: LinkIn, principal: CurrentPrincipal) -> Any:
        """A dispatcher merges this new report into an open case by hand."""
        return run(ds.link_manually, case_id, body.into_case_id, principal)
