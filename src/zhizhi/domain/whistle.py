"""吹哨报到: the tasks of departments called in on a case. Pure: no storage, no clock.

A street or community that cannot solve a case alone blows the whistle (吹哨) and names the
departments it needs. Each named department must report in (报到): it takes a task of its own
with its own deadline, and later finishes it. The case closes when every task of the round is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from zhizhi.domain.errors import IllegalAction, ValidationFailed


class TaskState(StrEnum):
    CALLED = "called"  # 已吹哨, waiting for the department to report in
    REPORTED = "reported"  # 已报到, working to its own deadline
    DONE = "done"  # 已完成


@dataclass
class WhistleTask:
    case_id: int
    round: int
    department_code: str
    task: str
    called_at: datetime
    called_by: str
    report_by: datetime | None = None  # deadline for reporting in
    state: TaskState = TaskState.CALLED
    due_at: datetime | None = None  # the department's own deadline, set when it reports in
    reported_at: datetime | None = None
    done_at: datetime | None = None
    note: str = ""
    overdue_since: datetime | None = None  # set once per missed deadline by the overdue job (督办)
    id: int | None = None

    def report_in(self, now: datetime, due_at: datetime, task: str | None = None) -> None:
        """报到: the department takes its task and commits to its own deadline."""
        if self.state is not TaskState.CALLED:
            raise IllegalAction(f"{self.department_code} 已报到 / already reported in", allowed=[])
        if due_at <= now:
            raise ValidationFailed("报到的完成时限必须晚于现在 / the task deadline must be in the future")
        self.state = TaskState.REPORTED
        self.reported_at = now
        self.due_at = due_at
        self.overdue_since = None  # a new deadline: missing it is a new lateness, supervised again
        if task and task.strip():
            self.task = task.strip()

    def finish(self, now: datetime, note: str) -> None:
        if self.state is not TaskState.REPORTED:
            raise IllegalAction(f"{self.department_code} 需先报到才能完成任务 / report in before finishing",
                                allowed=["report_in"] if self.state is TaskState.CALLED else [])
        if not note or not note.strip():
            raise ValidationFailed("完成任务需要说明处置情况 / say what was done")
        self.state = TaskState.DONE
        self.done_at = now
        self.note = note.strip()

    @property
    def deadline(self) -> datetime | None:
        """The deadline that binds the department now: to report in (called), to finish (reported)."""
        if self.state is TaskState.CALLED:
            return self.report_by
        if self.state is TaskState.REPORTED:
            return self.due_at
        return None

    def is_overdue(self, now: datetime) -> bool:
        deadline = self.deadline
        return deadline is not None and now > deadline

    def mark_overdue(self, now: datetime) -> bool:
        """Called by the overdue job: True the first time the current deadline is found missed.

        Once per deadline, so that a department is urged (督办) once, not at every run of the job;
        reporting in sets a new deadline and clears the mark.
        """
        if self.overdue_since is not None or not self.is_overdue(now):
            return False
        self.overdue_since = now
        return True


def all_done(tasks: list[WhistleTask]) -> bool:
    return bool(tasks) and all(t.state is TaskState.DONE for t in tasks)
