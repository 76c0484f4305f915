"""The case (案件) and its closed loop, in the spirit of GB/T 30428.

A case moves report → register → dispatch → accept → handle (feedback) →
verify → close → evaluate, with the side roads a real centre needs: reject,
return, reassign, escalate, suspend/resume, supervise, reopen and the overdue
mark set by the periodic job. The state machine is one table (`TRANSITIONS`)
so that the API can tell a user exactly which actions are allowed now, and so
that tests can enumerate every legal and illegal transition.

The case never reads a clock: every method takes `now`, and deadlines are
computed by the service layer from the catalogue and the working-day calendar
and passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from zhizhi.domain import events as ev
from zhizhi.domain.errors import IllegalAction, ValidationFailed
from zhizhi.domain.places import Level, Location


class CaseState(StrEnum):
    """Where a case stands. The Chinese label is what the console shows."""

    REPORTED = "reported"  # 已上报, waiting to be registered (立案)
    REGISTERED = "registered"  # 已立案, waiting for dispatch
    DISPATCHED = "dispatched"  # 已派遣, waiting for the department to accept
    HANDLING = "handling"  # 处置中
    SUSPENDED = "suspended"  # 挂起
    FEEDBACK = "feedback"  # 已反馈, waiting for verification (核查)
    CLOSED = "closed"  # 已结案
    EVALUATED = "evaluated"  # 已评价
    REJECTED = "rejected"  # 不予立案
    MERGED = "merged"  # 已合并: a duplicate report linked to an open case of the same problem

    @property
    def label_zh(self) -> str:
        return STATE_ZH[self]

    @property
    def is_open(self) -> bool:
        return self not in (CaseState.CLOSED, CaseState.EVALUATED, CaseState.REJECTED, CaseState.MERGED)


STATE_ZH = {
    CaseState.REPORTED: "待立案",
    CaseState.REGISTERED: "待派遣",
    CaseState.DISPATCHED: "待接收",
    CaseState.HANDLING: "处置中",
    CaseState.SUSPENDED: "已挂起",
    CaseState.FEEDBACK: "待核查",
    CaseState.CLOSED: "已结案",
    CaseState.EVALUATED: "已评价",
    CaseState.REJECTED: "不予立案",
    CaseState.MERGED: "已合并",
}


class Action(StrEnum):
    """What a person (or the system) does to a case."""

    REGISTER = "register"  # 立案
    REJECT = "reject"  # 不予立案
    DISPATCH = "dispatch"  # 派遣
    ACCEPT = "accept"  # 接收
    RETURN = "return"  # 退回 (the department refuses)
    REASSIGN = "reassign"  # 改派
    HANDLE = "handle"  # 处置反馈
    VERIFY = "verify"  # 核查 (passed closes, failed sends back for rework)
    EVALUATE = "evaluate"  # 评价
    ESCALATE = "escalate"  # 上报 to the level above
    SUSPEND = "suspend"  # 挂起
    RESUME = "resume"  # 恢复
    SUPERVISE = "supervise"  # 督办
    REOPEN = "reopen"  # 重新打开
    LOCATE = "locate"  # 人工定位 (manual location)
    CATEGORISE = "categorise"  # 人工分类

    @property
    def label_zh(self) -> str:
        return ACTION_ZH[self]


ACTION_ZH = {
    Action.REGISTER: "立案",
    Action.REJECT: "不予立案",
    Action.DISPATCH: "派遣",
    Action.ACCEPT: "接收",
    Action.RETURN: "退回",
    Action.REASSIGN: "改派",
    Action.HANDLE: "处置反馈",
    Action.VERIFY: "核查",
    Action.EVALUATE: "评价",
    Action.ESCALATE: "上报",
    Action.SUSPEND: "挂起",
    Action.RESUME: "恢复",
    Action.SUPERVISE: "督办",
    Action.REOPEN: "重新打开",
    Action.LOCATE: "人工定位",
    Action.CATEGORISE: "人工分类",
}

S = CaseState
A = Action

#: The state machine: which actions each state allows. Resulting states are in the methods.
TRANSITIONS: dict[CaseState, frozenset[Action]] = {
    S.REPORTED: frozenset({A.REGISTER, A.REJECT, A.LOCATE, A.CATEGORISE}),
    S.REGISTERED: frozenset({A.DISPATCH, A.REJECT, A.LOCATE, A.CATEGORISE, A.SUPERVISE}),
    S.DISPATCHED: frozenset({A.ACCEPT, A.RETURN, A.REASSIGN, A.ESCALATE, A.SUPERVISE, A.SUSPEND}),
    S.HANDLING: frozenset({A.HANDLE, A.RETURN, A.REASSIGN, A.ESCALATE, A.SUPERVISE, A.SUSPEND}),
    S.SUSPENDED: frozenset({A.RESUME, A.SUPERVISE}),
    S.FEEDBACK: frozenset({A.VERIFY, A.SUPERVISE}),
    S.CLOSED: frozenset({A.EVALUATE, A.REOPEN}),
    S.EVALUATED: frozenset({A.REOPEN}),
    S.REJECTED: frozenset(),
    S.MERGED: frozenset(),
}

#: The system-only mark; it is not a user action and so is not in TRANSITIONS.
OVERDUE = "overdue"
#: Smart-dispatch entries (duplicates and 吹哨报到). They have their own routes and rules, so they are
#: not in TRANSITIONS: the generic action endpoint cannot perform them.
MERGE = "merge"  # 合并: this report is a duplicate of an open case
LINK = "link"  # 关联: a duplicate report was merged into this case
LINKED_CLOSED = "linked_closed"  # 关联案件办结: the case this report was merged into closed
WHISTLE = "whistle"  # 吹哨: a street or community calls departments in
REPORT_IN = "report_in"  # 报到: a called department takes its task
TASK_DONE = "task_done"  # 任务完成: a called department finished its task
#: States in which a street or community may blow the whistle.
WHISTLE_STATES = frozenset({CaseState.DISPATCHED, CaseState.HANDLING})


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One line of the case's history: who did what, when, and why."""

    seq: int
    at: datetime
    actor: str
    role: str
    action: str
    from_state: CaseState | None
    to_state: CaseState
    note: str = ""
    attachments: tuple[str, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts. `department` is set for department handlers."""

    name: str
    role: str
    department: str | None = None


SYSTEM = Actor("zhizhi", "system")


@dataclass
class Case:
    """The aggregate root of the case loop."""

    id: int | None
    source: str
    source_id: str
    title: str
    description: str
    reported_at: datetime
    state: CaseState = CaseState.REPORTED
    category_code: str | None = None
    department_code: str | None = None
    level: Level | None = None  # handling level (网格/村社/镇街/区县/市)
    location: Location = field(default_factory=Location)
    address: str | None = None
    reporter_name: str | None = None
    reporter_phone: str | None = None
    reporter_id_number: str | None = None  # 身份证号, checked by domain.personal.parse_id_number at intake
    photos: list[str] = field(default_factory=list)
    due_at: datetime | None = None  # deadline of the current step
    overdue_since: datetime | None = None
    suspended_at: datetime | None = None
    suspended_from: CaseState | None = None
    registered_at: datetime | None = None
    dispatched_at: datetime | None = None
    closed_at: datetime | None = None
    satisfaction: int | None = None
    evaluation_comment: str | None = None
    supervise_count: int = 0
    return_count: int = 0
    timeline: list[TimelineEntry] = field(default_factory=list)
    events: list[ev.Event] = field(default_factory=list, repr=False)

    # ----- queries -------------------------------------------------------------------------
    def allowed_actions(self) -> list[Action]:
        """The actions the state allows now, in a stable order for the UI."""
        allowed = TRANSITIONS[self.state]
        return [a for a in Action if a in allowed]

    @property
    def is_open(self) -> bool:
        return self.state.is_open

    def is_overdue(self, now: datetime) -> bool:
        """Overdue when the current step's deadline passed; a suspended clock does not run."""
        return (
            self.is_open
            and self.state is not CaseState.SUSPENDED
            and self.due_at is not None
            and now > self.due_at
        )

    # ----- the loop ------------------------------------------------------------------------
    def report(self, now: datetime, actor: Actor, note: str = "") -> None:
        """The first timeline entry; called once, right after the case is created."""
        if self.timeline:
            raise IllegalAction("case already reported", allowed=[])
        self._record(now, actor, "report", None, CaseState.REPORTED, note or self.title)
        self.events.append(ev.CaseReported(case_id=self._id, source=self.source))

    def register(self, now: datetime, actor: Actor, due_at: datetime | None, note: str = "") -> None:
        self._check(Action.REGISTER)
        if self.category_code is None:
            raise ValidationFailed("立案需要先确定案件类别 / a category is needed to register the case")
        self.registered_at = now
        self.due_at = due_at
        self._move(now, actor, Action.REGISTER, CaseState.REGISTERED, note)
        self.events.append(ev.CaseRegistered(case_id=self._id))

    def reject(self, now: datetime, actor: Actor, reason: str) -> None:
        self._check(Action.REJECT)
        _require_text(reason, "不予立案必须说明理由 / a reason is required to reject a case")
        self.closed_at = now
        self.due_at = None
        self._move(now, actor, Action.REJECT, CaseState.REJECTED, reason)
        self.events.append(ev.CaseClosed(case_id=self._id, outcome="rejected"))

    def dispatch(
        self,
        now: datetime,
        actor: Actor,
        department: str,
        level: Level,
        due_at: datetime | None,
        note: str = "",
        action: Action = Action.DISPATCH,
        reason: dict[str, Any] | None = None,
    ) -> None:
        self._check(action)
        if self.location.finest is None:
            raise ValidationFailed("派遣前需要定位案件 / locate the case before dispatching it")
        self.department_code = department
        self.level = level
        self.dispatched_at = now
        self.due_at = due_at
        self.overdue_since = None
        data = {"department": department, "level": level.name.lower(), **(reason or {})}
        self._move(now, actor, action, CaseState.DISPATCHED, note, data=data)
        self.events.append(ev.CaseDispatched(case_id=self._id, department=department, level=int(level)))

    def reassign(self, now: datetime, actor: Actor, department: str, level: Level | None,
                 due_at: datetime | None, note: str) -> None:
        _require_text(note, "改派必须说明理由 / a reason is required to reassign")
        self.dispatch(now, actor, department, level if level is not None else (self.level or Level.STREET),
                      due_at, note, action=Action.REASSIGN)

    def accept(self, now: datetime, actor: Actor, due_at: datetime | None, note: str = "") -> None:
        self._check(Action.ACCEPT)
        self._check_department(actor)
        self.due_at = due_at
        self._move(now, actor, Action.ACCEPT, CaseState.HANDLING, note)

    def return_case(self, now: datetime, actor: Actor, reason: str, due_at: datetime | None) -> None:
        """退回: the department says the case is not theirs; it goes back to the dispatcher."""
        self._check(Action.RETURN)
        self._check_department(actor)
        _require_text(reason, "退回必须说明理由 / a reason is required to return a case")
        previous = self.department_code
        self.department_code = None
        self.return_count += 1
        self.due_at = due_at
        self.overdue_since = None
        self._move(now, actor, Action.RETURN, CaseState.REGISTERED, reason, data={"department": previous})
        self.events.append(ev.CaseReturned(case_id=self._id, department=previous or ""))

    def handle(self, now: datetime, actor: Actor, feedback: str, photos: list[str] | None,
               due_at: datetime | None) -> None:
        """处置反馈: the department reports what it did; the case waits for verification."""
        self._check(Action.HANDLE)
        self._check_department(actor)
        _require_text(feedback, "处置反馈需要填写处理情况 / feedback text is required")
        self.due_at = due_at
        self.overdue_since = None
        self._move(now, actor, Action.HANDLE, CaseState.FEEDBACK, feedback, attachments=tuple(photos or ()))

    def verify(self, now: datetime, actor: Actor, passed: bool, note: str,
               rework_due_at: datetime | None) -> None:
        """核查: passed closes the case; failed sends it back to the department for rework (返工)."""
        self._check(Action.VERIFY)
        if passed:
            self.closed_at = now
            self.due_at = None
            self.overdue_since = None
            self._move(now, actor, Action.VERIFY, CaseState.CLOSED, note, data={"passed": True})
            self.events.append(ev.CaseClosed(case_id=self._id, outcome="fixed"))
        else:
            _require_text(note, "核查不通过需要说明原因 / say why the verification failed")
            self.due_at = rework_due_at
            self._move(now, actor, Action.VERIFY, CaseState.HANDLING, note, data={"passed": False})

    def evaluate(self, now: datetime, actor: Actor, satisfaction: int, comment: str = "") -> None:
        self._check(Action.EVALUATE)
        if not isinstance(satisfaction, int) or not 1 <= satisfaction <= 5:
            raise ValidationFailed("满意度必须是 1 到 5 的整数 / satisfaction must be an integer from 1 to 5")
        self.satisfaction = satisfaction
        self.evaluation_comment = comment or None
        self._move(now, actor, Action.EVALUATE, CaseState.EVALUATED, comment,
                   data={"satisfaction": satisfaction})

    def escalate(self, now: datetime, actor: Actor, reason: str, due_at: datetime | None) -> Level:
        """上报: the level above takes the case; it waits for dispatch there. Returns the new level."""
        self._check(Action.ESCALATE)
        _require_text(reason, "上报必须说明理由 / a reason is required to escalate")
        current = self.level if self.level is not None else Level.GRID
        if current <= Level.CITY:
            raise IllegalAction("市级案件无法再上报 / a city-level case cannot be escalated further",
                                allowed=[a.value for a in self.allowed_actions()])
        new_level = Level(current - 1)
        previous = self.department_code
        self.level = new_level
        self.department_code = None
        self.due_at = due_at
        self.overdue_since = None
        self._move(now, actor, Action.ESCALATE, CaseState.REGISTERED, reason,
                   data={"from_level": current.name.lower(), "to_level": new_level.name.lower(),
                         "department": previous})
        self.events.append(ev.CaseEscalated(case_id=self._id, level=int(new_level)))
        return new_level

    def suspend(self, now: datetime, actor: Actor, reason: str) -> None:
        self._check(Action.SUSPEND)
        _require_text(reason, "挂起必须说明理由 / a reason is required to suspend")
        self.suspended_at = now
        self.suspended_from = self.state
        self._move(now, actor, Action.SUSPEND, CaseState.SUSPENDED, reason)

    def resume(self, now: datetime, actor: Actor, note: str = "") -> None:
        """恢复: the clock stopped while suspended, so the deadline moves by the time suspended."""
        self._check(Action.RESUME)
        assert self.suspended_at is not None and self.suspended_from is not None
        paused: timedelta = now - self.suspended_at
        if self.due_at is not None:
            self.due_at = self.due_at + paused
        target = self.suspended_from
        self.suspended_at = None
        self.suspended_from = None
        self._move(now, actor, Action.RESUME, target, note, data={"paused_seconds": int(paused.total_seconds())})

    def supervise(self, now: datetime, actor: Actor, note: str) -> None:
        """督办: recorded urging; the state does not change."""
        self._check(Action.SUPERVISE)
        _require_text(note, "督办需要填写督办意见 / supervision needs a note")
        self.supervise_count += 1
        self._move(now, actor, Action.SUPERVISE, self.state, note)
        self.events.append(ev.CaseSupervised(case_id=self._id, department=self.department_code or ""))

    def reopen(self, now: datetime, actor: Actor, reason: str, reopen_days: int,
               due_at: datetime | None) -> None:
        self._check(Action.REOPEN)
        _require_text(reason, "重新打开必须说明理由 / a reason is required to reopen")
        assert self.closed_at is not None
        if now - self.closed_at > timedelta(days=reopen_days):
            raise IllegalAction(
                f"结案已超过 {reopen_days} 天，不能重新打开 / the case closed more than {reopen_days} days ago",
                allowed=[a.value for a in self.allowed_actions() if a is not Action.REOPEN],
            )
        self.closed_at = None
        self.satisfaction = None
        self.due_at = due_at
        self._move(now, actor, Action.REOPEN, CaseState.HANDLING, reason)

    def locate(self, now: datetime, actor: Actor, location: Location, note: str = "") -> None:
        """人工定位: a dispatcher places a case that could not be located automatically."""
        self._check(Action.LOCATE)
        self.location = location
        self._move(now, actor, Action.LOCATE, self.state, note,
                   data={"code": location.finest, "method": location.method})

    def categorise(self, now: datetime, actor: Actor, category_code: str, note: str = "",
                   data: dict[str, Any] | None = None) -> None:
        self._check(Action.CATEGORISE)
        self.category_code = category_code
        self._move(now, actor, Action.CATEGORISE, self.state, note, data={"category": category_code, **(data or {})})

    def add_note(self, now: datetime, actor: Actor, note: str, data: dict[str, Any] | None = None) -> None:
        """A timeline entry that changes nothing (e.g. "the alarm cleared before dispatch")."""
        _require_text(note, "备注不能为空 / a note needs text")
        self._record(now, actor, "note", self.state, self.state, note, data=data or {})

    def mark_overdue(self, now: datetime) -> bool:
        """Called by the periodic job: records one `overdue` entry per missed deadline."""
        if not self.is_overdue(now) or self.overdue_since is not None:
            return False
        self.overdue_since = now
        self._record(now, SYSTEM, OVERDUE, self.state, self.state,
                     "已超期 / overdue", data={"due_at": self.due_at.isoformat() if self.due_at else None})
        self.events.append(ev.CaseOverdue(case_id=self._id, state=self.state.value,
                                          department=self.department_code or ""))
        return True

    # ----- smart dispatch: duplicates and 吹哨报到 ----------------------------------------------
    def merge_into(self, now: datetime, actor: Actor, primary_id: int, note: str,
                   data: dict[str, Any] | None = None) -> None:
        """合并: this new report describes the same problem as open case `primary_id`; no second job opens."""
        if self.state is not CaseState.REPORTED:
            raise IllegalAction("只有新报告可以合并 / only a new report can be merged into another case",
                                allowed=[a.value for a in self.allowed_actions()], state=self.state.value)
        if primary_id == self.id:
            raise ValidationFailed("不能合并到自身 / a case cannot be merged into itself")
        before = self.state
        self.state = CaseState.MERGED
        self.closed_at = now
        self.due_at = None
        self._record(now, actor, MERGE, before, CaseState.MERGED, note, data={"case_id": primary_id, **(data or {})})
        self.events.append(ev.CaseMerged(case_id=self._id, into_case_id=primary_id))

    def record_linked_report(self, now: datetime, actor: Actor, linked_id: int, report_count: int,
                             note: str = "") -> None:
        """关联: another report of this problem was merged in; the state does not change."""
        if not self.is_open:
            raise IllegalAction("案件已办结，不能再关联 / the case is closed; open a new one", allowed=[])
        self._record(now, actor, LINK, self.state, self.state,
                     note or f"关联重复报告 #{linked_id}，共 {report_count} 件反映",
                     data={"linked_case_id": linked_id, "report_count": report_count})

    def record_linked_closure(self, now: datetime, primary_id: int, outcome: str) -> None:
        """The case this report was merged into closed: the reporter hears of it through this case too."""
        self._record(now, SYSTEM, LINKED_CLOSED, self.state, self.state,
                     f"关联案件 #{primary_id} 已办结 / the case this report was merged into is closed",
                     data={"case_id": primary_id, "outcome": outcome})
        self.events.append(ev.LinkedCaseClosed(case_id=self._id, primary_case_id=primary_id, outcome=outcome))

    def whistle(self, now: datetime, actor: Actor, departments: list[str], reason: str, round_no: int) -> Level:
        """吹哨: the street or community cannot solve it alone; the case rises one level and the named
        departments are called in (each then reports in with its own task). Returns the new level."""
        if self.state not in WHISTLE_STATES:
            raise IllegalAction(
                f"案件当前状态为「{self.state.label_zh}」，不能吹哨 / whistle needs a dispatched or handling case",
                allowed=[a.value for a in self.allowed_actions()], state=self.state.value)
        _require_text(reason, "吹哨必须说明理由 / a reason is required to blow the whistle")
        if not departments:
            raise ValidationFailed("吹哨需要点名至少一个部门 / name at least one department")
        current = self.level if self.level is not None else Level.GRID
        if current <= Level.CITY:
            raise IllegalAction("市级案件无法再吹哨上升 / a city-level case cannot rise further", allowed=[])
        new_level = Level(current - 1)
        before = self.state
        self.level = new_level
        self.state = CaseState.HANDLING
        self.overdue_since = None
        self._record(now, actor, WHISTLE, before, CaseState.HANDLING, reason,
                     data={"departments": list(departments), "from_level": current.name.lower(),
                           "to_level": new_level.name.lower(), "round": round_no})
        self.events.append(ev.CaseWhistled(case_id=self._id, departments=tuple(departments), level=int(new_level)))
        return new_level

    def record_task(self, now: datetime, actor: Actor, kind: str, department: str, note: str,
                    data: dict[str, Any] | None = None) -> None:
        """报到 or 任务完成 of one called department, on the case's timeline."""
        if kind not in (REPORT_IN, TASK_DONE):
            raise ValidationFailed(f"unknown task entry {kind!r}")
        self._record(now, actor, kind, self.state, self.state, note, data={"department": department, **(data or {})})

    def supervise_task(self, now: datetime, department: str, round_no: int, stage: str,
                       deadline: datetime) -> None:
        """督办 by the overdue job: a called department missed its own deadline (to report in, or to finish).

        Recorded as supervision on the timeline naming the department, whatever the case's state
        (the task binds the department, not the case's handler), and published so the department
        hears of it. `stage` is "report_in" or "task".
        """
        if stage not in ("report_in", "task"):
            raise ValidationFailed(f"unknown whistle task stage {stage!r}")
        what = "未按时报到" if stage == "report_in" else "未按时完成任务"
        self.supervise_count += 1
        self._record(now, SYSTEM, Action.SUPERVISE.value, self.state, self.state,
                     f"督办：吹哨点名的部门 {department} {what}（时限 {deadline.isoformat()}）/ "
                     f"{department} missed its whistle deadline",
                     data={"department": department, "round": round_no, "stage": stage,
                           "deadline": deadline.isoformat(), "whistle": True})
        self.events.append(ev.WhistleTaskOverdue(case_id=self._id, department=department, round=round_no,
                                                 stage=stage, deadline=deadline.isoformat()))

    def close_joint(self, now: datetime, actor: Actor, note: str) -> None:
        """Every called department finished its task: the case closes (吹哨报到 closes on the tasks)."""
        if self.state is not CaseState.HANDLING:
            raise IllegalAction("只有处置中的案件可以按任务结案 / only a handling case closes on its tasks",
                                allowed=[a.value for a in self.allowed_actions()], state=self.state.value)
        self.closed_at = now
        self.due_at = None
        self.overdue_since = None
        self._record(now, actor, "close", CaseState.HANDLING, CaseState.CLOSED, note, data={"joint": True})
        self.state = CaseState.CLOSED
        self.events.append(ev.CaseClosed(case_id=self._id, outcome="fixed"))

    # ----- internals -----------------------------------------------------------------------
    @property
    def _id(self) -> int:
        return self.id if self.id is not None else 0

    def _check(self, action: Action) -> None:
        if action not in TRANSITIONS[self.state]:
            raise IllegalAction(
                f"案件当前状态为「{self.state.label_zh}」，不能执行「{action.label_zh}」 / "
                f"'{action.value}' is not allowed while the case is {self.state.value}",
                allowed=[a.value for a in self.allowed_actions()],
                state=self.state.value,
            )

    def _check_department(self, actor: Actor) -> None:
        if actor.department is not None and actor.department != self.department_code:
            raise IllegalAction(
                "案件不属于本部门 / the case is not assigned to your department",
                allowed=[],
            )

    def _move(self, now: datetime, actor: Actor, action: Action, to: CaseState, note: str = "",
              attachments: tuple[str, ...] = (), data: dict[str, Any] | None = None) -> None:
        before = self.state
        self.state = to
        self._record(now, actor, action.value, before, to, note, attachments, data or {})

    def _record(self, now: datetime, actor: Actor, action: str, before: CaseState | None, to: CaseState,
                note: str = "", attachments: tuple[str, ...] = (), data: dict[str, Any] | None = None) -> None:
        self.timeline.append(
            TimelineEntry(
                seq=len(self.timeline) + 1,
                at=now,
                actor=actor.name,
                role=actor.role,
                action=action,
                from_state=before,
                to_state=to,
                note=note,
                attachments=attachments,
                data=data or {},
            )
        )
        self.events.append(ev.CaseChanged(case_id=self._id, action=action, state=to.value))


def _require_text(value: str | None, message: str) -> None:
    if value is None or not str(value).strip():
        raise ValidationFailed(message)
