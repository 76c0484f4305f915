"""Smart-dispatch use cases: suggestions, the dispatcher's queue and decisions, duplicates, 吹哨报到.

Plain functions over the service layer's `Context` and unit of work, like `service/handlers.py`;
the API and the intake handlers call them. Every function that changes something commits once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from zhizhi.adapters.orm_dispatch import DispatchStore
from zhizhi.dispatch.advisor import CaseFacts, Suggestion
from zhizhi.dispatch.duplicates import find_duplicate
from zhizhi.domain import events as ev
from zhizhi.domain.access import Principal, require, scope_of
from zhizhi.domain.case import REPORT_IN, SYSTEM, TASK_DONE, Actor, Case, CaseState
from zhizhi.domain.errors import IllegalAction, NotFound, ValidationFailed
from zhizhi.domain.places import Level
from zhizhi.domain.whistle import TaskState, WhistleTask, all_done
from zhizhi.service.commands import Command
from zhizhi.service.scope import ensure_visible

log = logging.getLogger(__name__)

#: How long a called department has to report in (报到) when the whistle names no time.
REPORT_IN_HOURS = 2.0


def _lineage(case: Case) -> list[str]:
    loc = case.location
    return [c for c in (loc.city, loc.district, loc.street, loc.community, loc.grid) if c]


def facts_of(case: Case, linked_reports: int = 0) -> CaseFacts:
    return CaseFacts(case.title, case.description, _lineage(case), linked_reports)


def _get(uow: Any, case_id: int, principal: Principal, for_update: bool = False) -> Case:
    """The case if the principal may see it; out of scope reads as not found (分权分域)."""
    return ensure_visible(principal, uow.cases.get(case_id, for_update=for_update), case_id)


def _advisor(ctx: Any) -> Any:
    if ctx.advisor is None:
        raise ValidationFailed("智能分拨未启用 / smart dispatch is not configured")
    return ctx.advisor


def actor_of(principal: Principal, role: str = "dispatcher", department: str | None = None) -> Actor:
    return Actor(principal.display_name or principal.username, role, department)


# ------------------------------------------------------------------------------------------
# Suggestions and the queue
# ------------------------------------------------------------------------------------------
def suggestions(ctx: Any, case_id: int, principal: Principal, top: int = 3) -> dict[str, Any]:
    """Top suggestions for one case, with the model version and the count of linked reports."""
    advisor = _advisor(ctx)
    with ctx.uow as uow:
        case = _get(uow, case_id, principal)
        require(principal, "read_cases")
        linked = DispatchStore(uow.session).link_counts([case_id]).get(case_id, 0)
    sugg = advisor.suggest(facts_of(case, linked), top=top)
    return {"case_id": case_id, "model_version": advisor.model_version, "report_count": 1 + linked,
            "suggestions": [s.as_dict() for s in sugg],
            "department_model": [{"department_code": d, "confidence": round(p, 4)}
                                 for d, p in advisor.suggest_department(f"{case.title}\n{case.description}")]}


def queue(ctx: Any, principal: Principal, limit: int = 50, offset: int = 0) -> dict[str, Any]:
    """Cases waiting for a dispatcher (no category yet, or registered but not dispatched), oldest first."""
    from zhizhi.adapters.repository import CaseFilter

    require(principal, "dispatch")
    advisor = _advisor(ctx)
    with ctx.uow as uow:
        page, total = uow.cases.list(CaseFilter(states=[CaseState.REPORTED.value, CaseState.REGISTERED.value],
                                                limit=limit, offset=offset, scope=scope_of(principal)))
        page = [c for c in page if c.location.district is not None]
        counts = DispatchStore(uow.session).link_counts([c.id for c in page if c.id is not None])
    facts = [facts_of(c, counts.get(c.id or 0, 0)) for c in page]
    all_sugg = advisor.suggest_many(facts) if facts else []
    items = [{"case_id": c.id, "title": c.title, "state": c.state.value, "reported_at": c.reported_at.isoformat(),
              "source": c.source, "overdue": c.overdue_since is not None,
              "category_code": c.category_code, "district": c.location.district,
              "report_count": 1 + counts.get(c.id or 0, 0), "suggestions": [s.as_dict() for s in sugg]}
             for c, sugg in zip(page, all_sugg, strict=True)]
    return {"total": total, "items": items, "model_version": advisor.model_version}


@dataclass(frozen=True)
class Decision:
    accept: bool = True
    category_code: str | None = None
    department_code: str | None = None
    level: str | None = None
    note: str = ""


def decide(ctx: Any, case_id: int, decision: Decision, principal: Principal) -> Case:
    """The dispatcher accepts the top suggestion or overrides it; the case is registered and dispatched,
    and the choice is stored for retraining (`zhizhi dispatch train --from-db`)."""
    advisor = _advisor(ctx)
    actor = actor_of(principal)
    now = ctx.clock.now()
    with ctx.uow as uow:
        uow.acting = principal  # audited at commit (service/uow.py)
        case = _get(uow, case_id, principal, for_update=True)
        require(principal, "dispatch")
        if case.state not in (CaseState.REPORTED, CaseState.REGISTERED):
            raise IllegalAction(f"案件当前状态为「{case.state.label_zh}」，不在待分拨队列 / the case is not "
                                "waiting for dispatch", allowed=[a.value for a in case.allowed_actions()],
                                state=case.state.value)
        if case.location.district is None:
            raise ValidationFailed("请先定位案件 / locate the case first (manual location)")
        store = DispatchStore(uow.session)
        linked = store.link_counts([case_id]).get(case_id, 0)
        facts = facts_of(case, linked)
        sugg = advisor.suggest(facts)
        top: Suggestion | None = sugg[0] if sugg else None
        if decision.accept and not decision.category_code and top is None:
            raise ValidationFailed("没有可接受的建议，请选择类别 / no suggestion to accept; choose a category")
        category = decision.category_code or (top.category_code if top else None) or case.category_code
        assert category is not None
        try:
            ctx.catalogue.category(category)
        except Exception:
            raise ValidationFailed(f"未知类别 {category!r} / unknown category", field="category_code") from None
        ruled = advisor.decide_level(category, facts)
        department = decision.department_code or ruled.department_code
        try:
            dept = ctx.catalogue.department(department)
        except Exception:
            raise ValidationFailed(f"未知部门 {department!r} / unknown department",
                                   field="department_code") from None
        try:
            level = Level.parse(decision.level) if decision.level else ruled.level
        except ValueError as exc:
            raise ValidationFailed(str(exc), field="level") from None
        accepted = top is not None and category == top.category_code and department == top.department_code \
            and level.name.lower() == top.level
        if case.category_code != category:
            case.categorise(now, actor, category, "调度员选择类别 / chosen by the dispatcher" if not accepted
                            else "调度员采纳智能分拨建议 / suggestion accepted",
                            data={"suggested": top.category_code if top else None})
        if case.state is CaseState.REPORTED:
            case.register(now, actor, ctx.due(category, "dispatch", now), "调度员立案 / registered by the dispatcher")
        due = ctx.due(category, "accept", now) or ctx.due(category, "handle", now)
        reasons = ruled.reasons if level == ruled.level and department == ruled.department_code \
            else [f"调度员指定 / chosen by the dispatcher{('：' + decision.note) if decision.note else ''}"]
        note = (f"派遣至{dept.name_zh}（{level.label_zh}级处置），因为：" + "；".join(reasons))
        case.dispatch(now, actor, department, level, due, note,
                      reason={"by": "dispatcher", "accepted_suggestion": accepted})
        # Registered and dispatched in one step: the registration needs no automatic follow-up.
        case.events[:] = [e for e in case.events if not isinstance(e, ev.CaseRegistered)]
        store.add_decision(
            case_id=case_id, at=now, actor=actor.name, text=f"{case.title}\n{case.description}", accepted=accepted,
            suggested_category=top.category_code if top else None,
            suggested_department=top.department_code if top else None,
            suggested_level=int(Level.parse(top.level)) if top else None,
            confidence=top.confidence if top else None, chosen_category=category, chosen_department=department,
            chosen_level=int(level), model_version=advisor.model_version, suggestions=[s.as_dict() for s in sugg])
        uow.commit()
        return case


# ------------------------------------------------------------------------------------------
# Intake: automatic categorisation with thresholds, and duplicate merging
# ------------------------------------------------------------------------------------------
def auto_categorise(case: Case, ctx: Any, now: datetime) -> bool:
    """Categorise a new report when the model is sure enough for its category; True when it did.

    Below the category's threshold the report stays uncategorised, which puts it in the
    dispatcher's queue with the top three suggestions.
    """
    sugg = ctx.advisor.suggest(facts_of(case))
    if not sugg:
        return False
    top = sugg[0]
    if not top.auto:
        return False
    case.categorise(now, SYSTEM, top.category_code,
                    f"智能分拨：{top.category_name}，置信度 {top.confidence:.2f} ≥ 阈值 {top.threshold:.2f}",
                    data={"confidence": round(top.confidence, 4), "threshold": top.threshold, "source": top.source,
                          "model_version": ctx.advisor.model_version,
                          "alternatives": [s.category_code for s in sugg[1:]]})
    return True


def merge_if_duplicate(case: Case, ctx: Any, uow: Any, now: datetime) -> bool:
    """Link a new, located report to an open case of the same problem instead of opening a second job."""
    rules = ctx.duplicate_rules
    if rules is None or case.id is None or case.location.district is None:
        return False
    store = DispatchStore(uow.session)
    since = case.reported_at - timedelta(hours=rules.window_hours)
    loc = case.location
    candidates = store.open_candidates(district=loc.district, since=since, exclude=case.id, grid=loc.grid,
                                       lon=loc.lon, lat=loc.lat, radius_m=rules.max_distance_m)
    match = find_duplicate(f"{case.title}\n{case.description}", case.reported_at, case.location.grid,
                           case.location.lon, case.location.lat, candidates, rules, case.category_code)
    if match is None:
        return False
    primary = uow.cases.get(match.case_id, for_update=True)
    if primary is None or not primary.is_open:
        return False
    return _link(case, primary, store, now, SYSTEM, match.similarity, match.distance_m)


def _link(case: Case, primary: Case, store: DispatchStore, now: datetime, actor: Actor, similarity: float,
          distance: float | None) -> bool:
    assert case.id is not None and primary.id is not None
    count = 2 + store.link_counts([primary.id]).get(primary.id, 0)
    where = f"距离 {distance:.0f} 米" if distance is not None else "同一网格"
    case.merge_into(now, actor, primary.id, f"与案件 #{primary.id} 为同一问题（文本相似度 {similarity:.2f}，{where}），"
                    "已合并，办结时将通知您", data={"similarity": similarity, "distance_m": distance})
    primary.record_linked_report(now, actor, case.id, count)
    store.add_link(primary.id, case.id, now, actor.name, similarity, distance)
    return True


def link_manually(ctx: Any, case_id: int, into_case_id: int, principal: Principal) -> dict[str, Any]:
    """A dispatcher links a new report to an open case by hand (the text test is not applied)."""
    from zhizhi.dispatch.duplicates import bigrams, cosine, distance_m

    now = ctx.clock.now()
    with ctx.uow as uow:
        uow.acting = principal  # audited at commit (service/uow.py)
        case = _get(uow, case_id, principal, for_update=True)
        primary = _get(uow, into_case_id, principal, for_update=True)
        require(principal, "dispatch")
        if not primary.is_open:
            raise IllegalAction(f"案件 #{into_case_id} 已办结 / case {into_case_id} is closed", allowed=[])
        store = DispatchStore(uow.session)
        sim = cosine(bigrams(f"{case.title}\n{case.description}"), bigrams(f"{primary.title}\n{primary.description}"))
        a, b = case.location, primary.location
        dist = distance_m(a.lon, a.lat, b.lon, b.lat) if None not in (a.lon, a.lat, b.lon, b.lat) else None
        _link(case, primary, store, now, actor_of(principal), round(sim, 4), dist)  # type: ignore[arg-type]
        uow.commit()
    return duplicates_of(ctx, into_case_id, principal)


def duplicates_of(ctx: Any, case_id: int, principal: Principal) -> dict[str, Any]:
    with ctx.uow as uow:
        case = _get(uow, case_id, principal)
        store = DispatchStore(uow.session)
        links = store.links(case_id)
        parent = store.link_of(case_id)
        return {"case_id": case_id, "state": case.state.value, "report_count": 1 + len(links),
                "merged_into": parent.case_id if parent else None,
                "linked": [{"case_id": r.linked_case_id, "at": r.at.isoformat(), "by": r.by,
                            "similarity": r.similarity, "distance_m": r.distance_m,
                            "notified_at": r.notified_at.isoformat() if r.notified_at else None} for r in links]}


def notify_linked_on_close(event: ev.CaseClosed, ctx: Any) -> None:
    """Every reporter of a merged report hears of the closure: a timeline entry and an outbox notice each."""
    now = ctx.clock.now()
    with ctx.uow as uow:
        store = DispatchStore(uow.session)
        links = [r for r in store.links(event.case_id) if r.notified_at is None]
        if not links:
            return
        for case in uow.cases.get_many([r.linked_case_id for r in links]):
            case.record_linked_closure(now, event.case_id, event.outcome)
        for r in links:
            r.notified_at = now
        uow.commit()


# ------------------------------------------------------------------------------------------
# 吹哨报到
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WhistleCall:
    departments: tuple[str, ...]
    reason: str
    tasks: dict[str, str] | None = None  # department → what it is asked to do
    report_within_hours: float = REPORT_IN_HOURS


def whistle(ctx: Any, case_id: int, call: WhistleCall, principal: Principal) -> dict[str, Any]:
    now = ctx.clock.now()
    departments = tuple(dict.fromkeys(d.strip() for d in call.departments if d and d.strip()))
    with ctx.uow as uow:
        uow.acting = principal  # audited at commit (service/uow.py)
        case = _get(uow, case_id, principal, for_update=True)  # scope first: nothing else may leak existence
        require(principal, "escalate")
        for d in departments:
            try:
                ctx.catalogue.department(d)
            except Exception:
                raise ValidationFailed(f"未知部门 {d!r} / unknown department", field="departments") from None
        store = DispatchStore(uow.session)
        round_no = store.last_round(case_id) + 1
        open_tasks = [t for _, t in store.tasks(case_id) if t.state is not TaskState.DONE]
        if open_tasks:
            raise IllegalAction("上一轮吹哨还有未完成的任务 / the previous whistle still has open tasks", allowed=[])
        actor = actor_of(principal, role="street")
        case.whistle(now, actor, list(departments), call.reason, round_no)
        report_by = now + timedelta(hours=call.report_within_hours)
        for d in departments:
            store.add_task(WhistleTask(case_id=case_id, round=round_no, department_code=d,
                                       task=(call.tasks or {}).get(d) or call.reason, called_at=now,
                                       called_by=actor.name, report_by=report_by))
        uow.commit()
    return whistle_status(ctx, case_id, principal)


def _called_or_visible(uow: Any, case_id: int, principal: Principal, for_update: bool = False) -> Case:
    """A whistled case is visible to the departments it called (报到), besides its usual scope."""
    case = uow.cases.get(case_id, for_update=for_update)
    if case is not None and principal.departments:
        called = {t.department_code for _, t in DispatchStore(uow.session).tasks(case_id)}
        if called.intersection(principal.departments):
            return case  # type: ignore[no-any-return]
    return ensure_visible(principal, case, case_id)


def whistle_status(ctx: Any, case_id: int, principal: Principal) -> dict[str, Any]:
    now = ctx.clock.now()
    with ctx.uow as uow:
        case = _called_or_visible(uow, case_id, principal)
        tasks = [t for _, t in DispatchStore(uow.session).tasks(case_id)]
    level = case.level.name.lower() if case.level is not None else None
    return {"case_id": case_id, "state": case.state.value, "level": level,
            "tasks": [{"round": t.round, "department_code": t.department_code, "task": t.task, "state": t.state.value,
                       "report_by": _iso(t.report_by), "due_at": _iso(t.due_at), "reported_at": _iso(t.reported_at),
                       "done_at": _iso(t.done_at), "note": t.note, "overdue": t.is_overdue(now),
                       "overdue_since": _iso(t.overdue_since),
                       "supervised": [e.at.isoformat() for e in case.timeline if e.action == "supervise"
                                      and e.data.get("whistle") and e.data.get("department") == t.department_code
                                      and e.data.get("round") == t.round]} for t in tasks]}


def task_action(ctx: Any, case_id: int, department: str, action: str, principal: Principal, *,
                due_at: datetime | None = None, hours: float | None = None, task: str | None = None,
                note: str = "") -> dict[str, Any]:
    """报到 (`report_in`, with the department's own deadline) or `done`; the last task done closes the case."""
    now = ctx.clock.now()
    if action not in ("report_in", "done"):
        raise ValidationFailed(f"未知任务操作 {action!r} / use report_in or done", allowed=["report_in", "done"])
    with ctx.uow as uow:
        uow.acting = principal  # audited at commit (service/uow.py)
        case = _called_or_visible(uow, case_id, principal, for_update=True)
        if principal.departments and department not in principal.departments:
            raise NotFound(f"部门 {department} 没有被吹哨点名 / department {department} was not called on this case")
        require(principal, "handle")
        store = DispatchStore(uow.session)
        round_no = store.last_round(case_id)
        pairs = store.tasks(case_id, round_no) if round_no else []
        mine = [(r, t) for r, t in pairs if t.department_code == department]
        if not mine:
            raise NotFound(f"部门 {department} 没有被吹哨点名 / department {department} was not called on this case")
        row, t = mine[0]
        actor = actor_of(principal, role="handler", department=department)
        if action == "report_in":
            if due_at is None:
                if hours is None:
                    raise ValidationFailed("报到需要给出完成时限 due_at 或 hours / give due_at or hours")
                due_at = now + timedelta(hours=hours)
            t.report_in(now, due_at, task)
            case.record_task(now, actor, REPORT_IN, department,
                             f"{department} 报到，承诺 {due_at.isoformat()} 前完成：{t.task}",
                             data={"due_at": due_at.isoformat()})
        else:
            t.finish(now, note)
            case.record_task(now, actor, TASK_DONE, department, f"{department} 完成任务：{t.note}")
        store.write_task(row, t)
        if all_done([x for _, x in pairs]):
            case.close_joint(now, SYSTEM, "吹哨点名的部门全部完成任务，案件办结 / every called department finished")
        uow.commit()
    return whistle_status(ctx, case_id, principal)


def supervise_overdue_tasks(ctx: Any, now: datetime) -> int:
    """The overdue job's pass over 吹哨 tasks: each department past its own deadline (to report in, or
    to finish) is marked overdue once per deadline, and the case records supervision (督办) naming it;
    the `WhistleTaskOverdue` event tells the department (outbox) and any listener. Returns how many.

    The case's own deadline is not enough: a whistled case is worked on by several departments, each
    to the deadline it committed to when it reported in, and one of them can be late while the case
    as a whole is on time.
    """
    with ctx.uow as uow:
        store = DispatchStore(uow.session)
        pairs = store.overdue_tasks(now)
        if not pairs:
            return 0
        cases = {c.id: c for c in uow.cases.get_many(sorted({t.case_id for _, t in pairs}))}
        marked = 0
        for row, t in pairs:
            deadline, stage = t.deadline, "report_in" if t.state is TaskState.CALLED else "task"
            case = cases.get(t.case_id)
            if deadline is None or not t.mark_overdue(now):
                continue
            store.write_task(row, t)
            if case is not None and case.is_open:
                case.supervise_task(now, t.department_code, t.round, stage, deadline)
            marked += 1
        uow.commit()
    return marked


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# ------------------------------------------------------------------------------------------
# Through the message bus: events caused by these use cases (a closure, a whistle) are handled
# at once, like those of the core commands.
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DispatchCall(Command):
    """Run one of this module's use cases on the bus: `fn(ctx, *args, **kwargs)`."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


def run_call(cmd: DispatchCall, ctx: Any) -> Any:
    return cmd.fn(ctx, *cmd.args, **cmd.kwargs)
