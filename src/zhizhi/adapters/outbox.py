"""The outbox: notifications to departments, written with the change, delivered afterwards.

A crash between the commit and the delivery loses nothing: the row stays pending
and the next worker run sends it. Delivery is at-least-once; every message carries
its outbox id so a receiving system can drop repeats.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from zhizhi.adapters.orm import OutboxRow
from zhizhi.domain import events as ev

log = logging.getLogger("zhizhi.notify")

MAX_ATTEMPTS = 8


class OutboxRouter:
    """Decides who hears of an event and how: the department's webhook if configured, else the log."""

    def __init__(self, webhooks: dict[str, str] | None = None) -> None:
        self.webhooks = webhooks or {}

    def __call__(self, event: ev.Event) -> list[dict[str, Any]]:
        recipient = getattr(event, "department", "") or "dispatch-centre"
        if isinstance(event, ev.CaseEscalated | ev.CaseClosed):
            recipient = "dispatch-centre"
        if isinstance(event, ev.CaseMerged | ev.LinkedCaseClosed):
            recipient = "reporter"  # the citizen of the merged report (contact details stay on the case)
        if isinstance(event, ev.CaseWhistled):
            return [m for d in event.departments for m in self._message(event, d)]
        return self._message(event, recipient)

    def _message(self, event: ev.Event, recipient: str) -> list[dict[str, Any]]:
        url = self.webhooks.get(recipient)
        payload = {"event": type(event).__name__, **event.__dict__}
        return [{
            "topic": type(event).__name__,
            "case_id": getattr(event, "case_id", None),
            "recipient": recipient,
            "channel": "webhook" if url else "log",
            "target": url,
            "payload": payload,
        }]


class OutboxWorker:
    """Delivers pending outbox rows; records attempts, errors and failures per message."""

    def __init__(self, session_factory: sessionmaker[Session], clock: Callable[[], datetime],
                 log_file: Path | None = None, timeout_s: float = 5.0,
                 http: httpx.Client | None = None) -> None:
        self._sessions = session_factory
        self._clock = clock
        self._log_file = log_file
        self._http = http or httpx.Client(timeout=timeout_s)

    def deliver_pending(self, limit: int = 200) -> dict[str, int]:
        now = self._clock()
        sent = failed = 0
        with self._sessions() as session:
            stmt = (select(OutboxRow)
                    .where(OutboxRow.delivered_at.is_(None), OutboxRow.failed_at.is_(None),
                           OutboxRow.next_attempt_at <= now)
                    .order_by(OutboxRow.id).limit(limit))
            if session.get_bind().dialect.name == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)  # several workers may run at once
            for row in session.scalars(stmt).all():
                row.attempts += 1
                try:
                    self._send(row)
                except Exception as exc:  # any transport error is recorded, then retried with back-off
                    row.last_error = f"{type(exc).__name__}: {exc}"[:2000]
                    if row.attempts >= MAX_ATTEMPTS:
                        row.failed_at = now
                        failed += 1
                    else:
                        row.next_attempt_at = now + timedelta(seconds=min(3600, 5 * 2 ** row.attempts))
                else:
                    row.delivered_at = now
                    row.last_error = None
                    sent += 1
            session.commit()
        return {"delivered": sent, "failed": failed}

    def _send(self, row: OutboxRow) -> None:
        message = {"outbox_id": row.id, "recipient": row.recipient, "topic": row.topic, **row.payload}
        if row.channel == "webhook":
            if not row.target:
                raise ValueError("webhook channel without a target URL")
            response = self._http.post(row.target, json=message)
            response.raise_for_status()
            return
        line = json.dumps(message, ensure_ascii=False, default=str)
        log.info("notify %s", line)
        if self._log_file is not None:
            self._log_file.parent.mkdir(parents=True, exist_ok=True)
            with self._log_file.open("a", encoding="utf-8") as fh:
                fh.write(line + "\n")
