"""Domain events (past tense) and commands (imperative): bare dataclasses.

Events are recorded by aggregates (`case.events`) and published by the unit of
work after commit; handlers registered on the message bus take the next step.
"""

from __future__ import annotations

from dataclasses import dataclass


class Event:
    """Marker base class for domain events."""


@dataclass(frozen=True)
class CaseReported(Event):
    case_id: int
    source: str


@dataclass(frozen=True)
class CaseRegistered(Event):
    case_id: int


@dataclass(frozen=True)
class CaseDispatched(Event):
    case_id: int
    department: str
    level: int


@dataclass(frozen=True)
class CaseReturned(Event):
    case_id: int
    department: str


@dataclass(frozen=True)
class CaseEscalated(Event):
    case_id: int
    level: int


@dataclass(frozen=True)
class CaseSupervised(Event):
    case_id: int
    department: str


@dataclass(frozen=True)
class CaseOverdue(Event):
    case_id: int
    state: str
    department: str


@dataclass(frozen=True)
class CaseClosed(Event):
    case_id: int
    outcome: str


@dataclass(frozen=True)
class CaseChanged(Event):
    """Any timeline entry (every action, the overdue mark): lets observers such as open screens follow a case."""

    case_id: int
    action: str
    state: str


@dataclass(frozen=True)
class CaseMerged(Event):
    """A new report was merged into an open case of the same problem (smart dispatch)."""

    case_id: int
    into_case_id: int


@dataclass(frozen=True)
class LinkedCaseClosed(Event):
    """The case a report was merged into closed; that report's citizen is told."""

    case_id: int
    primary_case_id: int
    outcome: str


@dataclass(frozen=True)
class CaseWhistled(Event):
    """吹哨: departments are called in on a case, which rises one level."""

    case_id: int
    departments: tuple[str, ...]
    level: int


@dataclass(frozen=True)
class WhistleTaskOverdue(Event):
    """A department called in by a whistle missed its deadline (to report in, or to finish its task):
    the case records supervision (督办) naming it, and the department is told."""

    case_id: int
    department: str
    round: int
    stage: str  # "report_in" (never reported in) or "task" (reported in, task not done in time)
    deadline: str  # ISO 8601


#: Events that notify someone outside the process; written to the outbox in the same transaction.
NOTIFIABLE: tuple[type[Event], ...] = (CaseDispatched, CaseReturned, CaseEscalated, CaseSupervised,
                                       CaseOverdue, CaseClosed, CaseMerged, LinkedCaseClosed, CaseWhistled,
                                       WhistleTaskOverdue)
