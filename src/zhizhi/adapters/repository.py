"""Case repository: maps the domain `Case` to rows and back, and runs the list queries.

The mapping is explicit (no ORM instrumentation of domain classes) so the domain
stays plain Python; the timeline is append-only, so saving a case inserts only
the entries the database has not seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, bindparam, false, func, insert, or_, select, text, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from zhizhi.adapters.orm import CaseEventRow, CaseRow
from zhizhi.domain.access import Scope
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
    scope: Scope | None = None  # the caller's scope (分域), applied in SQL; None = no limit
    offset: int = 0
    limit: int = 50


class CaseRepository:
    """Cases in a SQLAlchemy session; tracks what it loaded so the unit of work can collect events."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.seen: dict[int, Case] = {}
        self._written: dict[int, dict[str, Any]] = {}  # the column values the database holds
        self._version: dict[int, int] = {}
        self._persisted_seq: dict[int, int] = {}
        # Personal columns are encrypted at rest when the session carries a cipher (bootstrap sets it).
        self._cipher = session.info.get("cipher")

    # -- writes ------------------------------------------------------------------------------
    def add(self, case: Case) -> Case:
        """Insert and flush so the case has its id before any event is recorded."""
        return self.add_many([case])[0]

    def add_many(self, cases: list[Case]) -> list[Case]:
        """Insert many cases with one flush (a batched INSERT on both backends)."""
        if not cases:
            return cases
        now = datetime.now(UTC)
        values = [_row_values(case) for case in cases]
        # Plain INSERTs of column values, not ORM objects: nothing reads the rows back through the session
        # (the repository tracks the domain cases itself), and building and flushing a CaseRow cost 0.8 ms
        # a case, which an alarm storm or a hotline import multiplies by thousands.
        rows = [{**self._sealed(v), "version": 1, "updated_at": now} for v in values]
        # Into the table, not the mapped class: the ORM's bulk insert leaves out None values and so cuts a
        # batch into a statement per run of rows alike (a hotline import's rows differ in what they give).
        table = CaseRow.__table__
        if self.session.get_bind().dialect.name == "postgresql":
            # Take the ids from the sequence up front: the INSERT then needs no RETURNING and the
            # driver sends one short statement many times instead of parsing one huge one.
            ids = self.session.scalars(
                text("SELECT nextval(pg_get_serial_sequence('cases', 'id')) FROM generate_series(1, :n)"),
                {"n": len(rows)},
            ).all()
            for row, new_id in zip(rows, ids, strict=True):
                row["id"] = int(new_id)
            self.session.execute(insert(table), rows)
        else:
            ids = self.session.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True),
                                       rows).scalars().all()
        for case, new_id, v in zip(cases, ids, values, strict=True):
            case.id = int(new_id)
            self._track(case, v, version=1, persisted_seq=0)
        return cases

    def save_all(self) -> None:
        """Write back what changed in every tracked case, then append its new timeline entries.

        Only changed columns are written, and cases that changed the same columns share one
        executemany UPDATE. Each UPDATE is guarded by the version the case was read at
        (optimistic locking): if another writer changed the case meanwhile, no row matches and
        StaleDataError is raised, so nothing is silently overwritten.
        """
        table = CaseRow.__table__
        now = datetime.now(UTC)
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        written: list[tuple[int, dict[str, Any]]] = []
        for case_id, case in self.seen.items():
            values = _row_values(case)
            old = self._written[case_id]
            diff = {k: v for k, v in values.items() if old.get(k) != v}
            if not diff:
                continue
            params = {f"p_{k}": v for k, v in self._sealed(diff).items()}
            params.update(p_updated_at=now, b_id=case_id, b_version=self._version[case_id])
            groups.setdefault(tuple(sorted(diff)), []).append(params)
            written.append((case_id, values))
        for keys, params in groups.items():
            stmt = (
                update(table)
                .where(table.c.id == bindparam("b_id"), table.c.version == bindparam("b_version"))
                .values({k: bindparam(f"p_{k}", type_=table.c[k].type) for k in keys}
                        | {"updated_at": bindparam("p_updated_at", type_=table.c.updated_at.type),
                           "version": table.c.version + 1})
            )
            result = self.session.execute(stmt, params)
            if result.rowcount != len(params):  # type: ignore[attr-defined]
                raise StaleDataError(
                    f"{len(params) - result.rowcount} of {len(params)} cases changed meanwhile"  # type: ignore[attr-defined]
                )
        for case_id, values in written:
            self._written[case_id] = values
            self._version[case_id] += 1
        new_entries: list[dict[str, Any]] = []
        for case_id, case in self.seen.items():
            done = self._persisted_seq.get(case_id, 0)
            new_entries.extend(_entry_values(case_id, entry) for entry in case.timeline[done:])
            self._persisted_seq[case_id] = len(case.timeline)
        if new_entries:
            # The timeline is append-only and nothing reads the new ids back, so a plain
            # executemany INSERT does (no RETURNING, one statement text for the driver to parse).
            # Into the table (see `add_many`): through the mapped class, 200 entries of 50 alarm cases took
            # 101 statements on PostgreSQL, a case's report, register and dispatch entries differing in None.
            self.session.execute(insert(CaseEventRow.__table__), new_entries)

    def unsaved_entries(self) -> dict[int, list[TimelineEntry]]:
        """Timeline entries of tracked cases that `save_all` has not written yet (for the audit hook)."""
        out: dict[int, list[TimelineEntry]] = {}
        for case_id, case in self.seen.items():
            done = self._persisted_seq.get(case_id, 0)
            if len(case.timeline) > done:
                out[case_id] = case.timeline[done:]
        return out

    # -- reads -------------------------------------------------------------------------------
    def get(self, case_id: int, *, for_update: bool = False) -> Case | None:
        if case_id in self.seen:
            return self.seen[case_id]
        stmt = select(CaseRow).where(CaseRow.id == case_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = self.session.scalars(stmt).first()
        return self._load(row) if row is not None else None

    def get_many(self, case_ids: list[int], *, for_update: bool = False) -> list[Case]:
        """Load several cases with two queries (cases, then all their timelines); order kept."""
        missing = sorted({i for i in case_ids if i not in self.seen})
        for start in range(0, len(missing), 1000):
            chunk = missing[start:start + 1000]
            stmt = select(CaseRow).where(CaseRow.id.in_(chunk)).order_by(CaseRow.id)
            if for_update:
                stmt = stmt.with_for_update()
            rows = self.session.scalars(stmt).all()
            entries: dict[int, list[TimelineEntry]] = {}
            for e in self.session.scalars(
                select(CaseEventRow).where(CaseEventRow.case_id.in_(chunk)).order_by(CaseEventRow.case_id,
                                                                                    CaseEventRow.seq)
            ):
                entries.setdefault(e.case_id, []).append(_entry_from_row(e))
            for row in rows:
                timeline = entries.get(row.id, [])
                case = _from_row(row, timeline, self._cipher)
                self._track(case, _row_values(case), row.version, persisted_seq=len(timeline))
        return [self.seen[i] for i in case_ids if i in self.seen]

    def existing_by_source(self, source: str, source_ids: list[str]) -> dict[str, tuple[int, str]]:
        """source_id → (case id, state) for the ids already stored (one query per thousand)."""
        found: dict[str, tuple[int, str]] = {}
        ids = sorted(set(source_ids))
        for start in range(0, len(ids), 1000):
            rows = self.session.execute(
                select(CaseRow.id, CaseRow.source_id, CaseRow.state)
                .where(CaseRow.source == source, CaseRow.source_id.in_(ids[start:start + 1000]))
            ).all()
            found.update({r.source_id: (r.id, r.state) for r in rows})
        return found

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
        return [_from_row(r, [], self._cipher) for r in rows], int(total)

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
        case = _from_row(row, [_entry_from_row(e) for e in entries], self._cipher)
        self._track(case, _row_values(case), row.version, persisted_seq=len(entries))
        return case

    def _sealed(self, values: dict[str, Any]) -> dict[str, Any]:
        """The values as stored: personal columns encrypted (the tracked copy stays plain for diffs)."""
        if self._cipher is None:
            return values
        return {k: self._cipher.encrypt(v) if k in PERSONAL_COLUMNS else v for k, v in values.items()}

    def _track(self, case: Case, values: dict[str, Any], version: int, persisted_seq: int) -> None:
        assert case.id is not None
        self.seen[case.id] = case
        self._written[case.id] = values
        self._version[case.id] = version
        self._persisted_seq[case.id] = persisted_seq


#: Case columns holding personal data: ciphertext at rest.
PERSONAL_COLUMNS = frozenset({"address", "reporter_name", "reporter_phone", "reporter_id_number"})


def scope_clause(scope: Scope) -> Any:
    """The SQL condition of a scope: any place level listed, and the department listed."""
    if scope.nothing:
        return false()
    conds = []
    if scope.places:
        places = list(scope.places)
        conds.append(or_(CaseRow.city_code.in_(places), CaseRow.district_code.in_(places),
                         CaseRow.street_code.in_(places), CaseRow.community_code.in_(places),
                         CaseRow.grid_code.in_(places)))
    if scope.departments:
        conds.append(CaseRow.department_code.in_(list(scope.departments)))
    return conds


def _filtered(stmt: Select[Any], f: CaseFilter) -> Select[Any]:
    if f.scope is not None:
        clause = scope_clause(f.scope)
        stmt = stmt.where(*clause) if isinstance(clause, list) else stmt.where(clause)
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


def _row_values(c: Case) -> dict[str, Any]:
    loc = c.location
    return {
        "source": c.source, "source_id": c.source_id, "title": c.title, "description": c.description,
        "state": c.state.value, "category_code": c.category_code, "department_code": c.department_code,
        "level": int(c.level) if c.level is not None else None,
        "city_code": loc.city, "district_code": loc.district, "street_code": loc.street,
        "community_code": loc.community, "grid_code": loc.grid, "lon": loc.lon, "lat": loc.lat,
        "location_method": loc.method, "location_confidence": float(loc.confidence),
        "location_extra": dict(loc.extra), "address": c.address, "reporter_name": c.reporter_name,
        "reporter_phone": c.reporter_phone, "reporter_id_number": c.reporter_id_number,
        "photos": list(c.photos), "reported_at": c.reported_at,
        "registered_at": c.registered_at, "dispatched_at": c.dispatched_at, "closed_at": c.closed_at,
        "due_at": c.due_at, "overdue_since": c.overdue_since, "suspended_at": c.suspended_at,
        "suspended_from": c.suspended_from.value if c.suspended_from else None,
        "satisfaction": c.satisfaction, "evaluation_comment": c.evaluation_comment,
        "supervise_count": c.supervise_count, "return_count": c.return_count,
    }


def _from_row(r: CaseRow, timeline: list[TimelineEntry], cipher: Any = None) -> Case:
    plain = cipher.decrypt if cipher is not None else (lambda v: v)
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
        address=plain(r.address),
        reporter_name=plain(r.reporter_name),
        reporter_phone=plain(r.reporter_phone),
        reporter_id_number=plain(r.reporter_id_number),
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


def _entry_values(case_id: int, e: TimelineEntry) -> dict[str, Any]:
    return {
        "case_id": case_id, "seq": e.seq, "at": e.at, "actor": e.actor, "role": e.role, "action": e.action,
        "from_state": e.from_state.value if e.from_state else None, "to_state": e.to_state.value,
        "note": e.note, "attachments": list(e.attachments), "data": _jsonable(e.data),
    }


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
