"""The case state machine: every legal transition works, every illegal one is refused with the allowed list."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from zhizhi.domain.case import SYSTEM, TRANSITIONS, Action, Actor, Case, CaseState
from zhizhi.domain.errors import IllegalAction, ValidationFailed
from zhizhi.domain.places import Level, Location

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
DISPATCHER = Actor("王调度", "dispatcher")
HANDLER = Actor("李处置", "handler", department="chengguan")
OTHER_DEPT = Actor("赵某", "handler", department="housing")
LOC = Location(city="500000", district="500103", street="500103001", community="500103001001",
               grid="500103001001001", lon=106.55, lat=29.55, method="point", confidence=1.0)


def new_case() -> Case:
    c = Case(id=1, source="citizen", source_id="x1", title="井盖缺失", description="路口井盖没了",
             reported_at=T0, category_code="C0101", location=LOC)
    c.report(T0, Actor("市民", "citizen"))
    return c


def drive(state: CaseState) -> Case:
    """A case brought to `state` through legal actions only."""
    c = new_case()
    t = T0 + timedelta(minutes=1)
    if state is CaseState.REPORTED:
        return c
    if state is CaseState.REJECTED:
        c.reject(t, DISPATCHER, "重复上报")
        return c
    if state is CaseState.MERGED:
        c.merge_into(t, DISPATCHER, 99, "与案件 #99 为同一问题")
        return c
    c.register(t, DISPATCHER, t + timedelta(hours=1))
    if state is CaseState.REGISTERED:
        return c
    c.dispatch(t, DISPATCHER, "chengguan", Level.STREET, t + timedelta(hours=2))
    if state is CaseState.DISPATCHED:
        return c
    if state is CaseState.SUSPENDED:
        c.suspend(t, DISPATCHER, "等待天气好转")
        return c
    c.accept(t, HANDLER, t + timedelta(days=1))
    if state is CaseState.HANDLING:
        return c
    c.handle(t, HANDLER, "已补装井盖", ["photo://1"], t + timedelta(hours=24))
    if state is CaseState.FEEDBACK:
        return c
    c.verify(t, DISPATCHER, True, "现场核查已修复", None)
    if state is CaseState.CLOSED:
        return c
    c.evaluate(t, Actor("市民", "citizen"), 5, "很快")
    assert state is CaseState.EVALUATED
    return c


def perform(c: Case, action: Action, t: datetime | None = None) -> None:
    """Perform an action with valid arguments (so only the state can make it illegal)."""
    t = t or T0 + timedelta(hours=1)
    due = t + timedelta(hours=4)
    actor = HANDLER if action in (Action.ACCEPT, Action.RETURN, Action.HANDLE) else DISPATCHER
    match action:
        case Action.REGISTER:
            c.register(t, actor, due)
        case Action.REJECT:
            c.reject(t, actor, "不属于受理范围")
        case Action.DISPATCH:
            c.dispatch(t, actor, "chengguan", Level.STREET, due)
        case Action.ACCEPT:
            c.accept(t, actor, due)
        case Action.RETURN:
            c.return_case(t, actor, "非本部门职责", due)
        case Action.REASSIGN:
            c.reassign(t, actor, "chengguan", Level.STREET, due, "改派城管")
        case Action.HANDLE:
            c.handle(t, actor, "已处理", [], due)
        case Action.VERIFY:
            c.verify(t, actor, True, "通过", None)
        case Action.EVALUATE:
            c.evaluate(t, actor, 4)
        case Action.ESCALATE:
            c.escalate(t, actor, "需要上级协调", due)
        case Action.SUSPEND:
            c.suspend(t, actor, "等待材料")
        case Action.RESUME:
            c.resume(t, actor)
        case Action.SUPERVISE:
            c.supervise(t, actor, "请加快办理")
        case Action.REOPEN:
            c.reopen(t, actor, "问题复发", 7, due)
        case Action.LOCATE:
            c.locate(t, actor, LOC)
        case Action.CATEGORISE:
            c.categorise(t, actor, "C0102")


EXPECTED_TARGET = {
    Action.REGISTER: CaseState.REGISTERED, Action.REJECT: CaseState.REJECTED,
    Action.DISPATCH: CaseState.DISPATCHED, Action.ACCEPT: CaseState.HANDLING,
    Action.RETURN: CaseState.REGISTERED, Action.REASSIGN: CaseState.DISPATCHED,
    Action.HANDLE: CaseState.FEEDBACK, Action.VERIFY: CaseState.CLOSED,
    Action.EVALUATE: CaseState.EVALUATED, Action.ESCALATE: CaseState.REGISTERED,
    Action.SUSPEND: CaseState.SUSPENDED, Action.REOPEN: CaseState.HANDLING,
}

ALL_PAIRS = [(s, a) for s in CaseState for a in Action]


@pytest.mark.parametrize(("state", "action"), ALL_PAIRS, ids=[f"{s.value}-{a.value}" for s, a in ALL_PAIRS])
def test_every_transition(state: CaseState, action: Action) -> None:
    c = drive(state)
    assert c.state is state
    before = len(c.timeline)
    if action in TRANSITIONS[state]:
        perform(c, action)
        assert len(c.timeline) == before + 1
        entry = c.timeline[-1]
        assert entry.action == action.value and entry.from_state is state
        if action in EXPECTED_TARGET:
            assert c.state is EXPECTED_TARGET[action]
        elif action is Action.RESUME:
            assert c.state is CaseState.DISPATCHED  # back where it was suspended
        else:  # supervise, locate, categorise keep the state
            assert c.state is state
    else:
        with pytest.raises(IllegalAction) as err:
            perform(c, action)
        assert err.value.details["allowed"] == [a.value for a in c.allowed_actions()]
        assert c.state is state and len(c.timeline) == before


def test_every_state_is_reachable_and_rejected_is_final() -> None:
    for s in CaseState:
        assert drive(s).state is s
    assert TRANSITIONS[CaseState.REJECTED] == frozenset()


def test_verify_failed_sends_back_for_rework() -> None:
    c = drive(CaseState.FEEDBACK)
    with pytest.raises(ValidationFailed):
        c.verify(T0, DISPATCHER, False, "", None)
    c.verify(T0 + timedelta(hours=2), DISPATCHER, False, "井盖型号不对", T0 + timedelta(days=1))
    assert c.state is CaseState.HANDLING and c.closed_at is None
    assert c.timeline[-1].data == {"passed": False}


def test_reasons_are_required() -> None:
    c = drive(CaseState.REPORTED)
    with pytest.raises(ValidationFailed):
        c.reject(T0, DISPATCHER, "  ")
    h = drive(CaseState.HANDLING)
    for call in (lambda: h.return_case(T0, HANDLER, "", None), lambda: h.escalate(T0, DISPATCHER, "", None),
                 lambda: h.suspend(T0, DISPATCHER, ""), lambda: h.supervise(T0, DISPATCHER, ""),
                 lambda: h.handle(T0, HANDLER, "", [], None)):
        with pytest.raises(ValidationFailed):
            call()
    assert h.state is CaseState.HANDLING


def test_register_needs_category_and_dispatch_needs_location() -> None:
    c = Case(id=2, source="hotline", source_id="h1", title="噪音", description="", reported_at=T0)
    c.report(T0, SYSTEM)
    with pytest.raises(ValidationFailed):
        c.register(T0, DISPATCHER, None)
    c.categorise(T0, DISPATCHER, "C0101")
    c.register(T0, DISPATCHER, None)
    with pytest.raises(ValidationFailed):
        c.dispatch(T0, DISPATCHER, "chengguan", Level.STREET, None)


def test_only_the_assigned_department_may_act() -> None:
    c = drive(CaseState.DISPATCHED)
    with pytest.raises(IllegalAction):
        c.accept(T0, OTHER_DEPT, None)
    c.accept(T0, HANDLER, None)
    assert c.state is CaseState.HANDLING


def test_return_clears_department_and_counts() -> None:
    c = drive(CaseState.DISPATCHED)
    c.return_case(T0 + timedelta(hours=1), HANDLER, "非本部门职责", None)
    assert c.state is CaseState.REGISTERED and c.department_code is None and c.return_count == 1
    assert c.timeline[-1].data["department"] == "chengguan"


def test_escalate_moves_one_level_up_until_city() -> None:
    c = drive(CaseState.DISPATCHED)
    assert c.escalate(T0, DISPATCHER, "需要区级协调", None) is Level.DISTRICT
    c.dispatch(T0, DISPATCHER, "chengguan", Level.DISTRICT, None)
    assert c.escalate(T0, DISPATCHER, "需要市级协调", None) is Level.CITY
    c.dispatch(T0, DISPATCHER, "chengguan", Level.CITY, None)
    with pytest.raises(IllegalAction):
        c.escalate(T0, DISPATCHER, "再上报", None)


def test_suspend_stops_the_clock() -> None:
    c = drive(CaseState.HANDLING)
    due = c.due_at
    assert due is not None
    c.suspend(T0 + timedelta(hours=1), DISPATCHER, "等待材料")
    assert not c.is_overdue(due + timedelta(days=30))
    c.resume(T0 + timedelta(hours=5), DISPATCHER)
    assert c.state is CaseState.HANDLING and c.due_at == due + timedelta(hours=4)


def test_reopen_only_within_window() -> None:
    c = drive(CaseState.CLOSED)
    assert c.closed_at is not None
    with pytest.raises(IllegalAction):
        c.reopen(c.closed_at + timedelta(days=8), DISPATCHER, "问题复发", 7, None)
    c.reopen(c.closed_at + timedelta(days=6), DISPATCHER, "问题复发", 7, None)
    assert c.state is CaseState.HANDLING and c.closed_at is None


def test_evaluation_range() -> None:
    for bad in (0, 6, -1):
        c = drive(CaseState.CLOSED)
        with pytest.raises(ValidationFailed):
            c.evaluate(T0, DISPATCHER, bad)
    c = drive(CaseState.CLOSED)
    c.evaluate(T0, DISPATCHER, 3, "一般")
    assert c.satisfaction == 3


def test_overdue_marked_once_per_deadline() -> None:
    c = drive(CaseState.HANDLING)
    assert c.due_at is not None
    late = c.due_at + timedelta(minutes=1)
    assert not c.mark_overdue(c.due_at - timedelta(minutes=1))
    assert c.mark_overdue(late)
    assert not c.mark_overdue(late + timedelta(hours=1))
    assert c.timeline[-1].action == "overdue"
    assert c.events[-1].__class__.__name__ == "CaseOverdue"


def test_timeline_records_who_what_when() -> None:
    c = drive(CaseState.EVALUATED)
    actions = [e.action for e in c.timeline]
    assert actions == ["report", "register", "dispatch", "accept", "handle", "verify", "evaluate"]
    assert [e.seq for e in c.timeline] == list(range(1, 8))
    handled = c.timeline[4]
    assert handled.actor == "李处置" and handled.role == "handler" and handled.attachments == ("photo://1",)
