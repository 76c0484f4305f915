"""Unit of work: one transaction; rolls back unless committed; writes the outbox in the same commit.

It also audits, in the same commit, what happened to cases that no handler audited itself:
timeline entries whose actor is the system (triage, automatic dispatch, the overdue job, a
scene policy, a duplicate merge) as `system:<job>`, where the handler named its job
(`uow.job = "triage"`); and the entries of a person when the caller named the person
(`uow.acting = principal`, used by the smart-dispatch writes).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, Self

from sqlalchemy.orm import Session, sessionmaker

from zhizhi.adapters import audit_log
from zhizhi.adapters.orm import OutboxRow
from zhizhi.adapters.repository import CaseRepository
from zhizhi.domain import events as ev
from zhizhi.domain.access import Principal, system_principal
from zhizhi.domain.case import SYSTEM


class _ThreadState(threading.local):
    """What one thread's transaction holds. The server runs handlers on a thread pool and the MQTT
    consumer on its own threads, while one `UnitOfWork` object is wired into every handler: its
    session, repository and pending events must therefore belong to the calling thread."""

    def __init__(self) -> None:
        self.session: Session | None = None
        self.cases: CaseRepository | None = None
        self.pending_events: list[ev.Event] = []
        self.outboxed: dict[int, int] = {}
        self.job: str = "auto"
        self.acting: Principal | None = None


class UnitOfWork:
    """`with uow: ...; uow.commit()` — the only way handlers touch storage (one transaction per thread)."""

    def __init__(self, session_factory: sessionmaker[Session],
                 outbox_router: Callable[[ev.Event], list[dict[str, Any]]] | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self._session_factory = session_factory
        self._outbox_router = outbox_router
        self._clock = clock
        self._state = _ThreadState()

    @property
    def session(self) -> Session:
        assert self._state.session is not None, "use the unit of work inside `with uow:`"
        return self._state.session

    @property
    def cases(self) -> CaseRepository:
        assert self._state.cases is not None, "use the unit of work inside `with uow:`"
        return self._state.cases

    @property
    def job(self) -> str:
        """What the system is doing in this transaction, for the audit log (`system:<job>`)."""
        return self._state.job

    @job.setter
    def job(self, value: str) -> None:
        self._state.job = value

    @property
    def acting(self) -> Principal | None:
        """The person acting in this transaction; their timeline entries are audited at commit."""
        return self._state.acting

    @acting.setter
    def acting(self, value: Principal | None) -> None:
        self._state.acting = value

    @property
    def _pending_events(self) -> list[ev.Event]:
        return self._state.pending_events

    @property
    def _outboxed(self) -> dict[int, int]:
        return self._state.outboxed

    @_outboxed.setter
    def _outboxed(self, value: dict[int, int]) -> None:
        self._state.outboxed = value

    def __enter__(self) -> Self:
        self._state.session = self._session_factory()
        self._state.cases = CaseRepository(self._state.session)
        self._outboxed = {}
        self._state.job = "auto"
        self._state.acting = None
        return self

    def __exit__(self, *exc: object) -> None:
        self.rollback()
        self.session.close()

    def commit(self) -> None:
        """Save cases, write their notifiable events to the outbox, then commit — all or nothing."""
        audits = self._unaudited_case_writes()  # before save_all, which marks the entries as written
        self.cases.save_all()
        if audits:
            # After the case rows are written (and locked): the same order as every other writer takes
            # them (case rows, then the audit log's lock), so two transactions cannot deadlock on PostgreSQL.
            audit_log.append_many(self.session, audits, at=self._clock() if self._clock else None)
        self._write_outbox()
        self.session.commit()
        # Events are released only after the commit: nothing is announced that was not stored.
        for case in self.cases.seen.values():
            self._pending_events.extend(case.events)
            case.events.clear()

    def rollback(self) -> None:
        self.session.rollback()

    def collect_new_events(self) -> Iterator[ev.Event]:
        while self._pending_events:
            yield self._pending_events.pop(0)

    def _unaudited_case_writes(self) -> list[audit_log.Entry]:
        """One audit entry per case and actor changed in this transaction that no handler audited itself."""
        entries = []
        for case_id, new in sorted(self.cases.unsaved_entries().items()):
            state = self.cases.seen[case_id].state.value
            auto = [e.action for e in new if e.role == SYSTEM.role]
            if auto:
                entries.append(audit_log.Entry(system_principal(self.job), f"case.{auto[-1]}", f"case:{case_id}",
                                               {"actions": auto, "state": state}))
            by_person = [e.action for e in new if e.role != SYSTEM.role]
            if by_person and self.acting is not None:
                entries.append(audit_log.Entry(self.acting, f"case.{by_person[-1]}", f"case:{case_id}",
                                               {"actions": by_person, "state": state}))
        return entries

    def _write_outbox(self) -> None:
        if self._outbox_router is None:
            return
        now = self._clock() if self._clock else None
        for case in self.cases.seen.values():
            start = self._outboxed.get(id(case), 0)
            for event in case.events[start:]:
                if not isinstance(event, ev.NOTIFIABLE):
                    continue
                for message in self._outbox_router(event):
                    self.session.add(OutboxRow(created_at=now, next_attempt_at=now, attempts=0, **message))
            self._outboxed[id(case)] = len(case.events)
