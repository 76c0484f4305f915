"""Wiring: one function builds the application from settings; tests inject fakes instead.

Nothing here runs at import time: engines, buses and settings are created when
`bootstrap()` is called, so each test (and each server process) owns its own.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from zhizhi.adapters import db
from zhizhi.adapters.catalogue_files import load_calendar, load_catalogue
from zhizhi.adapters.outbox import OutboxRouter, OutboxWorker
from zhizhi.config import Settings
from zhizhi.dispatch.keywords import KeywordClassifier
from zhizhi.domain import events as ev
from zhizhi.domain.calendar import WorkingCalendar
from zhizhi.domain.catalogue import Catalogue
from zhizhi.service import handlers
from zhizhi.service.bus import MessageBus
from zhizhi.service.commands import ActOnCase, CheckOverdue, ReportCase, ReportCases
from zhizhi.service.ports import Clock, Gazetteer
from zhizhi.service.uow import UnitOfWork


@dataclass
class Zhizhi:
    """The wired application: what entry points (API, CLI, demo) talk to."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    catalogue: Catalogue
    calendar: WorkingCalendar
    gazetteer: Gazetteer
    clock: Clock
    bus: MessageBus
    ctx: handlers.Context
    outbox: OutboxWorker
    sensing: Any = None  # zhizhi.sensing.service.SensingService

    def handle(self, command: Any) -> Any:
        return self.bus.handle(command)

    def uow(self) -> UnitOfWork:
        """A fresh unit of work for read-only queries from entry points."""
        return UnitOfWork(self.sessions)


def bootstrap(settings: Settings | None = None, *, gazetteer: Gazetteer | None = None,
              catalogue: Catalogue | None = None, calendar: WorkingCalendar | None = None,
              clock: Clock | None = None, migrate: bool = True,
              webhooks: dict[str, str] | None = None) -> Zhizhi:
    settings = settings or Settings()
    engine = db.make_engine(settings.resolved_database_url())
    if migrate:
        db.upgrade(engine)
    sessions = db.session_factory(engine)
    catalogue = catalogue or load_catalogue(settings.catalogue_dir)
    calendar = calendar or load_calendar(settings.catalogue_dir)
    clock = clock or Clock()
    if gazetteer is None:
        gazetteer = load_gazetteer(engine, settings.data_dir / "cache")
    router = OutboxRouter(webhooks)
    uow = UnitOfWork(sessions, outbox_router=router, clock=clock.now)
    ctx = handlers.Context(
        uow=uow, catalogue=catalogue, calendar=calendar, gazetteer=gazetteer, clock=clock,
        auto_register=settings.auto_register, auto_dispatch=settings.auto_dispatch,
        classifier=KeywordClassifier(catalogue),
    )
    bind = functools.partial
    bus = MessageBus(
        uow,
        command_handlers={
            ReportCase: bind(handlers.report_case, ctx=ctx),
            ReportCases: bind(handlers.report_cases, ctx=ctx),
            ActOnCase: bind(handlers.act_on_case, ctx=ctx),
            CheckOverdue: bind(handlers.check_overdue, ctx=ctx),
        },
        event_handlers={
            ev.CaseRegistered: [bind(handlers.auto_dispatch, ctx=ctx)],
            ev.CaseEscalated: [bind(handlers.auto_dispatch, ctx=ctx)],
        },
        batch_handlers={ev.CaseReported: bind(handlers.triage_reported_cases, ctx=ctx)},
    )
    outbox = OutboxWorker(sessions, clock.now, log_file=settings.data_dir / "notifications.jsonl",
                          timeout_s=settings.webhook_timeout_s)
    zz = Zhizhi(settings, engine, sessions, catalogue, calendar, gazetteer, clock, bus, ctx, outbox)
    _wire_sensing(zz)
    return zz


def _wire_sensing(zz: Zhizhi) -> None:
    """Perception: the sensing service, and its alarm events on the bus (raised → case, cleared → note)."""
    from zhizhi.domain.alarms import AlarmCleared, AlarmRaised
    from zhizhi.sensing.catalogue import load_sensing_catalogue
    from zhizhi.sensing.service import SensingService

    zz.sensing = SensingService(zz.engine, zz.sessions, load_sensing_catalogue(zz.settings.sensing_file), zz.ctx,
                                zz.bus, retention_days=zz.settings.sensing_retention_days)
    zz.bus.batch_handlers[AlarmRaised] = zz.sensing.open_cases
    zz.bus.event_handlers.setdefault(AlarmCleared, []).append(zz.sensing.note_cleared)


def load_gazetteer(engine: Engine, cache_dir: Path | None = None) -> Gazetteer:
    """The place hierarchy stored in the database, behind the geo engine."""
    from zhizhi.adapters.gazetteer import GeoGazetteer, LazyGazetteer
    from zhizhi.adapters.places_store import load_hierarchy

    return LazyGazetteer(lambda: GeoGazetteer(load_hierarchy(engine), cache_dir=cache_dir))
