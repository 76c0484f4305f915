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
from zhizhi.dispatch import service as dispatch_service
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
    sessions.configure(info={"cipher": load_data_cipher(settings)})  # personal data encrypted at rest
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
    ctx.advisor, ctx.duplicate_rules = build_dispatch(settings, catalogue, ctx.classifier)
    bind = functools.partial
    bus = MessageBus(
        uow,
        command_handlers={
            ReportCase: bind(handlers.report_case, ctx=ctx),
            ReportCases: bind(handlers.report_cases, ctx=ctx),
            ActOnCase: bind(handlers.act_on_case, ctx=ctx),
            CheckOverdue: bind(handlers.check_overdue, ctx=ctx),
            dispatch_service.DispatchCall: bind(dispatch_service.run_call, ctx=ctx),
        },
        event_handlers={
            ev.CaseRegistered: [bind(handlers.auto_dispatch, ctx=ctx)],
            ev.CaseEscalated: [bind(handlers.auto_dispatch, ctx=ctx)],
            ev.CaseClosed: [bind(dispatch_service.notify_linked_on_close, ctx=ctx)],
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
    zz.bus.batch_handlers[AlarmCleared] = zz.sensing.note_cleared_many


def load_gazetteer(engine: Engine, cache_dir: Path | None = None) -> Gazetteer:
    """The place hierarchy stored in the database, behind the geo engine."""
    from zhizhi.adapters.gazetteer import GeoGazetteer, LazyGazetteer
    from zhizhi.adapters.places_store import load_hierarchy

    return LazyGazetteer(lambda: GeoGazetteer(load_hierarchy(engine), cache_dir=cache_dir))


def load_data_cipher(settings: Settings) -> Any:
    """The key ring for personal data (environment or key file; see adapters/crypto.py)."""
    from zhizhi.adapters.crypto import load_cipher

    return load_cipher(settings.data_dir, settings.data_keys, settings.data_key_file)


def build_dispatch(settings: Settings, catalogue: Catalogue, keywords: KeywordClassifier) -> tuple[Any, Any]:
    """The smart-dispatch advisor (newest trained models in the data dir) and the duplicate rules.

    No model: the keyword baseline categorises, with a log line saying so. A model file that is
    tampered with or of an unknown format is refused: by default the server does not start (a
    silently ignored model would hide an attack or a broken deployment); with
    ZHIZHI_DISPATCH_ON_BAD_MODEL=fallback it runs on the keyword baseline and logs an error.
    """
    import logging

    from zhizhi.dispatch.advisor import Advisor, load_latest
    from zhizhi.dispatch.duplicates import DuplicateRules
    from zhizhi.dispatch.levels import LevelRules
    from zhizhi.dispatch.model import ModelError

    log = logging.getLogger("zhizhi.dispatch")
    models_dir = settings.models_dir()
    model = department_model = None
    try:
        model = load_latest(models_dir, "category")
        department_model = load_latest(models_dir, "department")
    except ModelError as exc:
        if settings.dispatch_on_bad_model != "fallback":
            raise ModelError(f"{exc}. 服务拒绝启动 / refusing to start: retrain (`zhizhi dispatch train`), remove "
                             "the file, or set ZHIZHI_DISPATCH_ON_BAD_MODEL=fallback to run on keywords") from None
        log.error("dispatch model refused, running on the keyword baseline: %s", exc)
        model = department_model = None
    if model is None:
        log.info("no dispatch model in %s: categorising with the keyword baseline", models_dir)
    else:
        log.info("dispatch model %s loaded (%s)", model.version, model.meta.get("path"))
    advisor = Advisor(catalogue, keywords, LevelRules.load(), model, department_model)
    rules = None
    if settings.dispatch_merge_duplicates:
        rules = DuplicateRules(settings.duplicate_window_hours, settings.duplicate_distance_m,
                               settings.duplicate_min_similarity)
    return advisor, rules
