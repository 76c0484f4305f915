"""Tables for smart dispatch: dispatcher decisions, duplicate links, whistle tasks.

Decisions are the data back-flow (数据反哺) for retraining; links record which reports were merged
into which case; whistle tasks hold each department's own task and deadline after 吹哨报到.
Models themselves are files in the data dir (`models/`), never rows: they are derived data.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    func,
    or_,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from zhizhi.adapters.orm import Base, BigId, CaseRow, UtcDateTime
from zhizhi.dispatch.duplicates import Candidate
from zhizhi.domain.case import CaseState
from zhizhi.domain.whistle import TaskState, WhistleTask


class DispatchDecisionRow(Base):
    """What the dispatcher chose against what was suggested; feeds `zhizhi dispatch train --from-db`."""

    __tablename__ = "dispatch_decisions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(String(100))
    text: Mapped[str] = mapped_column(Text)
    accepted: Mapped[bool] = mapped_column(Boolean)
    suggested_category: Mapped[str | None] = mapped_column(String(32))
    suggested_department: Mapped[str | None] = mapped_column(String(64))
    suggested_level: Mapped[int | None] = mapped_column(Integer)
    confidence: Mapped[float | None] = mapped_column(Float)
    chosen_category: Mapped[str] = mapped_column(String(32), index=True)
    chosen_department: Mapped[str] = mapped_column(String(64))
    chosen_level: Mapped[int] = mapped_column(Integer)
    model_version: Mapped[str | None] = mapped_column(String(40))
    suggestions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class DuplicateLinkRow(Base):
    """A report merged into an open case of the same problem (one row per merged report)."""

    __tablename__ = "dispatch_links"
    __table_args__ = (UniqueConstraint("linked_case_id", name="uq_dispatch_links_linked"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    linked_case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    by: Mapped[str] = mapped_column(String(100))
    similarity: Mapped[float] = mapped_column(Float)
    distance_m: Mapped[float | None] = mapped_column(Float)
    notified_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class WhistleTaskRow(Base):
    """One department's task after a whistle (吹哨报到): it reports in, works to its own deadline, finishes."""

    __tablename__ = "whistle_tasks"
    __table_args__ = (
        UniqueConstraint("case_id", "round", "department_code", name="uq_whistle_tasks_dept"),
        Index("ix_whistle_tasks_state_due", "state", "due_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    round: Mapped[int] = mapped_column(Integer)
    department_code: Mapped[str] = mapped_column(String(64))
    task: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))  # called | reported | done
    called_at: Mapped[datetime] = mapped_column(UtcDateTime)
    called_by: Mapped[str] = mapped_column(String(100))
    report_by: Mapped[datetime | None] = mapped_column(UtcDateTime)
    due_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    reported_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    done_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    note: Mapped[str] = mapped_column(Text, default="")
    #: When the overdue job found the current deadline missed and urged the department (督办); NULL otherwise.
    overdue_since: Mapped[datetime | None] = mapped_column(UtcDateTime)


class DispatchStore:
    """Reads and writes of the dispatch tables inside the caller's unit of work (its session)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    # -- decisions ---------------------------------------------------------------------------
    def add_decision(self, **values: Any) -> None:
        self.session.add(DispatchDecisionRow(**values))

    def decisions(self, limit: int = 100_000) -> list[DispatchDecisionRow]:
        return list(self.session.scalars(select(DispatchDecisionRow).order_by(DispatchDecisionRow.id).limit(limit)))

    # -- duplicates --------------------------------------------------------------------------
    def open_candidates(self, *, district: str | None, since: datetime, exclude: int, grid: str | None = None,
                        lon: float | None = None, lat: float | None = None, radius_m: float | None = None,
                        limit: int = 500) -> list[Candidate]:
        """Open cases of the district reported since `since` (the duplicate window), earlier than `exclude`;
        with a grid or a point, only those in the same grid or inside the radius's bounding box, so the
        text comparison runs on a handful of cases, not the whole district."""
        open_states = [s.value for s in CaseState if s.is_open]
        stmt = (select(CaseRow.id, CaseRow.title, CaseRow.description, CaseRow.reported_at, CaseRow.grid_code,
                       CaseRow.lon, CaseRow.lat, CaseRow.category_code)
                .where(CaseRow.state.in_(open_states), CaseRow.reported_at >= since, CaseRow.id < exclude)
                .order_by(CaseRow.reported_at.desc()).limit(limit))
        if district is not None:
            stmt = stmt.where(CaseRow.district_code == district)
        near = []
        if grid is not None:
            near.append(CaseRow.grid_code == grid)
        if lon is not None and lat is not None and radius_m:
            dlat = radius_m / 111_320.0
            dlon = dlat / max(0.1, math.cos(math.radians(lat)))
            near.append(and_(CaseRow.lon.between(lon - dlon, lon + dlon), CaseRow.lat.between(lat - dlat, lat + dlat)))
        if near:
            stmt = stmt.where(or_(*near))
        return [Candidate(r.id, f"{r.title}\n{r.description}", r.reported_at, r.grid_code, r.lon, r.lat,
                          r.category_code) for r in self.session.execute(stmt)]

    def add_link(self, case_id: int, linked_case_id: int, at: datetime, by: str, similarity: float,
                 distance: float | None) -> None:
        self.session.add(DuplicateLinkRow(case_id=case_id, linked_case_id=linked_case_id, at=at, by=by,
                                          similarity=similarity, distance_m=distance))

    def links(self, case_id: int) -> list[DuplicateLinkRow]:
        return list(self.session.scalars(select(DuplicateLinkRow).where(DuplicateLinkRow.case_id == case_id)
                                         .order_by(DuplicateLinkRow.id)))

    def link_of(self, linked_case_id: int) -> DuplicateLinkRow | None:
        return self.session.scalars(select(DuplicateLinkRow)
                                    .where(DuplicateLinkRow.linked_case_id == linked_case_id)).first()

    def link_counts(self, case_ids: list[int]) -> dict[int, int]:
        if not case_ids:
            return {}
        rows = self.session.execute(select(DuplicateLinkRow.case_id, func.count())
                                    .where(DuplicateLinkRow.case_id.in_(case_ids))
                                    .group_by(DuplicateLinkRow.case_id)).all()
        return {int(c): int(n) for c, n in rows}

    # -- whistle tasks -----------------------------------------------------------------------
    def tasks(self, case_id: int, round_no: int | None = None) -> list[tuple[WhistleTaskRow, WhistleTask]]:
        stmt = select(WhistleTaskRow).where(WhistleTaskRow.case_id == case_id)
        if round_no is not None:
            stmt = stmt.where(WhistleTaskRow.round == round_no)
        rows = list(self.session.scalars(stmt.order_by(WhistleTaskRow.round, WhistleTaskRow.id)))
        return [(r, _task(r)) for r in rows]

    def last_round(self, case_id: int) -> int:
        return int(self.session.scalar(select(func.max(WhistleTaskRow.round))
                                       .where(WhistleTaskRow.case_id == case_id)) or 0)

    def add_task(self, t: WhistleTask) -> None:
        self.session.add(WhistleTaskRow(case_id=t.case_id, round=t.round, department_code=t.department_code,
                                        task=t.task, state=t.state.value, called_at=t.called_at,
                                        called_by=t.called_by, report_by=t.report_by, due_at=t.due_at,
                                        reported_at=t.reported_at, done_at=t.done_at, note=t.note,
                                        overdue_since=t.overdue_since))

    def overdue_tasks(self, now: datetime, limit: int = 1000) -> list[tuple[WhistleTaskRow, WhistleTask]]:
        """Open tasks whose current deadline has passed and that have not been urged for it yet:
        called and not reported in by `report_by`, or reported in and not done by `due_at`."""
        missed = or_(and_(WhistleTaskRow.state == TaskState.CALLED.value, WhistleTaskRow.report_by < now),
                     and_(WhistleTaskRow.state == TaskState.REPORTED.value, WhistleTaskRow.due_at < now))
        stmt = (select(WhistleTaskRow).where(WhistleTaskRow.overdue_since.is_(None), missed)
                .order_by(WhistleTaskRow.case_id, WhistleTaskRow.id).limit(limit))
        if self.session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)  # two overdue jobs never urge the same task twice
        return [(r, _task(r)) for r in self.session.scalars(stmt)]

    @staticmethod
    def write_task(row: WhistleTaskRow, t: WhistleTask) -> None:
        row.task, row.state, row.due_at = t.task, t.state.value, t.due_at
        row.reported_at, row.done_at, row.note = t.reported_at, t.done_at, t.note
        row.overdue_since = t.overdue_since


def _task(r: WhistleTaskRow) -> WhistleTask:
    return WhistleTask(case_id=r.case_id, round=r.round, department_code=r.department_code, task=r.task,
                       called_at=r.called_at, called_by=r.called_by, report_by=r.report_by,
                       state=TaskState(r.state), due_at=r.due_at, reported_at=r.reported_at, done_at=r.done_at,
                       note=r.note or "", overdue_since=r.overdue_since, id=r.id)
