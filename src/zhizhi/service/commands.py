"""Commands: imperative requests to the service layer (bare dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from zhizhi.domain.access import Principal
from zhizhi.domain.case import Actor


class Command:
    """Marker base class for commands."""


@dataclass(frozen=True)
class ReportCase(Command):
    """A report from any source. Coordinates (with their CRS) or an address, or both."""

    source: str
    source_id: str
    title: str
    description: str = ""
    category_code: str | None = None
    lon: float | None = None
    lat: float | None = None
    crs: str = "wgs84"
    address: str | None = None
    reporter_name: str | None = None
    reporter_phone: str | None = None
    reporter_id_number: str | None = None  # 身份证号 (GB 11643, checked at intake)
    photos: tuple[str, ...] = ()
    reported_at: datetime | None = None
    actor: Actor | None = None
    # Who reports through an entry point; audited. None = a trusted caller, audited as a system job.
    principal: Principal | None = None
    # Set by a source that already knows who handles it (a sensing scene's policy): the case is
    # registered and dispatched to this department at this level at once, due in deadline_minutes.
    dispatch_department: str | None = None
    dispatch_level: str | None = None
    deadline_minutes: int | None = None


@dataclass(frozen=True)
class ReportCases(Command):
    """Many reports at once (hotline import): stored in one transaction, one outcome per report."""

    reports: tuple[ReportCase, ...]


@dataclass(frozen=True)
class ActOnCase(Command):
    """Any action of the case loop on one case. Which fields matter depends on the action."""

    case_id: int
    action: str
    actor: Actor
    note: str = ""
    department: str | None = None
    level: str | int | None = None
    passed: bool | None = None
    satisfaction: int | None = None
    photos: tuple[str, ...] = ()
    place_code: str | None = None
    category_code: str | None = None
    at: datetime | None = None
    data: dict[str, object] = field(default_factory=dict)
    # Who acts, when through an entry point: scope and role are checked, the act is audited, and
    # the timeline's actor comes from it. None = a trusted internal caller (CLI, demo, jobs).
    principal: Principal | None = None


@dataclass(frozen=True)
class CheckOverdue(Command):
    """The periodic job: mark overdue cases and escalate per policy."""

    now: datetime | None = None
