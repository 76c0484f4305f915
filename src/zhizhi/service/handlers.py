"""One handler per use case. Each opens the unit of work, changes one aggregate, and commits.

Reports are committed before anything else happens to them (the acknowledgement
a citizen or the hotline gets means the report is stored); locating by address,
registration and dispatch follow as handlers of the events, each in its own
transaction, so a failure there leaves the case safely in a queue.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from zhizhi.adapters import audit_log
from zhizhi.dispatch.keywords import KeywordClassifier
from zhizhi.domain import events as ev
from zhizhi.domain.access import Principal, require, system_principal
from zhizhi.domain.calendar import WorkingCalendar
from zhizhi.domain.case import SYSTEM, Action, Actor, Case, CaseState
from zhizhi.domain.catalogue import Catalogue
from zhizhi.domain.errors import DomainError, NotFound, ValidationFailed
from zhizhi.domain.personal import parse_id_number
from zhizhi.domain.places import Level, Location
from zhizhi.service.commands import ActOnCase, CheckOverdue, ReportCase, ReportCases
from zhizhi.service.ports import Clock, Gazetteer
from zhizhi.service.scope import ensure_visible
from zhizhi.service.uow import UnitOfWork

log = logging.getLogger(__name__)

MAX_TEXT = 4000
SOURCES = ("citizen", "hotline", "grid_worker", "sensor", "open311", "department", "other")
#: The system job a report without a principal is audited as (`system:<job>`), by source.
REPORT_JOBS = {"hotline": "import", "sensor": "alarm"}
#: The reporter's personal fields of a report (their names go to the audit log, never their values).
PERSONAL_FIELDS = ("reporter_name", "reporter_phone", "reporter_id_number", "address")
#: Below this keyword confidence a case waits for a dispatcher to choose the category.
KEYWORD_MIN_CONFIDENCE = 0.3


@dataclass
class Context:
    """What handlers need besides the unit of work; built once by `bootstrap`."""

    uow: UnitOfWork
    catalogue: Catalogue
    calendar: WorkingCalendar
    gazetteer: Gazetteer
    clock: Clock
    auto_register: bool = True
    auto_dispatch: bool = True
    classifier: KeywordClassifier | None = None
    advisor: Any = None  # zhizhi.dispatch.advisor.Advisor: trained model + keywords + level rules
    duplicate_rules: Any = None  # zhizhi.dispatch.duplicates.DuplicateRules: merge repeat reports at intake

    def due(self, category: str | None, step: str, start: datetime) -> datetime | None:
        """The deadline of a step, from the catalogue, on the working-day calendar."""
        if category is None:
            return None
        policy = self.catalogue.policy(category)
        duration = policy.step(step)
        if duration is None:
            return None
        return self.calendar.add(start, duration)


@dataclass(frozen=True)
class ReportResult:
    case_id: int
    created: bool
    state: str


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _ValidReport:
    cmd: ReportCase
    source: str
    title: str
    description: str
    location: Location
    id_number: str | None = None


def validate_report(cmd: ReportCase, ctx: Context) -> _ValidReport:
    """Every check a report must pass before it is stored; a point outside the city is refused here."""
    if cmd.principal is not None:
        require(cmd.principal, "report")
    source = cmd.source.strip().lower()
    if source not in SOURCES:
        raise ValidationFailed(f"未知来源 {cmd.source!r} / unknown source; use one of {', '.join(SOURCES)}")
    if not cmd.source_id or len(cmd.source_id) > 128:
        raise ValidationFailed("source_id 必填且不超过 128 个字符 / source_id is required (≤ 128 chars)")
    title = (cmd.title or "").strip()
    description = (cmd.description or "").strip()
    if not title and not description:
        raise ValidationFailed("请描述问题 / a title or description is required")
    if len(description) > MAX_TEXT:
        raise ValidationFailed(f"描述不能超过 {MAX_TEXT} 个字符 / description longer than {MAX_TEXT} characters")
    if cmd.category_code is not None:
        _known_category(ctx, cmd.category_code)
    id_number = parse_id_number(cmd.reporter_id_number) if cmd.reporter_id_number else None
    has_point = cmd.lon is not None or cmd.lat is not None
    if has_point and (cmd.lon is None or cmd.lat is None):
        raise ValidationFailed("经纬度必须同时提供 / give both longitude and latitude")
    if not has_point and not (cmd.address and cmd.address.strip()):
        raise ValidationFailed("请提供位置（经纬度或地址）/ a location (coordinates or address) is required")

    # Locating a point is pure computation: do it before storing so a point outside is refused.
    location = Location(method="unresolved")
    if has_point:
        assert cmd.lon is not None and cmd.lat is not None
        try:
            location = ctx.gazetteer.locate_point(float(cmd.lon), float(cmd.lat), cmd.crs)
        except ValueError as exc:  # e.g. an unknown coordinate system
            raise ValidationFailed(str(exc)) from None
    return _ValidReport(cmd, source, title, description, location, id_number)


def report_case(cmd: ReportCase, ctx: Context) -> ReportResult:
    """Validate, locate a point (refusing one outside the city), store, acknowledge."""
    valid = validate_report(cmd, ctx)
    try:
        return _store_reports([valid], ctx)[0]
    except IntegrityError:
        # Two copies of one report raced past the look-up; the unique (source, source_id) kept one.
        with ctx.uow as uow:
            existing = uow.cases.get_by_source(valid.source, cmd.source_id)
            if existing is None or existing.id is None:
                raise
            return ReportResult(existing.id, False, existing.state.value)


def report_cases(cmd: ReportCases, ctx: Context) -> list[ReportResult | DomainError]:
    """Many reports in one transaction; a bad one gets its error back without affecting the rest.

    Nothing is acknowledged before the commit. If another writer stored one of the same
    (source, source id) meanwhile, the batch falls back to one transaction per report.
    """
    outcomes: list[ReportResult | DomainError | None] = [None] * len(cmd.reports)
    valid: list[tuple[int, _ValidReport]] = []
    for i, report in enumerate(cmd.reports):
        try:
            valid.append((i, validate_report(report, ctx)))
        except DomainError as exc:
            outcomes[i] = exc
    if valid:
        try:
            stored = _store_reports([v for _, v in valid], ctx)
        except IntegrityError:
            log.warning("a batch of %d reports met another writer; storing one by one", len(valid))
            stored = []
            for _, v in valid:
                try:
                    stored.append(report_case(v.cmd, ctx))
                except DomainError as exc:
                    stored.append(exc)  # type: ignore[arg-type]
        for (i, _), outcome in zip(valid, stored, strict=True):
            outcomes[i] = outcome
    return [o for o in outcomes if o is not None]


def _store_reports(reports: list[_ValidReport], ctx: Context) -> list[ReportResult]:
    """One transaction: look the source ids up at once, insert the new cases together, commit."""
    now = ctx.clock.now()
    results: list[ReportResult] = []
    with ctx.uow as uow:
        uow.job = REPORT_JOBS.get(reports[0].source, "intake") if reports else "intake"
        known: dict[tuple[str, str], tuple[int, str]] = {}
        for source in {r.source for r in reports}:
            ids = [r.cmd.source_id for r in reports if r.source == source]
            known.update({(source, sid): v for sid, v in uow.cases.existing_by_source(source, ids).items()})
        fresh: list[tuple[_ValidReport, Case]] = []
        pending: dict[tuple[str, str], Case] = {}
        plan: list[tuple[str, str]] = []
        for r in reports:
            key = (r.source, r.cmd.source_id)
            plan.append(key)
            if key in known or key in pending:
                continue  # already stored, or repeated inside this batch
            cmd = r.cmd
            case = Case(
                id=None, source=r.source, source_id=cmd.source_id, title=(r.title or r.description)[:500],
                description=r.description, reported_at=cmd.reported_at or now, category_code=cmd.category_code,
                location=r.location, address=(cmd.address or None), reporter_name=cmd.reporter_name,
                reporter_phone=cmd.reporter_phone, reporter_id_number=r.id_number, photos=list(cmd.photos),
            )
            pending[key] = case
            fresh.append((r, case))
        uow.cases.add_many([c for _, c in fresh])
        audits: list[audit_log.Entry] = []
        for r, case in fresh:
            case.report(r.cmd.reported_at or now, r.cmd.actor or Actor(r.source, r.source))
            audits.append(audit_log.Entry(_reporter(r), "case.report", f"case:{case.id}", {
                "source": r.source, "source_id": r.cmd.source_id,
                "personal": [f for f in PERSONAL_FIELDS if getattr(case, f)]}))
            if r.cmd.dispatch_department:
                _dispatch_as_asked(case, r.cmd, ctx, now)
        audit_log.append_many(uow.session, audits, at=now)  # every item of the batch, one append
        uow.commit()
        created: set[tuple[str, str]] = set()
        for key in plan:
            if key in pending and key not in created:
                created.add(key)
                case = pending[key]
                assert case.id is not None
                results.append(ReportResult(case.id, True, case.state.value))
            elif key in pending:
                results.append(ReportResult(pending[key].id or 0, False, pending[key].state.value))
            else:
                case_id, state = known[key]
                results.append(ReportResult(case_id, False, state))
    return results


def _reporter(r: _ValidReport) -> Principal:
    """Who the audit log names for a report: the principal, else the system job of its source."""
    return r.cmd.principal or system_principal(REPORT_JOBS.get(r.source, "intake"))


def _dispatch_as_asked(case: Case, cmd: ReportCase, ctx: Context, now: datetime) -> None:
    """Register and dispatch where the source's policy says (e.g. a sensing scene), due in its minutes.

    A case that cannot be dispatched this way (no location, unknown department) stays reported
    and goes through the usual triage instead."""
    if not (ctx.auto_register and ctx.auto_dispatch and case.category_code and case.location.district
            and cmd.dispatch_department):
        return
    try:
        ctx.catalogue.department(cmd.dispatch_department)
        level = _parse_level(cmd.dispatch_level) if cmd.dispatch_level else Level.STREET
        due = now + timedelta(minutes=cmd.deadline_minutes) if cmd.deadline_minutes else \
            ctx.due(case.category_code, "handle", now)
        case.register(now, SYSTEM, due, "按场景策略自动立案 / registered by the scene policy")
        department = ctx.catalogue.department(cmd.dispatch_department)
        case.dispatch(now, SYSTEM, cmd.dispatch_department, level, due,
                      f"按感知场景策略派遣至{department.name_zh}，限时 {cmd.deadline_minutes} 分钟",
                      reason={"by": "scene_policy", "deadline_minutes": cmd.deadline_minutes})
        # Reported, registered and dispatched in one step: nothing is left for triage (which would load
        # the case again only to find it dispatched) nor for the registration's follow-up.
        case.events[:] = [e for e in case.events if not isinstance(e, ev.CaseRegistered | ev.CaseReported)]
    except Exception as exc:  # unknown department or level: leave it to triage
        log.warning("case %s not dispatched by policy: %s", case.id, exc)


def act_on_case(cmd: ActOnCase, ctx: Context) -> Case:
    """Perform one action of the loop; deadlines come from the catalogue and calendar."""
    try:
        action = Action(cmd.action)
    except ValueError:
        raise ValidationFailed(
            f"未知操作 {cmd.action!r} / unknown action", allowed=[a.value for a in Action]
        ) from None
    now = cmd.at or ctx.clock.now()
    with ctx.uow as uow:
        case = uow.cases.get(cmd.case_id, for_update=True)
        if case is None:
            raise NotFound(f"案件 {cmd.case_id} 不存在 / case {cmd.case_id} not found")
        if cmd.principal is not None:
            cmd = _as_principal(cmd, case, action)
        _apply(case, action, cmd, now, ctx)
        # A trusted internal caller (CLI, demo) is audited too, as a system job naming its actor.
        audit_log.append(uow.session, cmd.principal or system_principal("internal"), f"case.{action.value}",
                         f"case:{case.id}", {"state": case.state.value, "note": cmd.note[:200],
                                             **({} if cmd.principal else {"actor": cmd.actor.name[:100]})}, at=now)
        uow.commit()
        return case


def _as_principal(cmd: ActOnCase, case: Case, action: Action) -> ActOnCase:
    """Scope (out of scope = not found), then the role's right to act; the actor is the principal."""
    principal = cmd.principal
    assert principal is not None
    ensure_visible(principal, case, cmd.case_id)
    require(principal, action.value)
    department = case.department_code if principal.has_role("handler") else None
    actor = Actor(principal.display_name or principal.username, principal.role, department)
    return replace(cmd, actor=actor)


def _apply(case: Case, action: Action, cmd: ActOnCase, now: datetime, ctx: Context) -> None:
    actor, note, cat = cmd.actor, cmd.note, case.category_code
    match action:
        case Action.REGISTER:
            case.register(now, actor, ctx.due(cat or cmd.category_code, "dispatch", now), note)
        case Action.REJECT:
            case.reject(now, actor, note)
        case Action.DISPATCH | Action.REASSIGN:
            department, level, why = _target(case, cmd, ctx)
            due = ctx.due(cat, "accept", now) or ctx.due(cat, "handle", now)
            if action is Action.DISPATCH:
                case.dispatch(now, actor, department, level, due, note, reason=why)
            else:
                case.reassign(now, actor, department, level, due, note)
        case Action.ACCEPT:
            case.accept(now, actor, ctx.due(cat, "handle", case.dispatched_at or now), note)
        case Action.RETURN:
            case.return_case(now, actor, note, ctx.due(cat, "dispatch", now))
        case Action.HANDLE:
            case.handle(now, actor, note, list(cmd.photos), ctx.due(cat, "verify", now))
        case Action.VERIFY:
            if cmd.passed is None:
                raise ValidationFailed("核查需要给出结论 passed=true/false / verification needs passed=true|false")
            case.verify(now, actor, bool(cmd.passed), note, ctx.due(cat, "handle", now))
        case Action.EVALUATE:
            if cmd.satisfaction is None:
                raise ValidationFailed("评价需要满意度 1–5 / evaluation needs a satisfaction from 1 to 5")
            case.evaluate(now, actor, cmd.satisfaction, note)
        case Action.ESCALATE:
            case.escalate(now, actor, note, ctx.due(cat, "dispatch", now))
        case Action.SUSPEND:
            case.suspend(now, actor, note)
        case Action.RESUME:
            case.resume(now, actor, note)
        case Action.SUPERVISE:
            case.supervise(now, actor, note)
        case Action.REOPEN:
            reopen_days = ctx.catalogue.reopen_days(cat) if cat else 7
            case.reopen(now, actor, note, reopen_days, ctx.due(cat, "handle", now))
        case Action.LOCATE:
            if not cmd.place_code or ctx.gazetteer.place(cmd.place_code) is None:
                raise ValidationFailed(f"未知地点 {cmd.place_code!r} / unknown place code")
            loc = ctx.gazetteer.location_of(cmd.place_code)
            case.locate(now, actor, loc, note)  # location_of: method "manual", confidence 1
        case Action.CATEGORISE:
            if not cmd.category_code:
                raise ValidationFailed("请选择类别 / choose a category")
            _known_category(ctx, cmd.category_code)
            case.categorise(now, actor, cmd.category_code, note)


def _target(case: Case, cmd: ActOnCase, ctx: Context) -> tuple[str, Level, dict[str, Any]]:
    """The department and level: as chosen by the dispatcher, else from the responsibility table."""
    if case.category_code is None:
        raise ValidationFailed("派遣前需要确定类别 / categorise the case before dispatching it")
    level = _parse_level(cmd.level) if cmd.level is not None else None
    if cmd.department:
        try:
            ctx.catalogue.department(cmd.department)
        except Exception:
            raise ValidationFailed(f"未知部门 {cmd.department!r} / unknown department") from None
        return cmd.department, level or case.level or Level.STREET, {"by": "dispatcher"}
    resp = ctx.catalogue.responsible(case.category_code, _lineage(case.location))
    chosen_level = level or (case.level if case.level is not None and case.level < resp.level else resp.level)
    return resp.department_code, chosen_level, {"by": "responsibility", "rule_area": resp.rule.area}


def check_overdue(cmd: CheckOverdue, ctx: Context) -> dict[str, int]:
    """Mark newly overdue cases and escalate those overdue past their policy (督办 + 上报); urge (督办)
    the departments called in by a whistle that missed their own deadlines."""
    now = cmd.now or ctx.clock.now()
    marked = escalated = 0
    recovered = _recover_untriaged(ctx, now)
    with ctx.uow as uow:
        uow.job = "overdue"
        for case in uow.cases.overdue_candidates(now):
            if case.mark_overdue(now):
                marked += 1
        uow.commit()
    # Escalation: a separate pass over cases already overdue long enough.
    with ctx.uow as uow:
        from zhizhi.adapters.repository import CaseFilter

        uow.job = "overdue"
        page, _ = uow.cases.list(CaseFilter(states=[CaseState.DISPATCHED.value, CaseState.HANDLING.value],
                                            overdue_at=now, limit=1000))
        for summary in page:
            case = uow.cases.get(summary.id or 0)
            if case is None or case.overdue_since is None or case.category_code is None:
                continue
            policy = ctx.catalogue.escalation(case.category_code)
            hours = (now - case.overdue_since) / timedelta(hours=1)
            level = case.level if case.level is not None else Level.GRID  # CITY is 0: `or` would misread it
            if hours >= policy.after_overdue_hours and level > Level.CITY:
                case.escalate(now, SYSTEM, f"超期 {hours:.0f} 小时，按督办规则自动上报 / overdue, escalated by policy",
                              ctx.due(case.category_code, "dispatch", now))
                escalated += 1
        uow.commit()
    from zhizhi.dispatch.service import supervise_overdue_tasks

    whistle_tasks = supervise_overdue_tasks(ctx, now)  # 吹哨 tasks past their departments' own deadlines
    return {"marked_overdue": marked, "escalated": escalated, "recovered": recovered,
            "whistle_tasks_overdue": whistle_tasks}


def _recover_untriaged(ctx: Context, now: datetime) -> int:
    """Complete reports still waiting a minute after intake: their follow-up never ran (a crash
    between the report's commit and its triage). Register and dispatch them now."""
    if not ctx.auto_register:
        return 0
    from zhizhi.adapters.repository import CaseFilter

    with ctx.uow as uow:
        uow.job = "triage"
        page, _ = uow.cases.list(CaseFilter(states=[CaseState.REPORTED.value], reported_to=now - timedelta(minutes=1),
                                            limit=500))
        ids = [c.id for c in page if c.id is not None and c.category_code and c.location.district]
        if not ids:
            return 0
        cases = uow.cases.get_many(ids)
        for case in cases:
            _triage(case, ctx)
        uow.commit()
        return sum(1 for c in cases if c.state is not CaseState.REPORTED)


# --------------------------------------------------------------------------------------------
# Event handlers: the automatic next steps
# --------------------------------------------------------------------------------------------
def triage_reported_cases(events: list[ev.CaseReported], ctx: Context) -> None:
    """Locate by address and categorise when needed, register (立案) and dispatch — one transaction.

    Runs for a batch of new reports at once (a single report is a batch of one). A case that
    cannot be completed stays where it is: in the manual-location or the dispatcher's queue.
    If the shared commit fails, each case is tried again on its own so one bad case cannot
    hold the others back.
    """
    ids = [e.case_id for e in events]
    try:
        with ctx.uow as uow:
            uow.job = "triage"
            for case in uow.cases.get_many(ids):
                _triage(case, ctx)
            uow.commit()
    except Exception:
        if len(ids) == 1:
            raise
        log.exception("batch triage of %d cases failed; retrying one by one", len(ids))
        for event in events:
            try:
                triage_reported_cases([event], ctx)
            except Exception:
                log.exception("triage failed for case %d", event.case_id)


def _triage(case: Case, ctx: Context) -> None:
    if case.state is not CaseState.REPORTED:
        return
    now = ctx.clock.now()
    try:
        if case.location.finest is None and case.address:
            found = ctx.gazetteer.locate_address(case.address + " " + case.title)
            if found is not None:
                case.locate(now, SYSTEM, found, f"按地址定位，置信度 {found.confidence:.2f}")
        if ctx.duplicate_rules is not None and case.location.district and _merge_duplicate(case, ctx, now):
            return
        if case.category_code is None and ctx.advisor is not None and ctx.advisor.model is not None:
            _auto_categorise(case, ctx, now)
        elif case.category_code is None and ctx.classifier is not None:
            suggestions = ctx.classifier.suggest(case.title + " " + case.description)
            if suggestions and suggestions[0].confidence >= KEYWORD_MIN_CONFIDENCE:
                top = suggestions[0]
                case.categorise(now, SYSTEM, top.category_code, "按关键词自动分类 / keyword match",
                                data={"confidence": top.confidence, "matched": list(top.matched)})
        # Only a located, categorised case can be registered automatically.
        if ctx.auto_register and case.category_code and case.location.district:
            case.register(now, SYSTEM, ctx.due(case.category_code, "dispatch", now), "自动立案 / auto-registered")
            if ctx.auto_dispatch:
                _dispatch_by_table(case, ctx, now, escalated=False)
                # Registered and dispatched in one step: the registration needs no follow-up.
                case.events[:] = [e for e in case.events if not isinstance(e, ev.CaseRegistered)]
    except DomainError as exc:
        log.warning("case %s stays for a person: %s", case.id, exc.message)


def auto_dispatch(event: ev.CaseRegistered | ev.CaseEscalated, ctx: Context) -> None:
    """Dispatch by the responsibility table after a manual registration or an escalation."""
    if not ctx.auto_dispatch:
        return
    with ctx.uow as uow:
        uow.job = "dispatch"
        case = uow.cases.get(event.case_id)
        if case is None or case.state is not CaseState.REGISTERED or case.category_code is None:
            return
        _dispatch_by_table(case, ctx, ctx.clock.now(), escalated=isinstance(event, ev.CaseEscalated))
        uow.commit()


def _dispatch_by_table(case: Case, ctx: Context, now: datetime, escalated: bool) -> None:
    """Category × area → department and level; the timeline note says why."""
    assert case.category_code is not None
    resp = ctx.catalogue.responsible(case.category_code, _lineage(case.location))
    level = resp.level
    if escalated and case.level is not None:
        level = case.level  # escalated: the level above takes it, whatever the default
        resp = replace(resp, level=level)
    department = ctx.catalogue.department(resp.department_code)
    due = ctx.due(case.category_code, "accept", now) or ctx.due(case.category_code, "handle", now)
    category = ctx.catalogue.category(case.category_code)
    note = f"派遣至{department.name_zh}（{level.label_zh}级处置），依据：{category.name_zh}在本区域的责任规则"
    if ctx.advisor is not None and not escalated:
        resp, department, note = _apply_level_rules(case, ctx, resp)
        level = resp.level
    case.dispatch(now, SYSTEM, resp.department_code, level, due, note,
                  reason={"by": "responsibility", "rule_area": resp.rule.area})


# --------------------------------------------------------------------------------------------
def _lineage(loc: Location) -> list[str]:
    return [c for c in (loc.city, loc.district, loc.street, loc.community, loc.grid) if c]


def _parse_level(value: str | int) -> Level:
    try:
        return Level.parse(value)
    except ValueError as exc:
        raise ValidationFailed(str(exc)) from None


def _known_category(ctx: Context, code: str) -> None:
    try:
        ctx.catalogue.category(code)
    except Exception:
        raise ValidationFailed(f"未知类别 {code!r} / unknown category", field="category_code") from None


# --------------------------------------------------------------------------------------------
# Smart dispatch hooks (zhizhi.dispatch): used only when bootstrap wired an advisor
# --------------------------------------------------------------------------------------------
def _merge_duplicate(case: Case, ctx: Context, now: datetime) -> bool:
    from zhizhi.dispatch.service import merge_if_duplicate

    return merge_if_duplicate(case, ctx, ctx.uow, now)


def _auto_categorise(case: Case, ctx: Context, now: datetime) -> None:
    from zhizhi.dispatch.service import auto_categorise

    auto_categorise(case, ctx, now)


def _apply_level_rules(case: Case, ctx: Context, resp: Any) -> tuple[Any, Any, str]:
    """Level rules (琐事不出网格 …) adjust the table's level; the timeline note explains the decision."""
    from zhizhi.adapters.orm_dispatch import DispatchStore
    from zhizhi.dispatch.service import facts_of

    assert case.category_code is not None and case.id is not None
    linked = DispatchStore(ctx.uow.session).link_counts([case.id]).get(case.id, 0)
    decision = ctx.advisor.decide_level(case.category_code, facts_of(case, linked))
    department = ctx.catalogue.department(decision.department_code)
    resp = replace(resp, department_code=decision.department_code, level=decision.level)
    return resp, department, decision.explain(department.name_zh)
