"""Request and response bodies: separate Create / Action / Public schemas, stable field names."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ActorIn(BaseModel):
    """Ignored: the actor is the authenticated principal. Accepted so that older clients keep working."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("调度员", max_length=100)
    role: str = Field("dispatcher", max_length=32)
    department: str | None = Field(None, max_length=64)


class CaseCreate(BaseModel):
    """A report from a citizen, a grid worker, a department system or the hotline."""

    model_config = ConfigDict(extra="forbid")
    source: str = Field("citizen", max_length=32, examples=["citizen"])
    source_id: str = Field(..., min_length=1, max_length=128, description="the reporting system's own id")
    title: str = Field("", max_length=500)
    description: str = Field("", max_length=4000)
    category_code: str | None = Field(None, max_length=32)
    lon: float | None = Field(None, ge=-180, le=180)
    lat: float | None = Field(None, ge=-90, le=90)
    crs: Literal["wgs84", "gcj02", "bd09"] = "wgs84"
    address: str | None = Field(None, max_length=500)
    reporter_name: str | None = Field(None, max_length=100)
    reporter_phone: str | None = Field(None, max_length=40)
    reporter_id_number: str | None = Field(
        None, max_length=32, examples=["11010519491231002X"],
        description="身份证号: 18 characters with the GB 11643 check character (422 otherwise); encrypted at "
                    "rest and masked in every answer")
    photos: list[str] = Field(default_factory=list, max_length=20)
    reported_at: datetime | None = None


class CaseAction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: str = Field(..., examples=["dispatch"])
    actor: ActorIn = Field(default_factory=lambda: ActorIn())
    note: str = Field("", max_length=4000)
    department: str | None = Field(None, max_length=64)
    level: str | None = Field(None, max_length=16)
    passed: bool | None = None
    satisfaction: int | None = None
    photos: list[str] = Field(default_factory=list, max_length=20)
    place_code: str | None = Field(None, max_length=32)
    category_code: str | None = Field(None, max_length=32)


class PlaceRef(BaseModel):
    code: str
    name: str
    approximate: bool = False


class LocationOut(BaseModel):
    city: PlaceRef | None = None
    district: PlaceRef | None = None
    street: PlaceRef | None = None
    community: PlaceRef | None = None
    grid: PlaceRef | None = None
    lon: float | None = None
    lat: float | None = None
    method: str
    confidence: float


class TimelineOut(BaseModel):
    seq: int
    at: datetime
    actor: str
    role: str
    action: str
    action_label: str
    from_state: str | None
    to_state: str
    note: str
    attachments: list[str]
    data: dict[str, Any]


class CaseOut(BaseModel):
    id: int
    source: str
    source_id: str
    title: str
    description: str
    state: str
    state_label: str
    category_code: str | None
    category_name: str | None
    department_code: str | None
    department_name: str | None
    level: str | None
    location: LocationOut
    address: str | None
    reporter_phone: str | None = Field(None, description="masked unless ?unmask=true by a permitted role")
    reporter_name: str | None = Field(None, description="masked unless ?unmask=true by a permitted role")
    reporter_id_number: str | None = Field(None, description="身份证号, masked (5001**********123X) unless "
                                                             "?unmask=true by a permitted role")
    photos: list[str]
    reported_at: datetime
    due_at: datetime | None
    overdue: bool
    closed_at: datetime | None
    satisfaction: int | None
    allowed_actions: list[str]
    timeline: list[TimelineOut] | None = None


class CaseCreated(BaseModel):
    id: int
    created: bool
    state: str
    case: CaseOut


class CasePage(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[CaseOut]
