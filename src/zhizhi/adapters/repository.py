"""Case repository: maps the domain `Case` to rows and back, and runs the list queries.

The mapping is explicit (no ORM instrumentation of domain classes) so the domain
stays plain Python; the timeline is append-only, so saving a case inserts only
the entries the database has not seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from zhizhi.adapters.orm import CaseEventRow, CaseRow
from zhizhi.domain.case import Case, CaseState, TimelineEntry
from zhizhi.domain.places import Level, Location


@dataclass
class CaseFilter:
    """Everything the case list can be filtered by. `area` matches any level's code (a subtree)."""

    states: list[str] = field(default_factory=list)
    level: int | None = None
    area: str | None = None
    department: str | None = None
    category: str | None = None
    source: str | None = None
    overdue_at: datetime | None = None  # only cases overdue at this instant
    reported_from: datetime | None = None
    reported_to: datetime | None = None
    text: str | None = None
    needs_location: bool | None = None
    needs_dispatch: bool | None = None
    offset: int = 0
    limit: int = 50


class CaseRepository:
    """Cases in a SQLAlchemy session; tracks what it loaded so the unit of work can collect events."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.seen: dict[int, Case] = {}
        self._rows: dict[int, CaseRow] = {}
        self._persisted_seq: dict[int, int] = {}

    # -- writes ------------------------------------------------------------------------------
    def add(self, case: Case) -> Case:
        """Insert and flush so the case has its id before any event is recorded."""
        row = CaseRow(version=1)
        _to_row(case, row)
        self.session.add(row)
        self.session.flush()
        case.id = row.id
        self._track(case, row, persisted_seq=0)
        return case

    def save_all(self) -> None:
        """Write every tracked case back and append its new timeline entries."""
        for case_id, case in self.seen.items():
            _to_row(case, self._rows[case_id])
        # The version-checked UPDATE goes first, so a concurrent change is reported as such
        # (StaleDataError) rather than as a clash of timeline sequence numbers.
        self.session.flush()
        for case_id, case in self.seen.items():
            done = self._persisted_seq.get(case_id, 0)
            for entry in case.timeline[done:]:
                self.session.add(_entry_row(case_id, entry))
            self._persisted_seq[case_id] = len(case.timeline)

    # -- reads -------------------------------------------------------------------------------
    def get(self, case_id: int, *, for_update: bool = False) -> Case | None:
        if case_id in self.seen:
            return self.seen[case_id]
        stmt = select(CaseRow).where(CaseRow.id == case_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = self.session.scalars(stmt).first()
        return self._load(row) if row is not None else None

    def get_by_source(self, source: str, source_id: str) -> Case | None:
        row = self.session.scalars(
            select(CaseRow).where(CaseRow.source == source, CaseRow.source_id == source_id)
        ).first()
        return self._load(row) if row is not None else None

    def list(self, flt: CaseFilter) -> tuple[list[Case], int]:
        """One page of cases (newest first) and the total count, without loading timelines."""
        stmt = _filtered(select(CaseRow), flt)
        total = self.session.scalar(_filtered(select(func.count(CaseRow.id)), flt)) or 0
        rows = self.session.scalars(
            stmt.order_by(CaseRow.reported_at.desc(), CaseRow.id.desc()).offset(flt.offset).limit(flt.limit)
        ).all()
        return [_from_row(r, []) for r in rows], int(total)

    def overdue_candidates(self, now: datetime, limit: int = 1000) -> list[Case]:
        """Open, running cases past their deadline not yet marked overdue (for the periodic job)."""
        rows = self.session.scalars(
            select(CaseRow)
            .where(
                CaseRow.state.in_([s.value for s in CaseState if s.is_open and s is not CaseState.SUSPENDED]),
                CaseRow.due_at.is_not(None),
                CaseRow.due_at < now,
                CaseRow.overdue_since.is_(None),
            )
            .order_by(CaseRow.due_at)
            .limit(limit)
        ).all()
        return [self._load(r) for r in rows]

    def count_by_state(self) -> dict[str, int]:
        rows = self.session.execute(select(CaseRow.state, func.count()).group_by(CaseRow.state)).all()
        return {state: int(n) for state, n in rows}

    # -- internals ---------------------------------------------------------------------------
    def _load(self, row: CaseRow) -> Case:
        if row.id in self.seen:
            return self.seen[row.id]
        entries = self.session.scalars(
            select(CaseEventRow).where(CaseEventRow.case_id == row.id).order_by(CaseEventRow.seq)
        ).all()
        case = _from_row(row, [_entry_from_row(e) for e in entries])
        self._track(case, row, persisted_seq=len(entries))
        return case

    def _track(self, case: Case, row: CaseRow, persisted_seq: int) -> None:
        assert case.id is not None
        self.seen[case.id] = case
        self._rows[case.id] = row
        self._persisted_seq[case.id] = persisted_seq


def _filtered(stmt: Select[Any], f: CaseFilter) -> Select[Any]:
    if f.states:
        stmt = stmt.where(CaseRow.state.in_(f.states))
    if f.level is not None:
        stmt = stmt.where(CaseRow.level == f.level)
    if f.area:
        stmt = stmt.where(
            or_(
                CaseRow.city_code == f.area,
                CaseRow.district_code == f.area,
                CaseRow.street_code == f.area,
                CaseRow.community_code == f.area,
                CaseRow.grid_code == f.area,
            )
        )
    if f.department:
        stmt = stmt.where(CaseRow.department_code == f.department)
    if f.category:
        stmt = stmt.where(or_(CaseRow.category_code == f.category, CaseRow.category_code.startswith(f.category)))
    if f.source:
        stmt = stmt.where(CaseRow.source == f.source)
    if f.overdue_at is not None:
        open_running = [s.value for s in CaseState if s.is_open and s is not CaseState.SUSPENDED]
        stmt = stmt.where(CaseRow.state.in_(open_running), CaseRow.due_at < f.overdue_at)
    if f.reported_from is not None:
        stmt = stmt.where(CaseRow.reported_at >= f.reported_from)
    if f.reported_to is not None:
        stmt = stmt.where(CaseRow.reported_at < f.reported_to)
    if f.text:
        like = f"%{f.text}%"
        stmt = stmt.where(or_(CaseRow.title.like(like), CaseRow.description.like(like)))
    if f.needs_location is True:
        stmt = stmt.where(CaseRow.district_code.is_(None), CaseRow.state == CaseState.REPORTED.value)
    if f.needs_dispatch is True:
        stmt = stmt.where(CaseRow.state.in_([CaseState.REPORTED.value, CaseState.REGISTERED.value]))
    return stmt


def _to_row(c: Case, r: CaseRow) -> None:
    loc = c.location
    r.source, r.source_id, r.title, r.description = c.source, c.source_id, c.title, c.description
    r.state = c.state.value
    r.category_code, r.department_code = c.category_code, c.department_code
    r.level = int(c.level) if c.level is not None else None
    r.city_code, r.district_code, r.street_code = loc.city, loc.district, loc.street
    r.community_code, r.grid_code = loc.community, loc.grid
    r.lon, r.lat = loc.lon, loc.lat
    r.location_method, r.location_confidence = loc.method, float(loc.confidence)
    r.location_extra = dict(loc.extra)
    r.address, r.reporter_name, r.reporter_phone = c.address, c.reporter_name, c.reporter_phone
    r.photos = list(c.photos)
    r.reported_at, r.registered_at, r.dispatched_at = c.reported_at, c.registered_at, c.dispatched_at
    r.closed_at, r.due_at, r.overdue_since = c.closed_at, c.due_at, c.overdue_since
    r.suspended_at = c.suspended_at
    r.suspended_from = c.suspended_from.value if c.suspended_from else None
    r.satisfaction, r.evaluation_comment = c.satisfaction, c.evaluation_comment
    r.supervise_count, r.return_count = c.supervise_count, c.return_count
    r.updated_at = datetime.now(UTC)


def _from_row(r: CaseRow, timeline: list[TimelineEntry]) -> Case:
    return Case(
        id=r.id,
        source=r.source,
        source_id=r.source_id,
        title=r.title,
        description=r.description,
        reported_at=r.reported_at,
        state=CaseState(r.state),
        category_code=r.category_code,
        department_code=r.department_code,
        level=Level(r.level) if r.level is not None else None,
        location=Location(
            city=r.city_code, district=r.district_code, street=r.street_code,
            community=r.community_code, grid=r.grid_code, lon=r.lon, lat=r.lat,
            method=r.location_method, confidence=r.location_confidence, extra=dict(r.location_extra or {}),
        ),
        address=r.address,
        reporter_name=r.reporter_name,
        reporter_phone=r.reporter_phone,
        photos=list(r.photos or []),
        due_at=r.due_at,
        overdue_since=r.overdue_since,
        suspended_at=r.suspended_at,
        suspended_from=CaseState(r.suspended_from) if r.suspended_from else None,
        registered_at=r.registered_at,
        dispatched_at=r.dispatched_at,
        closed_at=r.closed_at,
        satisfaction=r.satisfaction,
        evaluation_comment=r.evaluation_comment,
        supervise_count=r.supervise_count,
        return_count=r.return_count,
        timeline=timeline,
    )


def _entry_row(case_id: int, e: TimelineEntry) -> CaseEventRow:
    return CaseEventRow(
        case_id=case_id, seq=e.seq, at=e.at, actor=e.actor, role=e.role, action=e.action,
        from_state=e.from_state.value if e.from_state else None, to_state=e.to_state.value,
        note=e.note, attachments=list(e.attachments), data=_jsonable(e.data),
    )


def _entry_from_row(r: CaseEventRow) -> TimelineEntry:
    return TimelineEntry(
        seq=r.seq, at=r.at, actor=r.actor, role=r.role, action=r.action,
        from_state=CaseState(r.from_state) if r.from_state else None, to_state=CaseState(r.to_state),
        note=r.note, attachments=tuple(r.attachments or ()), data=dict(r.data or {}),
    )


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        out[k] = v.isoformat() if isinstance(v, datetime) else v
    return out
